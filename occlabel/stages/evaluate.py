"""Evaluate a labels store against the dataset's ground-truth occupancy with the Occ3D protocol.

Protocol (as ``Metric_mIoU(num_classes=18, use_image_mask=True)`` of the CVPR2023 occupancy challenge):

- one 18 × 18 confusion matrix, rows = ground truth, columns = prediction, summed over all samples and over
  the voxels where the ground truth's ``mask_camera`` is true;
- per-class IoU_c = C[c, c] / (Σ_j C[c, j] + Σ_i C[i, c] − C[c, c]) for classes 0-16; a class with an
  empty union (absent from ground truth and prediction) has IoU NaN (reported as None);
- mIoU = NaN-mean of the 17 per-class IoUs (free, 17, excluded);
- geometry IoU: occupied (≠ 17) vs free, IoU of the occupied class:
  TP / (TP + FP + FN) with TP = Σ_{i,j<17} C[i, j], FP = Σ_{j<17} C[17, j], FN = Σ_{i<17} C[i, 17].

All figures are fractions in [0, 1] (``format_table`` prints percent).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occlabel.conventions import FREE, OCC3D_NAMES, OCC3D_NUM_CLASSES, OCC3D_NUM_SEMANTIC
from occlabel.errors import StoreError
from occlabel.utils import progress_bar

log = logging.getLogger(__name__)

PROTOCOL = "occ3d: 18x18 confusion over GT mask_camera; mIoU = nan-mean of IoU over classes 0-16"


def confusion_matrix(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None = None,
    num_classes: int = OCC3D_NUM_CLASSES,
) -> np.ndarray:
    """Confusion counts <np.int64: C, C>, rows = ground truth, columns = prediction.

    Args:
        pred, gt: integer labels of the same shape (numpy or torch, any device).
        mask: optional bool of the same shape; only voxels where it is true count.
    Voxels whose gt or pred label is outside [0, num_classes) are ignored.
    """
    if isinstance(pred, torch.Tensor) or isinstance(gt, torch.Tensor):
        p = torch.as_tensor(pred).reshape(-1).long()
        g = torch.as_tensor(gt, device=p.device).reshape(-1).long()
        keep = (g >= 0) & (g < num_classes) & (p >= 0) & (p < num_classes)
        if mask is not None:
            keep &= torch.as_tensor(mask, device=p.device).reshape(-1).bool()
        c = torch.bincount(g[keep] * num_classes + p[keep], minlength=num_classes * num_classes)
        return c.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    g = np.asarray(gt).reshape(-1).astype(np.int64)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt differ in size: {p.shape} vs {g.shape}")
    keep = (g >= 0) & (g < num_classes) & (p >= 0) & (p < num_classes)
    if mask is not None:
        keep &= np.asarray(mask).reshape(-1).astype(bool)
    c = np.bincount(g[keep] * num_classes + p[keep], minlength=num_classes * num_classes)
    return c.reshape(num_classes, num_classes).astype(np.int64)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU of every class <np.float64: C> from a confusion matrix; NaN where the union is empty."""
    c = np.asarray(confusion, np.float64)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def geometry_iou(confusion: np.ndarray, free: int = FREE) -> float:
    """IoU of "occupied" (any class but ``free``) vs free; NaN when neither side has an occupied voxel."""
    c = np.asarray(confusion, np.float64)
    occ = np.ones(c.shape[0], bool)
    occ[free] = False
    tp = c[np.ix_(occ, occ)].sum()
    fp = c[free, occ].sum()
    fn = c[occ, free].sum()
    denom = tp + fp + fn
    return float(tp / denom) if denom > 0 else math.nan


