"""Load occlabel labels into PyTorch: a ``torch.utils.data.Dataset`` over a LABELS.zarr.

Usage::

    python examples/load_labels.py runs/demo/labels.zarr

Each item is a dict of tensors over the voxel grid (X, Y, Z), indexed [x, y, z] in the keyframe's ego
frame (Occ3D grid: 200 x 200 x 16, 0.4 m, x, y in [-40, 40], z in [-1, 5.4]):

- ``semantics``   <torch.uint8: X, Y, Z>  class 0-16, 17 = free (unknown voxels are 17 with mask 0)
- ``mask_camera`` <torch.bool: X, Y, Z>   voxels observed by the keyframe's cameras: train/evaluate there
- ``confidence``  <torch.float32: X, Y, Z> in [0, 1]
- ``T_world_from_ego`` <torch.float64: 4, 4>
- ``token`` (str), ``scene`` (str)
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import DataLoader, Dataset

from occlabel.store.labels import open_labels


class OccLabelDataset(Dataset):
    """Voxel labels of a LABELS.zarr as tensors (see the module docstring for the item layout)."""

    def __init__(self, path: str):
        self.path = path
        self.reader = open_labels(path)
        self.grid = self.reader.grid

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> dict:
        s = self.reader[i]
        return {
            "semantics": torch.from_numpy(s["semantics"]),
            "mask_camera": torch.from_numpy(s["mask_camera"]),
            "confidence": torch.from_numpy(s["confidence"]).float() / 255.0,
            "T_world_from_ego": torch.from_numpy(s["T_world_from_ego"]),
            "token": s["token"],
            "scene": s["scene"],
        }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1].strip())
        return 2
    ds = OccLabelDataset(argv[0])
    print(f"{argv[0]}: {len(ds)} samples, grid {ds.grid.name} {ds.grid.shape} at {ds.grid.voxel_size} m")
    if len(ds) == 0:
        return 0
    batch = next(iter(DataLoader(ds, batch_size=min(2, len(ds)))))
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            print(f"  {k:<17} {tuple(v.shape)} {v.dtype}")
        else:
            print(f"  {k:<17} {list(v)}")
    sem, mask = batch["semantics"], batch["mask_camera"]
    print(
        f"  occupied in mask: {int(((sem != 17) & mask).sum())}, free in mask: {int(((sem == 17) & mask).sum())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
