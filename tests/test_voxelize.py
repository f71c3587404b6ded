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

from occlabel.conventions import FREE
from occlabel.errors import OccLabelError, StoreError
from occlabel.stages import voxelize
from occlabel.store.cache import Cache
from occlabel.store.labels import open_labels


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
