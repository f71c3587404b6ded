"""The dgp adapter on the real DDAD-style sample in ../shared/data/ddad_dgp_test_scene (skips without it):
records against the raw JSON, LiDAR depth in all six cameras of the moving scene_02 (in the image, plausible,
consistent across overlapping cameras and with the images over time), poses and timestamps, the stationary
scene_01, options and one-line errors, 3D boxes, and extract-2d -> calibrate-depth -> evaluate through the
CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from real_data import SHARED_DATA, require

from occlabel.datasets import DATASET_KINDS, dataset_options, open_dataset
from occlabel.datasets.base import load_depth_m, load_image, load_lidar_points
from occlabel.datasets.dgp import load_dgp, parse_timestamp_us, pose_matrix
from occlabel.datasets.dgp_depth import lidar_in_camera, project_depth, read_boxes_3d
from occlabel.errors import DatasetError

DGP = (SHARED_DATA / "ddad_dgp_test_scene").resolve()  # the adapter resolves its root
SIX = ["CAMERA_01", "CAMERA_05", "CAMERA_06", "CAMERA_07", "CAMERA_08", "CAMERA_09"]


@pytest.fixture(scope="module")
def depth_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dgp_depth")


@pytest.fixture(scope="module")
def ds(depth_dir):
    return load_dgp(require(DGP), depth_dir=depth_dir)


def scene_doc(name: str) -> dict:
    return json.loads(next((DGP / name).glob("scene_*.json")).read_text())


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


def test_registered():
    assert "dgp" in DATASET_KINDS
    assert {"split", "scenes", "cameras", "depth", "depth_dir"} <= set(dataset_options("dgp"))


def test_records_match_the_raw_json(ds):
    assert ds.kind == "dgp" and ds.names() == ["scene_01", "scene_02"]
    s2 = ds.scene("scene_02")
    assert s2.cameras == SIX and ds.scene("scene_01").cameras == ["CAMERA_01", "CAMERA_05", "CAMERA_06"]
    doc = scene_doc("scene_02")
    data = {d["key"]: d for d in doc["data"]}
    calib = json.loads(next((DGP / "scene_02" / "calibration").glob("*.json")).read_text())
    ext = {n: pose_matrix(e, n) for n, e in zip(calib["names"], calib["extrinsics"], strict=True)}
    for f, sample in zip(s2.frames, doc["samples"], strict=True):  # already in time order here
        assert f.keyframe and f.token == f"scene_02_{parse_timestamp_us(sample['id']['timestamp'])}"
        by_name = {data[k]["id"]["name"]: data[k] for k in sample["datum_keys"]}
        lidar = by_name["LIDAR"]["datum"]["point_cloud"]
        np.testing.assert_allclose(f.T_world_from_ego, pose_matrix(lidar["pose"], "L"), atol=1e-12)
        np.testing.assert_allclose(f.T_ego_from_lidar, np.eye(4))
        assert f.lidar_path == DGP / "scene_02" / lidar["filename"]
        for cam in SIX:
            im, img = f.images[cam], by_name[cam]["datum"]["image"]
            assert im.rel_path == f"scene_02/{img['filename']}" and im.path.is_file()
            assert im.K[0, 0] > 1000 and im.K[0, 2] > 900 and im.size() == (1936, 1216)
            # camera pose of the record = the datum's own pose (sensor -> world), through the body frame
            np.testing.assert_allclose(f.T_world_from_cam(cam), pose_matrix(img["pose"], cam), atol=1e-9)
            np.testing.assert_allclose(im.T_ego_from_cam, ext[cam])
            assert im.timestamp == pytest.approx(parse_timestamp_us(by_name[cam]["id"]["timestamp"]) / 1e6)
            assert im.depth_path is not None and im.depth_path.is_file()


def test_ego_frame_is_on_the_road_x_forward(ds):
    """DDAD's body frame: road returns near the car at z ~ 0; CAMERA_01 looks along +x, CAMERA_09 along -x."""
    for s in ds.scenes:
        f = s.frames[0]
        pts = load_lidar_points(f.lidar_path, f.T_ego_from_lidar)
        near = (np.abs(pts[:, 0]) > 4) & (np.abs(pts[:, 0]) < 12) & (np.abs(pts[:, 1]) < 1.5)
        hist, edges = np.histogram(pts[near, 2], bins=np.arange(-1.0, 1.0, 0.05))
        assert abs(edges[np.argmax(hist)] + 0.025) < 0.2  # the road: the mode of z ahead and behind
        cams = f.images
        assert cams["CAMERA_01"].T_ego_from_cam[:3, 2] @ [1, 0, 0] > 0.99
        assert cams["CAMERA_01"].T_ego_from_cam[2, 3] == pytest.approx(1.5, abs=0.2)
        if "CAMERA_09" in cams:
            assert cams["CAMERA_09"].T_ego_from_cam[:3, 2] @ [-1, 0, 0] > 0.99


