"""Exporters from a LABELS.zarr to the layouts occupancy trainers read.

Occ3D-nuScenes (BEVDet-Occ, FlashOCC, SparseOcc, STCOcc ...)::

    <out_dir>/gts/<scene_name>/<sample_token>/labels.npz
        semantics    <np.uint8: 200, 200, 16>  [x, y, z] in the keyframe ego frame, 0-16 classes, 17 free
        mask_camera  <np.uint8: 200, 200, 16>  0/1: voxel observed by the keyframe's cameras
        mask_lidar   <np.uint8: 200, 200, 16>  0/1: a copy of mask_camera (no LiDAR is used; trainers
                                               that train with mask_lidar then see the camera mask)
    <out_dir>/occlabel_export.json             provenance and the list of exported samples

Masks are uint8 0/1 as in the Occ3D release; loaders call ``.astype(bool)`` (the challenge metric) or
``torch.from_numpy`` (FlashOCC's LoadOccGTFromFile), both exact on these files. Unknown voxels are 17
(free) with mask 0, so they must be masked, as Occ3D trainers do with mask_camera.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from occlabel.errors import StoreError
from occlabel.store.common import provenance
from occlabel.store.labels import open_labels

OCC3D_SHAPE = (200, 200, 16)


def export_occ3d(
    labels_path: str | Path,
    out_dir: str | Path,
    scenes: list[str] | None = None,
    allow_other_grid: bool = False,
    progress: bool = False,
) -> Path:
    """Write every done sample of a labels store as ``out_dir/gts/<scene>/<token>/labels.npz``.

    Args:
        labels_path: LABELS.zarr.
        out_dir: output root (e.g. ``data/nuscenes``); files are replaced atomically when present.
        scenes: only these scenes (default: all).
        allow_other_grid: also export grids other than Occ3D's 200 × 200 × 16 ego grid (same layout).
    Returns:
        the ``gts`` directory.
    """
    from occlabel.utils import progress_bar

    reader = open_labels(labels_path)
    grid = reader.grid
    if not allow_other_grid and (tuple(grid.shape) != OCC3D_SHAPE or grid.frame != "ego"):
        raise StoreError(
            f"{labels_path}: grid {grid.name!r} {grid.shape} ({grid.frame} frame) is not the Occ3D grid "
            f"{OCC3D_SHAPE} in the ego frame; voxelize with --grid occ3d"
        )
    if scenes:
        for s in scenes:
            reader.scene_meta(s)
    gts = Path(out_dir) / "gts"
    gts.mkdir(parents=True, exist_ok=True)
    written = []
    for s in progress_bar(reader, total=len(reader), desc="export occ3d", enabled=progress, unit="sample"):
        if scenes and s["scene"] not in scenes:
            continue
        d = gts / s["scene"] / s["token"]
        d.mkdir(parents=True, exist_ok=True)
        mask = s["mask_camera"].astype(np.uint8)
        tmp = d / f".labels.npz.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, semantics=s["semantics"].astype(np.uint8), mask_lidar=mask, mask_camera=mask
            )
        tmp.replace(d / "labels.npz")
        written.append({"scene": s["scene"], "token": s["token"]})
    index = {
        "format": "occ3d-nuscenes gts",
        "labels": str(Path(labels_path).resolve()),
        "grid": grid.to_dict(),
        "mask_lidar": "copy of mask_camera (camera-only labels)",
        "samples": written,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **provenance(),
    }
    (Path(out_dir) / "occlabel_export.json").write_text(json.dumps(index, indent=1))
    return gts


__all__ = ["export_occ3d"]
