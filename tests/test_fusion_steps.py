"""The fusion steps of occlabel.fusion alone, on hand-made inputs with answers worked out by hand: gather's
grouping, carve's stops, vote, decide, the presets, and the stage's to-do planner against `info`'s."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cache_builders import BOX_GRID, BOX_OPTS, box_cache

from occlabel.conventions import VoxelGrid
from occlabel.errors import OccLabelError
from occlabel.fusion import (
    FUSION_PRESETS,
    SOURCES,
    MaskRays,
    MovingClasses,
    Points,
    Rays,
    View,
    VoxelizeOptions,
    carve,
    decide,
    fusion_preset,
    gather,
    label_arrays,
    mask_camera,
    vote,
)
from occlabel.fusion.decide import winning_class
from occlabel.stages import voxelize

#: ten 1 m voxels along x: voxel i holds x in [i, i + 1)
LINE = VoxelGrid("line", (0.0, -0.5, -0.5), (10.0, 0.5, 0.5), 1.0)
NC = 18  # Occ3D ids 0..17


def _t(*x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def _opts(**kw) -> VoxelizeOptions:
    base = dict(source="gt", ray_stride=1, step_fraction=0.5, clearance=2.0, stop_frac=0.0)
    return VoxelizeOptions.from_kwargs(**{**base, **kw})


def _ray(length: float, cos: float, w: float, sky: bool = False) -> Rays:
    """One ray along +x from x = 0 (the voxels' lower boundary) to x = length."""
    return Rays(
        origins=torch.zeros(1, 3),
        ends=_t([length, 0.0, 0.0]),
        sky=torch.tensor([sky]),
        cos=_t(cos),
        range_w=_t(w),
    )


# --------------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------------


def test_presets_fill_the_depth_dependent_defaults():
    assert set(FUSION_PRESETS) == {"estimated", "gt"}
    assert [fusion_preset(s) for s in SOURCES] == ["estimated", "gt", "gt", "estimated"]
    for source in SOURCES:
        o = VoxelizeOptions(source=source)
        assert {k: getattr(o, k) for k in FUSION_PRESETS["gt"]} == FUSION_PRESETS[fusion_preset(source)]
    assert FUSION_PRESETS["gt"] == {"tsdf": False, "occ_ratio": 0.0, "edge_tol": 0.0, "range_weight_m": 0.0}
    assert VoxelizeOptions(source="gt", edge_tol=0.3).edge_tol == 0.3  # a given value wins


# --------------------------------------------------------------------------------------------------
# gather
# --------------------------------------------------------------------------------------------------


def _view(frame: int, n_points: int, x_cam: float) -> View:
    """A view at T_world_from_cam = translation (x_cam, 0, 0) with n points and one ray at (1, 0, 0)."""
    T = np.eye(4)
    T[0, 3] = x_cam
    one = torch.ones(1)
    return View(
        frame=frame,
        camera="c",
        T_world_from_cam=T,
        points_cam=torch.zeros(n_points, 3),
        labels=torch.full((n_points,), 3, dtype=torch.long),
        weights=torch.ones(n_points),
        point_range_w=torch.ones(n_points),
        ray_ends_cam=_t([1.0, 0.0, 0.0]),
        ray_sky=torch.zeros(1, dtype=torch.bool),
        ray_cos=one,
        ray_range_w=one,
        mask_ends_cam=_t([2.0, 0.0, 0.0]),
    )


def test_gather_groups_views_by_distance_to_the_keyframe():
    T_grid_from_world = np.eye(4)
    T_grid_from_world[0, 3] = 1.0  # the world's origin at x = 1 in the grid
    views = [_view(5, 2, 0.0), _view(4, 1, 10.0), _view(2, 3, 20.0)]
    obs = gather(views, 5, T_grid_from_world, _opts(window=3, moving_window=1))
    assert list(obs.rays) == ["key", "near", "far"]
    assert obs.rays["key"].origins.tolist() == [[1.0, 0.0, 0.0]]
    assert obs.rays["near"].ends.tolist() == [[12.0, 0.0, 0.0]]  # 1 + 10 + 1
    assert obs.rays["far"].ends.tolist() == [[22.0, 0.0, 0.0]]
    assert obs.points.xyz[:, 0].tolist() == [1.0, 1.0, 11.0, 21.0, 21.0, 21.0]
    assert obs.points.near.tolist() == [True, True, True, False, False, False]
    assert obs.points.key.tolist() == [True, True, False, False, False, False]
    assert obs.mask.ends.tolist() == [[3.0, 0.0, 0.0]]  # only the keyframe's view casts mask rays
    assert obs.band is None  # gt preset: no TSDF


def test_gather_needs_mask_rays_of_keyframe_views():
    v = _view(0, 1, 0.0)
    v.mask_ends_cam = None
    with pytest.raises(ValueError, match="without mask rays"):
        gather([v], 0, np.eye(4), _opts())


# --------------------------------------------------------------------------------------------------
# carve
# --------------------------------------------------------------------------------------------------


def test_carve_one_ray_stops_clearance_along_the_normal():
    """A frontal ray 0 -> 8 m stops clearance = 2 voxels short: samples every 0.5 m at 0.25 .. 5.75 m, two
    in each of voxels 0-5. A ray at 60° to the normal (|cos| 0.5) stops 2 / 0.5 = 4 m short: voxels 0-3.
    A sky ray carves its whole 8 m: voxels 0-7."""
    opts = _opts()
    p = carve({"key": _ray(8.0, 1.0, 0.5)}, LINE, opts, "cpu")
    assert p.raw.tolist() == [2, 2, 2, 2, 2, 2, 0, 0, 0, 0]
    assert p.static.tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]  # range weight 0.5 per sample
    assert torch.equal(p.moving, p.static) and (p.n_rays, p.n_samples) == (1, 12)

    p = carve({"key": _ray(8.0, 1.0, 0.5), "far": _ray(8.0, 0.5, 1.0)}, LINE, opts, "cpu")
    assert p.raw.tolist() == [4, 4, 4, 4, 2, 2, 0, 0, 0, 0]
    assert p.static.tolist() == [3, 3, 3, 3, 1, 1, 0, 0, 0, 0]
    assert p.moving.tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]  # far rays do not carve moving voxels
    assert (p.n_rays, p.n_samples) == (2, 20)

    p = carve({"key": _ray(8.0, 0.1, 1.0, sky=True)}, LINE, opts, "cpu")
    assert p.raw.tolist() == [2] * 8 + [0, 0]


