"""KITTI odometry calibration (``sequences/XX/calib.txt``): the one parser of that file, used by the
``kitti`` dataset (occlabel.datasets.kitti) and by ``voxelize --grid-pose kitti:CALIB[:Pk]``.

``calib.txt`` holds ``P0`` … ``P3``, the rectified 3 × 4 projections ``P_i = K_i [I | t_i]`` (``t_i``: cam0's
centre in camera i's frame, metres), and ``Tr``, the velodyne frame in cam0's (3 × 4, row-major).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from occlabel.errors import DatasetError, OccLabelError


def read_calib(path: str | Path, strict: bool = True) -> dict[str, np.ndarray]:
    """The entries of a KITTI odometry ``calib.txt`` (lines ``P0: ...`` … ``P3: ...``, ``Tr: ...``):
    name -> <np.float64: n> numbers (row-major 3 x 4 for the projections and ``Tr``).

    Args:
        strict: a line whose values are not numbers raises OccLabelError; False: it is left out (pykitti's
            rule, for files pykitti has read).
    """
    path = Path(path)
    try:
        rows = {}
        for line in path.read_text().splitlines():
            key, sep, rest = line.partition(":")
            if not sep:
                continue
            try:
                rows[key.strip()] = np.array(rest.split(), np.float64)
            except ValueError:
                if strict:
                    raise
    except (OSError, ValueError) as e:
        raise OccLabelError(f"{path}: cannot read KITTI calibration ({e})") from None
    return rows


def kitti_T_cam_from_velo(calib_path: str | Path, camera: str = "P0") -> np.ndarray:
    """The velodyne frame in (rectified) camera ``camera``'s frame, <np.float64: 4, 4>, from a KITTI
    odometry ``calib.txt`` (:func:`read_calib`).

    ``Tr`` maps velodyne points into camera 0. The other cameras of the odometry calibration are camera
    0 shifted along x (rectified stereo): camera k's projection is ``P_k = K [I | t_k]`` with
    ``t_k = K⁻¹ P_k[:, 3]``, so ``T_camk_from_velo = [I | t_k] @ Tr`` (SemanticKITTI's SSC grid is in
    this velodyne frame; MonoScene projects it into camera 2 the same way). The rotation is
    re-orthonormalised (KITTI's Tr is rigid only to ~1e-6).
    """
    path = Path(calib_path)
    rows = read_calib(path)
    if "Tr" not in rows or rows["Tr"].size != 12:
        raise OccLabelError(f"{path}: no 'Tr:' line with 12 numbers (KITTI odometry calib.txt)")
    Tr = np.eye(4)
    Tr[:3] = rows["Tr"].reshape(3, 4)
    if camera not in rows or rows[camera].size != 12:
        raise OccLabelError(f"{path}: no '{camera}:' line with 12 numbers")
    P = rows[camera].reshape(3, 4)
    T_camk_from_cam0 = np.eye(4)
    T_camk_from_cam0[:3, 3] = np.linalg.solve(P[:, :3], P[:, 3])
    T = T_camk_from_cam0 @ Tr
    # KITTI's Tr is rigid only to ~1e-6; re-orthonormalise the rotation so downstream checks pass
    u, _, vt = np.linalg.svd(T[:3, :3])
    T[:3, :3] = u @ vt
    return T


def split_rectified_projection(P: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """K <float64: 3, 3> and t <float64: 3> of a rectified projection ``P = K [I | t]`` <3 x 4> (KITTI's
    P0-P3 / P_rect_0i: t is the reference camera's centre offset in camera i's frame, metres).

    Raises:
        DatasetError: P is not of that form (``where`` names it).
    """
    P = np.asarray(P, np.float64)
    K = P[:, :3]
    if not (
        np.all(np.isfinite(P))
        and K[0, 0] > 0
        and K[1, 1] > 0
        and K[1, 0] == 0
        and np.allclose(K[2], [0, 0, 1])
    ):
        raise DatasetError(
            f"{where} is not a rectified projection K [I | t] with K = [[fx,s,cx],[0,fy,cy],[0,0,1]]"
        )
    return K.copy(), np.linalg.solve(K, P[:, 3])


__all__ = ["kitti_T_cam_from_velo", "read_calib", "split_rectified_projection"]
