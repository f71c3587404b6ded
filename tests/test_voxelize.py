"""Stage 3 voxelize: hand-computed carving of a box, static/moving split, GT source, resume.

The caches are written by hand (``build_cache``): an "oracle" depth whose disparity is exactly 1/z with a
calibration of scale 1, shift 0, and oracle semantics with confidence 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from occlabel.conventions import FREE, SKY, VoxelGrid
from occlabel.datasets import open_dataset
from occlabel.datasets.base import CameraImage, Frame, Scene
from occlabel.datasets.folder import write_manifest
from occlabel.errors import OccLabelError, StoreError
from occlabel.stages import voxelize
from occlabel.store.cache import Cache
from occlabel.store.labels import open_labels

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


def _cells(mask: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(mask[..., 0]), strict=True)}


def test_box_hand_computed(tmp_path):
    cache = box_cache(tmp_path)
    out = voxelize.run(
        cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX_OPTS
    )
    (s,) = list(open_labels(out, counts=True))
    sem, mask = s["semantics"], s["mask_camera"]
    assert sem.shape == (7, 6, 1) and sem.dtype == np.uint8 and mask.dtype == bool
    assert _cells(sem != FREE) == BOX_OCCUPIED
    assert (sem[sem != FREE] == 15).all()
    # every other voxel is written free; the camera's mask holds exactly the occupied and free ones
    assert _cells(mask) == BOX_OCCUPIED | BOX_FREE
    assert _cells(s["passes"] > 0) == BOX_FREE | {(4, 4)}  # the sky ray grazes the top box voxel
    assert _cells(s["hits"] > 0) == BOX_OCCUPIED and (s["hits"][s["hits"] > 0] == 1).all()
    unknown = ~mask
    assert (
        unknown.sum() == 7 * 6 - 19 and (sem[unknown] == FREE).all() and (s["confidence"][unknown] == 0).all()
    )
    assert (s["confidence"][sem != FREE] == 255).all()  # one point, confidence 1, class share 1

    # the top box voxel has 1 hit and ~0.22 voxel-lengths of sky ray: occ_ratio 10 lets the pass win
    out2 = voxelize.run(
        cache.path,
        tmp_path / "l2.zarr",
        grid=BOX_GRID,
        device="cpu",
        progress=False,
        **{**BOX_OPTS, "occ_ratio": 10.0},
    )
    (s2,) = list(open_labels(out2))
    assert _cells(s2["semantics"] != FREE) == BOX_OCCUPIED - {(4, 4)}
    assert s2["mask_camera"][4, 4, 0]  # still seen by the keyframe camera: free, not unknown


def test_box_min_hits_and_ray_stride(tmp_path):
    cache = box_cache(tmp_path)
    # min_hits above the single hit per voxel: no occupied voxel; the hit voxels stay seen (free)
    out = voxelize.run(
        cache.path,
        tmp_path / "a.zarr",
        grid=BOX_GRID,
        device="cpu",
        progress=False,
        **{**BOX_OPTS, "min_hits": 1.5},
    )
    (s,) = list(open_labels(out))
    assert (s["semantics"] == FREE).all() and _cells(s["mask_camera"]) == BOX_OCCUPIED | BOX_FREE


def test_gt_source_matches_oracle_cache(tmp_path):
    cache = box_cache(tmp_path)
    a = voxelize.run(cache.path, tmp_path / "a.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX_OPTS)
    b = voxelize.run(
        cache.path, tmp_path / "b.zarr", grid=BOX_GRID, device="cpu", progress=False, source="gt", **BOX_OPTS
    )
    (sa,), (sb,) = list(open_labels(a)), list(open_labels(b))
    for k in ("semantics", "mask_camera", "confidence"):
        assert np.array_equal(sa[k], sb[k]), k
    assert open_labels(b).meta["source"] == "gt"


# --------------------------------------------------------------------------------------------------
# Moving objects do not smear
# --------------------------------------------------------------------------------------------------
#
# Same camera and grid; a wall (manmade, 15) at x = 5.5 fills the view in every frame, and a car (4)
# covers the centre pixel at depth 2.5 in the keyframe (frame 2) only; in the other frames the car is in
# another pixel at the same depth. Static ego. Window 2, moving_window 0.


def moving_cache(root: Path) -> Cache:
    K = np.array([[4.0, 0, 2.0], [0, 4.0, 0.0], [0, 0, 1]])
    frames = []
    for t in range(5):
        depth = np.full((1, 5), 5.5, np.float32)
        labels = np.full((1, 5), 15, np.uint8)
        depth[0, t] = 2.5  # the car is in pixel t in frame t
        labels[0, t] = 4
        frames.append(
            {"T_world_from_ego": np.eye(4), "keyframe": t == 2, "maps": {"CAM_FRONT": (depth, labels)}}
        )
    return build_cache(root, frames, {"CAM_FRONT": (K, pose(0, 0.4, 0, R_EGO_FROM_CAM))})


def _car_cells() -> dict[int, tuple[int, int]]:
    """Voxel (i, j) of the car's point in each frame (pixel t, z-depth 2.5)."""
    out = {}
    for t in range(5):
        slope = -(t - 2) / 4
        x, y = 2.5, 0.4 + slope * 2.5
        out[t] = (int(np.floor(x + 1)), int(np.floor(y + 3)))
    return out


