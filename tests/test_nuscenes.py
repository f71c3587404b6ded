"""The nuScenes adapter through the real nuscenes-devkit: a synthetic scene in the nuScenes layout read back
exactly (poses, intrinsics, extrinsics, timestamps, keyframe flags), options, ground truth, the CLI, and the
real scene-0061 keyframe (LiDAR projected into the six cameras with the adapter's transforms)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from real_data import nuscenes_keyframe_tables

from occlabel.cli import main
from occlabel.conventions import FREE, GRIDS
from occlabel.datasets import open_dataset
from occlabel.datasets.base import load_image, load_lidar_points, load_occupancy
from occlabel.datasets.folder import load_folder
from occlabel.datasets.synthetic import build_world
from occlabel.datasets.synthetic.nuscenes_layout import BASE_US, CAMERA_OFFSET_US, synth_nuscenes
from occlabel.geometry.voxel import points_to_voxels
from occlabel.store.cache import open_cache

LAYOUT = dict(scenes=1, frames=7, size=(48, 32), seed=1, progress=False)
SIX = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]


def nuscenes_layout(tmp_path_factory) -> Path:
    """The synthetic nuScenes dataroot, written once per session (test_bad_input.py reuses it)."""
    root = tmp_path_factory.getbasetemp() / "nuscenes_layout"
    if not (root / "synthetic.json").is_file():
        synth_nuscenes(root, **LAYOUT, overwrite=True)
    return root


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return nuscenes_layout(tmp_path_factory)


def assert_same_records(a, b, tol=1e-6):
    """Two datasets hold the same scenes, frames and images (poses, K, extrinsics, times, flags, files)."""
    assert [s.name for s in a.scenes] == [s.name for s in b.scenes]
    for sa, sb in zip(a.scenes, b.scenes, strict=True):
        assert [f.token for f in sa.frames] == [f.token for f in sb.frames]
        for fa, fb in zip(sa.frames, sb.frames, strict=True):
            assert fa.keyframe == fb.keyframe
            assert abs(fa.timestamp - fb.timestamp) <= tol
            np.testing.assert_allclose(fa.T_world_from_ego, fb.T_world_from_ego, atol=tol, rtol=0)
            assert fa.occupancy_path == fb.occupancy_path
            assert list(fa.images) == list(fb.images)
            for c in fa.images:
                ia, ib = fa.images[c], fb.images[c]
                assert (ia.path, ia.rel_path, ia.depth_path, ia.semantics_path) == (
                    ib.path, ib.rel_path, ib.depth_path, ib.semantics_path,
                )  # fmt: skip
                np.testing.assert_allclose(ia.K, ib.K, atol=tol, rtol=0)
                np.testing.assert_allclose(ia.T_ego_from_cam, ib.T_ego_from_cam, atol=tol, rtol=0)
                for x, y in ((ia.T_world_from_ego, ib.T_world_from_ego), (ia.timestamp, ib.timestamp)):
                    assert (x is None) == (y is None)
                    if x is not None:
                        np.testing.assert_allclose(x, y, atol=tol, rtol=0)


def test_round_trip_through_the_devkit_equals_the_world(layout):
    ds = open_dataset("nuscenes", layout)
    assert ds.kind == "nuscenes" and ds.options["sweeps"] is True
    # occlabel.json holds what the writer meant (the same records in the folder format)
    assert_same_records(ds, load_folder(layout))
    (scene,) = ds.scenes
    assert scene.name == "scene-0061" and scene.cameras == SIX
    assert [f.keyframe for f in scene.frames] == [True, False, False, False, False, False, True]
    world = build_world(LAYOUT["seed"], 6 / 12 + 0.1, scene_index=0)
    rig = {c: json.loads((layout / "v1.0-mini" / "calibrated_sensor.json").read_text()) for c in ("all",)}[
        "all"
    ]
    assert len(rig) == 7
    for i, f in enumerate(scene.frames):
        ref_us = 10_000 + round(i * 1e6 / 12)
        for c, im in f.images.items():
            rel_us = round(im.timestamp * 1e6) - BASE_US
            assert rel_us == ref_us + CAMERA_OFFSET_US[c]  # each camera at its own instant
            np.testing.assert_allclose(im.T_world_from_ego, world.ego_pose(rel_us / 1e6), atol=1e-6)
        if f.keyframe:  # the sample: LiDAR time and pose, sample token
            assert round(f.timestamp * 1e6) - BASE_US == ref_us + 35_500
            np.testing.assert_allclose(f.T_world_from_ego, world.ego_pose((ref_us + 35_500) / 1e6), atol=1e-6)
            assert f.meta["sample_token"] == f.token
        else:  # a sweep frame: the reference camera's time and pose
            assert f.timestamp == f.images["CAM_FRONT"].timestamp
            assert f.token == f.images["CAM_FRONT"].meta["sample_data_token"]
    assert all(b.timestamp > a.timestamp for a, b in zip(scene.frames, scene.frames[1:], strict=False))


def test_the_devkit_reads_the_layout(layout):
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes("v1.0-mini", str(layout), verbose=False)
    (sample, _) = nusc.sample
    assert set(sample["data"]) == {*SIX, "LIDAR_TOP"}
    ds = open_dataset("nuscenes", layout, sweeps=False)
    key = ds.scenes[0].frames[0]
    for cam in SIX:
        path, boxes, K = nusc.get_sample_data(sample["data"][cam])
        assert Path(path) == key.images[cam].path and boxes == []
        np.testing.assert_allclose(K, key.images[cam].K)
    # the camera chain runs keyframe -> 5 sweeps -> keyframe
    sd = nusc.get("sample_data", sample["data"]["CAM_BACK"])
    chain = [sd["is_key_frame"]]
    while sd["next"]:
        sd = nusc.get("sample_data", sd["next"])
        chain.append(sd["is_key_frame"])
    assert chain == [True] + [False] * 5 + [True]


def test_options_cameras_sweeps_scenes_and_splits(layout, tmp_path):
    ds = open_dataset("nuscenes", layout, cameras="CAM_BACK,CAM_FRONT_LEFT", sweeps=False)
    (scene,) = ds.scenes
    assert [f.keyframe for f in scene.frames] == [True, True]
    assert scene.cameras == ["CAM_BACK", "CAM_FRONT_LEFT"] and scene.meta["reference_camera"] == "CAM_BACK"
    # sweep frames grouped around another reference camera: same images, other frame tokens/times
    ds = open_dataset("nuscenes", layout, cameras=["CAM_BACK_LEFT", "CAM_FRONT"])
    frames = ds.scenes[0].frames
    assert len(frames) == 7 and all(set(f.images) == {"CAM_BACK_LEFT", "CAM_FRONT"} for f in frames)
    assert frames[1].timestamp == frames[1].images["CAM_BACK_LEFT"].timestamp
    # the recorded options reopen the same dataset
    again = open_dataset("nuscenes", layout, **ds.options)
    assert_same_records(ds, again, tol=0)

    two = synth_nuscenes(
        tmp_path / "two", scenes=2, frames=1, size=(16, 12), seed=2, progress=False, labels=False
    )
    assert open_dataset("nuscenes", two).names() == ["scene-0061", "scene-0103"]
    assert open_dataset("nuscenes", two, split="mini_val").names() == ["scene-0103"]
    assert open_dataset("nuscenes", two, split="mini_train").names() == ["scene-0061"]
    assert open_dataset("nuscenes", two, scenes="scene-0103").names() == ["scene-0103"]
    assert open_dataset("nuscenes", two).options["sweeps"] is False  # no sweeps/ directory: keyframes only


def test_occ3d_ground_truth_and_lidar(layout):
    ds = open_dataset("nuscenes", layout)
    frames = ds.scenes[0].frames
    for f in frames:
        if not f.keyframe:
            assert f.occupancy_path is None and f.lidar_path is None
            continue
        assert f.occupancy_path == layout / "gts" / "scene-0061" / f.token / "labels.npz"
        gt = load_occupancy(f.occupancy_path)
        assert gt["semantics"].shape == GRIDS["occ3d"].shape and 0 < gt["mask_camera"].mean() < 1
        # LiDAR (.pcd.bin, LiDAR frame) -> ego through lidar2ego lands on occupied ground-truth voxels
        pts = load_lidar_points(f.lidar_path, f.T_ego_from_lidar)
        assert f.lidar_path.name.endswith(".pcd.bin") and len(pts) > 1000
        import torch

        idx, valid = points_to_voxels(torch.from_numpy(pts), GRIDS["occ3d"])
        idx = idx[valid].numpy()
        occupied = gt["semantics"][idx[:, 0], idx[:, 1], idx[:, 2]] != FREE
        assert occupied.mean() > 0.97, occupied.mean()
    # every image carries the ground truth the oracle backends need
    assert all(im.depth_path and im.semantics_path for f in frames for im in f.images.values())


def test_extract_2d_through_the_cli(layout, tmp_path):
    out = tmp_path / "c.zarr"
    r = CliRunner().invoke(
        main,
        ["-q", "extract-2d", "--dataset", "nuscenes", "--root", str(layout), "--version", "v1.0-mini",
         "--dataset-option", "cameras=CAM_FRONT,CAM_BACK", "--out", str(out), "--device", "cpu",
         "--num-workers", "0", "--width", "16", "--depth-model", "oracle", "--semantic-model", "oracle"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cache = open_cache(out)
    assert cache.meta["dataset"]["kind"] == "nuscenes"
    assert cache.meta["dataset"]["options"]["cameras"] == ["CAM_FRONT", "CAM_BACK"]
    assert cache.scenes() == ["scene-0061"] and cache.cameras("scene-0061") == ["CAM_FRONT", "CAM_BACK"]
    assert cache.open_dataset().scenes[0].frames[0].token == cache.scene_meta("scene-0061")["tokens"][0]
    r = CliRunner().invoke(
        main, ["extract-2d", "--root", str(layout), "--version", "v1.0-mini", "--out", str(out)]
    )
    assert r.exit_code == 2 and "--version applies to --dataset nuscenes, not folder" in r.output


# --------------------------------------------------------------------------------------------------
# Real data: nuScenes scene-0061, first keyframe (../shared/data)
# --------------------------------------------------------------------------------------------------

#: neighbouring cameras, left one first (its right image border overlaps the other's left border)
NEIGHBOURS = [
    ("CAM_FRONT_LEFT", "CAM_FRONT"), ("CAM_FRONT", "CAM_FRONT_RIGHT"), ("CAM_FRONT_RIGHT", "CAM_BACK_RIGHT"),
    ("CAM_BACK_RIGHT", "CAM_BACK"), ("CAM_BACK", "CAM_BACK_LEFT"), ("CAM_BACK_LEFT", "CAM_FRONT_LEFT"),
]  # fmt: skip


def test_real_keyframe_lidar_lands_on_all_six_images(tmp_path):
    root = nuscenes_keyframe_tables(tmp_path / "nuscenes")
    ds = open_dataset("nuscenes", root)
    (frame,) = ds.scenes[0].frames
    assert frame.keyframe and frame.token == "ca9a282c9e77460f8360f564131a8af5"
    assert sorted(frame.images) == sorted(SIX)
    # lidar -> ego (lidar2ego) -> global (ego pose at the LiDAR time) -> ego at each camera's time -> camera
    pts_ego = load_lidar_points(frame.lidar_path, frame.T_ego_from_lidar).astype(np.float64)
    pts_world = pts_ego @ frame.T_world_from_ego[:3, :3].T + frame.T_world_from_ego[:3, 3]
    seen = {}
    for cam, im in frame.images.items():
        assert abs(im.timestamp - frame.timestamp) < 0.05
        T_cam_from_world = np.linalg.inv(im.T_world_from_ego @ im.T_ego_from_cam)
        p = pts_world @ T_cam_from_world[:3, :3].T + T_cam_from_world[:3, 3]
        z = p[:, 2]
        uv = p[:, :2] / np.maximum(z[:, None], 1e-6) @ im.K[:2, :2].T + im.K[:2, 2]
        W, H = im.size()
        inside = (z > 1.0) & (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
        assert 0.06 < inside.mean() < 0.2, (cam, inside.mean())  # about a sixth of a 360-degree sweep
        assert 5.0 < np.median(z[inside]) < 25.0
        seen[cam] = (inside, uv)
    grey = {c: load_image(im.path).mean(-1) for c, im in frame.images.items()}
    overlapping = 0
    for left, right in NEIGHBOURS:
        both = seen[left][0] & seen[right][0]
        if both.sum() < 100:
            continue
        overlapping += 1
        ul, ur = seen[left][1][both], seen[right][1][both]
        assert (ul[:, 0] > 800).all() and (ur[:, 0] < 800).all()  # the shared border of the two images
        # the same 3D points have the same brightness in both images (up to each camera's exposure)
        gl = grey[left][ul[:, 1].round().astype(int), ul[:, 0].round().astype(int)]
        gr = grey[right][ur[:, 1].round().astype(int), ur[:, 0].round().astype(int)]
        assert np.corrcoef(gl, gr)[0, 1] > 0.5, (left, right)
    assert overlapping >= 4
