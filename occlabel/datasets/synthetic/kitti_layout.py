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

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from occlabel.conventions import FREE, GRIDS, OCC3D_ID, OCC3D_TO_SEMANTICKITTI_RAW
from occlabel.datasets.base import CameraImage, Frame, Scene, rigid_transform
from occlabel.datasets.folder import MANIFEST, write_manifest
from occlabel.datasets.kitti import T_ego_from_cam0
from occlabel.datasets.synthetic.nuscenes_layout import _labels, prepare_root
from occlabel.datasets.synthetic.occupancy import occupancy, visibility_mask
from occlabel.datasets.synthetic.render import LIDAR_MOUNT, render_cameras, render_lidar
from occlabel.datasets.synthetic.world import build_world
from occlabel.datasets.synthetic.writer import LIDAR_WINDOW, META, save_npz
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
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _write(
            Path(out).expanduser().resolve(), sequences, frames, cameras, size, seed, keyframe_every, fps,
            progress, overwrite, ego_speed, shadows, labels, voxels,
        )  # fmt: skip
    finally:
        torch.set_num_threads(before)


def _write(root, n_seq, n_frames, cameras, size, seed, keyframe_every, fps, progress, overwrite, ego_speed,
           shadows, with_labels, with_voxels) -> Path:  # fmt: skip
    prepare_root(root, _OUTPUTS, overwrite)
    cams = kitti_rig(cameras, size)
    all_cams = kitti_rig((0, 1, 2, 3), size)
    T_e0 = T_ego_from_cam0(CAMERA_HEIGHT_M)
    #: the KITTI ego frame in the synthetic ego frame (both upright, on the ground)
    T_egoS_from_egoK = rigid_transform(np.eye(3), [CAM0_IN_EGO[0], CAM0_IN_EGO[1], 0.0])
    T_egoK_from_velo = rigid_transform(
        np.eye(3), np.asarray(LIDAR_MOUNT) - [CAM0_IN_EGO[0], CAM0_IN_EGO[1], 0.0]
    )
    Tr = np.linalg.inv(T_e0) @ T_egoK_from_velo
    lut = np.zeros(256, np.uint16)
    for name, raw in OCC3D_TO_SEMANTICKITTI_RAW.items():
        lut[OCC3D_ID[name]] = raw
    lut[FREE] = 0
    meta: dict = {
        "format": FORMAT,
        "layout": "kitti",
        "cameras": [c["name"] for c in cams],
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "fps": float(fps),
        "keyframe_every": int(keyframe_every),
        "camera_height_m": CAMERA_HEIGHT_M,
        "scenes": [],
    }
    records: list[Scene] = []
    bar = tqdm(total=n_seq * n_frames, desc="synth kitti", unit="frame", disable=not progress)
    for si in range(n_seq):
        seq = f"{si:02d}"
        sdir = root / "sequences" / seq
        sdir.mkdir(parents=True, exist_ok=True)
        world = build_world(seed, max(n_frames - 1, 1) / fps, ego_speed=ego_speed, scene_index=si)
        smeta = {"name": seq, **world.summary(), "exposure": {}}
        calib = [f"P{c['index']}: {_row(c['P'])}" for c in all_cams] + [f"Tr: {_row(Tr[:3])}"]
        (sdir / "calib.txt").write_text("\n".join(calib) + "\n")
        (sdir / "times.txt").write_text("".join(f"{i / fps:.9e}\n" for i in range(n_frames)))
        T_w_c0_first = None
        pose_rows = []
        frames: list[Frame] = []
        sweeps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        pending: dict[int, dict] = {}
        for fi in range(n_frames):
            t = fi / fps
            name = f"{fi:06d}"
            token = f"{seq}_{name}"
            T_w_egoK = world.ego_pose(t) @ T_egoS_from_egoK
            T_w_c0 = T_w_egoK @ T_e0
            if T_w_c0_first is None:
                T_w_c0_first = T_w_c0
            T_kw = np.linalg.inv(T_w_c0_first)  # KITTI world (cam0 at frame 0) from the synthetic world
            pose_rows.append(_row((T_kw @ T_w_c0)[:3]))
            res = render_cameras(world, cams, T_w_egoK, t, shadows=shadows)
            images = {}
            smeta["exposure"][token] = {}
            for ci, cam in enumerate(cams):
                i = cam["index"]
                gain = world.exposure(t, i)
                smeta["exposure"][token][cam["name"]] = round(gain, 6)
                rgb = (res["rgb"][ci] * gain).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
                ip, dp, sp = (sdir / f"image_{i}" / f"{name}.png", sdir / f"depth_{i}" / f"{name}.npy",
                              sdir / f"semantics_{i}" / f"{name}.png")  # fmt: skip
                for p in (ip, dp, sp):
                    p.parent.mkdir(parents=True, exist_ok=True)
                im = Image.fromarray(rgb)
                (im.convert("L") if i in (0, 1) else im).save(ip)
                np.save(dp, res["depth"][ci].numpy().astype(np.float32))
                Image.fromarray(res["semantics"][ci].numpy()).save(sp)
                images[cam["name"]] = CameraImage(
                    camera=cam["name"], path=ip, rel_path=ip.relative_to(root).as_posix(), K=cam["K"],
                    T_ego_from_cam=cam["T_ego_from_cam"], depth_path=dp, semantics_path=sp,
                )  # fmt: skip
            lid = render_lidar(world, world.ego_pose(t), t)
            pts_egoS = lid["points_ego"].numpy().astype(np.float64)
            scan = np.zeros((len(pts_egoS), 4), np.float32)
            scan[:, :3] = pts_egoS - np.asarray(LIDAR_MOUNT)  # velodyne frame: axes of the ego, at the mount
            (sdir / "velodyne").mkdir(exist_ok=True)
            scan.tofile(sdir / "velodyne" / f"{name}.bin")
            T_w_egoS = world.ego_pose(t)
            o_w = T_w_egoS[:3, :3] @ np.asarray(LIDAR_MOUNT) + T_w_egoS[:3, 3]
            sweeps[fi] = (o_w, pts_egoS @ T_w_egoS[:3, :3].T + T_w_egoS[:3, 3])
            sweeps.pop(fi - 2 * LIDAR_WINDOW - 1, None)
            key = fi % keyframe_every == 0
            frames.append(
                Frame(
                    token=token,
                    timestamp=float(f"{t:.9e}"),
                    keyframe=key,
                    T_world_from_ego=T_kw @ T_w_egoK,
                    images=images,
                )
            )
            if key and (with_labels or with_voxels):
                pending[fi] = {
                    "T": T_w_egoK,
                    "t": t,
                    "depths": {c["name"]: (res["depth"][ci], T_w_egoK) for ci, c in enumerate(cams)},
                }
            for k in [k for k in pending if k + LIDAR_WINDOW <= fi or fi == n_frames - 1]:
                p = pending.pop(k)
                window = [
                    sweeps[j] for j in range(max(0, k - LIDAR_WINDOW), min(n_frames, k + LIDAR_WINDOW + 1))
                ]
                if with_labels:
                    op = root / "gts" / seq / frames[k].token / "labels.npz"
                    op.parent.mkdir(parents=True, exist_ok=True)
                    save_npz(op, _labels(world, cams, GRIDS["occ3d"], p, window))
                    frames[k].occupancy_path = op
                if with_voxels:
                    _write_voxels(world, sdir / "voxels", k, p["T"] @ T_egoK_from_velo, p["t"], window, lut)
            bar.update(1)
        (root / "poses").mkdir(exist_ok=True)
        (root / "poses" / f"{seq}.txt").write_text("\n".join(pose_rows) + "\n")
        records.append(Scene(name=seq, frames=frames))
        meta["scenes"].append(smeta)
    bar.close()
    write_manifest(root, records)
    (root / META).write_text(json.dumps(meta, indent=1))
    return root


