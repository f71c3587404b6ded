"""Depth evaluation of a cache: calibrated metric depth against the dataset's ground-truth depth.

Metrics (Eigen et al.; on pixels with ground truth in (min_depth, max_depth], sky excluded):
AbsRel, SqRel, RMSE, RMSE-log, delta < 1.25, 1.25^2, 1.25^3 — reported raw (the calibrated depth as it is)
and median-scaled (multiplied by median(gt)/median(pred) per image: the usual crutch for relative depth,
which needs ground truth). ``scale_error`` is the per-image |median(pred/gt) - 1|. ``floor_absrel`` is the
AbsRel of the best per-image least-squares affine fit of the relative disparity to the true inverse depth:
the limit any calibration of that disparity can reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import SKY
from occlabel.datasets.base import load_depth_m
from occlabel.errors import StoreError
from occlabel.store.cache import depth_from_relative, open_cache
from occlabel.utils import progress_bar, resize_nearest

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def depth_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Standard depth metrics over matching 1-D arrays of positive depths (metres)."""
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


def affine_floor(values: np.ndarray, gt: np.ndarray, space: str = "disparity") -> np.ndarray:
    """Depth from the best least-squares affine fit of ``values`` to ``1/gt`` (disparity) or ``gt`` (depth)."""
    target = 1.0 / gt if space == "disparity" else gt
    A = np.stack([values, np.ones_like(values)], 1).astype(np.float64)
    (s, t), *_ = np.linalg.lstsq(A, target.astype(np.float64), rcond=None)
    return depth_from_relative(values, float(s), float(t), space, max_depth_m=1e9)


def run(
    cache_path: str | Path,
    scenes: list[str] | None = None,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate calibrated depth of every calibrated frame against ground truth.

    Returns {"overall": {raw: {...}, median_scaled: {...}, floor_abs_rel, scale_error_median, num_images},
    "per_camera": {camera: same}}; metrics are averaged over images.
    """
    cache = open_cache(cache_path)
    dataset = cache.open_dataset()
    per: dict[str, list[dict[str, float]]] = {}
    names = scenes or cache.scenes()
    jobs = []
    for sname in names:
        scene = dataset.scene(sname)
        for cam in cache.cameras(sname):
            if not cache.has_calibration(sname, cam):
                continue
            cal = cache.read_calibration(sname, cam)
            for t, f in enumerate(scene.frames):
                im = f.images.get(cam)
                if im is not None and im.depth_path is not None and cal["done"][t]:
                    jobs.append((sname, cam, t, im, cal))
    if not jobs:
        raise StoreError(f"{cache_path}: no calibrated frame with ground-truth depth to evaluate")
    space_of = {}
    for sname, cam, t, im, cal in progress_bar(jobs, desc="evaluate depth", enabled=progress, unit="img"):
        key = (sname, cam)
        if key not in space_of:
            space_of[key] = cache.depth_attrs(sname, cam).get("space", "disparity")
        values = cache.read_depth(sname, cam, None, t)
        h, w = values.shape
        gt = resize_nearest(load_depth_m(im.depth_path), h, w)
        pred = depth_from_relative(values, float(cal["scale"][t]), float(cal["shift"][t]), space_of[key], 1e9)
        try:
            labels, _ = cache.read_semantics(sname, cam, None, t)
            sky = labels == SKY
        except StoreError:
            sky = np.zeros_like(gt, bool)
        m = np.isfinite(gt) & (gt > min_depth) & (gt <= max_depth) & ~sky & np.isfinite(values)
        mp = m & np.isfinite(pred) & (pred > 0)
        if mp.sum() < 10:
            continue
        p, g = np.clip(pred[mp], min_depth, max_depth), gt[mp]
        floor = affine_floor(values[m], gt[m], space_of[key])
        ok = np.isfinite(floor) & (floor > 0)
        rec = {f"raw/{k}": v for k, v in depth_metrics(p, g).items()}
        ratio = np.median(g) / np.median(p)
        rec.update(
            {
                f"median_scaled/{k}": v
                for k, v in depth_metrics(np.clip(p * ratio, min_depth, max_depth), g).items()
            }
        )
        rec["floor_abs_rel"] = depth_metrics(np.clip(floor[ok], min_depth, max_depth), gt[m][ok])["abs_rel"]
        rec["scale_error"] = float(abs(np.median(p / g) - 1.0))
        rec["coverage"] = float(mp.sum() / max(m.sum(), 1))
        per.setdefault(cam, []).append(rec)

    def summary(recs: list[dict[str, float]]) -> dict[str, Any]:
        out: dict[str, Any] = {"num_images": len(recs)}
        for group in ("raw", "median_scaled"):
            out[group] = {k: float(np.mean([r[f"{group}/{k}"] for r in recs])) for k in METRICS}
        out["floor_abs_rel"] = float(np.mean([r["floor_abs_rel"] for r in recs]))
        out["scale_error_median"] = float(np.median([r["scale_error"] for r in recs]))
        out["coverage"] = float(np.mean([r["coverage"] for r in recs]))
        return out

    allrecs = [r for recs in per.values() for r in recs]
    if not allrecs:
        raise StoreError(f"{cache_path}: no frame had enough valid ground-truth pixels to evaluate")
    return {"overall": summary(allrecs), "per_camera": {c: summary(r) for c, r in per.items()}}


def format_table(results: dict[str, Any]) -> str:
    """A terminal table of depth results (rows: cameras and overall)."""
    head = f"{'camera':<18}{'n':>5}{'AbsRel':>9}{'floor':>9}{'RMSE':>8}{'d1':>7}{'scale err':>11}{'AbsRel(med)':>13}"
    lines = [head, "-" * len(head)]
    rows = list(results["per_camera"].items()) + [("overall", results["overall"])]
    for name, r in rows:
        lines.append(
            f"{name:<18}{r['num_images']:>5}{r['raw']['abs_rel']:>9.4f}{r['floor_abs_rel']:>9.4f}"
            f"{r['raw']['rmse']:>8.2f}{r['raw']['a1']:>7.3f}{100 * r['scale_error_median']:>10.2f}%"
            f"{r['median_scaled']['abs_rel']:>13.4f}"
        )
    return "\n".join(lines)
