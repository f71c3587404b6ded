"""The data path of extract-2d: images decoded in DataLoader workers, batched per (scene, camera), moved to
the device and resized there.

``Images`` (a torch Dataset over the flattened job items) -> ``JobBatches`` (a Sampler whose batches never mix
cameras) -> ``collate`` -> ``to_device`` (pinned memory, non-blocking copies on CUDA, the working
resolution and, for networks that want more, the native image).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from occlabel.datasets.base import CameraImage, load_depth_m, load_image, load_semantics
from occlabel.errors import DatasetError


class Images(TorchDataset):
    """Decodes images (and ground truth for oracle backends) in worker processes; native resolution."""

    def __init__(
        self,
        items: list[tuple[int, CameraImage, str]],
        need_depth: bool,
        need_sem: bool,
        native: dict[str, tuple[int, int]] | None = None,
    ):
        self.items = items
        self.need_depth = need_depth
        self.need_sem = need_sem
        #: "<scene>/<camera>" -> native (H, W) every image of that camera must have (None: not checked)
        self.native = native

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """The decoded sample, or ``{"t", "key", "record", "error"}`` when the image (or its ground truth)
        cannot be read: a bad frame is reported and skipped, it does not stop the run."""
        t, rec, key = self.items[i]
        try:
            return self._load(t, rec, key)
        except DatasetError as e:
            return {"t": t, "key": key, "record": rec, "error": str(e)}

    def _load(self, t: int, rec: CameraImage, key: str) -> dict[str, Any]:
        image = load_image(rec.path)
        out: dict[str, Any] = {"t": t, "key": key, "record": rec, "image": torch.from_numpy(image)}
        if self.native is not None and image.shape[:2] != self.native[key.rsplit("/", 1)[0]]:
            H, W = self.native[key.rsplit("/", 1)[0]]
            raise DatasetError(
                f"{key}: image {rec.path} is {image.shape[1]}x{image.shape[0]}, the camera's other images are {W}x{H}"
            )
        if self.need_depth:
            if rec.depth_path is None:
                raise DatasetError(
                    f"{key}: the oracle depth model needs ground-truth depth; the image has none"
                )
            out["gt_depth_m"] = torch.from_numpy(load_depth_m(rec.depth_path))
        if self.need_sem:
            if rec.semantics_path is None:
                raise DatasetError(
                    f"{key}: the oracle semantic model needs ground-truth semantics; the image has none"
                )
            out["gt_semantics"] = torch.from_numpy(load_semantics(rec.semantics_path))
        return out


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples of a batch; the bad ones go to ``errors`` as (key, message)."""
    good = [s for s in samples if "error" not in s]
    out: dict[str, Any] = {
        "t": [s["t"] for s in good],
        "keys": [s["key"] for s in good],
        "records": [s["record"] for s in good],
        "errors": [(s["key"], s["error"]) for s in samples if "error" in s],
        "n": len(samples),
    }
    for k in ("image", "gt_depth_m", "gt_semantics"):
        if good and k in good[0]:
            out[k] = torch.stack([s[k] for s in good])
    return out


def to_device(batch: dict[str, Any], device: torch.device, size: tuple[int, int]) -> dict[str, Any]:
    """Move a collated batch to ``device``; the working-resolution image ``size`` = (w, h) is resized there.

    The native-resolution image is kept as ``image_native`` so that networks with a larger input than the
    working resolution resize from it (see :func:`occlabel.models.base.network_input`).
    """
    w, h = size
    native = batch["image"].to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    img = native
    if img.shape[-2:] != (h, w):
        img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp_(
            0, 1
        )
    out = {
        "image": img,
        "image_native": native,
        "keys": batch["keys"],
        "records": batch["records"],
        "t": batch["t"],
    }
    if "gt_depth_m" in batch:
        d = batch["gt_depth_m"].to(device)[:, None]
        out["gt_depth_m"] = (
            F.interpolate(d, size=(h, w), mode="nearest-exact")[:, 0] if d.shape[-2:] != (h, w) else d[:, 0]
        )
    if "gt_semantics" in batch:
        s = batch["gt_semantics"].to(device)[:, None].float()
        s = F.interpolate(s, size=(h, w), mode="nearest-exact") if s.shape[-2:] != (h, w) else s
        out["gt_semantics"] = s[:, 0].to(torch.uint8)
    return out


class JobBatches(Sampler):
    """Batches of indices into the flattened job items; a batch never mixes (scene, camera) groups."""

    def __init__(self, jobs: list, batch_size: int):
        self.batches: list[list[int]] = []
        start = 0
        for job in jobs:
            n = len(job.items)
            self.batches += [
                list(range(start + i, start + min(i + batch_size, n))) for i in range(0, n, batch_size)
            ]
            start += n

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
