"""Evaluate a labels store against ground-truth occupancy: the Occ3D protocol, or SemanticKITTI SSC.

Ground truth: the dataset's own occupancy (``frame.occupancy_path``, Occ3D labels.npz layout), or a
directory given with ``gt``: Occ3D layout (``gts/<scene>/<token>/labels.npz``) or SemanticKITTI layout
(``sequences/<XX>/voxels/<NNNNNN>.label`` + ``.invalid``, named as occlabel.store.export names them);
the layout is detected from the directory unless ``gt_format`` says it. Which file belongs to which sample:
:func:`occlabel.store.groundtruth.find_ground_truth` (the lookup ``show`` and ``report`` use too).

Occ3D protocol (as ``Metric_mIoU(num_classes=18, use_image_mask=True)`` of the CVPR2023 occupancy challenge):

- one 18 × 18 confusion matrix, rows = ground truth, columns = prediction, summed over all samples and over
  the voxels where the ground truth's ``mask_camera`` is true;
- per-class IoU_c = C[c, c] / (Σ_j C[c, j] + Σ_i C[i, c] − C[c, c]) for classes 0-16; a class with an
  empty union (absent from ground truth and prediction) has IoU NaN (reported as None);
- mIoU = NaN-mean of the 17 per-class IoUs (free, 17, excluded);
- geometry IoU: occupied (≠ 17) vs free, IoU of the occupied class:
  TP / (TP + FP + FN) with TP = Σ_{i,j<17} C[i, j], FP = Σ_{j<17} C[17, j], FN = Σ_{i<17} C[i, 17].

SemanticKITTI SSC protocol (semantic-kitti-api's evaluate_completion / MonoScene's SSCMetrics), on
training ids 0-19 (0 empty; labels of the Occ3D class set mapped by export.OCC3D_TO_SEMANTICKITTI):

- one 20 × 20 confusion matrix, rows = ground truth, columns = prediction, over the voxels whose ground
  truth is valid: not flagged in ``.invalid`` and not 255 (every label voxel counts, inside or outside
  the labels' own mask_camera: unknown voxels are predicted empty, as the protocol requires);
- completion (scene completion, SC): occupied (≠ 0) vs empty, IoU = TP / (TP + FP + FN) with
  TP = Σ_{i,j≥1} C[i, j], FP = Σ_{j≥1} C[0, j], FN = Σ_{i≥1} C[i, 0]; precision and recall;
- per-class IoU for classes 1-19 as above; mIoU = NaN-mean over the classes present (in ground truth or
  prediction), and ``miou_19`` = the mean over all 19 with absent classes counted 0 (what MonoScene's
  SSCMetrics gives; equal on a full split, where every class is present).

All figures are fractions in [0, 1] (``format_table`` prints percent).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occlabel.conventions import FREE, OCC3D_NAMES, OCC3D_NUM_CLASSES, OCC3D_NUM_SEMANTIC
from occlabel.errors import StoreError
from occlabel.store.export import SEMANTICKITTI_SHAPE
from occlabel.store.groundtruth import (
    GT_FORMATS,
    GroundTruth,
    detect_gt_format,
    find_ground_truth,
    reader_semantickitti_names,
)
from occlabel.utils import progress_bar

log = logging.getLogger(__name__)

PROTOCOL = "occ3d: 18x18 confusion over GT mask_camera; mIoU = nan-mean of IoU over classes 0-16"
SSC_PROTOCOL = (
    "semantickitti-ssc: 20x20 confusion over GT voxels not invalid and not 255; completion IoU occupied vs "
    "empty; mIoU = nan-mean of IoU over classes 1-19 (miou_19: mean over all 19, absent = 0)"
)
SSC_NUM_CLASSES = 20


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


def ssc_metrics(confusion: np.ndarray) -> dict[str, Any]:
    """SemanticKITTI SSC figures from a 20 × 20 confusion matrix of training ids (rows gt, columns pred).

    Returns:
        {"iou_completion", "precision", "recall", "miou", "miou_19": float | None,
         "per_class": {name: IoU or None for classes 1-19}, "classes_in_miou": int,
         "accuracy": float | None, "num_voxels": int}
    """
    from occlabel.store.labels import SEMANTICKITTI_NAMES

    c = np.asarray(confusion, np.int64)
    if c.shape != (SSC_NUM_CLASSES, SSC_NUM_CLASSES):
        raise ValueError(f"expected a {SSC_NUM_CLASSES}x{SSC_NUM_CLASSES} confusion matrix, got {c.shape}")
    tp = float(c[1:, 1:].sum())
    fp = float(c[0, 1:].sum())
    fn = float(c[1:, 0].sum())
    iou = per_class_iou(c)[1:]
    finite = np.isfinite(iou)
    total = int(c.sum())

    def ratio(a: float, b: float) -> float | None:
        return a / b if b > 0 else None

    return {
        "iou_completion": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "miou": _num(float(iou[finite].mean()) if finite.any() else math.nan),
        "miou_19": float(np.nan_to_num(iou, nan=0.0).mean()),
        "per_class": {SEMANTICKITTI_NAMES[i + 1]: _num(float(iou[i])) for i in range(SSC_NUM_CLASSES - 1)},
        "classes_in_miou": int(finite.sum()),
        "accuracy": ratio(float(np.trace(c)), float(total)),
        "num_voxels": total,
    }


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def format_table(results: dict[str, Any]) -> str:
    """A terminal table of per-class IoU, mIoU and geometry (Occ3D) or completion (SSC) IoU, in percent."""

    def pct(x: float | None) -> str:
        return "   -  " if x is None else f"{100 * x:6.2f}"

    ssc = "iou_completion" in results
    lines = [f"{'class':<22}{'IoU %':>8}", "-" * 30]
    for name, v in results["per_class"].items():
        lines.append(f"{name:<22}{pct(v):>8}")
    lines.append("-" * 30)
    lines.append(
        f"{'mIoU (' + str(results.get('classes_in_miou', '?')) + ' classes)':<22}{pct(results['miou']):>8}"
    )
    if ssc:
        lines.append(f"{'mIoU (all 19)':<22}{pct(results['miou_19']):>8}")
        lines.append(f"{'completion IoU':<22}{pct(results['iou_completion']):>8}")
        lines.append(
            f"{'  precision / recall':<22}{pct(results['precision']):>8} / {pct(results['recall']).strip()}"
        )
        where = "valid GT voxels"
    else:
        lines.append(f"{'geometry IoU':<22}{pct(results['iou_geometry']):>8}")
        where = "voxels in GT mask_camera"
    extra = f"samples {results.get('num_samples', '?')}, {where} {results.get('num_voxels', '?')}"
    if results.get("samples_without_gt"):
        extra += f", {results['samples_without_gt']} samples without GT skipped"
    lines.append(extra)
    return "\n".join(lines)


def run(
    labels_path: str | Path,
    json_out: str | Path | None = None,
    progress: bool = False,
    gt: str | Path | None = None,
    gt_format: str | None = None,
) -> dict[str, Any]:
    """Evaluate every done sample of a LABELS.zarr against ground-truth occupancy.

    Args:
        labels_path: the labels store.
        json_out: also write the results there (JSON).
        gt: a ground-truth directory (Occ3D or SemanticKITTI layout, see the module docstring); None: the
            ground truth of the dataset recorded in the source cache — its SemanticKITTI voxels
            (``frame.meta["semantickitti_voxels"]``, datasets.kitti) for labels on the 256 × 256 × 32 grid,
            else its Occ3D occupancy (``frame.occupancy_path``).
        gt_format: "occ3d" or "semantickitti" (default: detected as above). The protocol follows the
            layout: Occ3D (:func:`occ3d_metrics`) or SSC (:func:`ssc_metrics`).
    Returns:
        the protocol's figures plus "num_samples", "samples_without_gt", "per_scene", "confusion" (list),
        "protocol", "gt", "labels"; also stored in the labels root attributes under "evaluation".
    """
    from occlabel.store.labels import open_labels

    labels_path = Path(labels_path)
    reader = open_labels(labels_path)
    gt_format = _gt_format(reader, labels_path, gt, gt_format)
    lookup, gt_where = _ground_truth_lookup(reader, labels_path, gt, gt_format)
    acc = _accumulate(reader, lookup, gt_format == "semantickitti", progress)
    if acc.n == 0:
        raise StoreError(f"{labels_path}: no done sample has ground-truth occupancy in {gt_where}")
    results = _results(acc, gt_format == "semantickitti", gt_where, labels_path)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(results, indent=1))
    _record(labels_path, results)
    return results


def _gt_format(reader, labels_path: Path, gt: str | Path | None, gt_format: str | None) -> str:
    """The ground truth's format, which is the protocol: as stated, else detected from the ``gt`` directory,
    else the dataset's own (SemanticKITTI for labels on its 256 × 256 × 32 grid, else Occ3D). Refuses an
    unknown format and a class set the protocol cannot score."""
    from occlabel.store.export import to_semantickitti

    if gt_format is None and gt is not None:
        gt_format = detect_gt_format(gt)
    elif gt_format is None:  # the dataset's own ground truth: SemanticKITTI voxels for labels on that grid
        gt_format = "semantickitti" if tuple(reader.grid.shape) == SEMANTICKITTI_SHAPE else "occ3d"
    if gt_format not in GT_FORMATS:
        raise StoreError(
            f"evaluate: ground-truth format must be one of {', '.join(GT_FORMATS)}, got {gt_format!r}"
        )
    if gt_format == "occ3d" and reader.classes.name != "occ3d":
        raise StoreError(
            f"{labels_path}: labels of the {reader.classes.name!r} class set cannot be scored with the Occ3D "
            "protocol; evaluate against SemanticKITTI ground truth (--gt DIR --format semantickitti)"
        )
    if gt_format == "semantickitti":
        to_semantickitti(np.array([reader.classes.free], np.uint8), reader.classes)  # refuses unmapped sets
    return gt_format


def _ground_truth_lookup(
    reader, labels_path: Path, gt: str | Path | None, gt_format: str
) -> tuple[Callable[[dict[str, Any]], GroundTruth | None], str]:
    """(sample -> its ground truth or None, where the ground truth is) through
    :func:`occlabel.store.groundtruth.find_ground_truth`; a sample missing from the dataset is an error."""
    from occlabel.store.cache import open_cache

    # the names are checked (one sequence per scene) whatever the source, as the exporter checks them
    names = reader_semantickitti_names(reader) if gt_format == "semantickitti" else None
    if gt is not None:

        def in_directory(s: dict[str, Any]) -> GroundTruth | None:
            return find_ground_truth(s, gt_dir=gt, gt_format=gt_format, sk_names=names)

        return in_directory, str(Path(gt).resolve())
    cache_path = reader.meta.get("cache")
    if not cache_path:
        raise StoreError(f"{labels_path}: labels store does not record its source cache")
    dataset = open_cache(cache_path).open_dataset()
    frames_by_scene = {sc.name: {f.token: f for f in sc.frames} for sc in dataset.scenes}
    gt_where = f"dataset {dataset.root}"

    def lookup(s: dict[str, Any]) -> GroundTruth | None:
        frame = frames_by_scene.get(s["scene"], {}).get(s["token"])
        if frame is None:
            raise StoreError(f"{labels_path}: sample {s['scene']}/{s['token']} is not in {gt_where}")
        return find_ground_truth(s, frame, gt_format=gt_format)

    return lookup, gt_where


@dataclass
class _Confusions:
    """Confusion counts <np.int64: C, C> summed over the samples with ground truth, and per scene."""

    total: np.ndarray
    per_scene: dict[str, np.ndarray] = field(default_factory=dict)
    per_scene_n: dict[str, int] = field(default_factory=dict)
    n: int = 0  # samples with ground truth
    missing: int = 0  # samples without


def _accumulate(reader, lookup, ssc: bool, progress: bool) -> _Confusions:
    """Confusion of every done sample against its ground truth (SSC: labels mapped to SemanticKITTI ids)."""
    from occlabel.store.export import to_semantickitti

    n_cls = SSC_NUM_CLASSES if ssc else OCC3D_NUM_CLASSES
    acc = _Confusions(np.zeros((n_cls, n_cls), np.int64))
    for s in progress_bar(reader, total=len(reader), desc="evaluate", enabled=progress, unit="sample"):
        g = lookup(s)
        if g is None:
            acc.missing += 1
            continue
        if g.semantics.shape != s["semantics"].shape:
            raise StoreError(
                f"sample {s['scene']}/{s['token']}: GT grid {g.semantics.shape} differs from the labels' grid "
                f"{s['semantics'].shape}; voxelize with the ground truth's grid"
            )
        pred = to_semantickitti(s["semantics"], reader.classes) if ssc else s["semantics"]
        c = confusion_matrix(pred, g.semantics, g.mask, num_classes=n_cls)
        acc.total += c
        acc.per_scene[s["scene"]] = acc.per_scene.get(s["scene"], 0) + c
        acc.per_scene_n[s["scene"]] = acc.per_scene_n.get(s["scene"], 0) + 1
        acc.n += 1
    return acc


def _results(acc: _Confusions, ssc: bool, gt_where: str, labels_path: Path) -> dict[str, Any]:
    """The protocol's figures of the total and the headline figures per scene (see :func:`run`)."""
    metrics = ssc_metrics if ssc else occ3d_metrics
    headline = ("miou", "iou_completion") if ssc else ("miou", "iou_geometry")
    results = metrics(acc.total)
    results.update(
        {
            "num_samples": acc.n,
            "samples_without_gt": acc.missing,
            "per_scene": {
                sc: {**{k: metrics(c)[k] for k in headline}, "num_samples": acc.per_scene_n[sc]}
                for sc, c in acc.per_scene.items()
            },
            "confusion": acc.total.tolist(),
            "protocol": SSC_PROTOCOL if ssc else PROTOCOL,
            "gt": gt_where,
            "labels": str(labels_path.resolve()),
        }
    )
    return results


def _record(labels_path: Path, results: dict[str, Any]) -> None:
    """The results in the labels root attributes under "evaluation" (a read-only store still evaluates)."""
    from occlabel.store.common import open_root, update_root_meta

    try:
        root = open_root(labels_path, "labels", create=False, mode="a")
        update_root_meta(root, lambda meta: meta.update(evaluation=results))
    except OSError as e:  # a read-only store still evaluates
        log.warning("evaluate: could not record the results in %s (%s)", labels_path, e)


__all__ = [
    "GT_FORMATS",
    "confusion_matrix",
    "detect_gt_format",
    "format_table",
    "geometry_iou",
    "occ3d_metrics",
    "per_class_iou",
    "run",
    "ssc_metrics",
]
