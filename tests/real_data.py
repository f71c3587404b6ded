"""The real samples in ../shared/data as folder datasets (for tests; each skips cleanly without them).

* :func:`nuscenes_keyframe_folder`: the six cameras of nuScenes scene-0061's first keyframe (1600x900 JPEG)
  with their intrinsics, camera-to-ego extrinsics and the ego pose, from ``sample.json``.
* :func:`kitti06_folder`: frames of KITTI odometry sequence 06 (cam0 greyscale, 1226x370) with the ground
  truth poses; KITTI gives camera poses, so the ego frame is put 1.65 m under cam0 (KITTI's camera height),
  x forward / y left / z up, and ``T_world_from_ego = T_world_from_cam0 @ inv(T_ego_from_cam0)``.

Images are symlinked, not copied; the manifests follow docs/datasets.md (``occlabel.folder/1``).
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