def test_poses_and_timestamps_moving_scene(ds):
    s = ds.scene("scene_02")
    t = np.array([f.timestamp for f in s.frames])
    assert np.all(np.diff(t) > 0) and np.allclose(np.diff(t), 1.0, atol=0.05)
    fr = s.frames
    steps = [np.linalg.inv(a.T_world_from_ego) @ b.T_world_from_ego for a, b in zip(fr, fr[1:], strict=False)]
    for T in steps:  # ~1.27 m straight ahead (+x of the ego frame), no turn
        assert np.linalg.norm(T[:3, 3]) == pytest.approx(1.27, abs=0.03)
        assert T[0, 3] > 0.99 * np.linalg.norm(T[:3, 3])
        assert np.allclose(T[:3, :3], np.eye(3), atol=5e-3)
    for f in s.frames:  # cameras fire ~91 ms before the sweep: their own ego pose ~4 cm behind
        for im in f.images.values():
            assert im.timestamp == pytest.approx(f.timestamp - 0.091, abs=0.01)
            d = (np.linalg.inv(f.T_world_from_ego) @ im.T_world_from_ego)[:3, 3]
            assert -0.06 < d[0] < -0.02 and np.abs(d[1:]).max() < 0.01


def test_stationary_scene(ds):
    s = ds.scene("scene_01")
    assert len(s.frames) == 3 and all(len(f.images) == 3 for f in s.frames)
    for f in s.frames:
        np.testing.assert_allclose(f.T_world_from_ego, s.frames[0].T_world_from_ego, atol=1e-5)
        for im in f.images.values():
            np.testing.assert_allclose(im.T_world_from_ego, f.T_world_from_ego, atol=1e-5)
    assert np.all(np.diff([f.timestamp for f in s.frames]) > 0.9)


# --------------------------------------------------------------------------------------------------
# LiDAR depth
# --------------------------------------------------------------------------------------------------


def test_project_depth_known_answer():
    K = np.array([[100.0, 0, 10], [0, 100, 5], [0, 0, 1]])
    pts = np.array([[0, 0, 10], [0, 0, 5], [1, 0.5, 10], [0, 0, -3], [50, 0, 10], [0, 0, 0.05]])
    d = project_depth(pts, K, 21, 11)
    assert d[5, 10] == 5 and d[10, 20] == 10  # nearest wins; (1, 0.5, 10) -> pixel (20, 10)
    assert np.count_nonzero(d) == 2


def test_lidar_depth_lands_in_all_six_cameras(ds):
    for f in ds.scene("scene_02").frames:
        for cam in SIX:
            d = load_depth_m(f.images[cam].depth_path)
            assert d.shape == (1216, 1936)
            ok = np.isfinite(d)
            assert 4000 < ok.sum() < 20000, (cam, ok.sum())
            rows = np.nonzero(ok)[0]
            assert np.median(rows) > 1216 * 0.45  # LiDAR returns sit on the road and below the horizon
            assert 0.5 < np.nanmin(d) and np.nanmedian(d) < 40 and np.nanmax(d) < 256
            # road at the bottom of the image: depth of a camera ~1.5 m high looking level, ~3-12 m
            bottom = d[-200:]
            assert 2 < np.nanmedian(bottom) < 15


