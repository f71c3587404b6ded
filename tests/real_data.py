"""The real samples in ../shared/data as folder datasets (for tests; each skips cleanly without them).

* :func:`nuscenes_keyframe_folder`: the six cameras of nuScenes scene-0061's first keyframe (1600x900 JPEG)
  with their intrinsics, camera-to-ego extrinsics and the ego pose, from ``sample.json``.
* :func:`kitti06_folder`: frames of KITTI odometry sequence 06 (cam0 greyscale, 1226x370) with the ground
  truth poses; KITTI gives camera poses, so the ego frame is put 1.65 m under cam0 (KITTI's camera height),
  x forward / y left / z up, and ``T_world_from_ego = T_world_from_cam0 @ inv(T_ego_from_cam0)``.

Images are symlinked, not copied; the manifests follow docs/datasets.md (``occlabel.folder/1``).

The same samples in their datasets' own layouts, read through the nuscenes and kitti adapters:

* :func:`nuscenes_keyframe_tables`: a one-sample nuScenes dataroot (v1.0-mini tables) built from
  ``sample.json``, each camera with its own ego pose.
* :func:`kitti06_odometry_layout`: the official odometry layout (``sequences/06``, ``poses/06.txt``) of
  frames 0-50.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cache_builders import R_EGO_FROM_CAM

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUSCENES_KEYFRAME = SHARED_DATA / "nuscenes_scene-0061_keyframe"
KITTI06 = SHARED_DATA / "kitti_odometry_06_f0-50"
KITTI_CAM_HEIGHT_M = 1.65


def require(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"real sample {path.name} not available (../shared/data is absent)")
    return path


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        dst.symlink_to(src.resolve())


def nuscenes_keyframe_folder(root: Path) -> Path:
    """Folder dataset: scene "scene-0061", one keyframe, six cameras at 1600x900."""
    src = require(NUSCENES_KEYFRAME)
    sample = json.loads((src / "sample.json").read_text())["sample"]
    images = {}
    for cam, info in sample["images"].items():
        path = src / Path(info["img_path"]).name
        _link(path, root / "images" / path.name)
        images[cam] = {
            "path": f"images/{path.name}",
            "K": info["cam2img"],
            "T_ego_from_cam": info["cam2ego"],
        }
    frame = {
        "token": sample["token"],
        "timestamp": float(sample["timestamp"]),
        "keyframe": True,
        "T_world_from_ego": sample["ego2global"],
        "images": images,
    }
    doc = {"format": "occlabel.folder/1", "scenes": [{"name": "scene-0061", "frames": [frame]}]}
    (root / "occlabel.json").write_text(json.dumps(doc))
    return root


def kitti_calib_K(calib: Path) -> np.ndarray:
    """cam0 intrinsics (3x3) from a KITTI calib.txt: the "P0:" line, or the first line when unnamed."""
    lines = [ln.split() for ln in calib.read_text().splitlines() if ln.strip()]
    named = [ln[1:] for ln in lines if ln[0] == "P0:"]
    values = named[0] if named else lines[0]
    return np.array([float(v) for v in values]).reshape(3, 4)[:, :3]


def kitti_poses(path: Path) -> np.ndarray:
    """``[N x 4 x 4]`` T_world_from_cam0 from a KITTI poses file (row-major 3x4 per line)."""
    rows = np.loadtxt(path).reshape(-1, 3, 4)
    out = np.tile(np.eye(4), (len(rows), 1, 1))
    out[:, :3] = rows
    return out


def kitti06_folder(root: Path, frames: range | list[int] = range(3)) -> Path:
    """Folder dataset: scene "kitti-06", the given frames of cam0 (keyframe every 5th frame)."""
    src = require(KITTI06)
    K = kitti_calib_K(src / "calib.txt")
    poses = kitti_poses(src / "poses.txt")
    T_ego_from_cam = np.eye(4)
    T_ego_from_cam[:3, :3] = R_EGO_FROM_CAM
    T_ego_from_cam[:3, 3] = [0.0, 0.0, KITTI_CAM_HEIGHT_M]
    T_cam_from_ego = np.linalg.inv(T_ego_from_cam)
    out = []
    for i in frames:
        name = f"{i:06d}.png"
        _link(src / "image_l" / name, root / "image_0" / name)
        out.append(
            {
                "token": f"06_{i:06d}",
                "timestamp": 0.1 * i,
                "keyframe": i % 5 == 0,
                "T_world_from_ego": (poses[i] @ T_cam_from_ego).tolist(),
                "images": {
                    "CAM0": {
                        "path": f"image_0/{name}",
                        "K": K.tolist(),
                        "T_ego_from_cam": T_ego_from_cam.tolist(),
                    }
                },
            }
        )
    doc = {"format": "occlabel.folder/1", "scenes": [{"name": "kitti-06", "frames": out}]}
    (root / "occlabel.json").write_text(json.dumps(doc))
    return root


# --------------------------------------------------------------------------------------------------
# The real samples in their datasets' own layouts (read through the nuscenes and kitti adapters)
# --------------------------------------------------------------------------------------------------

NUSCENES_SCENE_0061_LOG = "n015-2018-07-24-11-22-45+0800"


def _token(*parts) -> str:
    import hashlib

    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def _pose_rec(token: str, T, **extra) -> dict:
    from occlabel.datasets.base import quaternion_from_rotation

    T = np.asarray(T, np.float64)
    q = quaternion_from_rotation(T[:3, :3])
    return {"token": token, **extra, "rotation": q.tolist(), "translation": T[:3, 3].tolist()}


def nuscenes_keyframe_tables(root: Path) -> Path:
    """A one-sample nuScenes dataroot (v1.0-mini tables) for scene-0061's first keyframe, from sample.json.

    Tables: scene, sample, sample_data (six cameras and LIDAR_TOP), ego_pose, calibrated_sensor, sensor, log,
    map (one 1x1 mask), and empty annotation tables; files are symlinked into ``samples/<CHANNEL>/``.
    sample.json stores the ego pose only at the LiDAR time (``ego2global``); each camera's own ego pose is
    recovered from its ``lidar2cam`` (mmdet3d's, which includes both ego poses):
    ``T_global_from_ego(cam time) = ego2global @ lidar2ego @ inv(lidar2cam) @ inv(cam2ego)``.
    """
    src = require(NUSCENES_KEYFRAME)
    sample = json.loads((src / "sample.json").read_text())["sample"]
    tables: dict[str, list] = {
        k: [] for k in ("category", "attribute", "visibility", "instance", "sample_annotation")
    }
    scene_tok, log_tok, map_tok = _token("scene-0061"), _token("log-0061"), _token("map-0061")
    sample_tok = sample["token"]
    T_g_el = np.asarray(sample["ego2global"], np.float64)
    T_el_l = np.asarray(sample["lidar_points"]["lidar2ego"], np.float64)
    sensors, calibs, poses, datas = [], [], [], []

    def add(
        channel: str,
        modality: str,
        T_ego_from_sensor,
        K,
        T_global_from_ego,
        ts_s: float,
        fname: str,
        sd_tok: str,
    ):
        sensors.append({"token": _token("sensor", channel), "channel": channel, "modality": modality})
        calibs.append(
            _pose_rec(_token("calib", channel), T_ego_from_sensor, sensor_token=_token("sensor", channel))
            | {"camera_intrinsic": K}
        )
        ts = round(ts_s * 1e6)
        poses.append(_pose_rec(_token("ego", channel), T_global_from_ego, timestamp=ts))
        rel = f"samples/{channel}/{fname}"
        _link(src / fname, root / rel)
        datas.append(
            {
                "token": sd_tok, "sample_token": sample_tok, "ego_pose_token": _token("ego", channel),
                "calibrated_sensor_token": _token("calib", channel), "timestamp": ts,
                "fileformat": "jpg" if modality == "camera" else "pcd", "is_key_frame": True,
                "height": 900 if modality == "camera" else 0, "width": 1600 if modality == "camera" else 0,
                "filename": rel, "prev": "", "next": "",
            }
        )  # fmt: skip

    for cam, info in sample["images"].items():
        T_e_c = np.asarray(info["cam2ego"], np.float64)
        T_c_l = np.asarray(info["lidar2cam"], np.float64)
        T_g_ec = T_g_el @ T_el_l @ np.linalg.inv(T_c_l) @ np.linalg.inv(T_e_c)
        add(
            cam,
            "camera",
            T_e_c,
            info["cam2img"],
            T_g_ec,
            float(info["timestamp"]),
            info["img_path"],
            info["sample_data_token"],
        )
    lid = sample["lidar_points"]
    add(
        "LIDAR_TOP",
        "lidar",
        T_el_l,
        [],
        T_g_el,
        float(sample["timestamp"]),
        lid["lidar_path"],
        _token("lidar-sd"),
    )
    from PIL import Image

    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(root / "maps" / f"{map_tok}.png")
    ts = round(float(sample["timestamp"]) * 1e6)
    tables.update(
        sensor=sensors,
        calibrated_sensor=calibs,
        ego_pose=poses,
        sample_data=datas,
        sample=[{"token": sample_tok, "timestamp": ts, "prev": "", "next": "", "scene_token": scene_tok}],
        scene=[
            {"token": scene_tok, "log_token": log_tok, "nbr_samples": 1, "first_sample_token": sample_tok,
             "last_sample_token": sample_tok, "name": "scene-0061", "description": "first keyframe only"}
        ],
        log=[
            {"token": log_tok, "logfile": NUSCENES_SCENE_0061_LOG, "vehicle": "n015",
             "date_captured": "2018-07-24", "location": "singapore-onenorth"}
        ],
        map=[{"token": map_tok, "log_tokens": [log_tok], "category": "semantic_prior",
              "filename": f"maps/{map_tok}.png"}],
    )  # fmt: skip
    (root / "v1.0-mini").mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(rows))
    return root


#: KITTI-typical velodyne -> cam0 (rigid): a stand-in, the sample has no LiDAR (and no Tr)
KITTI_PLACEHOLDER_TR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])


def kitti06_odometry_layout(root: Path, frames: range | list[int] = range(51)) -> Path:
    """The official odometry layout for sequence 06 from the sample: ``sequences/06/image_0/NNNNNN.png``
    (symlinks), ``sequences/06/calib.txt``, ``sequences/06/times.txt``, ``poses/06.txt``.

    Built from only what the sample has: P0 and P1 are the sample's; P2 and P3 repeat them (colour images
    are absent) and Tr is :data:`KITTI_PLACEHOLDER_TR` (no LiDAR), both only there because the format has
    them; times are the nominal 10 Hz (``0.1 * frame``). ``frames`` must start at 0 and be contiguous.
    """
    src = require(KITTI06)
    frames = list(frames)
    if frames != list(range(len(frames))):
        raise ValueError("frames must be 0..N-1")
    seq = root / "sequences" / "06"
    for i in frames:
        _link(src / "image_l" / f"{i:06d}.png", seq / "image_0" / f"{i:06d}.png")
    lines = [ln.split() for ln in (src / "calib.txt").read_text().splitlines() if ln.strip()]
    P0, P1 = (" ".join(v for v in ln if not v.endswith(":")) for ln in lines[:2])
    tr = " ".join(f"{v:.12e}" for v in KITTI_PLACEHOLDER_TR.reshape(-1))
    (seq / "calib.txt").write_text(f"P0: {P0}\nP1: {P1}\nP2: {P0}\nP3: {P1}\nTr: {tr}\n")
    (seq / "times.txt").write_text("".join(f"{0.1 * i:.6e}\n" for i in frames))
    poses = (src / "poses.txt").read_text().splitlines()
    (root / "poses").mkdir(parents=True, exist_ok=True)
    (root / "poses" / "06.txt").write_text("\n".join(poses[i] for i in frames) + "\n")
    return root