def occ3d_metrics(confusion: np.ndarray) -> dict[str, Any]:
    """Occ3D figures from an 18 × 18 confusion matrix (rows gt, columns prediction).

    Returns:
        {"miou": float | None, "iou_geometry": float | None, "iou_free": float | None,
         "per_class": {name: IoU or None for classes 0-16}, "classes_in_miou": int (non-NaN classes),
         "accuracy": float | None (voxel accuracy over the mask), "num_voxels": int}
    """
    c = np.asarray(confusion, np.int64)
    if c.shape != (OCC3D_NUM_CLASSES, OCC3D_NUM_CLASSES):
        raise ValueError(
            f"expected an {OCC3D_NUM_CLASSES}x{OCC3D_NUM_CLASSES} confusion matrix, got {c.shape}"
        )
    iou = per_class_iou(c)
    sem = iou[:OCC3D_NUM_SEMANTIC]
    finite = np.isfinite(sem)
    total = int(c.sum())
    return {
        "miou": _num(float(sem[finite].mean()) if finite.any() else math.nan),
        "iou_geometry": _num(geometry_iou(c)),
        "iou_free": _num(float(iou[FREE])),
        "per_class": {OCC3D_NAMES[i]: _num(float(sem[i])) for i in range(OCC3D_NUM_SEMANTIC)},
        "classes_in_miou": int(finite.sum()),
        "accuracy": _num(float(np.trace(c) / total) if total else math.nan),
        "num_voxels": total,
    }


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def format_table(results: dict[str, Any]) -> str:
    """A terminal table of per-class IoU, mIoU and geometry IoU (percent)."""

    def pct(x: float | None) -> str:
        return "   -  " if x is None else f"{100 * x:6.2f}"

    lines = [f"{'class':<22}{'IoU %':>8}", "-" * 30]
    for name, v in results["per_class"].items():
        lines.append(f"{name:<22}{pct(v):>8}")
    lines.append("-" * 30)
    lines.append(
        f"{'mIoU (' + str(results.get('classes_in_miou', '?')) + ' classes)':<22}{pct(results['miou']):>8}"
    )
    lines.append(f"{'geometry IoU':<22}{pct(results['iou_geometry']):>8}")
    extra = f"samples {results.get('num_samples', '?')}, voxels in GT mask_camera {results.get('num_voxels', '?')}"
    if results.get("samples_without_gt"):
        extra += f", {results['samples_without_gt']} samples without GT skipped"
    lines.append(extra)
    return "\n".join(lines)


def run(labels_path: str | Path, json_out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate every done sample of a LABELS.zarr against the GT occupancy of its dataset (Occ3D protocol).

    The dataset is the one recorded in the source cache (``frame.occupancy_path``, Occ3D labels.npz layout).
    Results (see :func:`occ3d_metrics`, plus "num_samples", "samples_without_gt", "per_scene",
    "confusion" (18 × 18 list), "protocol", "labels") are returned, written to ``json_out`` when given,
    and stored in the labels root attributes under attrs["occlabel"]["evaluation"].
    """
    from occlabel.datasets.base import load_occupancy
    from occlabel.store.cache import open_cache
    from occlabel.store.common import open_root, read_meta, write_meta
    from occlabel.store.labels import open_labels

    labels_path = Path(labels_path)
    reader = open_labels(labels_path)
    cache_path = reader.meta.get("cache")
    if not cache_path:
        raise StoreError(f"{labels_path}: labels store does not record its source cache")
    dataset = open_cache(cache_path).open_dataset()
    frames_by_scene = {s.name: {f.token: f for f in s.frames} for s in dataset.scenes}

    total = np.zeros((OCC3D_NUM_CLASSES, OCC3D_NUM_CLASSES), np.int64)
    per_scene_c: dict[str, np.ndarray] = {}
    per_scene_n: dict[str, int] = {}
    n = missing = 0
    for s in progress_bar(reader, total=len(reader), desc="evaluate", enabled=progress, unit="sample"):
        frame = frames_by_scene.get(s["scene"], {}).get(s["token"])
        if frame is None:
            raise StoreError(
                f"{labels_path}: sample {s['scene']}/{s['token']} is not in dataset {dataset.root}"
            )
        if frame.occupancy_path is None:
            missing += 1
            continue
        gt = load_occupancy(frame.occupancy_path)
        if gt["semantics"].shape != s["semantics"].shape:
            raise StoreError(
                f"{frame.occupancy_path}: GT grid {gt['semantics'].shape} differs from the labels' grid "
                f"{s['semantics'].shape}; voxelize with the dataset's grid"
            )
        c = confusion_matrix(s["semantics"], gt["semantics"], gt["mask_camera"])
        total += c
        per_scene_c[s["scene"]] = per_scene_c.get(s["scene"], 0) + c
        per_scene_n[s["scene"]] = per_scene_n.get(s["scene"], 0) + 1
        n += 1
    if n == 0:
        raise StoreError(
            f"{labels_path}: no done sample has ground-truth occupancy in dataset {dataset.root}"
        )

    results = occ3d_metrics(total)
    results.update(
        {
            "num_samples": n,
            "samples_without_gt": missing,
            "per_scene": {
                sc: {
                    **{k: occ3d_metrics(c)[k] for k in ("miou", "iou_geometry")},
                    "num_samples": per_scene_n[sc],
                }
                for sc, c in per_scene_c.items()
            },
            "confusion": total.tolist(),
            "protocol": PROTOCOL,
            "labels": str(labels_path.resolve()),
        }
    )
    if json_out is not None:
        Path(json_out).write_text(json.dumps(results, indent=1))
    try:
        root = open_root(labels_path, "labels", create=False, mode="a")
        meta = read_meta(root)
        meta["evaluation"] = results
        write_meta(root, meta)
    except OSError as e:  # a read-only store still evaluates
        log.warning("evaluate: could not record the results in %s (%s)", labels_path, e)
    return results


__all__ = ["run", "confusion_matrix", "per_class_iou", "geometry_iou", "occ3d_metrics", "format_table"]