def test_moving_car_leaves_no_trail(tmp_path):
    cache = moving_cache(tmp_path)
    opts = {**BOX_OPTS, "window": 2}
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **opts)
    (s,) = list(open_labels(out))
    cars = _car_cells()
    sem = s["semantics"][..., 0]
    assert _cells(s["semantics"] == 4) == {cars[2]}  # the car only where it is at the keyframe
    for t in (0, 1, 3, 4):
        assert sem[cars[t]] != 4
    # the wall behind the car (hidden at the keyframe) is filled in from the other frames (static class)
    wall_behind = (int(np.floor(5.5 + 1)), int(np.floor(0.4 + 3)))
    assert sem[wall_behind] == 15

    # without the split (no class treated as moving) the car smears over the window, or is carved away
    out2 = voxelize.run(
        cache.path,
        tmp_path / "l2.zarr",
        grid=BOX_GRID,
        device="cpu",
        progress=False,
        moving_classes=(),
        **opts,
    )
    (s2,) = list(open_labels(out2))
    trail = _cells(s2["semantics"] == 4)
    assert trail != {cars[2]}


# --------------------------------------------------------------------------------------------------
# Store behaviour, options
# --------------------------------------------------------------------------------------------------


def test_resume_skips_done_samples(tmp_path):
    import zarr

    cache = moving_cache(tmp_path)
    opts = {**BOX_OPTS, "window": 2}
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **opts)
    ref = open_labels(out)[0]["semantics"].copy()
    g = zarr.open_group(str(out), mode="a")
    g["s0/semantics"][0] = np.full(ref.shape, 7, np.uint8)  # tamper with a done sample
    voxelize.run(cache.path, out, grid=BOX_GRID, device="cpu", progress=False, **opts)
    assert (open_labels(out)[0]["semantics"] == 7).all()  # skipped: done
    assert open_labels(out).meta["stats"]["keyframes_written"] == 0
    g["s0/done"][0] = False  # a crash before the done marker: redone
    voxelize.run(cache.path, out, grid=BOX_GRID, device="cpu", progress=False, **opts)
    assert np.array_equal(open_labels(out)[0]["semantics"], ref)
    g["s0/semantics"][0] = np.full(ref.shape, 7, np.uint8)
    voxelize.run(cache.path, out, grid=BOX_GRID, device="cpu", progress=False, overwrite=True, **opts)
    assert np.array_equal(open_labels(out)[0]["semantics"], ref)
    # other options on an existing store are refused
    with pytest.raises(StoreError, match="options"):
        voxelize.run(cache.path, out, grid=BOX_GRID, device="cpu", progress=False, **{**opts, "window": 1})


def test_option_errors(tmp_path):
    cache = box_cache(tmp_path)
    with pytest.raises(OccLabelError, match="unknown option"):
        voxelize.run(cache.path, tmp_path / "x.zarr", grid=BOX_GRID, device="cpu", progress=False, bogus=1)
    with pytest.raises(OccLabelError, match="unknown grid"):
        voxelize.run(cache.path, tmp_path / "x.zarr", grid="nope", device="cpu", progress=False)
    with pytest.raises(OccLabelError, match="T_ego_from_grid"):
        voxelize.run(cache.path, tmp_path / "x.zarr", grid="semantickitti", device="cpu", progress=False)


def test_occ_ratio_default_depends_on_source():
    assert voxelize.VoxelizeOptions().occ_ratio == 0.2
    assert voxelize.VoxelizeOptions(source="gt").occ_ratio == 0.0
    assert voxelize.VoxelizeOptions(source="gt", occ_ratio=0.5).occ_ratio == 0.5


def test_default_grid_and_device(tmp_path):
    """The occ3d grid end to end on a box near the ego origin: sizes and frames."""
    cache = box_cache(tmp_path, depth_m=3.7, cam_y=0.5)
    out = voxelize.run(cache.path, tmp_path / "l.zarr", progress=False, window=0, min_hits=1.0, ray_stride=1)
    (s,) = list(open_labels(out))
    assert s["semantics"].shape == (200, 200, 16) and s["grid"].name == "occ3d"
    occ = np.argwhere(s["semantics"] != FREE)
    # hit points (3.7, 1.425 | 0.5 | -0.425, 0): i = floor(43.7 / 0.4) = 109, j = 103, 101, 98, k = floor(1 / 0.4) = 2
    assert set(map(tuple, occ)) == {(109, 103, 2), (109, 101, 2), (109, 98, 2)}
    assert s["mask_camera"].sum() > 3 and not s["mask_camera"][:100].any()  # nothing seen behind the camera


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))],
)
def test_fusion_device(tmp_path, device):
    """The same labels on every device (CPU always, CUDA when present)."""
    cache = moving_cache(tmp_path)
    opts = {**BOX_OPTS, "window": 2}
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device=device, progress=False, **opts)
    (s,) = list(open_labels(out))
    assert open_labels(out).meta["stats"]["device"].startswith(device)
    assert _cells(s["semantics"] == 4) == {_car_cells()[2]}
