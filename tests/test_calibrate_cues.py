"""Tests of calibrate-depth's label-free cues beside the temporal photometric one (issue #4): the ground plane
(known-answer plane depth, robust recovery of a known affine with outliers, fallback for a stationary ego),
the cross-camera overlap (a stationary two-camera rig), the sky term, the decision rule between cues, the
cue switches (options and CLI) and the per-frame store arrays.

Scenes are the analytic corridor of test_calibrate, seen from cameras with a proper ego frame (x forward,
y left, z up, origin on the ground), at 64 x 48 pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cache_builders import R_EGO_FROM_CAM
from click.testing import CliRunner
from PIL import Image
from test_calibrate import H, W, intrinsics, pose, relative_disparity, render, scale_error

from occlabel.calibration import (
    CUES,
    CalibrationConfig,
    GroundCue,
    Reference,
    decide_cues,
    ground_heights,
    sky_cost,
    sky_values,
)
from occlabel.conventions import OCC3D_ID, SKY
from occlabel.datasets.base import CameraImage, Frame, Scene
from occlabel.datasets.folder import load_folder, write_manifest
from occlabel.errors import OccLabelError
from occlabel.geometry.ground import plane_depth, robust_linear_fit
from occlabel.geometry.rig import view_overlap
from occlabel.stages import calibrate_depth
from occlabel.store.cache import FLAGS, Cache, open_cache

CAM_HEIGHT = 1.6  # the corridor's ground is 1.6 m below the cameras
#: a small search: coarse grid 24 x 5, one refinement level (the default grid is 48 x 9)
FAST = {
    "widths": (64,),
    "iters": (15,),
    "s_steps": 24,
    "r_grid": (0.0, 0.07, 0.2, 0.45, 0.8),
}


def T_ego_from_cam(y: float = 0.0, height: float = CAM_HEIGHT, pitch_deg: float = 0.0) -> np.ndarray:
    """A forward-looking camera ``y`` metres left of the ego origin, ``height`` above the ground, pitched
    down by ``pitch_deg``."""
    p = math.radians(pitch_deg)
    R_pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])  # about x
    T = np.eye(4)
    T[:3, :3] = R_EGO_FROM_CAM @ R_pitch.T
    T[:3, 3] = (0.0, y, height)
    return T


# --------------------------------------------------------------------------------------------------
# Geometry: plane depth, robust fit, view overlap
# --------------------------------------------------------------------------------------------------


def test_plane_depth_known_answer():
    """A camera h above the ground pitched theta down: the ray of row v (y = (v - cy) / f in the camera)
    meets the ground at z-depth h / (sin theta + y cos theta); rows at or above the horizon never do."""
    h, theta = 1.5, math.radians(5.0)
    K = torch.tensor(intrinsics(), dtype=torch.float64)
    T = torch.tensor(T_ego_from_cam(0.3, h, 5.0))
    depth, valid = plane_depth(K[None], T[None], H, W)
    f, cy = float(K[1, 1]), float(K[1, 2])
    y = (np.arange(H) - cy) / f
    den = math.sin(theta) + y * math.cos(theta)
    expected = np.where(den > 0, h / np.where(den > 0, den, 1), np.nan)
    got = depth[0].numpy()
    for u in (0, 17, W - 1):  # the z-depth of a horizontal plane does not depend on the column
        np.testing.assert_allclose(got[:, u], expected, rtol=1e-12, atol=0, equal_nan=True)
    assert (valid[0].numpy() == (den > 0)[:, None]).all()
    assert valid[0, -1].all() and not valid[0, 0].any()
    # a raised surface (a sidewalk 0.15 m up) per pixel, and a range limit
    plane_z = torch.full((1, H, W), 0.15, dtype=torch.float64)
    plane_z[0, :, :10] = float("nan")  # not ground there
    depth2, valid2 = plane_depth(K[None], T[None], H, W, plane_z, max_depth_m=20.0)
    ok = (den > 0) & ((h - 0.15) / np.where(den > 0, den, 1) <= 20.0)
    np.testing.assert_allclose(
        depth2[0, :, 20].numpy(), np.where(ok, (h - 0.15) / np.where(den > 0, den, 1), np.nan), rtol=1e-12
    )
    assert not valid2[0, :, :10].any() and (valid2[0, :, 20].numpy() == ok).all()


def test_robust_linear_fit_rejects_outliers():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 400, generator=g, dtype=torch.float64)
    y = 2.0 + 3.0 * x + 0.01 * torch.randn(2, 400, generator=g, dtype=torch.float64)
    bad = torch.rand(2, 400, generator=g) < 0.3  # 30 % gross outliers, all on one side
    y = torch.where(bad, y + 1.0 + torch.rand(2, 400, generator=g, dtype=torch.float64), y)
    A = torch.stack([torch.ones_like(x), x], -1)
    w = torch.ones_like(x)
    w[1, 2:] = 0  # the second problem has too few samples
    fit = robust_linear_fit(A, y, w)
    np.testing.assert_allclose(fit.coef[0].numpy(), [2.0, 3.0], atol=0.01)
    assert torch.isnan(fit.coef[1]).all()
    assert (fit.weight[0][bad[0]] == 0).all() and (fit.weight[0][~bad[0]] > 0).float().mean() > 0.97
    assert 0.005 < float(fit.scale[0]) < 0.02
    # plain least squares is pulled far off by the same outliers
    ls = torch.linalg.lstsq(A[0], y[0, :, None]).solution[:, 0]
    assert abs(float(ls[0]) - 2.0) > 0.2
    # high-leverage outliers (far from the other x), which defeat an L1 start
    xl = torch.cat([x[:1, :300], 10 + x[:1, :100]], 1)
    yl = torch.cat([2.0 + 3.0 * xl[:, :300], torch.zeros(1, 100, dtype=torch.float64)], 1)
    fit = robust_linear_fit(torch.stack([torch.ones_like(xl), xl], -1), yl, torch.ones_like(xl))
    np.testing.assert_allclose(fit.coef[0].numpy(), [2.0, 3.0], atol=1e-6)
    assert (fit.weight[0, 300:] == 0).all()


def test_view_overlap_of_a_rig():
    K = torch.tensor(intrinsics())
    left, right = torch.tensor(T_ego_from_cam(0.25)), torch.tensor(T_ego_from_cam(-0.25))
    frac, base = view_overlap(K, K, left, right, (H, W), (H, W), (5.0, 20.0, float("inf")))
    assert base == pytest.approx(0.5)
    assert frac[2] > 0.99 and frac[0] < frac[1] < frac[2]  # near points shift out of the other view
    back = torch.tensor(T_ego_from_cam(0.0))
    back[:3, :3] = torch.tensor(np.diag([-1.0, -1.0, 1.0])) @ back[:3, :3]  # yaw 180 degrees
    frac, _ = view_overlap(K, K, left, back, (H, W), (H, W))
    assert (frac == 0).all()


# --------------------------------------------------------------------------------------------------
# The ground cue alone
# --------------------------------------------------------------------------------------------------


def _flat_ground_frame(space: str, rng: np.random.Generator, outliers: float = 0.2):
    """One camera 1.5 m above a flat road, pitched 10 degrees down: labels, plane depth, the relative map of
    a known affine (1 % noise) and a block of mislabelled pixels (an object at 40 % of the plane depth
    labelled road). Returns (labels, depth, values, a, b, outlier mask)."""
    K = intrinsics()
    T = T_ego_from_cam(0.0, 1.5, 10.0)
    depth, valid = plane_depth(torch.tensor(K)[None], torch.tensor(T)[None], H, W)
    depth, valid = depth[0].numpy(), valid[0].numpy()
    labels = np.where(valid, OCC3D_ID["driveable_surface"], SKY).astype(np.uint8)
    true_z = np.where(valid, depth, np.inf)
    out = np.zeros((H, W), bool)
    rows = np.flatnonzero(valid.any(1))
    n_rows = max(1, int(round(outliers * len(rows))))
    out[rows[len(rows) // 3 : len(rows) // 3 + n_rows], :] = True  # a band of wrong depths
    true_z = np.where(out, 0.4 * true_z, true_z)
    noise = 1 + 0.01 * rng.standard_normal((H, W))
    if space == "disparity":
        a, b = 0.7, -0.02  # 1/z = a d + b
        values = np.where(np.isfinite(true_z), (noise / true_z - b) / a, -b / a)
    else:
        a, b = 1.8, 0.5  # z = a d + b
        values = np.where(np.isfinite(true_z), (true_z * noise - b) / a, np.nan)
    return labels, depth, values.astype(np.float32), a, b, out & valid


@pytest.mark.parametrize("space", ["disparity", "depth_m"])
def test_ground_cue_recovers_a_known_affine_despite_outliers(space):
    rng = np.random.default_rng(3)
    labels, depth, values, a, b, out = _flat_ground_frame(space, rng)
    ok = labels != SKY
    lo, hi = (np.percentile(values[ok], p) for p in (5, 95))
    ref = Reference(np.array([lo]), np.array([hi]), space)
    vals = torch.from_numpy(values)[None]
    dnorm = (vals - lo) / (hi - lo)
    heights, moving = ground_heights(None, CalibrationConfig())
    assert heights[OCC3D_ID["driveable_surface"]] == 0 and heights[OCC3D_ID["sidewalk"]] == pytest.approx(
        0.15
    )
    assert np.isnan(heights[OCC3D_ID["terrain"]]) and OCC3D_ID["car"] in moving
    cue = GroundCue(
        dnorm,
        torch.from_numpy(labels)[None],
        torch.tensor(intrinsics(), dtype=torch.float32)[None],
        torch.tensor(T_ego_from_cam(0.0, 1.5, 10.0))[None],
        torch.from_numpy(heights),
        CalibrationConfig(ground_erode_px=0),
        space,
    )
    cue.fit((-6.0, 3.0), (-0.05, 0.97) if space == "disparity" else (0.002, 0.97), 10)
    assert cue.ok[0]
    A, B = ref.to_scale_shift(cue.params)
    ground = ok & ~out
    if space == "disparity":
        z = 1 / (A[0] * values + B[0])
    else:
        z = A[0] * values + B[0]
    assert abs(np.median(z[ground] / depth[ground]) - 1) < 0.005
    np.testing.assert_allclose([A[0], B[0]], [a, b], rtol=0.03, atol=0.003 if space == "disparity" else 0.05)
    frac_out = out.sum() / ok.sum()
    assert cue.inlier_frac[0] == pytest.approx(1 - frac_out, abs=0.03)
    assert cue.residual[0] < 0.02
    # the cue's depth ratio: a hypothesis 10 % too far reads 1.1
    s, r = cue.params[0]
    farther = np.array([[s - math.log(1.1), r]]) if space == "disparity" else None
    if farther is not None:
        assert cue.depth_ratio(farther)[0] == pytest.approx(1.1, rel=1e-3)
    # and the objective term is lowest at the ground fit
    p = torch.tensor(cue.params, dtype=torch.float32)[:, None]
    assert float(cue.evaluate(p)[0, 0]) < float(cue.evaluate(p + torch.tensor([0.1, 0.0]))[0, 0])


def test_ground_cue_needs_enough_ground():
    rng = np.random.default_rng(4)
    labels, _, values, *_ = _flat_ground_frame("disparity", rng, outliers=0.0)
    labels = labels.copy()
    labels[labels != SKY] = OCC3D_ID["manmade"]
    labels[-2:, :8] = OCC3D_ID["driveable_surface"]  # 16 pixels of road: too few
    vals = torch.from_numpy(values)[None]
    cue = GroundCue(
        (vals - vals.min()) / (vals.max() - vals.min()),
        torch.from_numpy(labels)[None],
        torch.tensor(intrinsics(), dtype=torch.float32)[None],
        torch.tensor(T_ego_from_cam(0.0, 1.5, 10.0))[None],
        torch.from_numpy(ground_heights(None, CalibrationConfig())[0]),
        CalibrationConfig(),
        "disparity",
    )
    cue.fit((-6.0, 3.0), (-0.05, 0.97), 0.01 * H * W)
    assert not cue.ok[0] and np.isnan(cue.params).all()


def test_sky_term_known_answer():
    """d~_sky is the sky's normalised value; the cost vanishes where the hypothesis puts the sky at infinity."""
    values = torch.linspace(0, 1, W).repeat(1, H, 1).clone()
    labels = torch.full((1, H, W), OCC3D_ID["manmade"], dtype=torch.uint8)
    labels[0, :10] = SKY
    values[0, :10] = -0.25  # the sky's relative value
    ref = Reference(np.array([0.0]), np.array([1.0]))
    sky = sky_values(values, labels, ref, 2, 0.005)
    assert float(sky[0]) == pytest.approx(-0.25)
    # r / (1 - r) = 0.25 puts the sky at zero inverse depth
    r0 = 0.25 / 1.25
    cost = sky_cost(torch.tensor([[[-2.0, r0], [-2.0, r0 + 0.01], [-2.0, r0 + 0.5]]]), sky, 0.02)
    assert float(cost[0, 0]) == pytest.approx(0.0, abs=1e-10) and 0 < cost[0, 1] < 9 < cost[0, 2]
    assert torch.isnan(sky_values(values, torch.zeros_like(labels), ref, 2, 0.005)).all()