def test_mask_camera_runs_to_the_point():
    seen, n_rays, n_samples = mask_camera(
        MaskRays(torch.zeros(1, 3), _t([3.0, 0.0, 0.0])), LINE, _opts(), "cpu"
    )
    assert seen.tolist() == [True] * 3 + [False] * 7 and (n_rays, n_samples) == (1, 6)
    seen, n_rays, _ = mask_camera(None, LINE, _opts(), "cpu")
    assert not seen.any() and n_rays == 0


# --------------------------------------------------------------------------------------------------
# vote and decide
# --------------------------------------------------------------------------------------------------


def _points(rows: list[tuple[float, int, float, bool]]) -> Points:
    """(x, label, weight, near) per point; range weight 1; near points are the keyframe's."""
    x, lab, w, near = zip(*rows, strict=True)
    xyz = torch.zeros(len(rows), 3)
    xyz[:, 0] = torch.tensor(x)
    near_t = torch.tensor(near)
    return Points(xyz, torch.tensor(lab), torch.tensor(w), torch.ones(len(rows)), near_t, near_t.clone())


def test_vote_counts_static_and_near_moving_points():
    moving = MovingClasses.create([4], "cpu")
    pts = _points(
        [(5.5, 3, 1.0, True)] * 3 + [(5.5, 7, 0.5, True), (7.5, 4, 1.0, False), (8.5, 3, 2.0, False)]
    )
    v = vote(pts, LINE, NC, moving, _opts())
    assert v.counts.tolist() == [0, 0, 0, 0, 0, 4, 0, 0, 1, 0]  # the far car point (voxel 7) is dropped
    assert v.evidence[5] == 3.5 and v.votes[5, 3] == 3.0 and v.votes[5, 7] == 0.5 and v.votes[8, 3] == 2.0
    assert v.n_points == 5 and v.seen.nonzero()[:, 0].tolist() == [5]
    assert v.near_total[5] == 3.5 and not v.near_moving.any()

    # the near frames saw the car next door (voxel 6): with moving_consistent 1 its far point counts
    pts = _points([(6.5, 4, 1.0, True), (7.5, 4, 1.0, False)])
    assert vote(pts, LINE, NC, moving, _opts(moving_consistent=0)).counts[7] == 0
    assert vote(pts, LINE, NC, moving, _opts(moving_consistent=1)).counts[7] == 1


