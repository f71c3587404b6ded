"""Model backends, one file each, chosen by name.

Depth backends produce a relative map per image (``space`` "disparity" for affine-invariant disparity,
"depth_m" for metric depth); semantic backends produce per-pixel labels and confidence. Both take a batch
of images at the working resolution and return tensors on the same device.
"""

from occlabel.models.base import DepthModel, SemanticModel, get_depth_model, get_semantic_model

__all__ = ["DepthModel", "SemanticModel", "get_depth_model", "get_semantic_model"]