# --------------------------------------------------------------------------------------------------
# The decision between cues
# --------------------------------------------------------------------------------------------------


def test_decide_cues_flags_disagreement_and_picks_by_the_rule():
    cfg = CalibrationConfig(cue_tolerance=0.05, photometric_margin=0.02)
    ph = np.array([[-2.0, 0.2]] * 5)
    gr = np.array([[-2.1, 0.25]] * 4 + [[np.nan, np.nan]])
    ph_ok = np.array([True, True, True, False, True])
    ph_cue = np.full(5, CUES["photometric"], np.uint8)
    loss = np.full(5, 0.10)
    # frame 0: agree; 1: disagree, the photometric loss barely rises at the ground estimate -> ground;
    # 2: disagree, clearly rejected by the photometric objective -> photometric; 3: no photometric fit ->
    # ground fallback; 4: no ground fit -> photometric
    at_ground = np.array([0.11, 0.101, 0.13, np.nan, np.nan])
    ratio = np.array([1.03, 0.90, 1.10, np.nan, np.nan])
    params, cue, add = decide_cues(ph, ph_ok, ph_cue, loss, at_ground, gr, ratio, cfg)
    assert cue.tolist() == [
        CUES[k] for k in ("photometric", "ground", "photometric", "ground", "photometric")
    ]
    assert [(f & FLAGS["cue_disagreement"]) != 0 for f in add] == [False, True, True, False, False]
    assert [(f & FLAGS["fallback"]) != 0 for f in add] == [False, False, False, True, False]
    np.testing.assert_array_equal(params[[0, 2, 4]], ph[[0, 2, 4]])
    np.testing.assert_array_equal(params[[1, 3]], gr[[1, 3]])
    # nothing at all: cue none (the stage then falls back to the scene prior)
    _, cue, _ = decide_cues(ph, np.zeros(5, bool), ph_cue, loss, None, gr * np.nan, ratio, cfg)
    assert (cue == CUES["none"]).all()


