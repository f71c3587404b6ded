"""The ``kitti-raw`` dataset: KITTI raw drives (synced and rectified) with OXTS poses, read through pykitti.

``load_kitti_raw(root, drives=["2011_09_26_drive_0005"], ...)`` (or ``open_dataset("kitti-raw", root, ...)``)
emits the records of occlabel.datasets.base; pykitti (extra ``occlabel[kitti]``) is imported only here,
through ``pykitti.raw(root, date, drive)``.

Layout (the raw data download: ``<date>_calib.zip`` and ``<date>_drive_<NNNN>_sync.zip`` unpacked into one
directory)::

    <root>/<date>/calib_cam_to_cam.txt          S_rect_0i (W H), R_rect_00, P_rect_00..03 (3x4 rectified)
    <root>/<date>/calib_velo_to_cam.txt         R, T: velodyne -> unrectified cam0
    <root>/<date>/calib_imu_to_velo.txt         R, T: IMU (OXTS) -> velodyne
    <root>/<date>/<date>_drive_NNNN_sync/oxts/timestamps.txt       one "YYYY-MM-DD HH:MM:SS.nnnnnnnnn" a frame
    <root>/<date>/<date>_drive_NNNN_sync/oxts/data/FFFFFFFFFF.txt  one OXTS packet (30 values) a frame
    <root>/<date>/<date>_drive_NNNN_sync/image_0i/data/FFFFFFFFFF.png   cam0/cam1 grey, cam2/cam3 colour
    <root>/<date>/<date>_drive_NNNN_sync/velodyne_points/data/FFFFFFFFFF.bin   optional LiDAR, float32 N x 4

``root`` may also be a ``<date>`` directory or a drive directory (its drive is then the default).
Only the synced+rectified (``_sync``) data is read: ``P_rect`` applies to rectified images only.

Frames
    pykitti's OXTS poses ``T_w_imu`` carry the poses: the IMU frame (x forward, y left, z up, on the
    vehicle body) in a local east-north-up world whose origin is the IMU at the **first frame of the drive**
    (translation: scaled Mercator, x = s * lon * pi * r / 180, y = s * r * ln(tan((90 + lat) * pi / 360)),
    z = altitude, r = 6378137 m, s = cos(latitude of the first frame), minus the first frame's values;
    rotation: Rz(yaw) Ry(pitch) Rx(roll)). The whole drive's OXTS files are read even when ``frames``
    selects a part, so the world does not depend on the selection. Scaled Mercator is metric at the
    first frame's latitude only: over 1 km of northing at 49 deg N distances are off by ~0.02 %.

    The **ego frame** is the IMU frame moved down to the road: origin ``imu_height`` (0.93 m) below the
    IMU along its z axis, same axes, i.e. ``T_ego_from_imu = [I | (0, 0, h)]`` and
    ``T_world_from_ego = T_w_imu @ inv(T_ego_from_imu)``. 0.93 m is the OXTS RT3003 mounting height in the
    KITTI setup (Geiger et al., IJRR 2013, Fig. 1/3: cameras 1.65 m, Velodyne 1.73 m, GPS/IMU 0.93 m above
    the road; calib_imu_to_velo.txt puts the IMU 0.80 m below the Velodyne). It is not levelled: it
    shares the vehicle body's roll and pitch (the IMU's), and it is the same whichever camera is chosen.
    It is not the ``kitti`` adapter's ego frame (ground under cam0): the two origins are ~1.1 m apart.

    Cameras (rectified frame i: OpenCV axes of rectified cam0, at camera i's centre)::

        T_rect0_from_imu  = R_rect_00 @ T_cam0unrect_from_velo @ T_velo_from_imu
        T_cam_i_from_rect0 = [I | t_i],  t_i = inv(K_i) P_rect_0i[:, 3]   (all three components)
        T_ego_from_cam_i  = T_ego_from_imu @ inv(T_rect0_from_imu) @ inv(T_cam_i_from_rect0)

    (pykitti's ``T_camN_imu`` keeps only the x baseline of ``t_i``.) ``K_i = P_rect_0i[:, :3]``, scaled
    with ``scale_intrinsics`` when the images are not ``S_rect_0i`` pixels (read from the first selected
    image of each camera; logged). LiDAR: ``T_ego_from_lidar = T_ego_from_imu @ inv(T_velo_from_imu)``.
    Calibration rotations are given to ~7 digits; composed rotations are projected onto the nearest
    rotation (SVD), a change of ~1e-7.

    Timestamps are ``oxts/timestamps.txt``'s (the packet associated with each synced frame), read with
    nanoseconds as UTC: seconds since the Unix epoch, float64 (~0.2 us resolution). Images carry no own
    time or pose (synced frames: the cameras fire when the Velodyne faces forward). Tokens are
    ``<date>_drive_NNNN_<frame:010d>``, scenes are named ``<date>_drive_NNNN``.

Keyframes
    Every ``keyframe_every``-th frame of the drive (default 5: frames 0, 5, 10 ..., 2 Hz at KITTI's 10 Hz).

Ground truth (attached when present, per camera i and frame):
    ``<drive>/proj_depth/groundtruth/image_0i/FFFFFFFFFF.png|.npy``: depth (KITTI depth completion's
    annotated depth, uint16 metres*256, merged into the drive; or float32 metres); ``<drive>/semantics/
    image_0i/FFFFFFFFFF.png`` uint8 2D labels (an occlabel extension); ``occlabel synth --layout kitti-raw``
    writes both. Occ3D-layout occupancy in the ego frame above: ``gts/<drive>/<token>/labels.npz``.

Options (``--dataset-option KEY=VALUE``):
    drives          drive names ("2011_09_26_drive_0005", a ``_sync`` suffix is accepted), drive numbers
                    ("5" or "0005", when one date has it) or both, a list or comma-separated; None: every
                    drive found (or the drive ``root`` points at).
    cameras         cam2 (default), cam0, cam1, cam3, or several (comma-separated).
    frames          "START:STOP" (STOP excluded) or a list of frame ids; None: all.
    keyframe_every  5.
    imu_height      metres from the IMU down to the ego origin (0.93).
    gts             Occ3D-layout ground truth directory; "auto": ``<root>/gts`` when it exists.
    check_files     check that every image exists (default true).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import is_rigid
from occlabel.datasets.base import CameraImage, Dataset, Frame, Scene
from occlabel.datasets.kitti_options import _camera_index, _frames, _list, _listing, _pykitti
from occlabel.datasets.kitti_raw_calib import (
    IMU_HEIGHT_M,
    Calib,
    T_ego_from_imu,
    intrinsics_at_image_size,
    raw_calib,
)
from occlabel.datasets.kitti_raw_drives import (
    _DRIVE,
    CALIB_FILES,
    OXTS_FIELDS,
    _bad_oxts,
    check_options,
    parse_timestamp,
    raw_base,
    read_timestamps,
    select_drives,
)
from occlabel.datasets.options import gts_option
from occlabel.errors import DatasetError

log = logging.getLogger(__name__)

__all__ = [
    "CALIB_FILES",
    "IMU_HEIGHT_M",
    "OXTS_FIELDS",
    "T_ego_from_imu",
    "load_kitti_raw",
    "parse_timestamp",
    "read_timestamps",
]


def load_kitti_raw(
    root: str | Path,
    drives: str | list | None = None,
    cameras: str | list = "cam2",
    frames: str | list | None = None,
    keyframe_every: int = 5,
    imu_height: float = IMU_HEIGHT_M,
    gts: str | Path | None = "auto",
    check_files: bool = True,
) -> Dataset:
    """Load KITTI raw drives as occlabel records (see the module docstring).

    Args:
        root: the directory holding ``<date>/`` (with the calibration files and the ``_sync`` drives), or a
            date directory, or a drive directory.
    Returns:
        A Dataset whose root is the directory holding ``<date>/``; one Scene a drive; frames with
        ``T_world_from_ego`` <np.float64: 4, 4> (OXTS world of the drive's first frame), images with
        ``K`` <np.float64: 3, 3> and ``T_ego_from_cam`` <np.float64: 4, 4> (OpenCV camera to ego).
    Raises:
        DatasetError: one line naming the drive, file, line or frame at fault.
    """
    base, here = raw_base(Path(root).expanduser().resolve())
    pykitti = _pykitti()
    cams = sorted({_camera_index(c) for c in (_list(cameras) or ["cam2"])})
    check_options(keyframe_every, imu_height)
    names = select_drives(drives, base, here)
    gts_dir = gts_option(gts, "kitti-raw", base / "gts")
    sel = _Selection(cams, frames, keyframe_every, float(imu_height), gts_dir, check_files)
    scenes = [_drive(pykitti, base, n, sel) for n in names]
    options = {
        "drives": names,
        "cameras": [f"cam{i}" for i in cams],
        "frames": frames,
        "keyframe_every": keyframe_every,
        "imu_height": float(imu_height),
        "gts": None if gts_dir is None else str(gts_dir),
        "check_files": check_files,
    }
    return Dataset(kind="kitti-raw", root=base, scenes=scenes, options=options)


@dataclass(frozen=True)
class _Selection:
    """The options every drive is read with (checked by :func:`load_kitti_raw`)."""

    cams: list[int]
    frames: Any
    keyframe_every: int
    imu_height: float
    gts_dir: Path | None
    check: bool


@dataclass(frozen=True)
class _DriveFiles:
    """Where a drive's files are, and its frame times.

    Attributes:
        name, date, num: ``<date>_drive_NNNN``, ``<date>``, ``NNNN``.
        date_dir: ``<base>/<date>`` (calibration files). ddir: the ``_sync`` drive directory.
        oxts_dir: ``<ddir>/oxts/data``. times: <np.float64: N> POSIX seconds of the N frames.
    """

    name: str
    date: str
    num: str
    date_dir: Path
    ddir: Path
    oxts_dir: Path
    times: np.ndarray


@dataclass(frozen=True)
class _Listings:
    """File names present in a drive's directories (one listing each), by camera index."""

    images: dict[int, set[str]]
    depth: dict[int, set[str]]
    semantics: dict[int, set[str]]
    velodyne: set[str]


def _drive(pykitti, base: Path, name: str, sel: _Selection) -> Scene:
    """The Scene of drive ``name``: one Frame per selected frame id (see the module docstring)."""
    drv = _drive_files(base, name)
    raw = _open_raw(pykitti, base, drv)
    T_w_imu = _oxts_poses(raw, drv)
    h, ddir = sel.imu_height, drv.ddir
    cal = raw_calib(raw, pykitti, drv.date_dir, sel.cams, h)
    T_imu_e = np.linalg.inv(T_ego_from_imu(h))
    ids = _frames(sel.frames, len(drv.times), f"drive {name}")
    lst = _Listings(
        images={i: _listing(ddir / f"image_0{i}" / "data") for i in sel.cams},
        depth={i: _listing(ddir / "proj_depth" / "groundtruth" / f"image_0{i}") for i in sel.cams},
        semantics={i: _listing(ddir / "semantics" / f"image_0{i}") for i in sel.cams},
        velodyne=_listing(ddir / "velodyne_points" / "data"),
    )
    key_ids = set(range(0, len(drv.times), sel.keyframe_every))
    if not key_ids.intersection(ids):
        raise DatasetError(
            f"drive {name}: no keyframe among the selected frames (keyframes: every {sel.keyframe_every}th frame)"
        )
    K = intrinsics_at_image_size(cal, drv.ddir, name, ids[0], sel.cams)
    out = [
        _frame(base, drv, f, f in key_ids, raw.oxts[f].packet, T_w_imu[f] @ T_imu_e, K, cal, lst, sel)
        for f in ids
    ]
    p0 = raw.oxts[0].packet
    smeta = {
        "date": drv.date,
        "drive": drv.num,
        "imu_height_m": h,
        "T_ego_from_imu": T_ego_from_imu(h).tolist(),
        "T_ego_from_velo": cal.T_ego_from_velo.tolist(),
        "world_origin_lat_lon_alt": [p0.lat, p0.lon, p0.alt],
        "mercator_scale": float(np.cos(np.radians(p0.lat))),
        "keyframes": f"every {sel.keyframe_every}th frame",
    }
    return Scene(name=name, frames=out, meta=smeta)


def _drive_files(base: Path, name: str) -> _DriveFiles:
    """A drive's directories and timestamps, checked: calibration files, one OXTS file per timestamp."""
    date, num = _DRIVE.match(name).groups()
    date_dir = base / date
    ddir = date_dir / f"{name}_sync"
    if not date_dir.is_dir():
        raise DatasetError(f"drive {name}: no date directory {date_dir}")
    if not ddir.is_dir():
        raise DatasetError(f"drive {name}: directory not found: {ddir}")
    for need in CALIB_FILES:
        if not (date_dir / need).is_file():
            raise DatasetError(f"drive {name}: calibration file not found: {date_dir / need}")
    ts_path = ddir / "oxts" / "timestamps.txt"
    if not ts_path.is_file():
        raise DatasetError(f"drive {name}: file not found: {ts_path}")
    times = read_timestamps(ts_path)
    n = len(times)
    oxts_dir = ddir / "oxts" / "data"
    oxts_l = _listing(oxts_dir)
    missing = next((i for i in range(n) if f"{i:010d}.txt" not in oxts_l), None)
    if missing is not None:
        raise DatasetError(
            f"drive {name}, frame {missing}: file not found: {oxts_dir / f'{missing:010d}.txt'}"
        )
    n_files = sum(1 for x in oxts_l if x.endswith(".txt"))
    if n_files != n:
        raise DatasetError(f"{oxts_dir}: {n_files} OXTS files but {ts_path} has {n} timestamps")
    return _DriveFiles(name, date, num, date_dir, ddir, oxts_dir, times)


def _open_raw(pykitti, base: Path, drv: _DriveFiles):
    """``pykitti.raw`` of the whole drive (the world is its first frame); its errors as one line."""
    n = len(drv.times)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            raw = pykitti.raw(
                str(base), drv.date, drv.num
            )  # all frames: the world is the drive's first frame
    except KeyError as e:
        raise DatasetError(
            f"{drv.date_dir}: calibration entry {e.args[0]!r} missing (calib_cam_to_cam.txt needs P_rect_00-03 "
            "and R_rect_00-03; calib_velo_to_cam.txt and calib_imu_to_velo.txt need R and T)"
        ) from None
    except (ValueError, TypeError, IndexError) as e:
        bad = _bad_oxts([drv.oxts_dir / f"{i:010d}.txt" for i in range(n)])
        raise DatasetError(bad or f"{drv.date_dir}: cannot parse the calibration files ({e})") from None
    if len(raw.oxts) != n:
        raise DatasetError(f"{drv.oxts_dir}: pykitti read {len(raw.oxts)} OXTS packets, expected {n}")
    return raw


def _oxts_poses(raw, drv: _DriveFiles) -> np.ndarray:
    """<np.float64: N, 4, 4> T_w_imu of every frame (a non-rigid one is an error naming its file)."""
    T_w_imu = np.stack([np.asarray(o.T_w_imu, np.float64) for o in raw.oxts])
    for f, T in enumerate(T_w_imu):
        if not is_rigid(T):
            raise DatasetError(
                f"{drv.oxts_dir / f'{f:010d}.txt'}: not a finite pose (lat, lon, alt, roll, pitch, yaw)"
            )
    return T_w_imu


def _frame(
    base: Path, drv: _DriveFiles, f: int, key: bool, packet, T_we: np.ndarray, K, cal: Calib, lst, sel
) -> Frame:
    """Frame ``f`` of a drive: its images, LiDAR scan, OXTS position, and (keyframes) Occ3D ground truth."""
    fname = f"{f:010d}"
    images = {f"cam{i}": _image(base, drv, f, i, K[i], cal, lst, sel.check) for i in sel.cams}
    meta: dict[str, Any] = {
        "drive": drv.name,
        "frame": f,
        "lat": packet.lat,
        "lon": packet.lon,
        "alt": packet.alt,
    }
    velo = fname + ".bin" in lst.velodyne
    occ = None
    token = f"{drv.name}_{fname}"
    if key and sel.gts_dir is not None:
        q = sel.gts_dir / drv.name / token / "labels.npz"
        occ = q if q.is_file() else None
    return Frame(
        token=token,
        timestamp=float(drv.times[f]),
        keyframe=key,
        T_world_from_ego=T_we,
        images=images,
        lidar_path=drv.ddir / "velodyne_points" / "data" / f"{fname}.bin" if velo else None,
        occupancy_path=occ,
        T_ego_from_lidar=cal.T_ego_from_velo if velo else None,
        meta=meta,
    )


def _image(
    base: Path, drv: _DriveFiles, f: int, i: int, K: np.ndarray, cal: Calib, lst: _Listings, check: bool
) -> CameraImage:
    """Camera ``i``'s image of frame ``f``, with its depth / semantics ground truth when present."""
    fname = f"{f:010d}"
    rel = f"{drv.date}/{drv.name}_sync/image_0{i}/data/{fname}.png"
    if check and fname + ".png" not in lst.images[i]:
        raise DatasetError(f"drive {drv.name}, frame {f}, camera cam{i}: file not found: {base / rel}")
    depth_dir = drv.ddir / "proj_depth" / "groundtruth" / f"image_0{i}"
    dp = next((depth_dir / (fname + e) for e in (".npy", ".png") if fname + e in lst.depth[i]), None)
    sem = drv.ddir / "semantics" / f"image_0{i}" / (fname + ".png")
    return CameraImage(
        camera=f"cam{i}",
        path=base / rel,
        rel_path=rel,
        K=K,
        T_ego_from_cam=cal.T_ego_from_cam[i],
        depth_path=dp,
        semantics_path=sem if fname + ".png" in lst.semantics[i] else None,
        meta={"frame": f},
    )
