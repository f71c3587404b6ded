"""Dataset adapters. Each emits occlabel.datasets.base records; devkits are imported lazily."""

from __future__ import annotations

import inspect
from pathlib import Path

from occlabel.datasets.base import CameraImage, Dataset, Frame, Scene
from occlabel.errors import DatasetError

__all__ = ["CameraImage", "Dataset", "Frame", "Scene", "open_dataset", "DATASET_KINDS"]

#: adapter names; "synthetic" (what ``occlabel synth`` writes by default) is the folder adapter
DATASET_KINDS = ("folder", "synthetic", "nuscenes", "kitti", "kitti-raw", "dgp")


def _loader(kind: str):
    if kind in ("folder", "synthetic"):
        from occlabel.datasets.folder import load_folder

        return load_folder
    if kind == "nuscenes":
        from occlabel.datasets.nuscenes import load_nuscenes

        return load_nuscenes
    if kind == "kitti":
        from occlabel.datasets.kitti import load_kitti

        return load_kitti
    if kind == "kitti-raw":
        from occlabel.datasets.kitti_raw import load_kitti_raw

        return load_kitti_raw
    if kind == "dgp":
        from occlabel.datasets.dgp import load_dgp

        return load_dgp
    raise DatasetError(f"unknown dataset kind {kind!r}; known: {', '.join(DATASET_KINDS)}")


def dataset_options(kind: str) -> list[str]:
    """The option names adapter ``kind`` takes (``open_dataset(kind, root, **options)``)."""
    return [p for p in inspect.signature(_loader(kind)).parameters if p != "root"]


def open_dataset(kind: str, root: str | Path, **options) -> Dataset:
    """Open a dataset by adapter name.

    Args:
        kind: adapter name: "folder" / "synthetic" (occlabel.json manifest), "nuscenes" (nuscenes-devkit
            tables), "kitti" (KITTI odometry / SemanticKITTI layout), "kitti-raw" (KITTI raw drives, OXTS
            poses), "dgp" (DDAD and other DGP scene datasets, LiDAR depth as ground truth). See
            docs/datasets.md.
        root: dataset root (the nuScenes dataroot; the KITTI directory holding ``sequences/``; the KITTI
            raw directory holding ``<date>/``; the DGP directory holding ``scene_dataset*.json``).
        options: adapter options (recorded in stores so later stages can reopen the same dataset); the
            keyword arguments of ``load_folder`` / ``load_nuscenes`` / ``load_kitti`` / ``load_kitti_raw`` /
            ``load_dgp``.
    Raises:
        DatasetError: an unknown kind or option, or a problem in the data (one line naming it).
    """
    load = _loader(kind)
    known = dataset_options(kind)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DatasetError(
            f"dataset {kind!r}: unknown option {unknown[0]!r}; known: {', '.join(known) or 'none'}"
        )
    return load(root, **options)
