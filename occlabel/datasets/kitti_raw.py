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

import calendar
import contextlib
import io
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from occlabel.conventions import is_rigid, scale_intrinsics
from occlabel.datasets.base import CameraImage, Dataset, Frame, Scene, rigid_transform
from occlabel.datasets.kitti import (
    _camera_index,
    _frames,
    _list,
    _listing,
    _pykitti,
    split_rectified_projection,
)
from occlabel.errors import DatasetError

log = logging.getLogger(__name__)

#: OXTS RT3003 height above the road in the KITTI recording car (Geiger et al., IJRR 2013)
IMU_HEIGHT_M = 0.93
CALIB_FILES = ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt")
#: the 30 values of an OXTS packet (KITTI raw devkit dataformat.txt), in file order
OXTS_FIELDS = (
    "lat", "lon", "alt", "roll", "pitch", "yaw", "vn", "ve", "vf", "vl", "vu", "ax", "ay", "az", "af", "al",
    "au", "wx", "wy", "wz", "wf", "wl", "wu", "pos_accuracy", "vel_accuracy", "navstat", "numsats",
    "posmode", "velmode", "orimode",
)  # fmt: skip
_DATE = re.compile(r"^\d{4}_\d{2}_\d{2}$")
_DRIVE = re.compile(r"^(\d{4}_\d{2}_\d{2})_drive_(\d{4})(?:_sync)?$")
_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{9})$")


def T_ego_from_imu(imu_height: float = IMU_HEIGHT_M) -> np.ndarray:
    """<np.float64: 4, 4> IMU (OXTS: x forward, y left, z up) to the raw ego frame ``imu_height`` below it."""
    return rigid_transform(np.eye(3), [0.0, 0.0, imu_height])


def parse_timestamp(text: str) -> float:
    """A KITTI raw timestamp ``"YYYY-MM-DD HH:MM:SS.nnnnnnnnn"`` as POSIX seconds (read as UTC), float64.

    Raises ValueError when ``text`` is not in that form (nine fractional digits, as pykitti expects).
    """
    m = _TIME.match(text.strip())
    if m is None:
        raise ValueError(f"expected YYYY-MM-DD HH:MM:SS.nnnnnnnnn, got {text.strip()!r}")
    y, mo, d, hh, mm, ss = (int(g) for g in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mm < 60 and ss < 61):
        raise ValueError(f"not a valid date and time: {text.strip()!r}")
    return calendar.timegm((y, mo, d, hh, mm, ss, 0, 0, 0)) + int(m.group(7)) * 1e-9


def read_timestamps(path: Path) -> np.ndarray:
    """``<np.float64: N>`` POSIX seconds of a KITTI raw ``timestamps.txt`` (one line a frame).

    Raises DatasetError naming the line of a malformed or non-increasing timestamp.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read timestamps ({e})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(parse_timestamp(line))
        except ValueError as e:
            raise DatasetError(f"{path}: line {n}: {e}") from None
        if len(out) > 1 and out[-1] <= out[-2]:
            raise DatasetError(f"{path}: line {n}: timestamps must increase")
    if not out:
        raise DatasetError(f"{path}: no frames")
    return np.asarray(out, np.float64)


def _nearest_rigid(T: np.ndarray) -> np.ndarray:
    """``T`` <4, 4> with its rotation projected onto the nearest rotation (SVD)."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    return rigid_transform(U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt, T[:3, 3])


def _calib(raw, pykitti, date_dir: Path, cams: list[int], h: float) -> dict[str, Any]:
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
    out: dict[str, Any] = {"K": {}, "S_rect": {}, "T_ego_from_cam": {}}
    for i in cams:
        # t: rectified cam0's centre in camera i's frame
        K, t = split_rectified_projection(
            getattr(c, f"P_rect_{i}0"), f"{date_dir / 'calib_cam_to_cam.txt'}: P_rect_0{i}"
        )
        out["K"][i] = K
        S = sizes.get(f"S_rect_0{i}")
        out["S_rect"][i] = (float(S[0]), float(S[1])) if S is not None and len(S) == 2 else None
        T = T_ego_from_rect0 @ np.linalg.inv(rigid_transform(np.eye(3), t))
        out["T_ego_from_cam"][i] = _nearest_rigid(T)
    out["T_ego_from_velo"] = _nearest_rigid(T_e_imu @ np.linalg.inv(c.T_velo_imu))
    out["T_rect0_from_imu"] = T_rect0_from_imu
    return out


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image, from its header."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None