def test_lidar_depth_agrees_across_overlapping_cameras(ds):
    """A LiDAR pixel of camera A, lifted with its depth and A's pose, lands in camera B at B's depth."""
    f = ds.scene("scene_02").frames[1]
    for a, b in (("CAMERA_01", "CAMERA_05"), ("CAMERA_01", "CAMERA_06"), ("CAMERA_05", "CAMERA_07")):
        ia, ib = f.images[a], f.images[b]
        da, db = load_depth_m(ia.depth_path), load_depth_m(ib.depth_path)
        v, u = np.nonzero(np.isfinite(da))
        z = da[v, u].astype(np.float64)
        pts_a = np.linalg.inv(ia.K) @ np.stack([u * z, v * z, z])
        T = np.linalg.inv(f.T_world_from_cam(b)) @ f.T_world_from_cam(a)
        pb = T[:3, :3] @ pts_a + T[:3, 3:4]
        ub, vb = (
            np.rint(ib.K[0, 0] * pb[0] / pb[2] + ib.K[0, 2]),
            np.rint(ib.K[1, 1] * pb[1] / pb[2] + ib.K[1, 2]),
        )
        m = (pb[2] > 1) & (ub >= 0) & (ub < 1936) & (vb >= 0) & (vb < 1216)
        got = db[vb[m].astype(int), ub[m].astype(int)]
        both = np.isfinite(got)
        assert both.sum() > 300, (a, b, both.sum())
        rel = np.abs(got[both] - pb[2][m][both]) / pb[2][m][both]
        assert np.median(rel) < 0.01 and np.mean(rel < 0.05) > 0.8, (a, b, np.median(rel))


def test_poses_agree_with_the_images_over_time(ds):
    """The sweep of sample 0 seen by each camera at samples 0 and 1: the grey values under the same LiDAR
    points correlate through the true poses (> 0.85), better than with the ego motion reversed."""
    s = ds.scene("scene_02")
    f0, f1 = s.frames[0], s.frames[1]
    pts = load_lidar_points(f0.lidar_path)
    T_wl = f0.T_world_from_ego @ f0.T_ego_from_lidar

    def grey_at(image, T_world_from_cam):
        g = load_image(image.path).astype(np.float64).mean(2)
        pc = lidar_in_camera(pts, T_wl, T_world_from_cam)
        z = pc[:, 2]
        u = np.rint(image.K[0, 0] * pc[:, 0] / z + image.K[0, 2])
        v = np.rint(image.K[1, 1] * pc[:, 1] / z + image.K[1, 2])
        ok = (z > 1) & (u >= 0) & (u < g.shape[1]) & (v >= 0) & (v < g.shape[0])
        out = np.full(len(z), np.nan)
        out[ok] = g[v[ok].astype(int), u[ok].astype(int)]
        return out

    for cam in SIX:
        T0, T1 = f0.T_world_from_cam(cam), f1.T_world_from_cam(cam)
        a = grey_at(f0.images[cam], T0)
        res = []
        for T in (T1, T0 @ np.linalg.inv(T1) @ T0):  # true; the same motion backwards
            b = grey_at(f1.images[cam], T)
            m = np.isfinite(a) & np.isfinite(b)
            res.append(np.corrcoef(a[m], b[m])[0, 1])
        assert res[0] > 0.85 and res[0] > res[1] + 0.02, (cam, res)


def test_depth_files_are_reused_and_keyed(ds, depth_dir):
    im = ds.scene("scene_02").frames[0].images["CAMERA_01"]
    mtime = im.depth_path.stat().st_mtime_ns
    again = load_dgp(DGP, scenes="scene_02", cameras="CAMERA_01", depth_dir=depth_dir)
    im2 = again.scenes[0].frames[0].images["CAMERA_01"]
    assert im2.depth_path == im.depth_path and im2.depth_path.stat().st_mtime_ns == mtime
    assert im.depth_path.is_relative_to(depth_dir / "scene_02" / "CAMERA_01")
    blocked = depth_dir.parent / "a_file"
    blocked.write_text("")
    with pytest.raises(DatasetError, match="cannot write LiDAR depth .*set depth_dir=DIR") as e:
        load_dgp(DGP, scenes="scene_01", cameras="1", depth_dir=blocked / "sub")
    assert "\n" not in str(e.value)
    none = load_dgp(DGP, scenes="scene_01", depth="none")
    assert all(i.depth_path is None for f in none.scenes[0].frames for i in f.images.values())