# --------------------------------------------------------------------------------------------------
# The stage end to end on small rigs
# --------------------------------------------------------------------------------------------------


def rig_cache(root, ego_poses, cams: dict[str, np.ndarray], seed: int = 0):
    """Folder dataset + cache of the corridor seen by ``cams`` (name -> T_ego_from_cam) at each ego pose
    (T_world_from_ego in the corridor's world, y down): relative disparity with a random affine per image.
    Returns (cache path, truth: {(cam, t): (disparity, depth, labels)})."""
    rng = np.random.default_rng(seed)
    K = intrinsics()
    root.mkdir(parents=True, exist_ok=True)
    recs, truth = [], {}
    for t, T_we in enumerate(ego_poses):
        imgs = {}
        for name, T_ec in cams.items():
            img, depth, lab = render(K, T_we @ T_ec)
            disp, _, _ = relative_disparity(depth, rng)
            truth[(name, t)] = (disp, depth, lab)
            ip = root / "images" / name / f"{t:06d}.png"
            ip.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.clip(img * rng.uniform(0.9, 1.1), 0, 1) * 255 + 0.5).astype(np.uint8)).save(
                ip
            )
            imgs[name] = CameraImage(name, ip, ip.relative_to(root).as_posix(), K, T_ec)
        recs.append(Frame(f"f{t:03d}", 0.1 * t, t % 2 == 0, T_we, imgs))
    write_manifest(root, [Scene("scene-0", recs)])
    ds = load_folder(root)
    cache = Cache.create(root / "cache.zarr", ds)
    cache.init_scene(ds.scene("scene-0"), {c: (W, H) for c in cams})
    for name in cams:
        cache.init_depth("scene-0", name, "oracle", {"model": "oracle", "space": "disparity"})
        cache.init_semantics("scene-0", name, "oracle", {"model": {"name": "oracle", "vocab": "occ3d"}})
        for t in range(len(ego_poses)):
            disp, _, lab = truth[(name, t)]
            cache.write_depth("scene-0", name, "oracle", t, disp)
            cache.write_semantics("scene-0", name, "oracle", t, lab, np.full((H, W), 255, np.uint8))
    cache.update_meta(default_depth="oracle", default_semantics="oracle")
    return root / "cache.zarr", truth


