"""Tests of stage 2, calibrate-depth: photometric loss, gradients, recovery of a known affine on an
analytic scene, degenerate cases and the stage end to end on a tiny cache.

The scene is rendered analytically here (no dependency on the synthetic world): a corridor with a textured
ground plane, two walls, a far wall and sky, seen by a camera driving forward; exact depth and labels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from occlabel.calibration import (
    CalibrationConfig,
    CameraFrames,
    PhotometricCue,
    Reference,
    fit_camera,
)
from occlabel.conventions import OCC3D_ID, SKY
from occlabel.datasets.base import CameraImage, Frame, Scene
from occlabel.datasets.folder import load_folder, write_manifest
from occlabel.geometry.photometric import fit_gain, min_reprojection, pixel_error, ssim_box, static_mask
from occlabel.stages import calibrate_depth
from occlabel.store.cache import FLAGS, Cache, open_cache

W, H = 64, 48

# --------------------------------------------------------------------------------------------------
# An analytic scene
# --------------------------------------------------------------------------------------------------


def _texture(u: np.ndarray, v: np.ndarray, seed: int, n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(u.shape + (3,))
    for _ in range(n):
        f = np.exp(rng.uniform(np.log(0.15), np.log(2.0)))
        th, ph = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        col = rng.uniform(0.3, 1.0, 3) * 0.5 / np.sqrt(n)
        out += col * np.sin(2 * np.pi * f * (np.cos(th) * u + np.sin(th) * v) + ph)[..., None]
    return 0.5 + out


# (axis, value, class, texture axes, seed): ground y = 1.6 (OpenCV world: y down), walls, far wall
_PLANES = (
    (1, 1.6, OCC3D_ID["driveable_surface"], (0, 2), 1),
    (0, -4.0, OCC3D_ID["manmade"], (2, 1), 2),
    (0, 5.0, OCC3D_ID["vegetation"], (2, 1), 3),
    (2, 80.0, OCC3D_ID["manmade"], (0, 1), 4),
)
_TOP, _LEFT, _RIGHT, _FAR, _GROUND = -6.0, -4.0, 5.0, 80.0, 1.6


def _cast(K: np.ndarray, T_world_from_cam: np.ndarray, h: int, w: int):
    v, u = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rays = np.stack([u, v, np.ones_like(u)], -1).astype(np.float64) @ np.linalg.inv(K).T  # z = 1
    R, c = T_world_from_cam[:3, :3], T_world_from_cam[:3, 3]
    d = rays @ R.T
    depth = np.full((h, w), np.inf)
    lab = np.full((h, w), SKY, np.uint8)
    col = np.zeros((h, w, 3))
    for axis, val, cls, (ia, ib), seed in _PLANES:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (val - c[axis]) / d[..., axis]
        p = c + t[..., None] * d
        ok = np.isfinite(t) & (t > 1e-6)
        if axis != 1:
            ok &= (p[..., 1] >= _TOP) & (p[..., 1] <= _GROUND)
        if axis == 2:
            ok &= (p[..., 0] >= _LEFT) & (p[..., 0] <= _RIGHT)
        if axis == 1:
            ok &= p[..., 2] <= _FAR
        upd = ok & (t < depth)
        depth = np.where(upd, t, depth)  # rays have z = 1 in the camera frame: t is the z-depth
        lab = np.where(upd, cls, lab)
        col = np.where(upd[..., None], _texture(p[..., ia], p[..., ib], seed), col)
    col[lab == SKY] = (0.55, 0.7, 0.9)
    return np.clip(col, 0, 1), depth, lab


def render(K: np.ndarray, T_world_from_cam: np.ndarray, h: int = H, w: int = W, ss: int = 3):
    """(image <float: h, w, 3> in [0, 1] supersampled ss x ss, depth <h, w> (inf = sky), labels <uint8>)."""
    Ks = K.copy()
    Ks[:2] *= ss
    Ks[0, 2] = ss * (K[0, 2] + 0.5) - 0.5
    Ks[1, 2] = ss * (K[1, 2] + 0.5) - 0.5
    col = _cast(Ks, T_world_from_cam, h * ss, w * ss)[0].reshape(h, ss, w, ss, 3).mean((1, 3))
    _, depth, lab = _cast(K, T_world_from_cam, h, w)
    return col, depth, lab


def intrinsics(w: int = W, h: int = H) -> np.ndarray:
    return np.array([[0.8 * w, 0, (w - 1) / 2], [0, 0.8 * w, (h - 1) / 2], [0, 0, 1.0]])


def pose(k: float, step: float = 1.0) -> np.ndarray:
    """Camera pose at frame k: driving forward (+z) with a small sway and yaw."""
    th = 0.03 * np.sin(0.3 * k)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]]
    T[:3, 3] = [0.2 * np.sin(0.5 * k), 0.0, step * k]
    return T


def relative_disparity(depth: np.ndarray, rng: np.random.Generator, noise: float = 0.02):
    """A foundation-model-like disparity: unknown affine (scale log-uniform in [0.1, 10]) and noise.

    Returns (disparity <float32: h, w> with sky = the shift alone, alpha, beta).
    """
    alpha = float(np.exp(rng.uniform(np.log(0.1), np.log(10.0))))
    inv = np.where(np.isfinite(depth), 1.0 / depth, 0.0)
    beta = float(rng.uniform(-0.3, 0.3) * alpha * np.median(inv[inv > 0]))
    d = alpha * inv * (1 + noise * rng.standard_normal(depth.shape)) + beta
    return d.astype(np.float32), alpha, beta


def make_frames(poses, seed: int = 0, gains=True):
    rng = np.random.default_rng(seed)
    K = intrinsics()
    out = []
    for P in poses:
        img, depth, lab = render(K, P)
        g = rng.uniform(0.9, 1.1) if gains else 1.0  # per-frame exposure
        disp, _, _ = relative_disparity(depth, rng)
        out.append(
            {"image": np.clip(img * g, 0, 1), "depth": depth, "labels": lab, "disparity": disp, "pose": P}
        )
    return K, out


def camera_frames(K, frames, dtype=torch.float32, neighbours=(-1, 1)) -> CameraFrames:
    """CameraFrames for fit_camera, every frame a target, from make_frames output."""
    T = len(frames)
    vals = torch.from_numpy(np.stack([f["disparity"] for f in frames])).to(dtype)
    static = static_mask(torch.from_numpy(np.stack([f["labels"] for f in frames]))) & torch.isfinite(vals)
    lo = np.array([np.percentile(vals[i][static[i]].numpy(), 5) for i in range(T)])
    hi = np.array([np.percentile(vals[i][static[i]].numpy(), 95) for i in range(T)])
    t = np.arange(T)
    src = np.stack([np.clip(t + o, 0, T - 1) for o in neighbours], 1)
    ok = np.stack([(t + o >= 0) & (t + o < T) for o in neighbours], 1)
    return CameraFrames(
        images=torch.from_numpy(np.stack([f["image"] for f in frames])).permute(0, 3, 1, 2).to(dtype),
        K=torch.from_numpy(np.stack([K] * T)).to(dtype),
        T_world_from_cam=torch.from_numpy(np.stack([f["pose"] for f in frames])),
        values=vals,
        static=static,
        targets=torch.arange(T),
        sources=torch.from_numpy(src),
        source_ok=torch.from_numpy(ok),
        baseline_m=np.ones((T, len(neighbours))),
        reference=Reference(lo, hi),
    )


def scale_error(
    scale: float, shift: float, disparity: np.ndarray, depth: np.ndarray, labels: np.ndarray
) -> float:
    """|median(z_calibrated / z_true) - 1| over the static pixels with finite depth."""
    m = (labels != SKY) & np.isfinite(depth)
    z = 1.0 / (scale * disparity[m].astype(np.float64) + shift)
    return float(abs(np.median(z / depth[m]) - 1))


# --------------------------------------------------------------------------------------------------
# Photometric building blocks
# --------------------------------------------------------------------------------------------------


def test_ssim_box_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64)).clamp(0, 1)
    got = ssim_box(x, y)[0, 0].numpy()
    xp = np.pad(x[0, 0].numpy(), 1, mode="reflect")
    yp = np.pad(y[0, 0].numpy(), 1, mode="reflect")
    c1, c2 = 0.01**2, 0.03**2
    for i in range(5):
        for j in range(6):
            a, b = xp[i : i + 3, j : j + 3], yp[i : i + 3, j : j + 3]
            ma, mb = a.mean(), b.mean()
            va, vb, cov = a.var(), b.var(), ((a - ma) * (b - mb)).mean()
            ref = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            assert got[i, j] == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("ssim", ["box", "gaussian"])
def test_pixel_error(ssim):
    x = torch.rand(2, 3, 12, 14, generator=torch.Generator().manual_seed(1))
    assert pixel_error(x, x, ssim=ssim).abs().max() < 1e-5
    e = pixel_error(x, x.flip(-1), ssim=ssim)
    assert e.shape == (2, 12, 14) and (e >= 0).all() and e.mean() > 0.1
    l1 = pixel_error(x, x + 0.1, alpha=0.0)
    torch.testing.assert_close(l1, torch.full_like(l1, 0.1))


def test_fit_gain_recovers_exposure():
    x = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(2)) * 0.8 + 0.1
    gains = torch.tensor([0.9, 1.1])[:, None, None, None]
    mask = torch.ones(2, 10, 10, dtype=torch.bool)
    mask[:, :3] = False
    g = fit_gain(x, x * gains, mask)
    torch.testing.assert_close(g, (1 / gains).expand(2, 3, 1, 1))
    assert fit_gain(x, x, torch.zeros_like(mask)).eq(1).all()


def test_min_reprojection_and_automask():
    # 1 frame, 2 sources, 4 pixels
    err = torch.tensor([[[0.1, 0.5, 0.3, 0.9]], [[0.2, 0.4, 0.8, 0.9]]])[None, :, 0]  # [1 x 2 x 4]
    valid = torch.tensor([[True, True, False, False], [True, False, True, False]])[None]
    ident = torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.6, 0.6, 0.6, 0.6]])[None]
    loss, used, has = min_reprojection(err, valid, ident)
    torch.testing.assert_close(loss[0], torch.tensor([0.1, 0.3, 0.3, 0.3]))
    assert used[0].tolist() == [True, False, False, False]
    assert has[0].tolist() == [True, True, True, False]
    loss, used, _ = min_reprojection(err, valid)
    torch.testing.assert_close(loss[0], torch.tensor([0.1, 0.5, 0.8, 0.0]))
    assert used[0].tolist() == [True, True, True, False]


def test_static_mask_excludes_sky_and_moving_classes():
    lab = torch.tensor(
        [[SKY, OCC3D_ID["car"], OCC3D_ID["pedestrian"], OCC3D_ID["manmade"], 255]], dtype=torch.uint8
    )
    assert static_mask(lab).tolist() == [[False, False, False, True, True]]


# --------------------------------------------------------------------------------------------------
# The objective in (log a, b): gradients
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corridor():
    """Five frames of the corridor, moving forward 1 m per frame, exposure changing per frame."""
    return make_frames([pose(k) for k in range(5)], seed=0)


def _true_affine(frame) -> tuple[float, float]:
    """Least-squares (a, b) of 1/z = a d + b (the floor fit) on the static pixels."""
    m = (frame["labels"] != SKY) & np.isfinite(frame["depth"])
    A = np.stack([frame["disparity"][m], np.ones(m.sum())], 1).astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(A, 1.0 / frame["depth"][m], rcond=None)
    return float(a), float(b)


def _loss_of_log_a_b(cue: PhotometricCue, ref: Reference, frame: int):
    d_lo, d_hi = float(ref.d_lo[frame]), float(ref.d_hi[frame])

    def f(log_a, b):
        a = torch.exp(log_a)
        v_hi, v_lo = a * d_hi + b, a * d_lo + b
        params = torch.stack([torch.log(v_hi), v_lo / v_hi], -1).reshape(1, 1, 2)
        return cue.evaluate(params, torch.tensor([frame])).loss[0, 0]

    return f


def test_loss_gradcheck_wrt_log_a_and_b(corridor):
    K, frames = corridor
    small = [dict(f) for f in frames[:2]]
    cam = camera_frames(K, small, dtype=torch.float64)
    cfg = CalibrationConfig(automask=False)
    cue = PhotometricCue(cam, 20, cfg, "disparity", 2**20)
    a, b = _true_affine(small[1])
    f = _loss_of_log_a_b(cue, cam.reference, 1)
    inputs = (
        torch.tensor(np.log(a) + 0.05, dtype=torch.float64, requires_grad=True),
        torch.tensor(b, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-5, rtol=1e-3)


def test_gradient_points_toward_the_true_scale(corridor):
    K, frames = corridor
    cam = camera_frames(K, frames)
    cue = PhotometricCue(cam, W, CalibrationConfig(), "disparity", 2**22)
    for t in (1, 2, 3):
        a, b = _true_affine(frames[t])
        f = _loss_of_log_a_b(cue, cam.reference, t)
        for delta, sign in ((0.15, 1.0), (-0.15, -1.0)):
            # scale a and shift b together (depth scaled by exp(-delta)): pure metric-scale error
            la = torch.tensor(np.log(a) + delta, requires_grad=True)
            loss = f(la, torch.tensor(b * np.exp(delta)))
            (g,) = torch.autograd.grad(loss, la)
            assert sign * float(g) > 0, (t, delta, float(g))
        # and the loss is lowest at the true affine
        at = float(f(torch.tensor(np.log(a)), torch.tensor(b)))
        for delta in (-0.1, 0.1):
            assert at < float(f(torch.tensor(np.log(a) + delta), torch.tensor(b * np.exp(delta))))


# --------------------------------------------------------------------------------------------------
# Recovery of a known affine
# --------------------------------------------------------------------------------------------------


def test_recovers_per_frame_affine_within_2_percent(corridor):
    K, frames = corridor
    cam = camera_frames(K, frames)
    res = fit_camera(cam, CalibrationConfig(), "disparity", np.ones(len(frames), bool), 2**22)
    a, b = cam.reference.to_scale_shift(res.params)
    errs = [scale_error(a[t], b[t], f["disparity"], f["depth"], f["labels"]) for t, f in enumerate(frames)]
    assert max(errs) < 0.02, errs
    assert np.median(errs) < 0.01, errs
    assert (res.flags == 0).all(), res.flags
    assert (res.valid_frac > 0.3).all()
    # the relative maps had scales spread over 0.1-10x: the fitted a differ accordingly per frame
    assert a.max() / a.min() > 2


def test_robust_to_strong_exposure_changes(corridor):
    """Exposure gains of 0.7-1.0 between neighbours (the data has 0.9-1.1): the fit stays on target."""
    K, frames = corridor
    strong = [
        dict(f, image=np.clip(f["image"] * g, 0, 1))
        for f, g in zip(frames, (0.7, 1.0, 0.75, 1.0, 0.7), strict=True)
    ]
    cam = camera_frames(K, strong)
    res = fit_camera(cam, CalibrationConfig(widths=(64,)), "disparity", np.ones(5, bool), 2**22)
    a, b = cam.reference.to_scale_shift(res.params)
    errs = [scale_error(a[t], b[t], f["disparity"], f["depth"], f["labels"]) for t, f in enumerate(strong)]
    assert np.median(errs) < 0.02, errs


# --------------------------------------------------------------------------------------------------
# The stage on a cache: end to end, resume, degenerate cases
# --------------------------------------------------------------------------------------------------


def write_dataset_and_cache(root, frames, K, cam="CAM_FRONT", scene_name="scene-0"):
    """A folder dataset of the frames and a cache holding their disparity and semantics."""
    root.mkdir(parents=True, exist_ok=True)
    recs = []
    for t, f in enumerate(frames):
        ip = root / "images" / f"{t:06d}.png"
        ip.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((f["image"] * 255 + 0.5).astype(np.uint8)).save(ip)
        dp = root / "depth" / f"{t:06d}.npy"
        dp.parent.mkdir(parents=True, exist_ok=True)
        np.save(dp, np.where(np.isfinite(f["depth"]), f["depth"], 0).astype(np.float32))
        img = CameraImage(cam, ip, ip.relative_to(root).as_posix(), K, np.eye(4), depth_path=dp)
        recs.append(Frame(f"f{t:03d}", 0.1 * t, t % 2 == 0, f["pose"], {cam: img}))
    write_manifest(root, [Scene(scene_name, recs)])
    ds = load_folder(root)
    cache = Cache.create(root / "cache.zarr", ds)
    scene = ds.scene(scene_name)
    cache.init_scene(scene, {cam: (W, H)})
    cache.init_depth(scene_name, cam, "oracle", {"model": "oracle", "space": "disparity"})
    cache.init_semantics(scene_name, cam, "oracle", {"model": "oracle"})
    for t, f in enumerate(frames):
        cache.write_depth(scene_name, cam, "oracle", t, f["disparity"])
        cache.write_semantics(scene_name, cam, "oracle", t, f["labels"], np.full((H, W), 255, np.uint8))
    cache.update_meta(default_depth="oracle", default_semantics="oracle")
    return root / "cache.zarr"


FAST = {"widths": (64,), "iters": (15,)}


def test_run_end_to_end_writes_and_resumes(tmp_path, corridor, monkeypatch):
    K, frames = corridor
    path = write_dataset_and_cache(tmp_path / "ds", frames, K)
    out = calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    assert out == path
    cache = open_cache(path)
    cal = cache.read_calibration("scene-0", "CAM_FRONT")
    assert cal["done"].all() and (cal["flags"] == 0).all(), cal["flags"]
    assert np.all(cal["scale"] > 0) and np.all(np.isfinite(cal["shift"]))
    assert np.all(cal["valid_frac"] > 0.3) and np.all(np.isfinite(cal["loss"]))
    for t, f in enumerate(frames):
        depth = cache.metric_depth("scene-0", "CAM_FRONT", t)
        m = np.isfinite(depth) & np.isfinite(f["depth"])
        assert m.mean() > 0.5
        assert abs(np.median(depth[m] / f["depth"][m]) - 1) < 0.03
    stage = cache.meta["stages"]["calibrate_depth"]
    assert stage["neighbours"] == [-1, 1] and stage["options"]["widths"] == [64]
    assert cal["attrs"]["method"] == "photometric-affine"

    # a rerun skips the frames already done: nothing is fitted, nothing changes
    calls = []
    real = calibrate_depth.fit_camera
    monkeypatch.setattr(calibrate_depth, "fit_camera", lambda *a, **k: calls.append(1) or real(*a, **k))
    calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    assert calls == []
    np.testing.assert_array_equal(
        open_cache(path).read_calibration("scene-0", "CAM_FRONT")["scale"], cal["scale"]
    )
    # a frame whose calibration is missing is redone alone; overwrite redoes everything
    g = open_cache(path, "a").root["scene-0/CAM_FRONT/depth/oracle/calibration/done"]
    d = g[:]
    d[2] = False
    g[:] = d
    calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    assert len(calls) == 1
    cal2 = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    assert cal2["done"].all()
    np.testing.assert_array_equal(np.delete(cal2["scale"], 2), np.delete(cal["scale"], 2))
    calibrate_depth.run(path, device="cpu", progress=False, overwrite=True, **FAST)
    assert len(calls) == 2

    # --write-depth on a calibrated cache stores every frame's metric depth without refitting anything
    from occlabel.errors import StoreError

    with pytest.raises(StoreError, match="no stored metric depth"):
        open_cache(path).read_metric_depth("scene-0", "CAM_FRONT", 0)
    calibrate_depth.run(path, device="cpu", progress=False, write_depth=True, **FAST)
    assert len(calls) == 2
    cache = open_cache(path)
    assert cache.metric_depth_done("scene-0", "CAM_FRONT").all()
    for t in range(len(frames)):
        stored = cache.read_metric_depth("scene-0", "CAM_FRONT", t)
        computed = cache.metric_depth("scene-0", "CAM_FRONT", t)
        assert stored.dtype == np.float32 and stored.shape == computed.shape
        assert np.array_equal(np.isnan(stored), np.isnan(computed))
        m = np.isfinite(computed)
        np.testing.assert_allclose(stored[m], computed[m], rtol=1e-3)  # float16 storage


def test_stationary_frames_are_flagged_and_fall_back(tmp_path):
    # frames 0-3 drive, then the car stops for frames 4-7. Strides of up to 3 frames reach back to where
    # the car was moving for frames 4 and 5; frames 6 and 7 have no baseline to any usable neighbour.
    poses = [pose(k) for k in range(4)] + [pose(3)] * 4
    K, frames = make_frames(poses, seed=1)
    path = write_dataset_and_cache(tmp_path / "ds", frames, K)
    calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    cal = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    stationary = (cal["flags"] & FLAGS["stationary"]) != 0
    fallback = (cal["flags"] & FLAGS["fallback"]) != 0
    assert stationary.tolist() == [False] * 6 + [True] * 2
    assert fallback.tolist() == stationary.tolist()
    assert cal["done"].all()
    # the fallback (median scene prior in the normalised parameters) is still a sane metric scale
    for t in (4, 5):
        f = frames[t]
        assert scale_error(cal["scale"][t], cal["shift"][t], f["disparity"], f["depth"], f["labels"]) < 0.03
    for t in (6, 7):
        f = frames[t]
        assert np.isfinite(cal["scale"][t]) and cal["scale"][t] > 0
        assert scale_error(cal["scale"][t], cal["shift"][t], f["disparity"], f["depth"], f["labels"]) < 0.15
    # resumed run redoing only the stationary frames: the prior comes from the stored calibrations
    done = open_cache(path, "a").root["scene-0/CAM_FRONT/depth/oracle/calibration/done"]
    done[6:] = False
    calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    cal2 = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    assert cal2["done"].all() and ((cal2["flags"][6:] & FLAGS["fallback"]) != 0).all()
    np.testing.assert_allclose(cal2["scale"], cal["scale"], rtol=1e-5)


def test_all_stationary_scene_gives_no_metric_depth(tmp_path):
    K, frames = make_frames([pose(0)] * 3, seed=2)
    path = write_dataset_and_cache(tmp_path / "ds", frames, K)
    calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    cal = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    assert ((cal["flags"] & FLAGS["stationary"]) != 0).all()
    assert ((cal["flags"] & FLAGS["fallback"]) != 0).all()
    assert np.isnan(cal["scale"]).all()  # unknown, not silently wrong


def test_all_sky_and_moving_frames_are_low_valid(tmp_path, corridor):
    K, frames = corridor
    frames = [dict(f) for f in frames]
    frames[2]["labels"] = np.full_like(frames[2]["labels"], SKY)  # nothing usable
    lab = frames[3]["labels"].copy()
    lab[lab != SKY] = OCC3D_ID["car"]  # everything may move
    frames[3]["labels"] = lab
    path = write_dataset_and_cache(tmp_path / "ds", frames, K)
    calibrate_depth.run(path, device="cpu", progress=False, **FAST)
    cal = open_cache(path).read_calibration("scene-0", "CAM_FRONT")
    low = (cal["flags"] & FLAGS["low_valid"]) != 0
    assert low.tolist() == [False, False, True, True, False]
    assert ((cal["flags"][[2, 3]] & FLAGS["fallback"]) != 0).all()
    assert (cal["flags"][[0, 1, 4]] == 0).all()
    assert cal["valid_frac"][2] == 0 and cal["valid_frac"][3] == 0


def test_options_are_checked(tmp_path, corridor):
    K, frames = corridor
    path = write_dataset_and_cache(tmp_path / "ds", frames[:2], K)
    with pytest.raises(Exception, match="unknown option"):
        calibrate_depth.run(path, device="cpu", progress=False, not_an_option=1)


def test_choose_sources_strides_to_the_target_baseline():
    # camera centres 0.4 m apart, frames 3 and 4 missing for this camera
    centres = np.stack([np.zeros(8), np.zeros(8), 0.4 * np.arange(8)], 1)
    present = np.ones(8, bool)
    present[[3, 4]] = False
    src, ok, base = calibrate_depth.choose_sources(centres, present, np.array([0, 2, 7]), (-1, 1), 1.0, 3)
    # frame 0: no previous frame; next: 1 (0.4 m), 2 (0.8 m), 3 missing -> the largest baseline, 2
    assert ok[0].tolist() == [False, True] and src[0, 1] == 2
    # frame 2: previous strides 1, 2 exist (0.4, 0.8 m): the largest; next: 3, 4 missing, 5 = stride 3
    assert src[1].tolist() == [0, 5] and np.allclose(base[1], [0.8, 1.2])
    # frame 7: next does not exist; previous: 6 (0.4), 5 (0.8), 4 missing -> 5
    assert ok[2].tolist() == [True, False] and src[2, 0] == 5
    # stride 1 reproduces the plain neighbours
    src, ok, _ = calibrate_depth.choose_sources(centres, np.ones(8, bool), np.array([0, 4]), (-1, 1), 1.0, 1)
    assert src[1].tolist() == [3, 5] and ok[0].tolist() == [False, True]


def test_chunked_evaluation_and_determinism(corridor):
    K, frames = corridor
    cam = camera_frames(K, frames)
    cfg = CalibrationConfig()
    hyp = torch.stack(
        torch.meshgrid(torch.linspace(-2, -1, 4), torch.tensor([0.0, 0.1, 0.3]), indexing="ij"), -1
    )
    hyp = hyp.reshape(1, -1, 2).expand(len(frames), -1, -1).contiguous()
    big = PhotometricCue(cam, W, cfg, "disparity", 2**24).evaluate(hyp)
    small = PhotometricCue(cam, W, cfg, "disparity", 5000).evaluate(hyp)  # one hypothesis at a time
    torch.testing.assert_close(big.loss, small.loss)
    torch.testing.assert_close(big.valid_frac, small.valid_frac)
    opts = CalibrationConfig(widths=(48, 64), iters=(6, 4))
    r1 = fit_camera(cam, opts, "disparity", np.ones(5, bool), 2**22)
    r2 = fit_camera(cam, opts, "disparity", np.ones(5, bool), 20000)
    np.testing.assert_array_equal(r1.params, r2.params)


def test_not_converged_is_flagged(corridor):
    """No refinement and a single pattern-search round: frames still improving are not converged."""
    K, frames = corridor
    cam = camera_frames(K, frames)
    cfg = CalibrationConfig(widths=(64,), iters=(0,), polish_rounds=1, polish_steps=(0.002, 0.002))
    res = fit_camera(cam, cfg, "disparity", np.ones(5, bool), 2**22)
    assert ((res.flags & FLAGS["not_converged"]) != 0).any()
    res = fit_camera(cam, CalibrationConfig(widths=(64,)), "disparity", np.ones(5, bool), 2**22)
    assert (res.flags == 0).all()


def _synthetic_cache(tmp_path, ego_speed, frames=6, size=(128, 80)):
    synthetic = pytest.importorskip("occlabel.datasets.synthetic")
    root = synthetic.synth(tmp_path / "ds", frames=frames, size=size, progress=False, ego_speed=ego_speed)
    from occlabel.datasets.base import load_depth_m, load_semantics

    ds = load_folder(root)
    cache = Cache.create(tmp_path / "cache.zarr", ds)
    rng = np.random.default_rng(0)
    scene = ds.scenes[0]
    cache.init_scene(scene, {c: size for c in scene.cameras})
    truth = []
    for cam in scene.cameras:
        cache.init_depth(scene.name, cam, "oracle", {"model": "oracle", "space": "disparity"})
        cache.init_semantics(scene.name, cam, "oracle", {"model": "oracle"})
        for t, f in enumerate(scene.frames):
            depth = load_depth_m(f.images[cam].depth_path)
            labels = load_semantics(f.images[cam].semantics_path)
            disp, _, _ = relative_disparity(np.where(np.isfinite(depth), depth, np.inf), rng)
            cache.write_depth(scene.name, cam, "oracle", t, disp)
            cache.write_semantics(scene.name, cam, "oracle", t, labels, np.full_like(labels, 255))
            truth.append((t, cache.read_depth(scene.name, cam, "oracle", t), depth, labels))
    cache.update_meta(default_depth="oracle", default_semantics="oracle")
    return tmp_path / "cache.zarr", scene, truth


def test_synthetic_world_end_to_end(tmp_path):
    """The stage on the synthetic street (moving ego, exposure changes, moving actors)."""
    path, scene, truth = _synthetic_cache(tmp_path, ego_speed=8.0)
    calibrate_depth.run(path, device="cpu", progress=False, widths=(64, 128), iters=(15, 8))
    cal = open_cache(path).read_calibration(scene.name, "CAM_FRONT")
    assert cal["done"].all() and (cal["flags"] == 0).all(), cal["flags"]
    errs = [scale_error(cal["scale"][t], cal["shift"][t], d, z, lab) for t, d, z, lab in truth]
    assert np.median(errs) < 0.02 and max(errs) < 0.05, errs


def test_synthetic_parked_ego_is_stationary(tmp_path):
    """A parked ego: no temporal parallax. The ground-plane cue still gives the metric scale (issue #4);
    without it the depth is unknown (NaN), never silently wrong."""
    path, scene, truth = _synthetic_cache(tmp_path, ego_speed=0.0, frames=3)
    calibrate_depth.run(path, device="cpu", progress=False, widths=(64,), iters=(5,))
    cal = open_cache(path).read_calibration(scene.name, "CAM_FRONT")
    assert ((cal["flags"] & FLAGS["stationary"]) != 0).all()
    assert ((cal["flags"] & FLAGS["fallback"]) != 0).all()
    assert (cal["cue"] == calibrate_depth.CUES["ground"]).all()
    errs = [scale_error(cal["scale"][t], cal["shift"][t], d, z, lab) for t, d, z, lab in truth]
    assert max(errs) < 0.05, errs
    calibrate_depth.run(
        path, device="cpu", progress=False, overwrite=True, ground=False, widths=(64,), iters=(5,)
    )
    cal = open_cache(path).read_calibration(scene.name, "CAM_FRONT")
    assert ((cal["flags"] & FLAGS["stationary"]) != 0).all()
    assert np.isnan(cal["scale"]).all()


@pytest.mark.parametrize("space", ["disparity", "depth_m"])
def test_reference_parameterisation_round_trip(space):
    ref = Reference(np.array([0.2, 3.0]), np.array([1.5, 40.0]), space)
    params = np.array([[-1.5, 0.1], [-2.5, 0.3]])
    a, b = ref.to_scale_shift(params)
    assert (a > 0).all()
    np.testing.assert_allclose(ref.from_scale_shift(a, b), params)
    # exp(s) is the inverse depth at the near reference, r the far/near inverse-depth ratio
    d_near, d_far = (ref.d_hi, ref.d_lo) if space == "disparity" else (ref.d_lo, ref.d_hi)
    value = lambda d: a * d + b  # noqa: E731
    inv = (lambda v: v) if space == "disparity" else (lambda v: 1 / v)
    np.testing.assert_allclose(inv(value(d_near)), np.exp(params[:, 0]))
    np.testing.assert_allclose(inv(value(d_far)) / inv(value(d_near)), params[:, 1])
    # and the torch inverse depth agrees
    dn = torch.tensor([[[0.0, 0.5, 1.0]], [[0.0, 0.5, 1.0]]], dtype=torch.float64)
    rho = calibrate_depth.inverse_depth(torch.from_numpy(params)[:, None], dn, space)[:, 0, 0]
    d = ref.d_lo[:, None] + dn[:, 0].numpy() * (ref.d_hi - ref.d_lo)[:, None]
    np.testing.assert_allclose(rho.numpy(), inv(a[:, None] * d + b[:, None]))


def test_metric_depth_space_scale_is_recovered(corridor):
    """A metric-depth model (z = a d + b, space depth_m) with a wrong scale and offset per frame."""
    K, frames = corridor
    rng = np.random.default_rng(5)
    fr = []
    for f in frames:
        a, b = rng.uniform(0.5, 2.0), rng.uniform(-0.5, 0.5)
        fr.append(
            dict(
                f, disparity=np.where(np.isfinite(f["depth"]), a * f["depth"] + b, np.nan).astype(np.float32)
            )
        )
    cam = camera_frames(K, fr)
    cam.reference.space = "depth_m"
    res = fit_camera(cam, CalibrationConfig(), "depth_m", np.ones(5, bool), 2**22)
    A, B = cam.reference.to_scale_shift(res.params)
    for t, f in enumerate(fr):
        m = np.isfinite(f["depth"])
        assert abs(np.median((A[t] * f["disparity"][m] + B[t]) / f["depth"][m]) - 1) < 0.03
