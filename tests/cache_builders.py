"""Hand-written caches for voxelize / labels / evaluate tests (no synthetic world needed).

``build_cache`` writes a tiny folder dataset and a cache whose "oracle" disparity is exactly 1/z with a
calibration of scale 1, shift 0, and oracle semantics with confidence 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from occlabel.conventions import SKY, VoxelGrid
from occlabel.datasets import open_dataset
from occlabel.datasets.base import CameraImage, Frame, Scene
from occlabel.datasets.folder import write_manifest
from occlabel.store.cache import Cache

#: camera looking along ego +x (OpenCV: z forward = ego x, x right = ego -y, y down = ego -z)
R_EGO_FROM_CAM = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)


def pose(x: float = 0.0, y: float = 0.0, z: float = 0.0, R: np.ndarray | None = None) -> np.ndarray:
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = R
    T[:3, 3] = [x, y, z]
    return T


def build_cache(
    root: Path,
    frames: list[dict],
    cameras: dict[str, tuple[np.ndarray, np.ndarray]],
    scene: str = "s0",
) -> Cache:
    """A folder dataset and a calibrated oracle cache from per-frame depth and 2D semantics.

    Args:
        frames: per frame {"T_world_from_ego": <4, 4>, "keyframe": bool, "maps": {camera: (depth_m <h, w>
            float32, NaN = none; labels <h, w> uint8)}, optional "occupancy": {"semantics", "mask_camera"}}.
        cameras: camera -> (K <3, 3>, T_ego_from_cam <4, 4>).
    Returns:
        the Cache (working resolution = image size); the dataset also carries the maps as GT files.
    """
    ds_root = (root / "ds").resolve()
    (ds_root / "img").mkdir(parents=True, exist_ok=True)
    recs = []
    for t, fr in enumerate(frames):
        images = {}
        for cam, (depth, labels) in fr["maps"].items():
            h, w = depth.shape
            stem = ds_root / "img" / f"{cam}_{t:03d}"
            Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(f"{stem}.png")
            np.save(f"{stem}_depth.npy", np.nan_to_num(depth.astype(np.float32), nan=0.0))
            Image.fromarray(labels.astype(np.uint8)).save(f"{stem}_sem.png")
            K, T_ec = cameras[cam]
            images[cam] = CameraImage(
                camera=cam,
                path=Path(f"{stem}.png"),
                rel_path=f"img/{cam}_{t:03d}.png",
                K=np.asarray(K, float),
                T_ego_from_cam=T_ec,
                depth_path=Path(f"{stem}_depth.npy"),
                semantics_path=Path(f"{stem}_sem.png"),
            )
        occ = None
        if "occupancy" in fr:
            occ = ds_root / "occ" / f"f{t:03d}.npz"
            occ.parent.mkdir(exist_ok=True)
            o = fr["occupancy"]
            np.savez_compressed(
                occ,
                semantics=o["semantics"].astype(np.uint8),
                mask_camera=o["mask_camera"].astype(np.uint8),
                mask_lidar=o["mask_camera"].astype(np.uint8),
            )
        recs.append(
            Frame(
                token=f"{scene}_f{t:03d}",
                timestamp=0.1 * t,
                keyframe=fr["keyframe"],
                T_world_from_ego=fr["T_world_from_ego"],
                images=images,
                occupancy_path=occ,
            )
        )
    write_manifest(ds_root, [Scene(scene, recs)])
    ds = open_dataset("folder", ds_root)
    cache = Cache.create(root / "cache.zarr", ds)
    sizes = {cam: frames[0]["maps"][cam][0].shape[::-1] for cam in cameras}
    cache.init_scene(ds.scene(scene), sizes)
    T = len(frames)
    for cam in cameras:
        cache.init_depth(scene, cam, "oracle", {"space": "disparity", "model": "oracle"})
        cache.init_semantics(scene, cam, "oracle", {"model": "oracle"})
        for t, fr in enumerate(frames):
            depth, labels = fr["maps"][cam]
            with np.errstate(divide="ignore", invalid="ignore"):
                cache.write_depth(scene, cam, "oracle", t, np.where(depth > 0, 1.0 / depth, np.nan))
            cache.write_semantics(scene, cam, "oracle", t, labels, np.full(labels.shape, 255, np.uint8))
        ones, zeros = np.ones(T), np.zeros(T)
        cache.write_calibration(
            scene,
            cam,
            {
                "scale": ones,
                "shift": zeros,
                "loss": zeros,
                "valid_frac": ones,
                "flags": zeros,
                "done": ones > 0,
            },
            {"method": "test"},
            key="oracle",
        )
    cache.update_meta(default_depth="oracle", default_semantics="oracle")
    return cache


# --------------------------------------------------------------------------------------------------
# The hand-computed box (one camera, one image row, one voxel layer)
# --------------------------------------------------------------------------------------------------
#
# Grid: x in [-1, 6), y in [-3, 3), z in [-0.5, 0.5), 1 m voxels -> shape (7, 6, 1); i = floor(x + 1),
# j = floor(y + 3). Camera at ego (0, 0.4, 0) looking along +x; image 5 x 1, fx = 4, cx = 2, cy = 0, so
# pixel u's ray in the ego plane z = 0 is y = 0.4 + s x with slope s = -(u - 2) / 4 = +0.5, +0.25, 0,
# -0.25, -0.5. Box: x in [3.6, 4.6], y in [-0.7, 1.5]. At x = 3.6 the rays are at y = 2.2 (miss: sky),
# 1.3, 0.4, -0.5 (hits at z-depth 3.6), -1.4 (miss: sky).
#
# Occupied (the three hit points (3.6, 1.3), (3.6, 0.4), (3.6, -0.5)): (4, 4), (4, 3), (4, 2).
# Free, ray by ray (hit rays stop one voxel = 1 m before the point, so at x = 3.6 - cos(atan s)):
#   s = 0     x in [0, 2.6], y = 0.4:                (1,3) (2,3) (3,3)
#   s = .25   x in [0, 2.63], crosses y = 1 at x 2.4: (1,3) (2,3) (3,3) (3,4)
#   s = -.25  crosses y = 0 at x = 1.6:               (1,3) (2,3) (2,2) (3,2)
#   s = .5    sky, crosses y = 1, 2, 3 at x = 1.2, 3.2, 5.2 (grid exit):
#             (1,3) (2,3) (2,4) (3,4) (4,4)* (4,5) (5,5) (6,5)      * passes an occupied voxel
#   s = -.5   sky, crosses y = 0, -1, -2 at x = 0.8, 2.8, 4.8, exits at x = 6:
#             (1,3) (1,2) (2,2) (3,2) (3,1) (4,1) (5,1) (5,0) (6,0)
BOX_GRID = VoxelGrid("test", (-1.0, -3.0, -0.5), (6.0, 3.0, 0.5), 1.0)
BOX_OCCUPIED = {(4, 4), (4, 3), (4, 2)}
BOX_FREE = {
    (1, 3), (2, 3), (3, 3), (3, 4), (2, 2), (3, 2), (2, 4), (4, 5), (5, 5), (6, 5),
    (1, 2), (3, 1), (4, 1), (5, 1), (5, 0), (6, 0),
}  # fmt: skip
BOX_OPTS = dict(
    window=0,
    min_hits=1.0,
    occ_ratio=1.0,
    ray_stride=1,
    mask_stride=1,
    point_stride=1,
    step_fraction=0.05,
    stop_frac=0.0,
)


def box_cache(root: Path, label: int = 15, depth_m: float = 3.6, cam_y: float = 0.4) -> Cache:
    K = np.array([[4.0, 0, 2.0], [0, 4.0, 0.0], [0, 0, 1]])
    depth = np.array([[np.nan, depth_m, depth_m, depth_m, np.nan]], np.float32)
    labels = np.array([[SKY, label, label, label, SKY]], np.uint8)
    frames = [{"T_world_from_ego": np.eye(4), "keyframe": True, "maps": {"CAM_FRONT": (depth, labels)}}]
    return build_cache(root, frames, {"CAM_FRONT": (K, pose(0, cam_y, 0, R_EGO_FROM_CAM))})
