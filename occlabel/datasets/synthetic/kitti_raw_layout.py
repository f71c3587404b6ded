"""``synth_kitti_raw``: render synthetic drives and write them in the KITTI raw (synced + rectified) layout.

The output is read by pykitti (``pykitti.raw(root, "2011_09_26", "0001")``) and by occlabel's ``kitti-raw``
adapter::

    <root>/2011_09_26/calib_cam_to_cam.txt     S_rect_0i (image size), R_rect_00, P_rect_00..03 = K [I | t_i]
    <root>/2011_09_26/calib_velo_to_cam.txt    R, T: velodyne -> unrectified cam0 (= inv(R_rect_00) rect cam0)
    <root>/2011_09_26/calib_imu_to_velo.txt    R, T: IMU -> velodyne
    <root>/2011_09_26/2011_09_26_drive_NNNN_sync/
        oxts/timestamps.txt, oxts/data/FFFFFFFFFF.txt     OXTS packets (30 values, below)
        image_0i/timestamps.txt, image_0i/data/FFFFFFFFFF.png    the cameras asked for (0, 1 grey; 2, 3 RGB)
        velodyne_points/timestamps.txt, velodyne_points/data/FFFFFFFFFF.bin   float32 N x 4 (x, y, z, 0)
        proj_depth/groundtruth/image_0i/FFFFFFFFFF.npy   float32 metric z-depth of camera i (NaN sky)
        semantics/image_0i/FFFFFFFFFF.png                uint8 Occ3D ids of camera i (254 sky)
    <root>/gts/<date>_drive_NNNN/<token>/labels.npz   keyframes: Occ3D-layout occupancy in the KITTI raw ego
                                                      frame (the IMU moved down to the road)
    <root>/occlabel.json                              the same records in the folder format (what the adapter
                                                      must read back)
    <root>/synthetic.json                             generator parameters and per-image exposure gains

Drives are numbered 0001, 0002, ... (one synthetic scene each) under the date 2011_09_26; frame 0 is at
2011-09-26 13:02:25 plus ``frame / fps`` seconds (nanoseconds written), the same time for every sensor.

The rig (``raw_rig``): KITTI's rectified cameras (K, ``P_i = K [I | t_i]`` with kitti_layout's
``CAMERA_OFFSETS``), cam0's centre 1.65 m above the road and at (1.5, 0.27) m in the synthetic ego frame
(rear axle), pitched down by ``CAMERA_PITCH_DEG``; ``R_rect_00`` a small rotation (``R_RECT_00``), so the
adapter has to compose it; the velodyne at the synthetic LiDAR mount with the ego's axes; the IMU
(x forward, y left, z up, level) ``IMU_HEIGHT_M`` = 0.93 m above the road at ``IMU_IN_EGO`` (1.08 m behind
cam0, like KITTI's). The KITTI raw ego frame (the IMU moved down to the road) is therefore upright, on the
road, and the synthetic world's occupancy applies to it.

OXTS (``oxts_packets``): the synthetic world's map frame is taken as east-north-up; the IMU poses are
written through the inverse of pykitti's scaled Mercator projection (first frame at ``ORIGIN_LAT_LON_ALT``,
Karlsruhe), so pykitti reads back ``T_w_imu`` = the IMU pose in the map frame shifted to the first frame's IMU
(round trip ~1e-9 m); roll, pitch, yaw with ``R = Rz(yaw) Ry(pitch) Rx(roll)``. Velocities, accelerations
(specific force: gravity included, like an accelerometer) and angular rates are finite differences of the
poses; accuracies and status flags are constants.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from occlabel.conventions import GRIDS
from occlabel.datasets.base import Frame, Scene, rigid_transform
from occlabel.datasets.folder import MANIFEST
from occlabel.datasets.kitti import R_EGO_FROM_CV
from occlabel.datasets.kitti_raw import IMU_HEIGHT_M, T_ego_from_imu, parse_timestamp
from occlabel.datasets.synthetic.common import (
    META,
    CameraFiles,
    Keyframe,
    LidarWindow,
    finish,
    moving_rig_labels,
    prepare_root,
    save_npz,
    torch_threads,
    write_rig_images,
    write_scenes,
)
from occlabel.datasets.synthetic.kitti_layout import (
    CAM0_IN_EGO,
    CAMERA_HEIGHT_M,
    CAMERA_OFFSETS,
    DEFAULT_SIZE,
    kitti_rig,
    velodyne_scan,
)
from occlabel.datasets.synthetic.render import LIDAR_MOUNT, render_cameras, render_lidar
from occlabel.datasets.synthetic.world import World, build_world
from occlabel.errors import OccLabelError

FORMAT = "occlabel.synthetic-kitti-raw/1"
DATE = "2011_09_26"
START = dt.datetime(2011, 9, 26, 13, 2, 25)
#: latitude, longitude (degrees) and altitude (m) of the IMU at frame 0 of every drive
ORIGIN_LAT_LON_ALT = (49.011212804408, 8.4228850417969, 112.83492279053)
EARTH_RADIUS_M = 6378137.0  # pykitti's
GRAVITY = 9.81
#: IMU (x, y) in the synthetic ego frame: 1.08 m behind cam0 and 0.32 m to the left of the velodyne (KITTI)
IMU_IN_EGO = (CAM0_IN_EGO[0] - 1.08, 0.32)
CAMERA_PITCH_DEG = 0.6  # the rectified cameras look down by this much (KITTI's by about 1 degree)


def _axis_angle(axis, degrees: float) -> np.ndarray:
    """Rotation <np.float64: 3, 3> by ``degrees`` about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    Kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    a = math.radians(degrees)
    return np.eye(3) + math.sin(a) * Kx + (1.0 - math.cos(a)) * Kx @ Kx


