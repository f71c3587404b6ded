"""SemanticKITTI's voxel ground truth of the ``kitti`` dataset's keyframes (``voxels/NNNNNN.label``,
``.invalid``; see occlabel.datasets.kitti): the 20 training classes on the ``semantickitti`` grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from occlabel.conventions import GRIDS, learning_map_lut
from occlabel.datasets.base import Frame
from occlabel.errors import DatasetError

#: SemanticKITTI's voxel grid, (X, Y, Z) voxels of 0.2 m in the velodyne frame
VOXEL_SHAPE = (256, 256, 32)


def load_semantickitti_voxels(frame: Frame) -> dict[str, Any]:
    """SemanticKITTI voxel ground truth of a keyframe (``frame.meta["semantickitti_voxels"]``).

    Returns:
        ``{"labels": <np.uint8: 256, 256, 32>`` the 20 training classes (learning_map; 0 empty, unknown raw
        ids -> 0), ``"raw": <np.uint16: 256, 256, 32>`` raw label ids, ``"invalid": <np.bool_: 256, 256, 32>``
        (all False without a ``.invalid`` file), ``"grid"``: the ``semantickitti`` VoxelGrid (velodyne frame),
        ``"T_ego_from_grid"``: <np.float64: 4, 4> (the frame's ``T_ego_from_lidar``)}; arrays are
        indexed [x, y, z].
    """
    vox = frame.meta.get("semantickitti_voxels") or {}
    if "label" not in vox:
        raise DatasetError(f"frame {frame.token!r}: no SemanticKITTI voxels/NNNNNN.label file")
    n = int(np.prod(VOXEL_SHAPE))
    try:
        raw = np.fromfile(vox["label"], dtype=np.uint16)
    except OSError as e:
        raise DatasetError(f"{vox['label']}: cannot read ({e})") from None
    if raw.size != n:
        raise DatasetError(f"{vox['label']}: expected {n} uint16 labels (256x256x32), got {raw.size}")
    lut = learning_map_lut(65536)
    invalid = np.zeros(n, bool)
    if "invalid" in vox:
        bits = np.unpackbits(np.fromfile(vox["invalid"], dtype=np.uint8))
        if bits.size != n:
            raise DatasetError(
                f"{vox['invalid']}: expected {n // 8} bytes of packed bits, got {bits.size // 8}"
            )
        invalid = bits.astype(bool)
    return {
        "labels": lut[raw].reshape(VOXEL_SHAPE),
        "raw": raw.reshape(VOXEL_SHAPE),
        "invalid": invalid.reshape(VOXEL_SHAPE),
        "grid": GRIDS["semantickitti"],
        "T_ego_from_grid": frame.T_ego_from_lidar,
    }
