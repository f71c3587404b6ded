"""``oracle`` depth: ground-truth depth turned into what a relative depth model would give.

The stand-in for Depth Anything in the demo, tests and benchmarks (it needs per-image ground-truth depth).
For each image, with its own deterministic random draw:

    inv      = 1 / depth_m                       (0 for sky / no depth)
    inv      = blur(inv) * (1 + smooth field) * (1 + iid noise)      model-like errors
    disparity = s * inv + t                      unknown affine: s log-uniform in scale_range,
                                                 t = u * shift_frac * median(inv), u ~ U[-1, 1]

so that ``1 / depth_m = a * disparity + b`` holds (up to the injected errors) with a = 1/s, b = -t/s,
different for every image: exactly the ambiguity calibrate-depth must resolve.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import kornia
import torch
import torch.nn.functional as F

from occlabel.errors import OccLabelError
from occlabel.models.base import DepthModel
from occlabel.utils import stable_seed


class OracleDepth(DepthModel):
    default_conf: ClassVar[dict[str, Any]] = {
        "scale_range": (0.1, 10.0),  # the unknown per-image scale s is log-uniform in this range
        "shift_frac": 0.3,  # |t| <= shift_frac * median inverse depth
        "blur_px": 1.0,  # Gaussian blur sigma (pixels at the working resolution); 0 = none
        "noise": 0.02,  # iid multiplicative noise (std) per pixel
        "smooth_noise": 0.03,  # amplitude of a low-frequency multiplicative distortion
        "seed": 0,  # global seed; each image also hashes its key
    }
    needs_gt: ClassVar[bool] = True
    space: ClassVar[str] = "disparity"

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        depth = batch.get("gt_depth_m")
        if depth is None:
            raise OccLabelError(
                "oracle depth needs ground-truth depth for every image (the dataset has none)"
            )
        B, H, W = depth.shape
        valid = torch.isfinite(depth) & (depth > 0)
        inv = torch.where(valid, 1.0 / depth.clamp(min=1e-6), torch.zeros_like(depth))
        if self.conf["blur_px"] > 0:
            s = float(self.conf["blur_px"])
            k = 2 * math.ceil(3 * s) + 1
            inv = kornia.filters.gaussian_blur2d(inv[:, None], (k, k), (s, s), border_type="replicate")[:, 0]
        out = torch.empty_like(inv)
        lo, hi = (math.log(v) for v in self.conf["scale_range"])
        for i, key in enumerate(batch["keys"]):
            g = torch.Generator().manual_seed(stable_seed(self.conf["seed"], "oracle-depth", key))
            scale = math.exp(lo + (hi - lo) * torch.rand((), generator=g).item())
            u = 2 * torch.rand((), generator=g).item() - 1
            smooth = torch.randn(1, 1, 4, 6, generator=g)
            smooth = F.interpolate(smooth, size=(H, W), mode="bicubic", align_corners=False)[0, 0]
            iid = torch.randn(H, W, generator=g)
            x = (
                inv[i]
                * (1 + self.conf["smooth_noise"] * smooth.to(inv.device))
                * (1 + self.conf["noise"] * iid.to(inv.device))
            )
            med = inv[i][valid[i]].median() if valid[i].any() else inv.new_tensor(1.0)
            shift = u * self.conf["shift_frac"] * float(med)
            out[i] = scale * x + shift * scale
        return out
