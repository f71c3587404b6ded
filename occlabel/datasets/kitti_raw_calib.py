"""KITTI raw calibration in the ``kitti-raw`` adapter's ego frame (the IMU moved down to the road): the
cameras' intrinsics and extrinsics and the velodyne's, from pykitti's parse of a date's calibration files.
occlabel.datasets.kitti_raw's docstring derives every transform.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from occlabel.conventions import is_rigid, scale_intrinsics
from occlabel.datasets.base import rigid_transform
from occlabel.datasets.kitti_calib import split_rectified_projection
from occlabel.errors import DatasetError

log = logging.getLogger("occlabel.datasets.kitti_raw")

#: OXTS RT3003 height above the road in the KITTI recording car (Geiger et al., IJRR 2013)
IMU_HEIGHT_M = 0.93


def T_ego_from_imu(imu_height: float = IMU_HEIGHT_M) -> np.ndarray:
    """<np.float64: 4, 4> IMU (OXTS: x forward, y left, z up) to the raw ego frame ``imu_height`` below it."""
    return rigid_transform(np.eye(3), [0.0, 0.0, imu_height])


def _nearest_rigid(T: np.ndarray) -> np.ndarray:
    """``T`` <4, 4> with its rotation projected onto the nearest rotation (SVD)."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    return rigid_transform(U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt, T[:3, 3])


@dataclass(frozen=True)
class Calib:
    """A date's cameras and LiDAR in the raw ego frame (from pykitti's calibration).

    Attributes:
        K: camera index -> intrinsics <np.float64: 3, 3> at ``S_rect`` size.
        S_rect: camera index -> (W, H) of the rectified images, or None when calib_cam_to_cam.txt lacks it.
        T_ego_from_cam: camera index -> <np.float64: 4, 4> rectified camera (OpenCV) to ego.
        T_ego_from_velo: <np.float64: 4, 4> velodyne to ego.
        T_rect0_from_imu: <np.float64: 4, 4> IMU to rectified cam0.
    """

    K: dict[int, np.ndarray]
    S_rect: dict[int, tuple[float, float] | None]
    T_ego_from_cam: dict[int, np.ndarray]
    T_ego_from_velo: np.ndarray
    T_rect0_from_imu: np.ndarray


def raw_calib(raw, pykitti, date_dir: Path, cams: list[int], h: float) -> Calib:
    """Per camera K (at S_rect size), S_rect (W, H) or None, T_ego_from_cam; T_ego_from_velo; from pykitti."""
    c = raw.calib
    checks = (
        ("calib_imu_to_velo.txt", "R, T", c.T_velo_imu),
        ("calib_velo_to_cam.txt", "R, T", c.T_cam0_velo_unrect),
        ("calib_cam_to_cam.txt", "R_rect_00", c.R_rect_00),
    )
    for name, what, T in checks:
        if not is_rigid(T):
            raise DatasetError(f"{date_dir / name}: {what} is not a rigid transform (orthonormal R, det +1)")
    T_rect0_from_imu = c.R_rect_00 @ c.T_cam0_velo_unrect @ c.T_velo_imu
    T_e_imu = T_ego_from_imu(h)
    T_ego_from_rect0 = T_e_imu @ np.linalg.inv(T_rect0_from_imu)
    sizes = pykitti.utils.read_calib_file(str(date_dir / "calib_cam_to_cam.txt"))
    K_of, S_of, T_of = {}, {}, {}
    for i in cams:
        # t: rectified cam0's centre in camera i's frame
        K, t = split_rectified_projection(
            getattr(c, f"P_rect_{i}0"), f"{date_dir / 'calib_cam_to_cam.txt'}: P_rect_0{i}"
        )
        K_of[i] = K
        S = sizes.get(f"S_rect_0{i}")
        S_of[i] = (float(S[0]), float(S[1])) if S is not None and len(S) == 2 else None
        T = T_ego_from_rect0 @ np.linalg.inv(rigid_transform(np.eye(3), t))
        T_of[i] = _nearest_rigid(T)
    return Calib(
        K=K_of,
        S_rect=S_of,
        T_ego_from_cam=T_of,
        T_ego_from_velo=_nearest_rigid(T_e_imu @ np.linalg.inv(c.T_velo_imu)),
        T_rect0_from_imu=T_rect0_from_imu,
    )


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image, from its header."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None


def intrinsics_at_image_size(
    cal: Calib, ddir: Path, name: str, first: int, cams: list[int]
) -> dict[int, np.ndarray]:
    """Camera index -> K at the images' size: KITTI's are S_rect_0i; a resized copy's K is scaled (logged).
    The size is read from frame ``first``'s image."""
    K = {}
    for i in cams:
        K[i] = cal.K[i]
        path = ddir / f"image_0{i}" / "data" / f"{first:010d}.png"
        S = cal.S_rect[i]
        if S is not None and path.is_file():
            W, H = _image_size(path)
            if (W, H) != S:
                K[i] = scale_intrinsics(K[i], W / S[0], H / S[1])
                log.info(
                    "drive %s, cam%d: images are %dx%d, S_rect_0%d %gx%g: K scaled", name, i, W, H, i, *S
                )
    return K
