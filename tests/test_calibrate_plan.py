"""The to-do rule of calibrate-depth (frames_to_do / plan) and the typed pieces of the stage."""

from __future__ import annotations

import numpy as np
import torch
from cache_builders import R_EGO_FROM_CAM, build_cache, pose

from occlabel.calibration.decide import CameraFit, calibration_arrays
from occlabel.stages.calibrate_depth import CalibrationStats, frames_to_do, plan
from occlabel.store.calibration import CALIBRATION_ARRAYS, empty_calibration

K = np.array([[8.0, 0, 4], [0, 8, 3], [0, 0, 1]])


def _cache(tmp_path):
    depth = np.full((6, 8), 5.0, np.float32)
    labels = np.zeros((6, 8), np.uint8)
    frames = []
    for t in range(4):
        maps = {"A": (depth, labels), "B": (depth, labels)}
        frames.append({"T_world_from_ego": pose(x=t), "keyframe": True, "maps": maps})
    cams = {c: (K, pose(R=R_EGO_FROM_CAM)) for c in ("A", "B")}
    cache = build_cache(tmp_path, frames, cams)
    cache.root["s0/B/depth/oracle/done"][2] = False  # camera B: frame 2 waits for its depth
    cache.root["s0/B/present"][3] = False  # and has no image in frame 3
    # camera A: frames 1 and 3 not calibrated
    cal = cache.read_calibration("s0", "A")
    arrays = {k: cal[k] for k in ("scale", "shift", "loss", "valid_frac", "flags")}
    cache.write_calibration("s0", "A", {**arrays, "done": np.array([1, 0, 1, 0], bool)}, {"method": "test"})
    return cache


def test_plan_rows_follow_frames_to_do(tmp_path):
    cache = _cache(tmp_path)
    for overwrite in (False, True):
        rows = plan(cache.path, overwrite=overwrite)
        for row in rows:
            todo = frames_to_do(cache, row["scene"], row["camera"], "oracle", overwrite)
            assert row["todo"] == int(todo.sum())
    a, b = plan(cache.path)
    assert (a["total"], a["todo"], a["done"], a["waiting"]) == (4, 2, 2, 0)
    assert (b["total"], b["todo"], b["done"], b["waiting"]) == (3, 0, 2, 1)
    assert frames_to_do(cache, "s0", "A", "oracle").tolist() == [False, True, False, True]
    assert frames_to_do(cache, "s0", "B", None, overwrite=True).tolist() == [True, True, False, False]


def test_one_calibration_schema_and_untouched_camera_keeps_its_arrays():
    arrays = empty_calibration(3)
    assert list(arrays) == list(CALIBRATION_ARRAYS)
    assert np.isnan(arrays["scale"]).all() and not arrays["done"].any()
    prev = {k: v.copy() for k, v in empty_calibration(3).items()}
    prev["scale"][:] = 2.0
    prev["done"][:] = [True, True, False]
    fit = CameraFit("disparity", 3, np.zeros(3, bool), prev)
    out = calibration_arrays(fit, np.zeros((0, 2)))
    assert out["scale"].tolist()[:2] == [2.0, 2.0] and np.isnan(out["scale"][2])
    assert out["done"].tolist() == [True, True, False]


def test_stats_merge():
    a, b = CalibrationStats(), CalibrationStats()
    a.add(np.array([1.0, 3.0]), np.array([1, 0], np.uint8), np.array([1, 4], np.uint8))
    b.add(np.array([2.0]), np.array([8], np.uint8), np.array([0], np.uint8))
    a.merge(b)
    s = a.summary()
    assert s["frames_calibrated"] == 3 and s["median_source_baseline_m"] == 2.0
    assert s["flag_counts"]["stationary"] == 1 and s["flag_counts"]["fallback"] == 1
    assert s["cue_counts"] == {"none": 1, "photometric": 1, "overlap": 0, "ground": 0, "prior": 1}


def test_run_leaves_the_global_rng_alone():
    from occlabel.stages.calibrate_depth import _seeded

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with _seeded(0, torch.device("cpu")):
        assert not torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(torch.random.get_rng_state(), before)