#: rectifying rotation of cam0 (p_rect = R_RECT_00 p_unrect): half a degree about a tilted axis, like KITTI's
R_RECT_00 = _axis_angle((0.5, -0.4, 0.6), 0.5)
_OUTPUTS = (DATE, "gts", MANIFEST, META)
#: constant OXTS fields: pos_accuracy, vel_accuracy (m, m/s), navstat, numsats, posmode, velmode, orimode
_OXTS_STATUS = "0.02 0.02 4 10 4 4 6"


def _roty(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def raw_rig(cameras: tuple[int, ...], size: tuple[int, int]) -> dict:
    """The synthetic KITTI raw rig.

    Returns:
        {"cams": camera dicts (name "cam<i>", index, K <3, 3>, P <3, 4>, T_ego_from_cam <4, 4> in the raw ego
        frame, width, height) for ``cameras``; "all": the same for cameras 0-3;
        "T_egoS_from_ego", "T_ego_from_velo", "T_velo_from_imu", "T_cam0unrect_from_velo": <np.float64: 4, 4>
        (egoS: the synthetic ego frame, rear axle on the ground; ego: the KITTI raw ego frame)}.
    """
    T_egoS_from_ego = rigid_transform(np.eye(3), [IMU_IN_EGO[0], IMU_IN_EGO[1], 0.0])
    c0 = np.array([CAM0_IN_EGO[0] - IMU_IN_EGO[0], CAM0_IN_EGO[1] - IMU_IN_EGO[1], CAMERA_HEIGHT_M])
    T_ego_from_cam0 = rigid_transform(_roty(math.radians(CAMERA_PITCH_DEG)) @ R_EGO_FROM_CV, c0)
    out = {}
    for key, idx in (("cams", cameras), ("all", (0, 1, 2, 3))):
        cams = kitti_rig(idx, size)
        for c in cams:  # T_ego_from_cam_i = T_ego_from_cam0 @ inv([I | t_i]); P_i = K [I | t_i]
            T_i_from_0 = rigid_transform(np.eye(3), CAMERA_OFFSETS[c["index"]])
            c["T_ego_from_cam"] = T_ego_from_cam0 @ np.linalg.inv(T_i_from_0)
        out[key] = cams
    T_ego_from_velo = np.linalg.inv(T_egoS_from_ego) @ rigid_transform(np.eye(3), LIDAR_MOUNT)
    R4 = rigid_transform(R_RECT_00, [0.0, 0.0, 0.0])
    out.update(
        T_egoS_from_ego=T_egoS_from_ego,
        T_ego_from_velo=T_ego_from_velo,
        T_velo_from_imu=np.linalg.inv(T_ego_from_velo) @ T_ego_from_imu(IMU_HEIGHT_M),
        T_cam0unrect_from_velo=np.linalg.inv(R4) @ np.linalg.inv(T_ego_from_cam0) @ T_ego_from_velo,
    )
    return out


def _num(x: float) -> str:
    return repr(float(x))  # shortest text that reads back to the same float64


def _row(values) -> str:
    return " ".join(_num(v) for v in np.asarray(values, np.float64).reshape(-1))


def oxts_packets(
    T_world_from_imu: np.ndarray,
    times: np.ndarray,
    origin: tuple[float, float, float] = ORIGIN_LAT_LON_ALT,
) -> list[str]:
    """OXTS packet lines (30 values) that pykitti reads back to the given IMU poses.

    Args:
        T_world_from_imu: <float: N, 4, 4> IMU poses in an east-north-up frame (metres), rigid.
        times: <float: N> seconds (for the finite-difference velocities and rates).
        origin: latitude, longitude (degrees), altitude (m) of the first pose.
    Returns:
        N lines; ``pykitti.utils.load_oxts_packets_and_poses`` gives ``T_w_imu[i]`` = ``T_world_from_imu[i]``
        with the first pose's translation subtracted (pykitti's origin), to ~1e-9 m and ~1e-15 rad.
    """
    T = np.asarray(T_world_from_imu, np.float64)
    t = np.asarray(times, np.float64)
    lat0, lon0, alt0 = (float(v) for v in origin)
    # pykitti: s = cos(lat_0); x = s lon pi r / 180; y = s r ln(tan((90 + lat) pi / 360)); z = alt
    s = np.cos(lat0 * np.pi / 180.0)
    mx0 = s * lon0 * np.pi * EARTH_RADIUS_M / 180.0
    my0 = s * EARTH_RADIUS_M * np.log(np.tan((90.0 + lat0) * np.pi / 360.0))
    d = T[:, :3, 3] - T[0, :3, 3]
    lon = (mx0 + d[:, 0]) * 180.0 / (s * np.pi * EARTH_RADIUS_M)
    lat = np.arctan(np.exp((my0 + d[:, 1]) / (s * EARTH_RADIUS_M))) * 360.0 / np.pi - 90.0
    alt = alt0 + d[:, 2]
    lat[0], lon[0], alt[0] = lat0, lon0, alt0  # pykitti's scale and origin come from these exact values
    R = T[:, :3, :3]
    roll = np.arctan2(R[:, 2, 1], R[:, 2, 2])
    pitch = np.arctan2(-R[:, 2, 0], np.hypot(R[:, 2, 1], R[:, 2, 2]))
    yaw = np.arctan2(R[:, 1, 0], R[:, 0, 0])
    n = len(T)
    if n > 1:
        v_w = np.gradient(T[:, :3, 3], t, axis=0)
        a_w = np.gradient(v_w, t, axis=0)
        dR = np.gradient(R, t, axis=0)
    else:
        v_w = a_w = np.zeros((n, 3))
        dR = np.zeros((n, 3, 3))
    a_w = a_w + [0.0, 0.0, GRAVITY]  # specific force, as an accelerometer measures it
    v_b = np.einsum("nji,nj->ni", R, v_w)
    f_b = np.einsum("nji,nj->ni", R, a_w)
    W = np.einsum("nji,njk->nik", R, dR)  # R^T dR/dt = [w]x (body rates)
    w_b = 0.5 * np.stack([W[:, 2, 1] - W[:, 1, 2], W[:, 0, 2] - W[:, 2, 0], W[:, 1, 0] - W[:, 0, 1]], 1)
    lines = []
    for i in range(n):
        exact = " ".join(_num(x) for x in (lat[i], lon[i], alt[i], roll[i], pitch[i], yaw[i]))
        rest = [v_w[i, 1], v_w[i, 0], *v_b[i], *f_b[i], *f_b[i], *w_b[i], *w_b[i]]
        lines.append(f"{exact} {' '.join(f'{x:.10g}' for x in rest)} {_OXTS_STATUS}")
    return lines


def timestamp_text(seconds: float) -> str:
    """KITTI raw timestamp text of ``seconds`` after ``START``: ``YYYY-MM-DD HH:MM:SS.nnnnnnnnn``."""
    ns = round(seconds * 1e9)
    whole = START + dt.timedelta(seconds=ns // 1_000_000_000)
    return f"{whole:%Y-%m-%d %H:%M:%S}.{ns % 1_000_000_000:09d}"


def _write_calib(date_dir: Path, rig: dict, size: tuple[int, int]) -> None:
    W, H = int(size[0]), int(size[1])
    stamp = "calib_time: 09-Jan-2012 13:57:47"
    cc = [stamp, "corner_dist: 9.950000e-02"]
    for c in rig["all"]:
        i = c["index"]
        # unrectified K_0i, D_0i, R_0i, T_0i: placeholders (readers use the rectified S_rect, R_rect, P_rect)
        cc += [f"S_0{i}: {W}.0 {H}.0", f"K_0{i}: {_row(c['K'])}", f"D_0{i}: 0.0 0.0 0.0 0.0 0.0",
               f"R_0{i}: {_row(np.eye(3))}", f"T_0{i}: {_row(CAMERA_OFFSETS[i])}",
               f"S_rect_0{i}: {W}.0 {H}.0", f"R_rect_0{i}: {_row(R_RECT_00)}",
               f"P_rect_0{i}: {_row(c['P'])}"]  # fmt: skip
    (date_dir / "calib_cam_to_cam.txt").write_text("\n".join(cc) + "\n")
    for name, T in (("calib_velo_to_cam.txt", rig["T_cam0unrect_from_velo"]),
                    ("calib_imu_to_velo.txt", rig["T_velo_from_imu"])):  # fmt: skip
        extra = ["delta_f: 0.0 0.0", "delta_c: 0.0 0.0"] if name == "calib_velo_to_cam.txt" else []
        lines = [stamp, f"R: {_row(T[:3, :3])}", f"T: {_row(T[:3, 3])}", *extra]
        (date_dir / name).write_text("\n".join(lines) + "\n")


def synth_kitti_raw(
    out: str | Path,
    drives: int = 1,
    frames: int = 11,
    cameras: tuple[int, ...] = (2,),
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    keyframe_every: int = 5,
    fps: float = 10.0,
    progress: bool = False,
    overwrite: bool = False,
    *,
    ego_speed: float | None = None,
    shadows: bool = True,
    threads: int | None = 1,
    labels: bool = True,
    velodyne: bool = True,
) -> Path:
    """Render ``drives`` synthetic drives (2011_09_26_drive_0001, ...) in the KITTI raw layout.

    Args:
        out: dataset root to write (an existing dataset there needs ``overwrite``).
        drives: number of drives.
        frames: frames per drive.
        cameras: camera indices to write (0, 1 grey; 2, 3 colour); calib_cam_to_cam.txt always has all four.
        size: (width, height) of every image (also S_rect_0i).
        seed: master seed; the output is a deterministic function of the arguments.
        keyframe_every: Occ3D labels for frames 0, k, 2k, ... (the adapter's ``keyframe_every``).
        fps: frame rate (timestamps).
        ego_speed: m/s (None: drawn in [5, 10]; 0 parks the ego car).
        shadows: cast sun shadows.
        threads: torch CPU threads while rendering (see ``synth``).
        labels: write Occ3D-layout labels of the keyframes under ``gts/``.
        velodyne: write ``velodyne_points/``.
    Returns:
        The dataset root (absolute).
    """
    cameras = tuple(sorted({int(c) for c in cameras}))
    if drives < 1 or frames < 1 or keyframe_every < 1 or not fps > 0 or not cameras:
        raise OccLabelError(
            "synth --layout kitti-raw: drives, frames, keyframe_every, fps and cameras must be positive"
        )
    if drives > 9999:
        raise OccLabelError("synth --layout kitti-raw: at most 9999 drives")
    with torch_threads(threads):
        return _write(
            Path(out).expanduser().resolve(), drives, frames, cameras, size, seed, keyframe_every, fps,
            progress, overwrite, ego_speed, shadows, labels, velodyne,
        )  # fmt: skip


@dataclass(frozen=True)
class _Run:
    """The arguments every drive of one ``synth_kitti_raw`` call is written with."""

    root: Path
    rig: dict  # raw_rig's
    seed: int
    n_frames: int
    fps: float
    keyframe_every: int
    ego_speed: float | None
    shadows: bool
    labels: bool
    velodyne: bool


def _write(root, n_drives, n_frames, cameras, size, seed, keyframe_every, fps, progress, overwrite, ego_speed,
           shadows, with_labels, with_velo) -> Path:  # fmt: skip
    prepare_root(root, _OUTPUTS, overwrite)
    rig = raw_rig(cameras, size)
    (root / DATE).mkdir(parents=True, exist_ok=True)
    _write_calib(root / DATE, rig, size)
    run = _Run(root, rig, seed, n_frames, fps, keyframe_every, ego_speed, shadows, with_labels, with_velo)
    records, smetas = write_scenes(
        n_drives, n_frames, "synth kitti-raw", progress, partial(_write_drive, run)
    )
    meta = {
        "format": FORMAT,
        "layout": "kitti-raw",
        "cameras": [c["name"] for c in rig["cams"]],
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "fps": float(fps),
        "keyframe_every": int(keyframe_every),
        "imu_height_m": IMU_HEIGHT_M,
        "origin_lat_lon_alt": list(ORIGIN_LAT_LON_ALT),
        "scenes": smetas,
    }
    return finish(root, records, meta)


@dataclass
class _Drive:
    """One drive being written: its directory, world, timestamps and what its frames collect."""

    name: str  # <date>_drive_NNNN
    ddir: Path  # its _sync directory
    world: World
    stamps: list[str]  # timestamp text per frame
    lidar: LidarWindow
    T_w_imu: list[np.ndarray] = field(default_factory=list)  # IMU poses in the synthetic world
    frames: list[Frame] = field(default_factory=list)
    T_kw: np.ndarray | None = None  # the OXTS world (the map frame moved to the first IMU position)


def _write_drive(run: _Run, si: int, bar) -> tuple[Scene, dict]:
    """Render and write drive ``si`` (timestamps, frames, OXTS); returns its record and its synthetic.json
    entry."""
    name = f"{DATE}_drive_{si + 1:04d}"
    world = build_world(run.seed, max(run.n_frames - 1, 1) / run.fps, ego_speed=run.ego_speed, scene_index=si)
    stamps = [timestamp_text(i / run.fps) for i in range(run.n_frames)]
    drive = _Drive(name, run.root / DATE / f"{name}_sync", world, stamps, LidarWindow(run.n_frames))
    smeta = {"name": name, **world.summary(), "exposure": {}}
    cams = run.rig["cams"]
    dirs = ["oxts"] + [f"image_0{c['index']}" for c in cams] + (["velodyne_points"] if run.velodyne else [])
    for d in dirs:
        (drive.ddir / d / "data").mkdir(parents=True, exist_ok=True)
        (drive.ddir / d / "timestamps.txt").write_text("".join(s + "\n" for s in stamps))
    for fi in range(run.n_frames):
        frame, gains = _write_frame(run, drive, fi)
        smeta["exposure"][frame.token] = gains
        drive.frames.append(frame)
        for key, window in drive.lidar.due(fi):
            op = run.root / "gts" / name / drive.frames[key.index].token / "labels.npz"
            op.parent.mkdir(parents=True, exist_ok=True)
            save_npz(op, moving_rig_labels(world, cams, GRIDS["occ3d"], key, window))
            drive.frames[key.index].occupancy_path = op
        bar.update(1)
    times = np.arange(run.n_frames) / run.fps
    for fi, line in enumerate(oxts_packets(np.stack(drive.T_w_imu), times)):
        (drive.ddir / "oxts" / "data" / f"{fi:010d}.txt").write_text(line + "\n")
    return Scene(name=name, frames=drive.frames), smeta


def _write_frame(run: _Run, drive: _Drive, fi: int) -> tuple[Frame, dict[str, float]]:
    """Render frame ``fi``: write its images, ground truth and velodyne scan, collect its IMU pose, keep the
    sweep (and a keyframe's depths) in ``drive.lidar``; returns the frame's record and exposure gains."""
    t, fname, world, ddir = fi / run.fps, f"{fi:010d}", drive.world, drive.ddir
    T_wS_egoS = world.ego_pose(t)
    T_w_ego = T_wS_egoS @ run.rig["T_egoS_from_ego"]
    drive.T_w_imu.append(T_w_ego @ T_ego_from_imu(IMU_HEIGHT_M))
    if drive.T_kw is None:
        drive.T_kw = rigid_transform(np.eye(3), -drive.T_w_imu[0][:3, 3])
    cams = run.rig["cams"]
    res = render_cameras(world, cams, T_w_ego, t, shadows=run.shadows)

    def files(cam: dict) -> CameraFiles:
        i = cam["index"]
        return CameraFiles(ddir / f"image_0{i}" / "data" / f"{fname}.png",
                           ddir / "proj_depth" / "groundtruth" / f"image_0{i}" / f"{fname}.npy",
                           ddir / "semantics" / f"image_0{i}" / f"{fname}.png")  # fmt: skip

    images, gains = write_rig_images(run.root, world, t, cams, res, files, kitti=True)
    key = fi % run.keyframe_every == 0
    if run.velodyne or run.labels:
        pts_egoS = render_lidar(world, T_wS_egoS, t)["points_ego"].numpy().astype(np.float64)
        if run.velodyne:
            velodyne_scan(pts_egoS).tofile(ddir / "velodyne_points" / "data" / f"{fname}.bin")
        drive.lidar.add_sweep(fi, T_wS_egoS, pts_egoS)
    if key and run.labels:
        depths = {c["name"]: (res["depth"][ci], T_w_ego) for ci, c in enumerate(cams)}
        drive.lidar.pending[fi] = Keyframe(fi, T_w_ego, t, depths)
    frame = Frame(token=f"{drive.name}_{fname}", timestamp=parse_timestamp(drive.stamps[fi]), keyframe=key,
                  T_world_from_ego=drive.T_kw @ T_w_ego, images=images)  # fmt: skip
    return frame, gains
