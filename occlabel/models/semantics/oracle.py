"""``oracle`` semantics: ground-truth 2D labels with boundary noise, the stand-in for a VLM segmenter.

Near class boundaries, labels are replaced by the label a few pixels away (a random offset per image)
with probability ``flip_prob``, the way real masks bleed over object edges; confidence is lower there.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from occlabel.errors import OccLabelError
from occlabel.models.base import SemanticModel
from occlabel.utils import stable_seed


class OracleSemantics(SemanticModel):
    default_conf: ClassVar[dict[str, Any]] = {
        "max_shift_px": 2,  # boundary noise reaches this far (pixels at the working resolution)
        "flip_prob": 0.5,  # probability that a boundary pixel takes the displaced label
        "confidence": 0.9,  # confidence away from boundaries
        "boundary_confidence": 0.5,  # confidence on boundaries
        "seed": 0,
    }
    needs_gt: ClassVar[bool] = True

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        sem = batch.get("gt_semantics")
        if sem is None:
            raise OccLabelError(
                "oracle semantics needs ground-truth 2D semantics for every image (the dataset has none)"
            )
        labels = sem.clone()
        conf = torch.full(sem.shape, float(self.conf["confidence"]), device=sem.device)
        m = int(self.conf["max_shift_px"])
        for i, key in enumerate(batch["keys"]):
            g = torch.Generator().manual_seed(stable_seed(self.conf["seed"], "oracle-sem", key))
            dy, dx = (int(v) for v in torch.randint(-m, m + 1, (2,), generator=g))
            shifted = torch.roll(sem[i], shifts=(dy, dx), dims=(0, 1))
            boundary = shifted != sem[i]
            flip = boundary & (torch.rand(sem[i].shape, generator=g) < self.conf["flip_prob"]).to(sem.device)
            labels[i] = torch.where(flip, shifted, sem[i])
            conf[i][boundary] = float(self.conf["boundary_confidence"])
        return labels, conf