def _write_voxels(world, vdir: Path, k: int, T_w_velo: np.ndarray, t: float, sweeps, lut: np.ndarray) -> None:
    """SemanticKITTI ``NNNNNN.label`` (uint16 raw ids, flat [x, y, z]) and ``.invalid`` (packed bits, MSB
    first: voxels no LiDAR ray of ``sweeps`` crossed or hit), semantickitti grid in the velodyne frame."""
    grid = GRIDS["semantickitti"]
    sem = occupancy(world, T_w_velo, grid, t)
    T_vw = np.linalg.inv(T_w_velo)
    lo = np.concatenate([np.broadcast_to(T_vw[:3, :3] @ ow + T_vw[:3, 3], pw.shape) for ow, pw in sweeps])
    le = np.concatenate([pw @ T_vw[:3, :3].T + T_vw[:3, 3] for _, pw in sweeps])
    seen = visibility_mask(
        torch.from_numpy(lo.astype(np.float32)), torch.from_numpy(le.astype(np.float32)),
        torch.ones(len(le), dtype=torch.bool), grid,
    )  # fmt: skip
    vdir.mkdir(parents=True, exist_ok=True)
    lut[sem].astype(np.uint16).reshape(-1).tofile(vdir / f"{k:06d}.label")
    np.packbits(seen.reshape(-1) == 0).tofile(vdir / f"{k:06d}.invalid")