def _dates(base: Path) -> list[str]:
    try:
        return sorted(p.name for p in base.iterdir() if p.is_dir() and _DATE.match(p.name))
    except OSError:
        return []


def _drive_name(value: Any, base: Path) -> str:
    """``<date>_drive_NNNN`` of an option value: a drive name, or a drive number found under one date."""
    s = str(value).strip().strip("/")
    m = re.match(r"^(\d{4}_\d{2}_\d{2})/(\d{4})$", s) or _DRIVE.match(s)  # also <date>/NNNN
    if m:
        return f"{m.group(1)}_drive_{m.group(2)}"
    if not s.isdigit():
        raise DatasetError(
            f"kitti-raw option 'drives': {value!r} is not a drive like 2011_09_26_drive_0005 or 0005"
        )
    num = f"{int(s):04d}"
    hits = [d for d in _dates(base) if (base / d / f"{d}_drive_{num}_sync").is_dir()]
    if len(hits) != 1:
        where = "no date has it" if not hits else f"dates {', '.join(hits)} have it; name the date"
        raise DatasetError(f"kitti-raw option 'drives': drive {num} under {base}: {where}")
    return f"{hits[0]}_drive_{num}"


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
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such directory (expected the KITTI raw base holding <date>/)")
    here = None
    if _DRIVE.match(root.name) and root.name.endswith("_sync"):
        base, here = root.parent.parent, _DRIVE.match(root.name)
    elif _DATE.match(root.name) and (root / CALIB_FILES[0]).is_file():
        base = root.parent
    else:
        base = root
    pykitti = _pykitti()
    cams = sorted({_camera_index(c) for c in (_list(cameras) or ["cam2"])})
    if not isinstance(keyframe_every, int) or isinstance(keyframe_every, bool) or keyframe_every < 1:
        raise DatasetError(
            f"kitti-raw option 'keyframe_every': expected a positive integer, got {keyframe_every!r}"
        )
    if isinstance(imu_height, bool) or not isinstance(imu_height, int | float) or not imu_height >= 0:
        raise DatasetError(f"kitti-raw option 'imu_height': expected metres >= 0, got {imu_height!r}")

    explicit = [_drive_name(d, base) for d in _list(drives) or []]
    if explicit:
        names = list(dict.fromkeys(explicit))
    elif here is not None:
        names = [f"{here.group(1)}_drive_{here.group(2)}"]
    else:
        names = [
            p.name.removesuffix("_sync")
            for d in _dates(base)
            for p in sorted((base / d).iterdir())
            if p.is_dir() and _DRIVE.match(p.name) and p.name.endswith("_sync") and p.name.startswith(d)
        ]
        if not names:
            raise DatasetError(
                f"{base}: no KITTI raw drive (<date>/<date>_drive_NNNN_sync/, see docs/datasets.md)"
            )
    if gts == "auto":
        gts_dir = base / "gts" if (base / "gts").is_dir() else None
    elif gts in (None, False, ""):
        gts_dir = None
    else:
        gts_dir = Path(gts).expanduser().resolve()
        if not gts_dir.is_dir():
            raise DatasetError(f"kitti-raw option 'gts': no such directory: {gts_dir}")

    scenes = [
        _drive(pykitti, base, n, cams, frames, keyframe_every, float(imu_height), gts_dir, check_files)
        for n in names
    ]
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


def _bad_oxts(files: list[Path]) -> str | None:
    """The first OXTS file pykitti cannot read, with why (for the error message); None: all parse."""
    for p in files:
        try:
            lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
            if len(lines) != 1:
                return f"{p}: expected one line (an OXTS packet), got {len(lines)}"
            v = lines[0].split()
            if len(v) != len(OXTS_FIELDS):
                return (
                    f"{p}: expected {len(OXTS_FIELDS)} values (lat lon alt roll pitch yaw ...), got {len(v)}"
                )
            [float(x) for x in v]
        except (OSError, ValueError) as e:
            return f"{p}: not an OXTS packet ({e})"
    return None