def ego_pose(k: float) -> np.ndarray:
    """The corridor's camera path (test_calibrate.pose) as ego poses of a camera at CAM_HEIGHT."""
    return pose(k) @ np.linalg.inv(T_ego_from_cam())


def _errors(cal, truth, cam):
    return [scale_error(cal["scale"][t], cal["shift"][t], *truth[(cam, t)]) for t in range(len(cal["scale"]))]


def test_moving_ego_with_ground_writes_the_cue_arrays(tmp_path):
    path, truth = rig_cache(tmp_path / "ds", [ego_pose(k) for k in range(4)], {"CAM_FRONT": T_ego_from_cam()})
    calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    cache = open_cache(path)
    cal = cache.read_calibration("scene-0", "CAM_FRONT")
    assert cal["done"].all() and (cal["flags"] == 0).all(), cal["flags"]
    assert (cal["cue"] == CUES["photometric"]).all()
    assert np.median(_errors(cal, truth, "CAM_FRONT")) < 0.02
    # the ground cue's own fit is stored beside the decision, and agrees with it
    assert np.isfinite(cal["ground_scale"]).all() and np.isfinite(cal["ground_shift"]).all()
    assert (cal["ground_inliers"] > 0.8).all()
    assert np.all(np.abs(cal["ground_ratio"] - 1) < 0.05), cal["ground_ratio"]
    ground_errs = [
        scale_error(cal["ground_scale"][t], cal["ground_shift"][t], *truth[("CAM_FRONT", t)])
        for t in range(4)
    ]
    assert np.median(ground_errs) < 0.03, ground_errs
    assert cal["attrs"]["cues"] == CUES and cal["attrs"]["options"]["ground"] is True
    assert cache.meta["stages"]["calibrate_depth"]["cue_counts"]["photometric"] == 4
    # a wrong ground height (the road assumed 0.4 m up: plane depths 25 % short): the cues disagree, the
    # frames are flagged, and the photometric objective, which clearly rejects the ground estimate, decides
    calibrate_depth.run(path, device="cpu", progress=False, overwrite=True, ground_height_m=0.4, **FAST)
    cal = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    assert ((cal["flags"] & FLAGS["cue_disagreement"]) != 0).all(), cal["flags"]
    assert np.all(cal["ground_ratio"] > 1.2), cal["ground_ratio"]
    assert (cal["cue"] == CUES["photometric"]).all()
    assert np.median(_errors(cal, truth, "CAM_FRONT")) < 0.02