def test_boxes_3d(ds):
    f = ds.scene("scene_02").frames[0]
    boxes = read_boxes_3d(f)
    assert len(boxes) == 13
    names = {b["class_name"] for b in boxes}
    assert names <= {"Car", "Truck", "Person", "Bus/RV/Caravan", "Motorcycle", "Bicycle", "Trailer"}
    assert "Car" in names
    pts = load_lidar_points(f.lidar_path, f.T_ego_from_lidar)
    for b in boxes:
        if b["num_points"] < 20:
            continue
        # the sample's clouds are thinned (~1/5 of the returns num_points counts): boxes hold >= 10 % of
        # num_points, with length along the box's x (swapping length and width loses most of them)
        local = (pts - b["T_ego_from_box"][:3, 3]) @ b["T_ego_from_box"][:3, :3]
        inside = np.all(np.abs(local) <= b["size_m"] / 2, axis=1).sum()
        swapped = np.all(np.abs(local) <= b["size_m"][[1, 0, 2]] / 2, axis=1).sum()
        assert inside >= 0.1 * b["num_points"] and inside > swapped, (b["class_name"], inside, swapped)
    car = min(
        (b for b in boxes if b["class_name"] == "Car"), key=lambda b: np.hypot(*b["T_ego_from_box"][:2, 3])
    )
    bottom = car["T_ego_from_box"][2, 3] - car["size_m"][2] / 2
    assert abs(bottom) < 0.3  # the nearest car stands on the road (ego z ~ 0)


# --------------------------------------------------------------------------------------------------
# Options and errors
# --------------------------------------------------------------------------------------------------


def test_options(depth_dir):
    root = require(DGP)
    one = open_dataset("dgp", root, scenes="scene_02", cameras="01,CAMERA_09", depth_dir=str(depth_dir))
    assert one.names() == ["scene_02"] and one.scenes[0].cameras == ["CAMERA_01", "CAMERA_09"]
    assert one.options["scenes"] == ["scene_02"] and one.options["cameras"] == ["CAMERA_01", "CAMERA_09"]
    reopened = open_dataset("dgp", one.root, **one.options)  # what later stages do from the cache
    assert [f.token for f in reopened.scenes[0].frames] == [f.token for f in one.scenes[0].frames]
    assert load_dgp(root, split="val", depth="none").names() == ["scene_01", "scene_02"]
    assert load_dgp(root, split=["train", "1"], depth="none").names() == ["scene_01", "scene_02"]
    # a scene directory, a scene JSON and the index file as root
    by_dir = load_dgp(root / "scene_01", depth="none")
    assert by_dir.names() == ["scene_01"]
    assert by_dir.scenes[0].frames[0].images["CAMERA_01"].rel_path.startswith("scene_01/rgb/CAMERA_01/")
    assert load_dgp(next((root / "scene_02").glob("scene_*.json")), depth="none").names() == ["scene_02"]
    assert load_dgp(root / "scene_dataset_v1.0.json", depth="none").names() == ["scene_01", "scene_02"]
    # scene_01 lacks CAMERA_07: selecting it with both scenes is an error naming the scene
    with pytest.raises(DatasetError, match="scene scene_01: none of the cameras CAMERA_07"):
        load_dgp(root, cameras="CAMERA_07", depth="none")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(split="holdout"), "unknown split 'holdout'"),
        (dict(split="test"), "no split 'test'"),
        (dict(scenes="scene_09"), "no scene 'scene_09'; known: scene_01, scene_02"),
        (dict(cameras="CAMERA_42"), "no camera 'CAMERA_42'"),
        (dict(depth="radar"), "option 'depth'"),
        (dict(index="nope.json"), "option 'index': file not found"),
        (dict(sweeps=True), "unknown option 'sweeps'"),
    ],
)
def test_bad_options_one_line(kwargs, message):
    with pytest.raises(DatasetError, match=message) as e:
        open_dataset("dgp", require(DGP), **kwargs)
    assert "\n" not in str(e.value)