def _drive(pykitti, base: Path, name: str, cams, frames_opt, keyframe_every, h, gts_dir, check) -> Scene:
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
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            raw = pykitti.raw(str(base), date, num)  # all frames: the world is the drive's first frame
    except KeyError as e:
        raise DatasetError(
            f"{date_dir}: calibration entry {e.args[0]!r} missing (calib_cam_to_cam.txt needs P_rect_00-03 "
            "and R_rect_00-03; calib_velo_to_cam.txt and calib_imu_to_velo.txt need R and T)"
        ) from None
    except (ValueError, TypeError, IndexError) as e:
        bad = _bad_oxts([oxts_dir / f"{i:010d}.txt" for i in range(n)])
        raise DatasetError(bad or f"{date_dir}: cannot parse the calibration files ({e})") from None
    if len(raw.oxts) != n:
        raise DatasetError(f"{oxts_dir}: pykitti read {len(raw.oxts)} OXTS packets, expected {n}")
    T_w_imu = np.stack([np.asarray(o.T_w_imu, np.float64) for o in raw.oxts])
    for f, T in enumerate(T_w_imu):
        if not is_rigid(T):
            raise DatasetError(
                f"{oxts_dir / f'{f:010d}.txt'}: not a finite pose (lat, lon, alt, roll, pitch, yaw)"
            )
    cal = _calib(raw, pykitti, date_dir, cams, h)
    T_imu_e = np.linalg.inv(T_ego_from_imu(h))
    ids = _frames(frames_opt, n, f"drive {name}")

    listing = {i: _listing(ddir / f"image_0{i}" / "data") for i in cams}
    depth_l = {i: _listing(ddir / "proj_depth" / "groundtruth" / f"image_0{i}") for i in cams}
    sem_l = {i: _listing(ddir / "semantics" / f"image_0{i}") for i in cams}
    velo_l = _listing(ddir / "velodyne_points" / "data")
    key_ids = set(range(0, n, keyframe_every))
    if not key_ids.intersection(ids):
        raise DatasetError(
            f"drive {name}: no keyframe among the selected frames (keyframes: every {keyframe_every}th frame)"
        )

    K = {}
    for i in cams:  # intrinsics at the images' size (KITTI's are S_rect_0i; a resized copy is scaled)
        K[i] = cal["K"][i]
        first = ddir / f"image_0{i}" / "data" / f"{ids[0]:010d}.png"
        S = cal["S_rect"][i]
        if S is not None and first.is_file():
            W, H = _image_size(first)
            if (W, H) != S:
                K[i] = scale_intrinsics(K[i], W / S[0], H / S[1])
                log.info(
                    "drive %s, cam%d: images are %dx%d, S_rect_0%d %gx%g: K scaled", name, i, W, H, i, *S
                )

    out: list[Frame] = []
    for f in ids:
        fname = f"{f:010d}"
        images = {}
        for i in cams:
            rel = f"{date}/{name}_sync/image_0{i}/data/{fname}.png"
            if check and fname + ".png" not in listing[i]:
                raise DatasetError(f"drive {name}, frame {f}, camera cam{i}: file not found: {base / rel}")
            dp = next(
                (ddir / "proj_depth" / "groundtruth" / f"image_0{i}" / (fname + e)
                 for e in (".npy", ".png") if fname + e in depth_l[i]),
                None,
            )  # fmt: skip
            sp = ddir / "semantics" / f"image_0{i}" / (fname + ".png") if fname + ".png" in sem_l[i] else None
            images[f"cam{i}"] = CameraImage(
                camera=f"cam{i}",
                path=base / rel,
                rel_path=rel,
                K=K[i],
                T_ego_from_cam=cal["T_ego_from_cam"][i],
                depth_path=dp,
                semantics_path=sp,
                meta={"frame": f},
            )
        p = raw.oxts[f].packet
        meta: dict[str, Any] = {"drive": name, "frame": f, "lat": p.lat, "lon": p.lon, "alt": p.alt}
        key = f in key_ids
        velo = fname + ".bin" in velo_l
        occ = None
        token = f"{name}_{fname}"
        if key and gts_dir is not None:
            q = gts_dir / name / token / "labels.npz"
            occ = q if q.is_file() else None
        out.append(
            Frame(
                token=token,
                timestamp=float(times[f]),
                keyframe=key,
                T_world_from_ego=T_w_imu[f] @ T_imu_e,
                images=images,
                lidar_path=ddir / "velodyne_points" / "data" / f"{fname}.bin" if velo else None,
                occupancy_path=occ,
                T_ego_from_lidar=cal["T_ego_from_velo"] if velo else None,
                meta=meta,
            )
        )
    p0 = raw.oxts[0].packet
    smeta = {
        "date": date,
        "drive": num,
        "imu_height_m": h,
        "T_ego_from_imu": T_ego_from_imu(h).tolist(),
        "T_ego_from_velo": cal["T_ego_from_velo"].tolist(),
        "world_origin_lat_lon_alt": [p0.lat, p0.lon, p0.alt],
        "mercator_scale": float(np.cos(np.radians(p0.lat))),
        "keyframes": f"every {keyframe_every}th frame",
    }
    return Scene(name=name, frames=out, meta=smeta)