def test_stationary_ego_falls_back_to_the_ground(tmp_path):
    path, truth = rig_cache(tmp_path / "ds", [ego_pose(0)] * 3, {"CAM_FRONT": T_ego_from_cam()})
    calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    cal = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    assert ((cal["flags"] & FLAGS["stationary"]) != 0).all() and (
        (cal["flags"] & FLAGS["fallback"]) != 0
    ).all()
    assert (cal["cue"] == CUES["ground"]).all()
    assert max(_errors(cal, truth, "CAM_FRONT")) < 0.03
    assert np.isnan(cal["loss"]).all()  # no photometric fit
    # without the ground cue there is nothing to go on: unknown, not wrong
    calibrate_depth.run(path, device="cpu", progress=False, overwrite=True, ground=False, **FAST)
    cal = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    assert (cal["cue"] == CUES["none"]).all() and np.isnan(cal["scale"]).all()
    assert np.isnan(cal["ground_scale"]).all()


def test_stationary_rig_uses_the_overlap_of_its_cameras(tmp_path):
    """Two forward cameras 0.5 m apart, ego parked: no temporal parallax, the other camera gives it."""
    cams = {"CAM_LEFT": T_ego_from_cam(0.25), "CAM_RIGHT": T_ego_from_cam(-0.25)}
    path, truth = rig_cache(tmp_path / "ds", [ego_pose(1)] * 2, cams)
    calibrate_depth.run(path, device="cpu", progress=False, ground=False, **FAST)
    cache = open_cache(path)
    assert cache.meta["stages"]["calibrate_depth"]["overlapping_cameras"]["scene-0"] == {
        "CAM_LEFT": ["CAM_RIGHT"],
        "CAM_RIGHT": ["CAM_LEFT"],
    }
    for cam in cams:
        cal = cache.read_calibration("scene-0", cam)
        assert (cal["cue"] == CUES["overlap"]).all(), cal["cue"]
        assert ((cal["flags"] & FLAGS["stationary"]) != 0).all()
        assert ((cal["flags"] & FLAGS["fallback"]) == 0).all()
        assert max(_errors(cal, truth, cam)) < 0.03
    # switched off, the parked rig has no cue left
    calibrate_depth.run(
        path, device="cpu", progress=False, overwrite=True, ground=False, overlap=False, **FAST
    )
    cal = open_cache(path).read_calibration("scene-0", "CAM_LEFT")
    assert (cal["cue"] == CUES["none"]).all() and np.isnan(cal["scale"]).all()


