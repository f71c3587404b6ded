"""Backend interfaces and the registry that looks them up by name.

A backend is a small class with a ``default_conf`` dict (every key commented) and a ``forward`` that takes
a batch dict and returns a dict of tensors. The registry maps a name given on the command line
("oracle", later "depth-anything-v2-small", "grounded-sam", ...) to (module, class); modules are imported
only when chosen, so optional dependencies stay optional.

Batch dict passed to ``forward`` (B images of one camera size):
    image:   ``[B x 3 x h x w]`` float32 RGB in [0, 1] at the working resolution, on the model's device;
             outputs are at this resolution
    image_native: ``[B x 3 x H x W]`` float32 RGB in [0, 1] at the image's native resolution, on the device
             (optional): networks resize their input from it (:func:`network_input`), so a network whose
             input is larger than the working resolution sees the image's real detail
    records: list of B CameraImage records (paths, rel_path, K, ground truth paths)
    keys:    list of B strings "<scene>/<camera>/<token>" (stable per image; seeds per-image randomness)
    gt_depth_m:    ``[B x h x w]`` float32 (only when the backend sets ``needs_gt = True``), NaN = none
    gt_semantics:  ``[B x h x w]`` uint8 (idem)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from occlabel.errors import OccLabelError
from occlabel.models.vocab import Vocabulary


def network_input(batch: dict[str, Any], size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """The batch's images resized to a network's input ``size`` = (H, W): ``[B x 3 x H x W]`` float32 in [0, 1].

    Resizes from ``batch["image_native"]`` when present (else from the working-resolution ``image``), with
    antialiasing when shrinking; no copy when the size already matches.
    """
    image = batch.get("image_native")
    if image is None:
        image = batch["image"]
    image = image.float()
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image, size=tuple(size), mode=mode, align_corners=False, antialias=True)
    return out.clamp_(0, 1)


class _Backend:
    #: default configuration; every key documented inline in subclasses
    default_conf: ClassVar[dict[str, Any]] = {}
    #: whether the batch must carry ground-truth maps (oracle backends only)
    needs_gt: ClassVar[bool] = False

    def __init__(self, name: str, conf: dict[str, Any] | None = None, device: torch.device | str = "cpu"):
        unknown = set(conf or {}) - set(self.default_conf)
        if unknown:
            raise OccLabelError(
                f"{name}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(self.default_conf)}"
            )
        self.name = name
        self.conf = {**self.default_conf, **(conf or {})}
        self.device = torch.device(device)

    @property
    def key(self) -> str:
        """The name as a store group key: a preset name as is, a repo id with "/" as "--", a directory's name."""
        return store_key(self.name)

    def provenance(self) -> dict[str, Any]:
        """What identifies this backend's outputs (recorded in the store)."""
        return {"name": self.name, "conf": self.conf}


class DepthModel(_Backend):
    #: "disparity" (affine-invariant, 1/depth_m = scale*d + shift) or "depth_m" (metric)
    space: ClassVar[str] = "disparity"

    @torch.no_grad()
    def __call__(self, batch: dict[str, Any]) -> torch.Tensor:
        """Relative map ``[B x h x w]`` float32 (disparity or depth_m per ``space``), NaN where undefined."""
        return self.forward(batch)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class SemanticModel(_Backend):
    #: the target vocabulary of the labels (recorded in the cache by extract-2d); None: Occ3D ids
    vocab: Vocabulary | None = None

    @torch.no_grad()
    def __call__(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels ``[B x h x w]`` uint8: class ids, SKY, UNLABELED; confidence ``[B x h x w]`` float in [0, 1])."""
        return self.forward(batch)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError


#: backends for names "files:DIR" (per-image results imported from DIR; see models/*/files.py)
FILES_PREFIX = "files:"
FILES_DEPTH = ("occlabel.models.depth.files", "FilesDepth")
FILES_SEMANTICS = ("occlabel.models.semantics.files", "FilesSemantics")

#: backend used for a depth model named by a hub repo id ("org/name") or a local directory
GENERIC_DEPTH = ("occlabel.models.depth.depth_anything", "DepthAnything")

DEPTH_BACKENDS: dict[str, tuple[str, str]] = {
    "oracle": ("occlabel.models.depth.oracle", "OracleDepth"),
    "depth-anything": GENERIC_DEPTH,
    "depth-anything-v2-small": GENERIC_DEPTH,
    "depth-anything-v2-base": GENERIC_DEPTH,
    "depth-anything-v2-large": GENERIC_DEPTH,
    "depth-anything-v1-small": GENERIC_DEPTH,
}
SEMANTIC_BACKENDS: dict[str, tuple[str, str]] = {
    "oracle": ("occlabel.models.semantics.oracle", "OracleSemantics"),
    "clipseg": ("occlabel.models.semantics.clipseg", "CLIPSeg"),
    "grounded-sam": ("occlabel.models.semantics.grounded_sam", "GroundedSAM"),
    "owlv2-sam": ("occlabel.models.semantics.owlv2_sam", "OWLv2SAM"),
    "semseg": ("occlabel.models.semantics.semseg", "SemSeg"),
}


def store_key(name: str) -> str:
    """A model name as a Zarr group key (no "/"): directories by their base name, repo ids with "--"."""
    p = Path(name).expanduser()
    if p.is_dir():
        return p.resolve().name
    return name.strip("/").replace("/", "--")


def _resolve(table: dict[str, tuple[str, str]], kind: str, name: str, generic=None, files=None) -> type:
    """The backend class registered for ``name`` (imports its module only)."""
    if name in table:
        module, cls = table[name]
    elif files is not None and name.startswith(FILES_PREFIX):
        module, cls = files
    elif generic is not None and ("/" in name or Path(name).expanduser().is_dir()):
        module, cls = generic
    else:
        extra = " or a hub repo id / local model directory" if generic else ""
        extra += ", or files:DIR" if files else ""
        raise OccLabelError(f"unknown {kind} model {name!r}; available: {', '.join(table)}{extra}")
    return getattr(importlib.import_module(module), cls)


def _load(table: dict[str, tuple[str, str]], kind: str, name: str, conf, device, generic=None, files=None):
    cls = _resolve(table, kind, name, generic, files)
    if files is not None and name.startswith(FILES_PREFIX) and name not in table:
        conf = {**(conf or {})}
        conf.setdefault("dir", name[len(FILES_PREFIX) :] or None)
    return cls(name, conf, device)


def depth_backend_class(name: str) -> type[DepthModel]:
    """The class ``get_depth_model(name)`` would instantiate (for its ``default_conf``)."""
    return _resolve(DEPTH_BACKENDS, "depth", name, GENERIC_DEPTH, FILES_DEPTH)


def semantic_backend_class(name: str) -> type[SemanticModel]:
    """The class ``get_semantic_model(name)`` would instantiate (for its ``default_conf``)."""
    return _resolve(SEMANTIC_BACKENDS, "semantic", name, files=FILES_SEMANTICS)


def get_depth_model(name: str, conf: dict | None = None, device="cpu") -> DepthModel:
    """Instantiate the depth backend registered as ``name`` (Depth Anything from a repo id / directory,
    imported maps from files:DIR)."""
    return _load(DEPTH_BACKENDS, "depth", name, conf, device, GENERIC_DEPTH, FILES_DEPTH)


def get_semantic_model(name: str, conf: dict | None = None, device="cpu") -> SemanticModel:
    """Instantiate the semantic backend registered as ``name`` (or files:DIR)."""
    return _load(SEMANTIC_BACKENDS, "semantic", name, conf, device, files=FILES_SEMANTICS)
