"""Stage 3 voxelize: hand-computed carving of a box, static/moving split, GT source, resume.

The caches are written by hand (``build_cache``): an "oracle" depth whose disparity is exactly 1/z with a
calibration of scale 1, shift 0, and oracle semantics with confidence 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cache_builders import (
    BOX_FREE,
    BOX_GRID,
    BOX_OCCUPIED,
    BOX_OPTS,
    R_EGO_FROM_CAM,
    box_cache,
    build_cache,
    pose,
)

from occlabel.conventions import FREE, GRIDS, VoxelGrid
from occlabel.errors import OccLabelError, StoreError
from occlabel.stages import voxelize
from occlabel.store.cache import Cache
from occlabel.store.labels import open_labels

#: the hand-computed options, without the estimated-depth filters: in a 5-pixel image every box pixel
#: borders the sky, which the flying-pixel filter rightly distrusts, range weights would change the
#: hit/pass ratios worked out by hand, and the TSDF (tested on its own below) would fill its band behind
#: the one-view surfaces
BOX = {**BOX_OPTS, "edge_tol": 0.0, "range_weight_m": 0.0, "tsdf": False}


def _cells(mask: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(mask[..., 0]), strict=True)}


def test_box_hand_computed(tmp_path):
    cache = box_cache(tmp_path)
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX)
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
        **{**BOX, "occ_ratio": 10.0},
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
        **{**BOX, "min_hits": 1.5},
    )
    (s,) = list(open_labels(out))
    assert (s["semantics"] == FREE).all() and _cells(s["mask_camera"]) == BOX_OCCUPIED | BOX_FREE


def test_gt_source_matches_oracle_cache(tmp_path):
    cache = box_cache(tmp_path)
    a = voxelize.run(cache.path, tmp_path / "a.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX)
    b = voxelize.run(
        cache.path, tmp_path / "b.zarr", grid=BOX_GRID, device="cpu", progress=False, source="gt", **BOX
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
    opts = {**BOX, "window": 2}
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
    opts = {**BOX, "window": 2}
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


def test_defaults_depend_on_the_depth_source():
    est, gt = voxelize.VoxelizeOptions(), voxelize.VoxelizeOptions(source="gt")
    assert (est.occ_ratio, est.edge_tol, est.range_weight_m) == (0.5, 0.1, 10.0)
    assert (gt.occ_ratio, gt.edge_tol, gt.range_weight_m) == (0.0, 0.0, 0.0)
    assert est.tsdf and not gt.tsdf and not voxelize.VoxelizeOptions(source="gt-depth").tsdf
    assert voxelize.VoxelizeOptions(source="gt-semantics").occ_ratio == 0.5  # the cache's depth
    assert voxelize.VoxelizeOptions(source="gt-depth").occ_ratio == 0.0
    assert voxelize.VoxelizeOptions(source="gt", occ_ratio=0.5).occ_ratio == 0.5


def test_default_grid_and_device(tmp_path):
    """The occ3d grid end to end on a box near the ego origin: sizes and frames."""
    cache = box_cache(tmp_path, depth_m=3.7, cam_y=0.5)
    out = voxelize.run(
        cache.path,
        tmp_path / "l.zarr",
        progress=False,
        window=0,
        min_hits=1.0,
        ray_stride=1,
        edge_tol=0.0,
        tsdf=False,
    )
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
    opts = {**BOX, "window": 2}
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device=device, progress=False, **opts)
    (s,) = list(open_labels(out))
    assert open_labels(out).meta["stats"]["device"].startswith(device)
    assert _cells(s["semantics"] == 4) == {_car_cells()[2]}


# --------------------------------------------------------------------------------------------------
# Grids: custom boxes, sensor frames placed by a pose or relative to a camera
# --------------------------------------------------------------------------------------------------


def test_make_grid():
    from occlabel.geometry.voxel import make_grid

    g = make_grid((0, -2, -1), (4, 2, 1), 0.5, "sensor", "mine")
    assert g.shape == (8, 8, 4) and g.frame == "sensor" and g.name == "mine"
    assert make_grid((-40, -40, -1), (40, 40, 5.4), 0.4).shape == GRIDS["occ3d"].shape
    bad = [
        ((0, 0, 0), (1, 1, 1), 0.3),  # 1 m is not a whole number of 0.3 m voxels
        ((0, 0, 0), (0, 1, 1), 0.5),  # empty along x
        ((0, 0), (1, 1), 0.5),
        ((0, 0, 0), (1, 1, 1), 0.0),
    ]
    for args in bad:
        with pytest.raises(ValueError):
            make_grid(*args)
    with pytest.raises(ValueError, match="frame"):
        make_grid((0, 0, 0), (1, 1, 1), 0.5, "lidar")


def _occupied(out) -> set[tuple[int, int, int]]:
    (s,) = list(open_labels(out))
    return {tuple(int(v) for v in x) for x in np.argwhere(s["semantics"] != FREE)}


def test_sensor_grid_by_pose_or_camera(tmp_path):
    """A grid in a "sensor" frame 0.5 m ahead and 0.2 m above the ego origin, given directly or relative to
    the camera: the box (ego x = 3.6, y = 1.3 | 0.4 | -0.5, z = 0) lands at sensor (3.1, y, -0.2)."""
    from occlabel.geometry.voxel import make_grid

    grid = make_grid((0, -3, -1), (6, 3, 1), 0.5, "sensor", "sensor-box")
    cache = box_cache(tmp_path)
    T_ego_from_sensor = pose(0.5, 0.0, 0.2)
    a = voxelize.run(
        cache.path, tmp_path / "a.zarr", grid=grid, device="cpu", progress=False,
        T_ego_from_grid=T_ego_from_sensor.tolist(), **BOX,
    )  # fmt: skip
    # i = floor(3.1 / 0.5) = 6, j = floor((y + 3) / 0.5) = 8, 6, 5, k = floor(0.8 / 0.5) = 1
    assert _occupied(a) == {(6, 8, 1), (6, 6, 1), (6, 5, 1)}
    T_ego_from_cam = pose(0, 0.4, 0, R_EGO_FROM_CAM)
    b = voxelize.run(
        cache.path, tmp_path / "b.zarr", grid=grid, device="cpu", progress=False, grid_camera="CAM_FRONT",
        T_cam_from_grid=(np.linalg.inv(T_ego_from_cam) @ T_ego_from_sensor).tolist(), **BOX,
    )  # fmt: skip
    (sa,), (sb,) = list(open_labels(a)), list(open_labels(b))
    assert np.array_equal(sa["semantics"], sb["semantics"]) and np.array_equal(
        sa["mask_camera"], sb["mask_camera"]
    )
    assert np.allclose(sa["T_ego_from_grid"], T_ego_from_sensor) and np.allclose(
        sb["T_ego_from_grid"], T_ego_from_sensor
    )
    assert open_labels(b).grid == grid and open_labels(b).meta["grid"]["frame"] == "sensor"
    with pytest.raises(OccLabelError, match="grid camera"):
        voxelize.run(
            cache.path, tmp_path / "c.zarr", grid=grid, device="cpu", progress=False, grid_camera="CAM_BACK",
            T_cam_from_grid=np.eye(4).tolist(), **BOX,
        )  # fmt: skip
    with pytest.raises(OccLabelError, match="rigid"):
        voxelize.VoxelizeOptions.from_kwargs(T_ego_from_grid=(2 * np.eye(4)).tolist())


def test_kitti_calibration_and_matrices(tmp_path):
    Tr = np.array([[0, -1, 0, 0.1], [0, 0, -1, -0.05], [1, 0, 0, -0.3]], float)  # velodyne -> cam0
    K = np.array([[700.0, 0, 600], [0, 700, 180], [0, 0, 1]])
    t2 = np.array([0.06, -0.001, 0.003])  # cam0's centre in camera 2
    P0, P2 = np.c_[K, np.zeros(3)], np.c_[K, K @ t2]
    calib = tmp_path / "calib.txt"
    calib.write_text(
        "".join(
            f"{k}: {' '.join(f'{v:.9e}' for v in m.ravel())}\n"
            for k, m in [("P0", P0), ("P2", P2), ("Tr", Tr)]
        )
    )
    T0 = voxelize.kitti_T_cam_from_velo(calib)
    assert np.allclose(T0[:3], Tr)
    T2 = voxelize.kitti_T_cam_from_velo(calib, "P2")
    assert np.allclose(T2[:3, :3], Tr[:, :3]) and np.allclose(T2[:3, 3], Tr[:, 3] + t2)
    assert np.allclose(voxelize.read_matrix(f"kitti:{calib}:P2"), T2)
    assert np.allclose(voxelize.read_matrix(",".join(map(str, Tr.ravel()))), T0)
    np.save(tmp_path / "T.npy", T2)
    assert np.allclose(voxelize.read_matrix(tmp_path / "T.npy"), T2)
    with pytest.raises(OccLabelError, match="12 or 16"):
        voxelize.read_matrix("1,2,3")
    with pytest.raises(OccLabelError, match="not rigid"):
        voxelize.read_matrix(" ".join(["2"] * 12))
    with pytest.raises(OccLabelError, match="P3"):
        voxelize.kitti_T_cam_from_velo(calib, "P3")


def test_cli_custom_grid(tmp_path):
    from click.testing import CliRunner

    from occlabel.cli import main

    cache = box_cache(tmp_path)
    args = ["-q", "voxelize", str(cache.path), "--device", "cpu", "--window", "0", "--ray-stride", "1"]
    r = CliRunner().invoke(
        main, [*args, "--out", str(tmp_path / "l.zarr"), "--grid", "near", "--grid-range", "-1,-3,-0.5,6,3,0.5",
               "--voxel-size", "1", "--option", "edge_tol=0", "--option", "mask_stride=1",
               "--option", "tsdf=false"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    lab = open_labels(tmp_path / "l.zarr")
    assert lab.grid.name == "near" and lab.grid.shape == (7, 6, 1) and lab.meta["options"]["edge_tol"] == 0
    assert _cells(lab[0]["semantics"] != FREE) == BOX_OCCUPIED
    r = CliRunner().invoke(
        main, [*args, "--out", str(tmp_path / "x.zarr"), "--grid-range", "0,0,0,1,1,1", "--voxel-size", "0.3"]
    )
    assert r.exit_code == 2 and "whole number" in r.output
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "x.zarr"), "--grid-camera", "CAM_FRONT"])
    assert r.exit_code == 2 and "--grid-pose" in r.output


# --------------------------------------------------------------------------------------------------
# Estimated depth: flying pixels, grazing surfaces; sources and class sets
# --------------------------------------------------------------------------------------------------


def _blur(inv: np.ndarray) -> np.ndarray:
    k = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    k /= k.sum()
    p = np.pad(inv, ((0, 0), (3, 3)), mode="edge")
    return np.stack([np.convolve(r, k, mode="valid") for r in p])


def test_flying_pixels():
    u = np.arange(40, dtype=np.float32)
    rows = np.ones((9, 1), np.float32)
    plane = rows * (0.05 + 0.002 * u)  # inverse depth of a slanted plane: affine in u
    step = _blur(rows * np.where(u < 20, 0.1, 1 / 30))  # a blurred occlusion boundary at u = 19.5
    pole = _blur(rows * np.where(abs(u - 20) <= 1, 0.1, 1 / 30))  # a 3 px pole in front of a wall

    def flags(inv):
        return voxelize.flying_pixels(torch.from_numpy(1 / inv.astype(np.float32)), 0.1)[4].numpy()

    assert not flags(plane).any()
    f = flags(step)
    assert f[18:22].all() and not f[:16].any() and not f[24:].any()  # the ramp, not the two surfaces
    assert not flags(pole)[20]  # the pole's centre is a bump, not a ramp: kept


def test_surface_cos():
    # a camera 1.5 m above a ground plane: the ray of row v meets the ground at z = 15 / v (fy = 10)
    H, W = 12, 7
    K = np.array([[10.0, 0, 3], [0, 10.0, 0], [0, 0, 1]])
    v, u = np.mgrid[0:H, 0:W].astype(np.float32)
    rays = np.stack([(u - 3) / 10, v / 10, np.ones_like(u)], -1).astype(np.float32)
    depth = np.where(v > 0, 15 / np.maximum(v, 1), np.nan).astype(np.float32)
    c = voxelize.surface_cos(torch.from_numpy(depth), torch.from_numpy(rays)).numpy()
    expected = np.abs(rays[..., 1]) / np.linalg.norm(rays, axis=-1)  # |ray . up|, up = -y (OpenCV)
    assert np.allclose(c[4:-2, 2:-2], expected[4:-2, 2:-2], atol=1e-4)
    assert c[0].tolist() == [1.0] * W  # no depth: treated as frontal
    del K


def ground_cache(root: Path) -> Cache:
    """A camera 1.5 m above a flat road (class 11), horizon at row 0 (sky); rows 1-10 meet the road at
    x = 15 / v: 15, 7.5, 5, 3.75, 3, 2.5, 2.14, 1.88, 1.67, 1.5 m ahead."""
    H, W = 11, 7
    K = np.array([[10.0, 0, 3], [0, 10.0, 0], [0, 0, 1]])
    v = np.arange(H, dtype=np.float32)[:, None] * np.ones((1, W), np.float32)
    depth = np.where(v > 0, 15 / np.maximum(v, 1), np.nan).astype(np.float32)
    labels = np.where(v > 0, 11, 254).astype(np.uint8)
    frames = [{"T_world_from_ego": np.eye(4), "keyframe": True, "maps": {"CAM_FRONT": (depth, labels)}}]
    return build_cache(root, frames, {"CAM_FRONT": (K, pose(0, 0, 1.5, R_EGO_FROM_CAM))})


def test_grazing_road_survives_carving(tmp_path):
    """Rays to the far road run just above it for metres. Stopping one voxel short *along the ray* lets
    the ray to the road at x = 7.5 m (row 2, 1.5 m below the camera over 7.5 m) cross the road voxels at
    x = 5-6.5 m below 0.5 m, where the row-3 pixels hit: with occ_ratio 1 its passes outvote those hits.
    Stopping one voxel short *along the surface normal* (|cos| = 0.2 there: 5 m along the ray) keeps
    every road voxel that a pixel hits."""
    grid = VoxelGrid("road", (0.0, -4.0, -0.5), (16.0, 4.0, 2.5), 1.0)
    cache = ground_cache(tmp_path)
    opts = {**BOX, "occ_ratio": 1.0, "mask_stride": 1}

    def run(name, **kw):
        out = voxelize.run(
            cache.path, tmp_path / name, grid=grid, device="cpu", progress=False, **{**opts, **kw}
        )
        (s,) = list(open_labels(out, counts=True))
        return {tuple(v) for v in np.argwhere(s["semantics"] != FREE).tolist()}, s

    kept, s = run("a.zarr")
    hit = {tuple(v) for v in np.argwhere(s["hits"] > 0).tolist()}
    assert kept == hit and {i for i, _, _ in hit} == {1, 2, 3, 5, 7, 15} and {k for *_, k in hit} == {0}
    assert (s["semantics"][s["semantics"] != FREE] == 11).all()
    carved, _ = run("b.zarr", clearance=0.0)
    assert carved == {v for v in kept if v[0] != 5}


def test_mixed_sources_and_class_sets(tmp_path):
    from occlabel.store.common import read_meta, write_meta
    from occlabel.store.labels import OCC3D, SEMANTICKITTI

    cache = box_cache(tmp_path, label=13)
    runs = {}
    for src in ("cache", "gt-depth", "gt-semantics", "gt"):
        out = voxelize.run(
            cache.path,
            tmp_path / f"l_{src}.zarr",
            grid=BOX_GRID,
            device="cpu",
            progress=False,
            source=src,
            **BOX,
        )
        runs[src] = open_labels(out)
        assert runs[src].meta["source"] == src and runs[src].classes == OCC3D
    for src in ("gt-depth", "gt-semantics", "gt"):  # oracle depth is exact here: the same labels
        assert np.array_equal(runs[src][0]["semantics"], runs["cache"][0]["semantics"]), src

    # semantics made with the SemanticKITTI vocabulary: labels in its ids, free = 0
    import zarr

    g = zarr.open_group(str(cache.path), mode="a")["s0/CAM_FRONT/semantics/oracle"]
    write_meta(
        g,
        {
            **read_meta(g),
            "model": {"name": "clipseg", "conf": {"vocab": "semantickitti"}, "vocab": "semantickitti"},
        },
    )
    out = voxelize.run(cache.path, tmp_path / "sk.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX)
    lab = open_labels(out)
    assert lab.classes == SEMANTICKITTI and lab.meta["options"]["moving_classes"] is None
    s = lab[0]
    assert _cells(s["semantics"] == 13) == BOX_OCCUPIED and _cells(s["semantics"] != 0) == BOX_OCCUPIED
    # an explicit class set wins; GT semantics are Occ3D
    out = voxelize.run(
        cache.path, tmp_path / "o.zarr", grid=BOX_GRID, device="cpu", progress=False, classes="occ3d", **BOX
    )
    assert open_labels(out).classes == OCC3D
    with pytest.raises(OccLabelError, match="class set"):
        voxelize.run(
            cache.path,
            tmp_path / "x.zarr",
            grid=BOX_GRID,
            device="cpu",
            progress=False,
            classes="nope",
            **BOX,
        )


# --------------------------------------------------------------------------------------------------
# TSDF surface localisation; moving classes seen by near and far frames
# --------------------------------------------------------------------------------------------------
#
# A wall (manmade, 15) at x = 5.5 m across the view of a static camera; 1 m voxels, so its layer is
# i = 6 (x in [5, 6)). Eight frames measure it with symmetric depth noise: +0.6 m in even frames, -0.6 m
# in odd ones; no point ever lands in the wall's own voxel.

TSDF_GRID = VoxelGrid("tsdf", (-1.0, -3.0, -0.5), (9.0, 3.0, 0.5), 1.0)


def noisy_wall_cache(root: Path) -> Cache:
    K = np.array([[4.0, 0, 2.0], [0, 4.0, 0.0], [0, 0, 1]])
    frames = []
    for t in range(8):
        depth = np.full((1, 5), 5.5 + (0.6 if t % 2 == 0 else -0.6), np.float32)
        labels = np.full((1, 5), 15, np.uint8)
        frames.append(
            {"T_world_from_ego": np.eye(4), "keyframe": t == 4, "maps": {"CAM_FRONT": (depth, labels)}}
        )
    return build_cache(root, frames, {"CAM_FRONT": (K, pose(0, 0.4, 0, R_EGO_FROM_CAM))})


def test_tsdf_puts_a_noisy_wall_in_its_layer(tmp_path):
    cache = noisy_wall_cache(tmp_path)
    opts = {**BOX, "window": 4, "occ_ratio": 0.5, "tsdf_stride": 1}

    def first_occupied(name: str, **kw) -> set[int]:
        out = voxelize.run(
            cache.path, tmp_path / name, grid=TSDF_GRID, device="cpu", progress=False, **{**opts, **kw}
        )
        (s,) = list(open_labels(out))
        occ = s["semantics"][..., 0] != FREE
        rows = [j for j in range(occ.shape[1]) if occ[:, j].any()]
        assert rows and (s["semantics"][s["semantics"] != FREE] == 15).all()
        return {int(np.argmax(occ[:, j])) for j in rows}  # the first occupied voxel along +x

    # voting only: the points at x = 4.9 make the voxel in front of the wall (i = 5) occupied, those at
    # 6.1 the one behind it; the wall's own voxel holds no point
    vote = first_occupied("vote.zarr", tsdf=False)
    assert 5 in vote and 6 not in vote
    # TSDF: the mean signed distance changes sign inside the wall's voxel; the one in front is free
    # (without space carving: the +0.6 m rays' carving samples reach into the wall's voxel, 1 voxel short
    # of their points, and would tip its mean to +0.6 voxel in some columns)
    assert first_occupied("tsdf.zarr", tsdf=True, tsdf_carve=0.0) == {6}
    assert first_occupied("carve.zarr", tsdf=True) <= {6, 7}  # never in front of the wall


# A parked car (4) at depth 2.5 in the centre pixel of every frame, in front of the wall of moving_cache;
# window 2, moving_window 0 (the keyframe, frame 2). In the other frames its pixel is either labelled car
# too, or flipped to the wall's class (15), as boundary noise does.


def parked_car_cache(root: Path, flipped: bool) -> Cache:
    K = np.array([[4.0, 0, 2.0], [0, 4.0, 0.0], [0, 0, 1]])
    frames = []
    for t in range(5):
        depth = np.full((1, 5), 5.5, np.float32)
        labels = np.full((1, 5), 15, np.uint8)
        depth[0, 2] = 2.5
        labels[0, 2] = 15 if flipped and t != 2 else 4
        frames.append(
            {"T_world_from_ego": np.eye(4), "keyframe": t == 2, "maps": {"CAM_FRONT": (depth, labels)}}
        )
    return build_cache(root, frames, {"CAM_FRONT": (K, pose(0, 0.4, 0, R_EGO_FROM_CAM))})


PARKED = (int(np.floor(2.5 + 1)), int(np.floor(0.4 + 3)))  # the car's voxel (x = 2.5, y = 0.4)


def test_parked_car_keeps_its_class(tmp_path):
    cache = parked_car_cache(tmp_path / "a", flipped=True)
    opts = {**BOX, "window": 2}

    def car_voxel(name, c=cache, **kw):
        out = voxelize.run(
            c.path, tmp_path / name, grid=BOX_GRID, device="cpu", progress=False, **{**opts, **kw}
        )
        (s,) = list(open_labels(out, counts=True))
        return int(s["semantics"][PARKED][0]), int(s["hits"][PARKED][0])

    # four far frames vote "wall" (static: the whole window), the keyframe "car": the near frames decide
    assert car_voxel("share.zarr")[0] == 4
    assert car_voxel("noshare.zarr", moving_share=0.0)[0] == 15  # the far frames' flips outvote it

    # labelled car in every frame: the far frames' car points count where the keyframe saw the car
    parked = parked_car_cache(tmp_path / "b", flipped=False)
    assert car_voxel("cons.zarr", parked) == (4, 5)
    assert car_voxel("nocons.zarr", parked, moving_consistent=-1) == (4, 1)
