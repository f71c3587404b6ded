"""Stage 1, ``extract-2d``: per image, relative depth and zero-shot semantics, cached per frame in Zarr.

Images are decoded in DataLoader workers, resized on the model's device to the working resolution, run
through the chosen depth and semantic backends in batches, and written one frame per chunk; a frame's
``done`` marker is set after its data, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from occlabel.datasets import Dataset, Scene
from occlabel.datasets.base import CameraImage, load_depth_m, load_image, load_semantics
from occlabel.errors import DatasetError, OccLabelError
from occlabel.models import get_depth_model, get_semantic_model
from occlabel.store.cache import Cache
from occlabel.utils import progress_bar, resolve_device

log = logging.getLogger("occlabel.extract_2d")

#: float16 mantissa bits kept in stored depth maps (relative rounding error <= 2^-(bits+1); 10 = exact)
DEFAULT_DEPTH_BITS = 8

#: default cap on the working width (pixels); images narrower than this keep their native size
DEFAULT_MAX_WIDTH = 640


def work_size(native: tuple[int, int], width: int | None = None) -> tuple[int, int]:
    """Working (width, height) for an image of native (width, height).

    ``width`` None keeps the native size up to DEFAULT_MAX_WIDTH; otherwise the image is scaled to ``width``
    keeping its aspect ratio (height rounded to the nearest pixel).
    """
    W0, H0 = native
    w = min(W0, DEFAULT_MAX_WIDTH) if width is None else int(width)
    if w <= 0:
        raise OccLabelError(f"working width must be positive, got {width}")
    return w, max(1, int(round(H0 * w / W0)))


class _Images(TorchDataset):
    """Decodes images (and ground truth for oracle backends) in worker processes; native resolution."""

    def __init__(self, items: list[tuple[int, CameraImage, str]], need_depth: bool, need_sem: bool):
        self.items = items
        self.need_depth = need_depth
        self.need_sem = need_sem

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t, rec, key = self.items[i]
        out: dict[str, Any] = {
            "t": t,
            "key": key,
            "record": rec,
            "image": torch.from_numpy(load_image(rec.path)),
        }
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


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "t": [s["t"] for s in samples],
        "keys": [s["key"] for s in samples],
        "records": [s["record"] for s in samples],
    }
    for k in ("image", "gt_depth_m", "gt_semantics"):
        if k in samples[0]:
            out[k] = torch.stack([s[k] for s in samples])
    return out


def _to_device(batch: dict[str, Any], device: torch.device, size: tuple[int, int]) -> dict[str, Any]:
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


def run(
    dataset: Dataset,
    out: str | Path,
    depth_model: str = "oracle",
    semantic_model: str = "oracle",
    scenes: list[str] | None = None,
    device: str = "auto",
    batch_size: int = 4,
    num_workers: int = 0,
    width: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    depth_conf: dict | None = None,
    semantic_conf: dict | None = None,
    depth_bits: int = DEFAULT_DEPTH_BITS,
) -> Path:
    """Run stage 1 on ``dataset`` and write ``out`` (CACHE.zarr); returns ``out``.

    Args:
        dataset: loaded dataset records (see occlabel.datasets.open_dataset).
        out: cache path; created, or resumed when it exists (frames already done are skipped).
        depth_model: depth backend name (its name keys the depth group, so backends live side by side).
        semantic_model: semantic backend name, or "none" for depth-only runs.
        scenes: scene names to process (all when None).
        device: "auto", "cpu", "cuda" or "cuda:N".
        batch_size: images per model call.
        num_workers: DataLoader worker processes decoding images.
        width: working width in pixels (None: native, capped at DEFAULT_MAX_WIDTH).
        seed: seed of the oracle backends' simulated errors.
        overwrite: delete an existing cache first.
        progress: show progress bars.
        depth_conf: options of the depth backend (its ``default_conf`` keys, e.g. {"model": dir}).
        semantic_conf: options of the semantic backend (e.g. {"model": dir, "vocab": "occ3d"}).
        depth_bits: float16 mantissa bits kept in the stored depth maps (10 = exact float16; the default 8
            bounds the relative rounding error by 0.2 % and makes maps several times smaller on disk).
    """
    out = Path(out)
    if not isinstance(depth_bits, int) or not 1 <= depth_bits <= 10:
        raise OccLabelError(
            f"depth bits must be an integer in 1..10 (10 = exact float16), got {depth_bits!r}"
        )
    dev = resolve_device(device)
    dconf = {"seed": seed} if depth_model == "oracle" else {}
    sconf = {"seed": seed} if semantic_model == "oracle" else {}
    dconf.update(depth_conf or {})
    sconf.update(semantic_conf or {})
    depth = get_depth_model(depth_model, dconf or None, dev)
    sem = None if semantic_model == "none" else get_semantic_model(semantic_model, sconf or None, dev)
    cache = Cache.create(out, dataset, overwrite=overwrite)
    selected = dataset.select(scenes)
    t0 = time.perf_counter()
    n_images = 0
    total = sum(len(f.images) for s in selected for f in s.frames)
    bar = progress_bar(total=total, desc="extract-2d", enabled=progress, unit="img")
    for scene in selected:
        n_images += _run_scene(cache, scene, depth, sem, batch_size, num_workers, width, depth_bits, bar)
    bar.close()
    elapsed = time.perf_counter() - t0
    cache.update_meta(default_depth=depth.key, **({"default_semantics": sem.key} if sem else {}))
    cache.record_stage(
        "extract_2d",
        {
            "depth_model": depth.provenance(),
            "semantic_model": sem.provenance() if sem else None,
            "scenes": [s.name for s in selected],
            "device": str(dev),
            "batch_size": batch_size,
            "width": width,
            "depth_bits": depth_bits,
            "seed": seed,
            "images_processed": n_images,
            "seconds": elapsed,
        },
    )
    log.info("extract-2d: %d images in %.1f s -> %s", n_images, elapsed, out)
    return out


def _run_scene(
    cache: Cache, scene: Scene, depth, sem, batch_size, num_workers, width, depth_bits, bar
) -> int:
    sizes: dict[str, tuple[int, int]] = {}
    for cam in scene.cameras:
        first = next(f.images[cam] for f in scene.frames if cam in f.images)
        sizes[cam] = work_size(first.size(), width)
    cache.init_scene(scene, sizes)
    done_count = 0
    for cam in scene.cameras:
        cache.init_depth(
            scene.name,
            cam,
            depth.key,
            {"model": depth.provenance(), "space": depth.space, "mantissa_bits": depth_bits},
        )
        if sem is not None:
            cache.init_semantics(scene.name, cam, sem.key, {"model": sem.provenance()})
        d_done = cache.depth_done(scene.name, cam, depth.key)
        s_done = cache.semantics_done(scene.name, cam, sem.key) if sem is not None else np.ones_like(d_done)
        items = [
            (t, f.images[cam], f"{scene.name}/{cam}/{f.token}")
            for t, f in enumerate(scene.frames)
            if cam in f.images and not (d_done[t] and s_done[t])
        ]
        bar.update(sum(1 for f in scene.frames if cam in f.images) - len(items))
        if not items:
            continue
        loader = DataLoader(
            _Images(items, depth.needs_gt, sem is not None and sem.needs_gt),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=depth.device.type == "cuda",
        )
        for raw in loader:
            batch = _to_device(raw, depth.device, sizes[cam])
            disp = depth(batch).float().cpu().numpy()
            if sem is not None:
                labels, conf = sem(batch)
                labels = labels.cpu().numpy()
                conf = (conf.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            for i, t in enumerate(batch["t"]):
                # semantics first, then depth: a frame counts as done only when both are written
                if sem is not None and not s_done[t]:
                    cache.write_semantics(scene.name, cam, sem.key, t, labels[i], conf[i])
                if not d_done[t]:
                    cache.write_depth(scene.name, cam, depth.key, t, disp[i], depth_bits)
            done_count += len(batch["t"])
            bar.update(len(batch["t"]))
    return done_count
