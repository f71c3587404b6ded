"""Dataset adapters. Each emits occlabel.datasets.base records; devkits are imported lazily."""

from __future__ import annotations

from pathlib import Path

from occlabel.datasets.base import CameraImage, Dataset, Frame, Scene
from occlabel.errors import DatasetError

__all__ = ["CameraImage", "Dataset", "Frame", "Scene", "open_dataset", "DATASET_KINDS"]

DATASET_KINDS = ("folder",)


def open_dataset(kind: str, root: str | Path, **options) -> Dataset:
    """Open a dataset by adapter name.

    Args:
        kind: adapter name: "folder" (occlabel.json manifest).
        root: dataset root.
        options: adapter options (recorded in stores so later stages can reopen the same dataset).
    """
    if kind == "folder":
        from occlabel.datasets.folder import load_folder

        return load_folder(root, **options)
    raise DatasetError(f"unknown dataset kind {kind!r}; known: {', '.join(DATASET_KINDS)}")
