"""The KITTI adapter through the real pykitti: a synthetic sequence in the odometry / SemanticKITTI layout
read back exactly, camera extrinsics from P0-P3, keyframe cadence, SemanticKITTI voxels, options, the CLI,
and the real KITTI odometry sequence 06 (trajectory, intrinsics, epipolar consistency of matched features)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from numpy.lib.stride_tricks import sliding_window_view
from real_data import KITTI06, kitti06_odometry_layout, kitti_calib_K, kitti_poses
from test_nuscenes import assert_same_records

from occlabel.cli import main
from occlabel.conventions import GRIDS
from occlabel.datasets import open_dataset
from occlabel.datasets.base import load_image, load_lidar_points
from occlabel.datasets.folder import load_folder
from occlabel.datasets.kitti import T_ego_from_cam0, load_semantickitti_voxels
from occlabel.datasets.synthetic import build_world
from occlabel.datasets.synthetic.kitti_layout import CAM0_IN_EGO, CAMERA_OFFSETS, synth_kitti
from occlabel.geometry.voxel import points_to_voxels
from occlabel.store.cache import open_cache

LAYOUT = dict(
    sequences=1, frames=6, cameras=(0, 2, 3), size=(96, 32), keyframe_every=3, seed=2, progress=False
)


def kitti_layout(tmp_path_factory) -> Path:
    """The synthetic KITTI root, written once per session (test_bad_input.py reuses it)."""
    root = tmp_path_factory.getbasetemp() / "kitti_layout"
    if not (root / "synthetic.json").is_file():
        synth_kitti(root, **LAYOUT, overwrite=True)
    return root


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return kitti_layout(tmp_path_factory)


def test_round_trip_through_pykitti_equals_the_world(layout):
    import pykitti

    ds = open_dataset("kitti", layout, cameras="cam0,cam2,cam3")
    assert_same_records(ds, load_folder(layout))
    (seq,) = ds.scenes
    assert seq.name == "00" and seq.cameras == ["cam0", "cam2", "cam3"]
    assert [f.token for f in seq.frames] == [f"00_{i:06d}" for i in range(6)]
    assert [f.timestamp for f in seq.frames] == pytest.approx([i / 10 for i in range(6)], abs=1e-6)
    # keyframes on SemanticKITTI's voxel cadence (the layout has voxels for frames 0 and 3)
    assert [f.keyframe for f in seq.frames] == [True, False, False, True, False, False]
    # the world: KITTI world = cam0 at frame 0; ego = ground under cam0
    world = build_world(LAYOUT["seed"], 0.5, scene_index=0)
    T_egoS_from_egoK = np.eye(4)
    T_egoS_from_egoK[:2, 3] = CAM0_IN_EGO
    T_kw = np.linalg.inv(world.ego_pose(0.0) @ T_egoS_from_egoK @ T_ego_from_cam0())
    for f in seq.frames:
        expected = T_kw @ world.ego_pose(f.timestamp) @ T_egoS_from_egoK
        np.testing.assert_allclose(f.T_world_from_ego, expected, atol=1e-6)
    # extrinsics from P0-P3: camera i at -t_i in cam0's frame (all three components); pykitti keeps only x
    odo = pykitti.odometry(str(layout), "00")
    im = seq.frames[0].images
    for i in (0, 2, 3):
        c_cam0 = -np.asarray(CAMERA_OFFSETS[i])
        np.testing.assert_allclose(
            im[f"cam{i}"].T_ego_from_cam[:3, 3], T_ego_from_cam0()[:3, :3] @ c_cam0 + [0, 0, 1.65], atol=1e-9
        )
        np.testing.assert_allclose(im[f"cam{i}"].K, getattr(odo.calib, f"K_cam{i}"))
    assert im["cam2"].T_ego_from_cam[1, 3] == pytest.approx(0.0598)  # cam2: 6 cm left of cam0
    assert im["cam3"].T_ego_from_cam[1, 3] == pytest.approx(-0.4733)  # cam3: 47 cm right
    T_cam3_from_cam0_pykitti = odo.calib.T_cam3_velo @ np.linalg.inv(odo.calib.T_cam0_velo)
    assert abs(T_cam3_from_cam0_pykitti[2, 3]) < 1e-12 != CAMERA_OFFSETS[3][2]  # pykitti drops t_z


def test_options_keyframes_frames_and_semantickitti_poses(layout, tmp_path):
    every = open_dataset("kitti", layout, keyframes="every")
    assert [f.keyframe for f in every.scenes[0].frames] == [True, False, False, False, False, True]
    sub = open_dataset("kitti", layout, frames="2:5", cameras="cam3")
    assert [f.token for f in sub.scenes[0].frames] == ["00_000002", "00_000003", "00_000004"]
    assert sub.scenes[0].cameras == ["cam3"]
    assert_same_records(sub, open_dataset("kitti", layout, **sub.options), tol=0)
    assert open_dataset("kitti", layout, sequences=0).names() == ["00"]  # YAML reads 00 as 0
    # SemanticKITTI keeps its poses in sequences/XX/poses.txt: the same records without poses/
    copy = tmp_path / "semkitti"
    shutil.copytree(layout / "sequences", copy / "dataset" / "sequences", symlinks=True)
    shutil.copy(layout / "poses" / "00.txt", copy / "dataset" / "sequences" / "00" / "poses.txt")
    semk = open_dataset("kitti", copy)  # root may be the parent of dataset/
    assert semk.scenes[0].meta["poses"].endswith("sequences/00/poses.txt")
    ref = open_dataset("kitti", layout)
    for a, b in zip(semk.scenes[0].frames, ref.scenes[0].frames, strict=True):
        np.testing.assert_array_equal(a.T_world_from_ego, b.T_world_from_ego)


def test_semantickitti_voxels_and_lidar(layout):
    ds = open_dataset("kitti", layout)
    keys = [f for f in ds.scenes[0].frames if f.keyframe]
    for f in keys:
        assert f.occupancy_path == layout / "gts" / "00" / f.token / "labels.npz"
        vox = load_semantickitti_voxels(f)
        assert vox["labels"].shape == (256, 256, 32) and vox["grid"] is GRIDS["semantickitti"]
        assert 0 < vox["invalid"].mean() < 1
        # velodyne scan -> ego; back into the voxel grid's (velodyne) frame: returns sit on labelled voxels
        pts_ego = load_lidar_points(f.lidar_path, f.T_ego_from_lidar)
        T_grid_from_ego = np.linalg.inv(vox["T_ego_from_grid"])
        pts = (pts_ego @ T_grid_from_ego[:3, :3].T + T_grid_from_ego[:3, 3]).astype(np.float32)
        idx, valid = points_to_voxels(torch.from_numpy(pts), vox["grid"])
        idx = idx[valid].numpy()
        hit = vox["labels"][idx[:, 0], idx[:, 1], idx[:, 2]]
        assert (hit > 0).mean() > 0.97 and not vox["invalid"][idx[:, 0], idx[:, 1], idx[:, 2]].any()
    assert all(f.lidar_path is not None for f in ds.scenes[0].frames)
    assert "semantickitti_voxels" not in ds.scenes[0].frames[1].meta


def test_extract_2d_through_the_cli(layout, tmp_path):
    out = tmp_path / "c.zarr"
    r = CliRunner().invoke(
        main,
        ["-q", "extract-2d", "--dataset", "kitti", "--root", str(layout),
         "--dataset-option", 'sequences="00"', "--dataset-option", "frames=0:4", "--out", str(out),
         "--device", "cpu", "--num-workers", "0", "--width", "32",
         "--depth-model", "oracle", "--semantic-model", "oracle"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cache = open_cache(out)
    assert cache.meta["dataset"]["options"]["frames"] == "0:4"
    assert cache.cameras("00") == ["cam2"] and len(cache.scene_meta("00")["tokens"]) == 4


# --------------------------------------------------------------------------------------------------
# Real data: KITTI odometry sequence 06, frames 0-50 (../shared/data)
# --------------------------------------------------------------------------------------------------


def _box(a: np.ndarray, r: int) -> np.ndarray:
    c = np.cumsum(np.cumsum(np.pad(a, ((r + 1, r), (r + 1, r))), 0), 1)
    return (
        c[2 * r + 1 :, 2 * r + 1 :]
        - c[: -2 * r - 1, 2 * r + 1 :]
        - c[2 * r + 1 :, : -2 * r - 1]
        + c[: -2 * r - 1, : -2 * r - 1]
    )


def _corners(g: np.ndarray, cell: int = 24, border: int = 48) -> np.ndarray:
    """Harris corners <int: N, 2> (u, v), the strongest per cell, weakest 30 % dropped."""
    gy, gx = np.gradient(g)
    a, b, c = _box(gx * gx, 2), _box(gy * gy, 2), _box(gx * gy, 2)
    R = a * b - c * c - 0.04 * (a + b) ** 2
    out = []
    for y0 in range(border, g.shape[0] - border - cell + 1, cell):
        for x0 in range(border, g.shape[1] - border - cell + 1, cell):
            k = int(np.argmax(R[y0 : y0 + cell, x0 : x0 + cell]))
            out.append((x0 + k % cell, y0 + k // cell, R[y0 + k // cell, x0 + k % cell]))
    out = np.array(out)
    return out[out[:, 2] > max(np.percentile(out[:, 2], 30), 0), :2].astype(int)


def _search(A, B, u, v, cu, cv, rad, h):
    """Best NCC match in B of A's (2h+1)^2 patch at (u, v) within +-rad of (cu, cv): (x, y, score)."""
    y0, x0 = cv - rad - h, cu - rad - h
    if y0 < 0 or x0 < 0 or cv + rad + h + 1 > B.shape[0] or cu + rad + h + 1 > B.shape[1]:
        return np.nan, np.nan, 0.0
    t = A[v - h : v + h + 1, u - h : u + h + 1].ravel()
    t = t - t.mean()
    win = sliding_window_view(B[y0 : cv + rad + h + 1, x0 : cu + rad + h + 1], (2 * h + 1, 2 * h + 1))
    win = win.reshape(2 * rad + 1, 2 * rad + 1, -1)
    wm = win - win.mean(-1, keepdims=True)
    s = (wm @ t) / np.maximum(np.linalg.norm(wm, axis=-1) * np.linalg.norm(t), 1e-6)
    iy, ix = divmod(int(np.argmax(s)), 2 * rad + 1)
    d = [0.0, 0.0]
    if 0 < ix < 2 * rad and 0 < iy < 2 * rad:
        for k, (lo, c, hi) in enumerate(
            ((s[iy, ix - 1], s[iy, ix], s[iy, ix + 1]), (s[iy - 1, ix], s[iy, ix], s[iy + 1, ix]))
        ):
            den = lo - 2 * c + hi
            d[k] = 0.5 * (lo - hi) / den if den < 0 else 0.0
    return cu - rad + ix + d[0], cv - rad + iy + d[1], s[iy, ix]


