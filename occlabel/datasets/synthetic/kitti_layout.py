"""``synth_kitti``: render synthetic sequences and write them in the KITTI odometry / SemanticKITTI layout.

The output is read by pykitti (``pykitti.odometry(root, "00")``) and by occlabel's ``kitti`` adapter::

    <root>/sequences/XX/image_0|1|2|3/NNNNNN.png   the cameras asked for (cam0/cam1 grey, cam2/cam3 RGB)
    <root>/sequences/XX/calib.txt                  P0..P3 (K [I | t_i]) and Tr (velodyne -> cam0)
    <root>/sequences/XX/times.txt                  frame / fps seconds
    <root>/poses/XX.txt                            T_world_from_cam0 (world = cam0 at frame 0), 3x4 rows
    <root>/sequences/XX/velodyne/NNNNNN.bin        float32 N x 4 (x, y, z, 0) LiDAR scans, velodyne frame
    <root>/sequences/XX/voxels/NNNNNN.label|.invalid   keyframes: SemanticKITTI voxel ground truth
    <root>/sequences/XX/depth_<i>/NNNNNN.npy       float32 metric z-depth of camera i (NaN sky)
    <root>/sequences/XX/semantics_<i>/NNNNNN.png   uint8 Occ3D ids of camera i (254 sky)
    <root>/gts/XX/XX_NNNNNN/labels.npz             keyframes: Occ3D-layout occupancy in the KITTI ego frame
    <root>/occlabel.json                           the same records in the folder format (what the adapter
                                                   must read back)
    <root>/synthetic.json                          generator parameters and per-image exposure gains

The rig is KITTI's: four rectified cameras sharing cam0's orientation, level, cam0's centre 1.65 m above
the road and (1.5 m, +0.27 m) from the synthetic ego origin (rear axle), cam1 0.54 m to cam0's right,
cam2 6 cm to its left, cam3 48 cm to its right (``CAMERA_OFFSETS``: cam0's centre in camera i's frame, as
``P_i = K [I | t_i]`` encodes it, with small vertical and depth components like KITTI's calibration);
82 degrees horizontal field of view. The KITTI ego frame (occlabel.datasets.kitti: ground under cam0) is
therefore upright and the synthetic world's occupancy applies to it. The velodyne sits at the synthetic
LiDAR mount, axes x forward, y left, z up. SemanticKITTI voxels: the ``semantickitti`` grid in the
velodyne frame, Occ3D classes mapped to SemanticKITTI raw ids (``conventions.OCC3D_TO_SEMANTICKITTI_RAW``);
``.invalid`` marks voxels that no LiDAR ray of the keyframe and of the 2 frames either side crossed or hit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from occlabel.conventions import FREE, GRIDS, OCC3D_ID, OCC3D_TO_SEMANTICKITTI_RAW
from occlabel.datasets.base import Frame, Scene, rigid_transform
from occlabel.datasets.folder import MANIFEST
from occlabel.datasets.kitti import T_ego_from_cam0
from occlabel.datasets.synthetic.common import (
    META,
    CameraFiles,
    Keyframe,
    LidarWindow,
    finish,
    lidar_mask,
    moving_rig_labels,
    prepare_root,
    save_npz,
    torch_threads,
    write_rig_images,
    write_scenes,
)
from occlabel.datasets.synthetic.occupancy import occupancy
from occlabel.datasets.synthetic.render import LIDAR_MOUNT, render_cameras, render_lidar
from occlabel.datasets.synthetic.world import build_world
from occlabel.errors import OccLabelError

FORMAT = "occlabel.synthetic-kitti/1"
CAMERA_HEIGHT_M = 1.65
CAM0_IN_EGO = (1.5, 0.27)  # cam0's (x, y) in the synthetic ego frame (rear axle on the ground)
#: t_i: cam0's centre in camera i's frame, metres (P_i[:, 3] = K t_i), close to KITTI's calibration
CAMERA_OFFSETS = {
    0: (0.0, 0.0, 0.0),
    1: (-0.54, 0.0, 0.0),
    2: (0.0598, -0.0003, 0.0027),
    3: (-0.4733, 0.0033, 0.0048),
}
HFOV_DEG = 82.0
DEFAULT_SIZE = (320, 96)
_OUTPUTS = ("sequences", "poses", "gts", MANIFEST, META)


def kitti_rig(cameras: tuple[int, ...], size: tuple[int, int]) -> list[dict]:
    """Cameras in the KITTI ego frame: dicts with name ("cam<i>"), index, K <3, 3>, T_ego_from_cam <4, 4>,
    P <3, 4>, width, height."""
    W, H = int(size[0]), int(size[1])
    f = (W / 2) / math.tan(math.radians(HFOV_DEG) / 2)
    K = np.array([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])
    T_e0 = T_ego_from_cam0(CAMERA_HEIGHT_M)
    out = []
    for i in cameras:
        if i not in CAMERA_OFFSETS:
            raise OccLabelError(f"synth --layout kitti: unknown camera {i} (0-3)")
        t = np.asarray(CAMERA_OFFSETS[i], np.float64)
        P = np.concatenate([K, (K @ t)[:, None]], 1)
        out.append(
            {
                "name": f"cam{i}",
                "index": i,
                "K": K,
                "P": P,
                "T_ego_from_cam": T_e0 @ np.linalg.inv(rigid_transform(np.eye(3), t)),
                "width": W,
                "height": H,
            }
        )
    return out


def _row(values) -> str:
    return " ".join(f"{float(v):.12e}" for v in np.asarray(values).reshape(-1))


def synth_kitti(
    out: str | Path,
    sequences: int = 1,
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
    voxels: bool = True,
) -> Path:
    """Render ``sequences`` synthetic sequences ("00", "01", ...) in the KITTI odometry layout.

    Args:
        out: dataset root to write (an existing dataset there needs ``overwrite``).
        sequences: number of sequences.
        frames: frames per sequence.
        cameras: camera indices to write (0, 1 grey; 2, 3 colour); calib.txt always has P0-P3.
        size: (width, height) of every image.
        seed: master seed; the output is a deterministic function of the arguments.
        keyframe_every: SemanticKITTI's voxel cadence: voxels (and Occ3D labels) for frames 0, k, 2k, ...
        fps: frame rate (times.txt).
        ego_speed: m/s (None: drawn in [5, 10]; 0 parks the ego car).
        shadows: cast sun shadows.
        threads: torch CPU threads while rendering (see ``synth``).
        labels: write Occ3D-layout labels of the keyframes under ``gts/``.
        voxels: write SemanticKITTI voxels of the keyframes (without them the adapter's keyframes are
            every 5th frame, its default cadence).
    Returns:
        The dataset root (absolute).
    """
    cameras = tuple(sorted({int(c) for c in cameras}))
    if sequences < 1 or frames < 1 or keyframe_every < 1 or not fps > 0 or not cameras:
        raise OccLabelError(
            "synth --layout kitti: sequences, frames, keyframe_every, fps and cameras must be positive"
        )
    with torch_threads(threads):
        return _write(
            Path(out).expanduser().resolve(), sequences, frames, cameras, size, seed, keyframe_every, fps,
            progress, overwrite, ego_speed, shadows, labels, voxels,
        )  # fmt: skip


@dataclass(frozen=True)
class _RigFrames:
    """The fixed transforms of the synthetic KITTI rig, <np.float64: 4, 4> (egoS: the synthetic ego frame,
    rear axle on the ground; egoK: the KITTI ego frame, ground under cam0; both upright)."""

    T_egoK_from_cam0: np.ndarray
    T_egoS_from_egoK: np.ndarray
    T_egoK_from_velo: np.ndarray
    Tr: np.ndarray  # cam0 from velodyne, calib.txt's Tr

    @classmethod
    def make(cls) -> _RigFrames:
        T_e0 = T_ego_from_cam0(CAMERA_HEIGHT_M)
        T_egoS_from_egoK = rigid_transform(np.eye(3), [CAM0_IN_EGO[0], CAM0_IN_EGO[1], 0.0])
        T_egoK_from_velo = rigid_transform(
            np.eye(3), np.asarray(LIDAR_MOUNT) - [CAM0_IN_EGO[0], CAM0_IN_EGO[1], 0.0]
        )
        return cls(T_e0, T_egoS_from_egoK, T_egoK_from_velo, np.linalg.inv(T_e0) @ T_egoK_from_velo)


@dataclass(frozen=True)
class _Run:
    """The arguments every sequence of one ``synth_kitti`` call is written with."""

    root: Path
    cams: list[dict]  # the cameras written
    all_cams: list[dict]  # cam0-cam3 (calib.txt)
    rig: _RigFrames
    lut: np.ndarray  # Occ3D id -> SemanticKITTI raw id, <uint16: 256>
    seed: int
    n_frames: int
    fps: float
    keyframe_every: int
    ego_speed: float | None
    shadows: bool
    labels: bool
    voxels: bool


def _write(root, n_seq, n_frames, cameras, size, seed, keyframe_every, fps, progress, overwrite, ego_speed,
           shadows, with_labels, with_voxels) -> Path:  # fmt: skip
    prepare_root(root, _OUTPUTS, overwrite)
    run = _Run(
        root, kitti_rig(cameras, size), kitti_rig((0, 1, 2, 3), size), _RigFrames.make(), semantickitti_lut(),
        seed, n_frames, fps, keyframe_every, ego_speed, shadows, with_labels, with_voxels,
    )  # fmt: skip
    records, smetas = write_scenes(n_seq, n_frames, "synth kitti", progress, partial(_write_sequence, run))
    meta = {
        "format": FORMAT,
        "layout": "kitti",
        "cameras": [c["name"] for c in run.cams],
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "fps": float(fps),
        "keyframe_every": int(keyframe_every),
        "camera_height_m": CAMERA_HEIGHT_M,
        "scenes": smetas,
    }
    return finish(root, records, meta)


def semantickitti_lut() -> np.ndarray:
    """<np.uint16: 256> Occ3D id -> SemanticKITTI raw id (free: 0)."""
    lut = np.zeros(256, np.uint16)
    for name, raw in OCC3D_TO_SEMANTICKITTI_RAW.items():
        lut[OCC3D_ID[name]] = raw
    lut[FREE] = 0
    return lut


def velodyne_scan(pts_ego: np.ndarray) -> np.ndarray:
    """<np.float32: N, 4> (x, y, z, 0) velodyne scan of LiDAR returns <N, 3> in the synthetic ego frame (the
    velodyne frame: axes of the ego, at the mount)."""
    scan = np.zeros((len(pts_ego), 4), np.float32)
    scan[:, :3] = pts_ego - np.asarray(LIDAR_MOUNT)
    return scan


def _write_sequence(run: _Run, si: int, bar) -> tuple[Scene, dict]:
    """Render and write sequence ``si`` (calib.txt, times.txt, frames, poses); returns its record and its
    synthetic.json entry."""
    seq = f"{si:02d}"
    sdir = run.root / "sequences" / seq
    sdir.mkdir(parents=True, exist_ok=True)
    world = build_world(run.seed, max(run.n_frames - 1, 1) / run.fps, ego_speed=run.ego_speed, scene_index=si)
    smeta = {"name": seq, **world.summary(), "exposure": {}}
    Tr = run.rig.Tr
    calib = [f"P{c['index']}: {_row(c['P'])}" for c in run.all_cams] + [f"Tr: {_row(Tr[:3])}"]
    (sdir / "calib.txt").write_text("\n".join(calib) + "\n")
    (sdir / "times.txt").write_text("".join(f"{i / run.fps:.9e}\n" for i in range(run.n_frames)))
    T_kw = None  # KITTI world (cam0 at frame 0) from the synthetic world
    pose_rows, frames = [], []
    lidar = LidarWindow(run.n_frames)
    for fi in range(run.n_frames):
        T_w_egoK = world.ego_pose(fi / run.fps) @ run.rig.T_egoS_from_egoK
        T_w_c0 = T_w_egoK @ run.rig.T_egoK_from_cam0
        if T_kw is None:
            T_kw = np.linalg.inv(T_w_c0)
        pose_rows.append(_row((T_kw @ T_w_c0)[:3]))
        frame, gains = _write_frame(run, world, sdir, seq, fi, T_w_egoK, T_kw, lidar)
        smeta["exposure"][frame.token] = gains
        frames.append(frame)
        for key, window in lidar.due(fi):
            _write_keyframe_gt(run, world, sdir, seq, frames[key.index], key, window)
        bar.update(1)
    (run.root / "poses").mkdir(exist_ok=True)
    (run.root / "poses" / f"{seq}.txt").write_text("\n".join(pose_rows) + "\n")
    return Scene(name=seq, frames=frames), smeta


def _write_frame(run: _Run, world, sdir: Path, seq: str, fi: int, T_w_egoK: np.ndarray, T_kw: np.ndarray,
                 lidar: LidarWindow) -> tuple[Frame, dict[str, float]]:  # fmt: skip
    """Render frame ``fi`` (KITTI ego pose ``T_w_egoK``): write its images, ground truth and velodyne scan,
    keep the sweep (and a keyframe's depths) in ``lidar``; returns the frame's record and exposure gains."""
    t = fi / run.fps
    name = f"{fi:06d}"
    res = render_cameras(world, run.cams, T_w_egoK, t, shadows=run.shadows)

    def files(cam: dict) -> CameraFiles:
        i = cam["index"]
        return CameraFiles(sdir / f"image_{i}" / f"{name}.png", sdir / f"depth_{i}" / f"{name}.npy",
                           sdir / f"semantics_{i}" / f"{name}.png")  # fmt: skip

    images, gains = write_rig_images(run.root, world, t, run.cams, res, files, kitti=True)
    T_w_egoS = world.ego_pose(t)
    pts_egoS = render_lidar(world, T_w_egoS, t)["points_ego"].numpy().astype(np.float64)
    (sdir / "velodyne").mkdir(exist_ok=True)
    velodyne_scan(pts_egoS).tofile(sdir / "velodyne" / f"{name}.bin")
    lidar.add_sweep(fi, T_w_egoS, pts_egoS)
    key = fi % run.keyframe_every == 0
    if key and (run.labels or run.voxels):
        depths = {c["name"]: (res["depth"][ci], T_w_egoK) for ci, c in enumerate(run.cams)}
        lidar.pending[fi] = Keyframe(fi, T_w_egoK, t, depths)
    frame = Frame(token=f"{seq}_{name}", timestamp=float(f"{t:.9e}"), keyframe=key,
                  T_world_from_ego=T_kw @ T_w_egoK, images=images)  # fmt: skip
    return frame, gains


def _write_keyframe_gt(run: _Run, world, sdir: Path, seq: str, frame: Frame, key: Keyframe, window) -> None:
    """A keyframe's Occ3D labels (``gts/``) and SemanticKITTI voxels, as asked for."""
    if run.labels:
        op = run.root / "gts" / seq / frame.token / "labels.npz"
        op.parent.mkdir(parents=True, exist_ok=True)
        save_npz(op, moving_rig_labels(world, run.cams, GRIDS["occ3d"], key, window))
        frame.occupancy_path = op
    if run.voxels:
        T_w_velo = key.T @ run.rig.T_egoK_from_velo
        _write_voxels(world, sdir / "voxels", key.index, T_w_velo, key.t, window, run.lut)


def _write_voxels(world, vdir: Path, k: int, T_w_velo: np.ndarray, t: float, sweeps, lut: np.ndarray) -> None:
    """SemanticKITTI ``NNNNNN.label`` (uint16 raw ids, flat [x, y, z]) and ``.invalid`` (packed bits, MSB
    first: voxels no LiDAR ray of ``sweeps`` crossed or hit), semantickitti grid in the velodyne frame."""
    grid = GRIDS["semantickitti"]
    sem = occupancy(world, T_w_velo, grid, t)
    seen = lidar_mask(sweeps, np.linalg.inv(T_w_velo), grid)
    vdir.mkdir(parents=True, exist_ok=True)
    lut[sem].astype(np.uint16).reshape(-1).tofile(vdir / f"{k:06d}.label")
    np.packbits(seen.reshape(-1) == 0).tofile(vdir / f"{k:06d}.invalid")
