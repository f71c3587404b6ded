"""Depth Anything (V1 / V2) through transformers: relative disparity, or metric depth for metric checkpoints.

Registered names: the presets in :data:`PRESETS` (``depth-anything-v2-small`` ...), and the generic
``depth-anything`` (V2-Small unless ``conf["model"]`` says otherwise). Any other name given to the class is
taken as a hub repo id or a local directory (``save_pretrained`` output).

The whole preprocessing runs in torch on the model's device (no PIL round trip): the working-resolution
image is resized so that its short side is about ``input_size`` with both sides multiples of 14 (the
ViT patch size), normalised with the processor's ``image_mean`` / ``image_std``, run through the network
(fp16 autocast on CUDA by default), and the predicted map is resized back to the working resolution.

Relative checkpoints (``config.depth_estimation_type`` "relative", all presets) give affine-invariant
disparity (``space = "disparity"``); metric checkpoints give metres (``space = "depth_m"``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from occlabel.errors import OccLabelError
from occlabel.models.base import DepthModel, network_input
from occlabel.models.hub import load_pretrained, normalization, parse_dtype

#: preset name -> hub repo id
PRESETS: dict[str, str] = {
    "depth-anything-v2-small": "depth-anything/Depth-Anything-V2-Small-hf",
    "depth-anything-v2-base": "depth-anything/Depth-Anything-V2-Base-hf",
    "depth-anything-v2-large": "depth-anything/Depth-Anything-V2-Large-hf",
    "depth-anything-v1-small": "LiheYoung/depth-anything-small-hf",
}
#: the generic registry name; it loads ``conf["model"]``, or this preset when none is given
GENERIC_NAME = "depth-anything"
DEFAULT_PRESET = "depth-anything-v2-small"
#: ViT patch size: the network input sides must be multiples of it
PATCH = 14


def network_size(h: int, w: int, input_size: int) -> tuple[int, int]:
    """(H, W) the network sees for a (h, w) image: aspect kept, short side ~ input_size, multiples of 14."""
    s = input_size / min(h, w)
    return (max(PATCH, round(h * s / PATCH) * PATCH), max(PATCH, round(w * s / PATCH) * PATCH))


class DepthAnything(DepthModel):
    default_conf: ClassVar[dict[str, Any]] = {
        "model": None,  # hub repo id or local directory; None = the preset named by the backend name
        "input_size": 518,  # short side (pixels) of the network input, a multiple of 14 (518 as trained)
        "dtype": "auto",  # "auto" (fp16 autocast on CUDA, fp32 on CPU), "float32", "float16" or "bfloat16"
    }
    space: ClassVar[str] = "disparity"

    def __init__(self, name: str, conf: dict[str, Any] | None = None, device: torch.device | str = "cpu"):
        super().__init__(name, conf, device)
        if not self.conf["model"]:
            if name in PRESETS:
                self.conf["model"] = PRESETS[name]
            elif name == GENERIC_NAME:
                self.conf["model"] = PRESETS[DEFAULT_PRESET]
            else:
                self.conf["model"] = name
        size = self.conf["input_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % PATCH:
            raise OccLabelError(f"{name}: input_size must be a positive multiple of {PATCH}, got {size!r}")
        # "auto": fp32 weights, fp16 autocast on CUDA; explicit dtypes: weights and inputs in that dtype
        self._weights_dtype, self._autocast = parse_dtype(name, self.conf["dtype"], self.device)

        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.model, processor, self.weights = load_pretrained(
            AutoModelForDepthEstimation,
            AutoImageProcessor,
            self.conf["model"],
            self.device,
            self._weights_dtype,
        )
        self._mean, self._std = normalization(processor, self.device)
        kind = getattr(self.model.config, "depth_estimation_type", None) or "relative"
        self.space = "depth_m" if kind == "metric" else "disparity"  # per instance: depends on the checkpoint

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "weights": self.weights, "space": self.space}

    def preprocess(self, batch: dict[str, Any] | torch.Tensor) -> torch.Tensor:
        """Normalised network input ``[B x 3 x H x W]`` float32 from a batch (resized from its native-resolution
        image when present) or from an image tensor ``[B x 3 x h x w]`` RGB in [0, 1].

        (H, W) keeps the working image's aspect ratio with the short side ~ ``input_size`` (multiples of 14).
        """
        if isinstance(batch, torch.Tensor):
            batch = {"image": batch}
        h, w = batch["image"].shape[-2:]
        size = network_size(h, w, self.conf["input_size"])
        x = network_input(batch, size, mode="bicubic").to(self.device, torch.float32)
        return (x - self._mean) / self._std

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        h, w = batch["image"].shape[-2:]
        x = self.preprocess(batch).to(self._weights_dtype)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self._autocast):
            pred = self.model(pixel_values=x).predicted_depth
        pred = pred.float()
        if pred.dim() == 3:
            pred = pred[:, None]
        out = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return out.float().contiguous()