def _track(A, B, pts, rad=48, f=4):
    """Coarse NCC search on 4x-downsampled images (+-rad px), refined at full resolution."""
    A4, B4 = (
        X[: X.shape[0] // f * f, : X.shape[1] // f * f]
        .reshape(X.shape[0] // f, f, X.shape[1] // f, f)
        .mean((1, 3))
        for X in (A, B)
    )
    out = []
    for u, v in pts:
        x, y, s = _search(A4, B4, u // f, v // f, u // f, v // f, rad // f, 3)
        if s > 0.8:
            x, y, s = _search(
                A, B, u, v, int(round(x * f + (f - 1) / 2)), int(round(y * f + (f - 1) / 2)), f + 1, 6
            )
        out.append((x, y, s))
    return np.array(out)


def _matches(A, B):
    """Mutually consistent feature matches <N, 2>, <N, 2> (pixels) from image A to image B."""
    pts = _corners(A)
    fwd = _track(A, B, pts)
    ok = fwd[:, 2] > 0.9
    back = _track(B, A, np.round(fwd[ok, :2]).astype(int))
    good = np.linalg.norm(back[:, :2] - pts[ok], axis=1) < 1.0
    return pts[ok][good].astype(float), fwd[ok][good][:, :2]


def _sampson_px(x1, x2, K, T_2_from_1):
    """Sampson distance (pixels) of matches x1 <-> x2 under F = K^-T [t]x R K^-1 of the relative pose."""
    R, t = T_2_from_1[:3, :3], T_2_from_1[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    Ki = np.linalg.inv(K)
    F = Ki.T @ tx @ R @ Ki
    h1, h2 = np.c_[x1, np.ones(len(x1))], np.c_[x2, np.ones(len(x2))]
    Fx1, Ftx2 = h1 @ F.T, h2 @ F
    return np.abs(np.sum(h2 * Fx1, 1)) / np.sqrt(
        Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    )


def test_real_sequence_06_poses_intrinsics_and_epipolar_geometry(tmp_path):
    root = kitti06_odometry_layout(tmp_path / "kitti")
    ds = open_dataset("kitti", root, cameras="cam0", sequences="06")
    frames = ds.scenes[0].frames
    assert len(frames) == 51 and [f.keyframe for f in frames].count(True) == 11
    K = frames[0].images["cam0"].K
    np.testing.assert_allclose(K, kitti_calib_K(KITTI06 / "calib.txt"))
    np.testing.assert_allclose(K, [[707.0912, 0, 601.8873], [0, 707.0912, 183.1104], [0, 0, 1]])
    poses = kitti_poses(KITTI06 / "poses.txt")
    for f, T in zip(frames, poses, strict=True):
        np.testing.assert_allclose(f.T_world_from_cam("cam0"), T, atol=1e-9)
    # trajectory: ~60 m straight ahead in the ego frame of frame 0 (x forward, y left, z up)
    centres = np.stack([f.T_world_from_ego[:3, 3] for f in frames])
    length = np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()
    cam_length = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum()
    assert 55 < length < 65 and abs(length - cam_length) < 0.01 * cam_length
    end = (np.linalg.inv(frames[0].T_world_from_ego) @ frames[-1].T_world_from_ego)[:3, 3]
    assert end[0] > 55 and abs(end[1]) < 3 and abs(end[2]) < 2
    # epipolar consistency of matched features under the relative pose (and not under a rotated one)
    for i, j in ((0, 1), (20, 22)):
        A, B = (load_image(frames[k].images["cam0"].path).mean(-1) for k in (i, j))
        x1, x2 = _matches(A, B)
        assert len(x1) > 40
        T = np.linalg.inv(frames[j].T_world_from_cam("cam0")) @ frames[i].T_world_from_cam("cam0")
        err = _sampson_px(x1, x2, K, T)
        assert np.median(err) < 1.0, np.median(err)
        a = np.radians(3.0)
        R_off = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        T_off = T.copy()
        T_off[:3, :3] = T[:3, :3] @ R_off
        assert np.median(_sampson_px(x1, x2, K, T_off)) > 4 * max(np.median(err), 0.5)