def test_decide_occupied_free_unknown_and_confidence():
    moving = MovingClasses.create([4], "cpu")
    opts = _opts(occ_ratio=0.5)
    v = vote(_points([(5.5, 3, 1.0, True)] * 3 + [(5.5, 7, 0.5, True)]), LINE, NC, moving, opts)
    p = carve({"key": _ray(8.0, 1.0, 0.5)}, LINE, opts, "cpu")  # passes in voxels 0-5
    d = decide(v, p, None, v.seen, moving, LINE.voxel_size, opts)
    # voxel 5: votes 3.5 >= 0.5 x (1 weighted pass x step 0.5) -> occupied, class 3
    assert d.occupied.nonzero()[:, 0].tolist() == [5] and d.best[5] == 3
    assert d.free.nonzero()[:, 0].tolist() == [0, 1, 2, 3, 4]
    out = label_arrays(d, v, p, v.seen, 17, LINE.shape, opts)
    assert out["semantics"][:, 0, 0].tolist() == [17] * 5 + [3] + [17] * 4
    # occupied: class share 3 / 3.5 x mean confidence 3.5 / 4 = 0.75; free: passes / (passes + 0) = 1
    assert out["confidence"][:, 0, 0].tolist() == [255] * 5 + [191] + [0] * 4
    assert out["passes"][:, 0, 0].tolist() == [1] * 6 + [0] * 4  # 2 samples x 0.5 voxel
    assert (
        out["hits"][5, 0, 0] == 4
        and out["mask_camera"][:, 0, 0].tolist() == [False] * 5 + [True] + [False] * 4
    )

    # passes outvote the points: 3.5 < 10 x 0.5 -> free
    d = decide(v, p, None, v.seen, moving, LINE.voxel_size, _opts(occ_ratio=10.0))
    assert not d.occupied.any() and d.free.nonzero()[:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_near_frames_moving_class_outvotes_far_static_votes():
    moving = MovingClasses.create([4], "cpu")
    pts = _points([(5.5, 4, 2.0, True), (5.5, 3, 1.0, True), (5.5, 3, 5.0, False)])
    v = vote(pts, LINE, NC, moving, _opts())
    assert v.votes[5, 3] == 6.0 and v.votes[5, 4] == 2.0
    # the near frames give the car 2 of their 3 votes (>= moving_share 0.5): the car wins
    best, best_votes = winning_class(v, None, moving, _opts())
    assert best[5] == 4 and best_votes[5] == 2.0
    best, best_votes = winning_class(v, None, moving, _opts(moving_share=0.0))
    assert best[5] == 3 and best_votes[5] == 6.0


# --------------------------------------------------------------------------------------------------
# the stage's to-do planner (the rule of run, and of info / --dry-run)
# --------------------------------------------------------------------------------------------------


def test_plan_matches_the_run(tmp_path):
    cache = box_cache(tmp_path)
    out = tmp_path / "l.zarr"
    row = {"scene": "s0", "total": 1, "todo": 1, "done": 0, "uncalibrated": 0}
    for source in ("cache", "gt"):
        assert voxelize.plan(cache.path, out, source=source) == [row]
    voxelize.run(cache.path, out, grid=BOX_GRID, device="cpu", progress=False, **BOX_OPTS)
    done = {**row, "todo": 0, "done": 1}
    assert voxelize.plan(cache.path, out) == [done]
    assert voxelize.plan(cache.path, out, overwrite=True) == [row]
    assert voxelize.plan(cache.path, out, scenes=["s0"]) == [done]


def test_kitti_calib_strict_and_lenient(tmp_path):
    from occlabel.datasets.kitti import read_calib

    f = tmp_path / "calib.txt"
    f.write_text("P0: 1 0 0 0 0 1 0 0 0 0 1 0\ncalib_time: 09-Jan-2012 13:57:47\n")
    assert read_calib(f, strict=False)["P0"].tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    assert "calib_time" not in read_calib(f, strict=False)
    with pytest.raises(OccLabelError, match="cannot read KITTI calibration"):
        read_calib(f)