def test_ground_only_and_switch_errors(tmp_path, monkeypatch):
    path, truth = rig_cache(tmp_path / "ds", [ego_pose(k) for k in range(3)], {"CAM_FRONT": T_ego_from_cam()})
    calls = []
    real = calibrate_depth.fit_camera
    monkeypatch.setattr(
        calibrate_depth, "fit_camera", lambda *a, **k: calls.append(a[3].sum()) or real(*a, **k)
    )
    calibrate_depth.run(path, device="cpu", progress=False, photometric=False, overlap=False, **FAST)
    assert calls == [0]  # nothing fitted photometrically
    cal = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    assert (cal["cue"] == CUES["ground"]).all() and ((cal["flags"] & FLAGS["stationary"]) == 0).all()
    assert max(_errors(cal, truth, "CAM_FRONT")) < 0.03
    with pytest.raises(OccLabelError, match="every cue is switched off"):
        calibrate_depth.run(
            path, device="cpu", progress=False, photometric=False, overlap=False, ground=False
        )


def test_cli_cue_switches(tmp_path, monkeypatch):
    from occlabel.cli import main

    seen = {}
    monkeypatch.setattr(calibrate_depth, "run", lambda cache, **kw: seen.update(kw))
    r = CliRunner().invoke(
        main, ["-q", "calibrate-depth", str(tmp_path / "c.zarr"), "--no-ground", "--no-sky"]
    )
    assert r.exit_code == 0, r.output
    assert (seen["photometric"], seen["overlap"], seen["ground"], seen["sky"]) == (True, True, False, False)
    r = CliRunner().invoke(main, ["-q", "calibrate-depth", str(tmp_path / "c.zarr"), "--no-photometric"])
    assert r.exit_code == 0 and seen["photometric"] is False and seen["ground"] is True


def test_store_reads_calibrations_without_cue_arrays(tmp_path):
    """A store written before the cue arrays existed reads back without them, and a resumed run fills them."""
    path, _ = rig_cache(tmp_path / "ds", [ego_pose(k) for k in range(3)], {"CAM_FRONT": T_ego_from_cam()})
    cache = open_cache(path, "a")
    old = {
        "scale": np.ones(3),
        "shift": np.zeros(3),
        "loss": np.full(3, 0.1),
        "valid_frac": np.full(3, 0.5),
        "flags": np.array([0, FLAGS["fallback"] | FLAGS["stationary"], 0], np.uint8),
        "done": np.array([True, True, False]),
    }
    cache.write_calibration("scene-0", "CAM_FRONT", old, {"method": "photometric-affine"})
    cal = cache.read_calibration("scene-0", "CAM_FRONT")
    assert "cue" not in cal and "ground_scale" not in cal
    calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    cal = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    assert cal["done"].all()
    assert cal["cue"].tolist() == [CUES["photometric"], CUES["prior"], CUES["photometric"]]
    assert np.isnan(cal["ground_scale"][:2]).all() and np.isfinite(cal["ground_scale"][2])