def test_bad_roots_and_files(tmp_path):
    with pytest.raises(DatasetError, match="no such file or directory"):
        load_dgp(tmp_path / "absent")
    with pytest.raises(DatasetError, match="no DGP index"):
        load_dgp(tmp_path)
    src = require(DGP)
    root = tmp_path / "copy"
    shutil.copytree(src / "scene_01", root / "scene_01", symlinks=True)
    shutil.copy(src / "scene_dataset_v1.0.json", root)
    idx = json.loads((root / "scene_dataset_v1.0.json").read_text())
    for v in idx["scene_splits"].values():
        v["filenames"] = [f for f in v["filenames"] if f.startswith("scene_01")]
    (root / "scene_dataset_v1.0.json").write_text(json.dumps(idx))
    assert load_dgp(root, depth="none").names() == ["scene_01"]
    scene = next((root / "scene_01").glob("scene_*.json"))
    doc = json.loads(scene.read_text())
    cam = next(d for d in doc["data"] if d["id"]["name"] == "CAMERA_05")
    cam["datum"]["image"]["pose"]["rotation"]["qw"] = 3.0
    scene.chmod(0o644)
    scene.write_text(json.dumps(doc))
    with pytest.raises(
        DatasetError, match=r"camera CAMERA_05 datum .*: pose rotation is not a unit quaternion"
    ):
        load_dgp(root, depth="none")
    cam["datum"]["image"]["pose"]["rotation"]["qw"] = 1.0
    doc["samples"][1]["id"]["timestamp"] = "yesterday"
    scene.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="sample 1: bad or missing id.timestamp"):
        load_dgp(root, depth="none")
    doc["samples"][1]["id"]["timestamp"] = doc["samples"][0]["id"]["timestamp"]
    scene.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="the same timestamp"):
        load_dgp(root, depth="none")


def test_numbered_scenes_like_ddad(tmp_path):
    """DDAD's scenes are 000000 ... 000199; YAML reads scenes=150 as a number (and 000150 as octal 104)."""
    src = require(DGP)
    (tmp_path / "000150").symlink_to(src / "scene_01", target_is_directory=True)
    scene = next((src / "scene_01").glob("scene_*.json")).name
    (tmp_path / "ddad.json").write_text(
        json.dumps({"scene_splits": {"1": {"filenames": [f"000150/{scene}"]}}})
    )
    ds = load_dgp(tmp_path, scenes=150, split="val", depth="none")
    assert ds.names() == ["000150"] and ds.options["index"] == "ddad.json"
    assert ds.scenes[0].frames[0].images["CAMERA_01"].rel_path.startswith("000150/rgb/CAMERA_01/")
    assert load_dgp(tmp_path, scenes=["000150"], depth="none").names() == ["000150"]
    with pytest.raises(DatasetError, match="no scene '104' .*quote it"):
        load_dgp(tmp_path, scenes=104, depth="none")


def test_parse_timestamp_us():
    assert parse_timestamp_us("1970-01-01T00:00:01.5Z") == 1_500_000
    assert parse_timestamp_us("1970-01-01T01:00:00+01:00") == 0
    assert parse_timestamp_us("2464-11-12T01:04:10.027900Z") == 15616458250027900
    assert parse_timestamp_us({"seconds": "3", "nanos": 2000}) == 3_000_002
    with pytest.raises(ValueError):
        parse_timestamp_us("2019-06-27 12:00:00")


# --------------------------------------------------------------------------------------------------
# Through the CLI
# --------------------------------------------------------------------------------------------------


def test_extract_calibrate_evaluate_through_cli(tmp_path, depth_dir):
    """The oracle depth reads the LiDAR depth as ground truth (sparse: its pixels without returns read as
    infinitely far, so its calibration is no measure of the stage); evaluate scores the calibrated depth
    against the LiDAR depth of every image."""
    root = require(DGP)
    out = tmp_path / "c.zarr"
    cli(
        "extract-2d", "--dataset", "dgp", "--root", root, "--dataset-option", "scenes=scene_02",
        "--dataset-option", "cameras=CAMERA_01", "--dataset-option", f"depth_dir={depth_dir}",
        "--out", out, "--depth-model", "oracle", "--semantic-model", "none", "--width", "128",
        "--device", "cpu", "--num-workers", "0",
    )  # fmt: skip
    cli("calibrate-depth", out, "--device", "cpu", "--widths", "96")  # one level: CPU time
    res_path = tmp_path / "depth.json"
    text = cli("evaluate", out, "--json", res_path)
    assert "CAMERA_01" in text and "overall" in text
    res = json.loads(res_path.read_text())
    assert res["overall"]["num_images"] == 3 and set(res["per_camera"]) == {"CAMERA_01"}
    assert 0 <= res["overall"]["raw"]["abs_rel"] < 10 and res["overall"]["floor_abs_rel"] < 0.5
