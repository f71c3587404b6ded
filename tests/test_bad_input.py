"""Bad input gives one clear line naming the item (DatasetError / OccLabelError; exit code 2 on the CLI):
missing and corrupt images, wrong versions, scenes without keyframes, non-rigid poses, bad calibration and
options, missing devkits — for the nuScenes and KITTI adapters. Also the own-data converters in examples/
(COLMAP and odometry log -> occlabel.json) on tiny generated inputs, good and bad."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_kitti import kitti_layout
from test_nuscenes import nuscenes_layout

from occlabel.cli import main
from occlabel.datasets import open_dataset
from occlabel.datasets.base import load_image, rigid_transform
from occlabel.datasets.folder import load_folder
from occlabel.errors import DatasetError, OccLabelError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def clone(src: Path, dst: Path, copy: tuple[str, ...]) -> Path:
    """``dst`` with copies of ``copy`` (paths under ``src``) and symlinks to everything else in ``src``."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (
            shutil.copytree(p, dst / p.name) if p.is_dir() else shutil.copy(p, dst / p.name)
        ) if p.name in copy else (dst / p.name).symlink_to(p)
    return dst


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def ns(tmp_path_factory) -> Path:
    return nuscenes_layout(tmp_path_factory)


@pytest.fixture(scope="module")
def kt(tmp_path_factory) -> Path:
    return kitti_layout(tmp_path_factory)


def edit_table(root: Path, table: str, edit) -> None:
    p = root / "v1.0-mini" / f"{table}.json"
    rows = json.loads(p.read_text())
    edit(rows)
    p.write_text(json.dumps(rows))


# --------------------------------------------------------------------------------------------------
# nuScenes
# --------------------------------------------------------------------------------------------------


def test_nuscenes_missing_and_corrupt_images(ns, tmp_path):
    root = clone(ns, tmp_path / "a", copy=("sweeps",))
    victim = sorted((root / "sweeps" / "CAM_BACK").iterdir())[2]
    victim.unlink()
    with pytest.raises(DatasetError) as e:
        open_dataset("nuscenes", root)
    msg = one_line(e)
    assert "scene 'scene-0061', CAM_BACK sample_data" in msg and f"file not found: {victim}" in msg

    root = clone(ns, tmp_path / "b", copy=("samples",))
    ds = open_dataset("nuscenes", root)
    img = ds.scenes[0].frames[0].images["CAM_FRONT"]
    data = img.path.read_bytes()
    img.path.write_bytes(data[: len(data) // 2])  # truncated JPEG: the header reads, decoding fails
    with pytest.raises(DatasetError) as e:
        load_image(img.path)
    assert one_line(e).startswith(f"{img.path}: cannot read image")
    img.path.write_bytes(b"not a jpeg at all")
    for read in (lambda: load_image(img.path), img.size):
        with pytest.raises(DatasetError) as e:
            read()
        assert one_line(e).startswith(f"{img.path}: cannot read image")


def test_a_corrupt_sweep_image_is_skipped_and_reported(ns, tmp_path):
    root = clone(ns, tmp_path / "ds", copy=("sweeps",))
    victim = sorted((root / "sweeps" / "CAM_FRONT").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    r = CliRunner().invoke(
        main,
        ["-q", "extract-2d", "--dataset", "nuscenes", "--root", str(root),
         "--dataset-option", "cameras=CAM_FRONT",
         "--out", str(tmp_path / "c.zarr"), "--device", "cpu", "--num-workers", "0", "--width", "16",
         "--depth-model", "oracle", "--semantic-model", "oracle"],
    )  # fmt: skip
    assert r.exit_code == 3, r.output
    assert "1 image(s) skipped" in r.output and str(victim) in r.output
    from occlabel.store.cache import open_cache

    done = open_cache(tmp_path / "c.zarr").depth_done("scene-0061", "CAM_FRONT", "oracle")
    assert done.tolist() == [True, True, True, False, True, True, True]  # sweeps 1, 2, [3], 4, 5


def test_nuscenes_versions_splits_scenes_and_options(ns):
    cases = [
        (dict(version="v1.0-mini2"),
         "unknown nuScenes version 'v1.0-mini2'; expected one of v1.0-mini, v1.0-trainval, v1.0-test"),
        (dict(version="v1.0-trainval"),
         "no nuScenes tables for v1.0-trainval (no v1.0-trainval/ directory; found: v1.0-mini)"),
        (dict(split="minival"), "unknown nuScenes split 'minival'"),
        (dict(split="val"),
         "split 'val' has no scene in v1.0-mini (v1.0-mini has the splits mini_train, mini_val)"),
        (dict(split="mini_val"), "split 'mini_val' has no scene in v1.0-mini"),
        (dict(scenes="scene-9999"), "scene 'scene-9999' not in v1.0-mini (has 1 scenes, e.g. scene-0061)"),
        (dict(split="mini_train", scenes=["scene-0061", "scene-0103"]),
         "scene 'scene-0103' not in v1.0-mini"),
        (dict(cameras="CAM_TOP"), "camera 'CAM_TOP' not in the sensor table"),
        (dict(cameras="LIDAR_TOP"), "LIDAR_TOP not a camera channel"),
        (dict(sweeps="sometimes"), "option 'sweeps': expected true, false or auto"),
        (dict(frobnicate=1), "dataset 'nuscenes': unknown option 'frobnicate'; known: version, split"),
    ]  # fmt: skip
    for options, expected in cases:
        with pytest.raises(DatasetError) as e:
            open_dataset("nuscenes", ns, **options)
        assert expected in one_line(e), (options, str(e.value))
    with pytest.raises(DatasetError) as e:
        open_dataset("nuscenes", ns.parent / "nowhere")
    assert "the dataroot does not exist" in one_line(e)


def test_nuscenes_table_errors(ns, tmp_path):
    def no_samples(rows):
        rows[0].update(first_sample_token="", last_sample_token="", nbr_samples=0)

    def non_rigid(rows):
        rows[3]["rotation"] = [2 * v for v in rows[3]["rotation"]]

    def bad_K(rows):
        rows[0]["camera_intrinsic"] = [[1, 2, 3]]

    def no_map(rows):
        rows[0]["filename"] = "maps/missing.png"

    for i, (table, edit, expected) in enumerate(
        [
            ("scene", no_samples, "scene 'scene-0061' has no keyframes (no samples)"),
            (
                "ego_pose",
                non_rigid,
                "field 'rotation' is not a unit quaternion (norm 2): not a rigid transform",
            ),
            ("calibrated_sensor", bad_K, "field 'camera_intrinsic' must be a finite 3x3 matrix"),
            ("map", no_map, "cannot load the nuScenes tables (AssertionError: map mask"),
        ]
    ):
        root = clone(ns, tmp_path / str(i), copy=("v1.0-mini",))
        edit_table(root, table, edit)
        with pytest.raises(DatasetError) as e:
            open_dataset("nuscenes", root)
        msg = one_line(e)
        assert expected in msg, msg
        if table == "ego_pose":  # names the table, record and the image it belongs to
            token = json.loads((root / "v1.0-mini" / "ego_pose.json").read_text())[3]["token"]
            assert f"ego_pose.json: ego_pose '{token}' (scene 'scene-0061', " in msg


def test_nuscenes_cli_one_line_exit_2(ns, tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "extract-2d",
            "--dataset",
            "nuscenes",
            "--root",
            str(ns),
            "--version",
            "v1.0",
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert r.output.startswith("error: unknown nuScenes version 'v1.0'")


def test_missing_devkits_say_what_to_install(ns, kt, monkeypatch):
    monkeypatch.setitem(sys.modules, "nuscenes.nuscenes", None)
    with pytest.raises(DatasetError) as e:
        open_dataset("nuscenes", ns)
    assert "needs nuscenes-devkit: pip install 'occlabel[nuscenes]'" in one_line(e)
    monkeypatch.setitem(sys.modules, "pykitti", None)
    with pytest.raises(DatasetError) as e:
        open_dataset("kitti", kt)
    assert "needs pykitti: pip install 'occlabel[kitti]'" in one_line(e)


# --------------------------------------------------------------------------------------------------
# KITTI
# --------------------------------------------------------------------------------------------------


def test_kitti_missing_image_and_bad_files(kt, tmp_path):
    root = clone(kt, tmp_path / "a", copy=("sequences", "poses"))
    seq = root / "sequences" / "00"
    (seq / "image_2" / "000004.png").unlink()
    with pytest.raises(DatasetError) as e:
        open_dataset("kitti", root)
    assert (
        one_line(e) == f"sequence 00, frame 4, camera cam2: file not found: {seq / 'image_2' / '000004.png'}"
    )
    assert len(open_dataset("kitti", root, frames="0:4").scenes[0].frames) == 4  # the others are fine

    lines = (root / "poses" / "00.txt").read_text().splitlines()
    v = np.array(lines[2].split(), float)
    v[0] *= 1.5  # a scaled rotation
    (root / "poses" / "00.txt").write_text("\n".join(lines[:2] + [" ".join(map(str, v))] + lines[3:]) + "\n")
    with pytest.raises(DatasetError) as e:
        open_dataset("kitti", root, frames="0:4")
    assert (
        one_line(e) == f"{root / 'poses' / '00.txt'}: line 3 (frame 2): not a rigid transform "
        "(rotation must be orthonormal with det +1)"
    )
    (root / "poses" / "00.txt").write_text("\n".join(lines[:5]) + "\n")
    with pytest.raises(DatasetError) as e:
        open_dataset("kitti", root, frames="0:4")
    assert "00.txt: 5 poses but" in one_line(e) and "times.txt has 6 frames" in str(e.value)

    root = clone(kt, tmp_path / "b", copy=("sequences",))
    calib = root / "sequences" / "00" / "calib.txt"
    calib.write_text("".join(ln + "\n" for ln in calib.read_text().splitlines() if not ln.startswith("P3")))
    with pytest.raises(DatasetError) as e:
        open_dataset("kitti", root)
    assert one_line(e) == f"{calib}: missing entry 'P3' (needs P0, P1, P2, P3 and Tr)"
    (root / "sequences" / "00" / "times.txt").unlink()
    with pytest.raises(DatasetError) as e:
        open_dataset("kitti", root)
    assert one_line(e) == f"sequence 00: file not found: {root / 'sequences' / '00' / 'times.txt'}"


def test_kitti_options(kt, tmp_path):
    cases = [
        (dict(cameras="cam7"), "kitti option 'cameras': 'cam7' is not cam0, cam1, cam2 or cam3"),
        (dict(sequences="05"), "no sequence 05"),
        (dict(sequences="x1"), "'x1' is not a sequence number like 08"),
        (dict(split="val"), "no sequence of split 'val' (08)"),
        (dict(frames="1:3"), "sequence 00: no keyframe among the selected frames (keyframes: voxels/)"),
        (dict(frames=[0, 9]), "sequence 00: frame 9 out of range (the sequence has 6 frames)"),
        (dict(keyframes="often"), "kitti option 'keyframes': expected auto or every"),
        (dict(gts=str(tmp_path / "none")), "kitti option 'gts': no such directory"),
        (dict(bogus=True), "dataset 'kitti': unknown option 'bogus'"),
    ]
    for options, expected in cases:
        with pytest.raises(DatasetError) as e:
            open_dataset("kitti", kt, **options)
        assert expected in one_line(e), (options, str(e.value))
    with pytest.raises(DatasetError) as e:
        open_dataset("kitti", tmp_path)
    assert "no sequences/ directory" in one_line(e)
    r = CliRunner().invoke(
        main,
        [
            "extract-2d",
            "--dataset",
            "kitti",
            "--root",
            str(kt),
            "--split",
            "val",
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "no sequence of split 'val'" in r.output


# --------------------------------------------------------------------------------------------------
# Own data: examples/colmap_to_occlabel.py and examples/odometry_csv_to_occlabel.py
# --------------------------------------------------------------------------------------------------


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def yaw(a: float) -> np.ndarray:
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


R_EGO_FROM_CV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def ego_pose(t: float) -> np.ndarray:
    """A car driving at 5 m/s while turning at 0.2 rad/s (constant rates: interpolation is exact)."""
    return rigid_transform(yaw(0.2 * t), [5.0 * t, 0.5 * t, 0.0])


def test_colmap_converter(tmp_path):
    colmap = example("colmap_to_occlabel")
    W, H = 32, 24
    rig = {  # ego = ground under the front camera, as the converter defines it
        "front": rigid_transform(R_EGO_FROM_CV, [0, 0, 1.5]),
        "left": rigid_transform(yaw(np.pi / 2) @ R_EGO_FROM_CV, [-0.2, 0.4, 1.4]),
    }
    scale = 0.25  # metres per COLMAP unit
    images = []
    for i in range(6):
        for cam, T_e_c in rig.items():
            (tmp_path / "images" / cam).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(
                tmp_path / "images" / cam / f"{i:04d}.png"
            )
            T_w_c = ego_pose(0.1 * i) @ T_e_c
            T_w_c[:3, 3] /= scale
            images.append(
                {
                    "name": f"{cam}/{i:04d}.png",
                    "camera_id": 1 if cam == "front" else 2,
                    "T_world_from_cam": T_w_c,
                }
            )
    cams = {
        1: ("PINHOLE", W, H, [30.0, 31.0, W / 2, H / 2]),
        2: ("SIMPLE_PINHOLE", W, H, [20.0, W / 2, H / 2]),
    }
    colmap.write_colmap_text(tmp_path / "sparse", cams, images)
    colmap.convert(tmp_path, tmp_path / "sparse", scale=scale, camera_height=1.5, fps=10, keyframe_every=3)
    ds = load_folder(tmp_path)
    frames = ds.scenes[0].frames
    assert [f.keyframe for f in frames] == [True, False, False, True, False, False]
    for i, f in enumerate(frames):
        np.testing.assert_allclose(f.T_world_from_ego, ego_pose(0.1 * i), atol=1e-9)
        for cam, T_e_c in rig.items():
            np.testing.assert_allclose(f.images[cam].T_ego_from_cam, T_e_c, atol=1e-9)
            np.testing.assert_allclose(f.images[cam].T_world_from_ego, ego_pose(0.1 * i), atol=1e-9)
    # COLMAP's principal point is in pixel-corner coordinates: cx = W / 2 is the image centre (W - 1) / 2
    np.testing.assert_allclose(
        frames[0].images["front"].K, [[30, 0, (W - 1) / 2], [0, 31, (H - 1) / 2], [0, 0, 1]]
    )

    cams[2] = ("SIMPLE_RADIAL", W, H, [20.0, W / 2, H / 2, 0.01])
    colmap.write_colmap_text(tmp_path / "sparse", cams, images)
    with pytest.raises(OccLabelError) as e:
        colmap.convert(tmp_path, tmp_path / "sparse")
    assert (
        "camera 2 uses the SIMPLE_RADIAL model (distortion); undistort first (colmap image_undistorter)"
        in one_line(e)
    )


def test_odometry_csv_converter(tmp_path):
    odo = example("odometry_csv_to_occlabel")
    log_t = np.arange(0.0, 1.2, 0.02)  # 50 Hz pose log
    odo.write_log(tmp_path / "odometry.csv", log_t, np.stack([ego_pose(t) for t in log_t]))
    K = [[40.0, 0, 15.5], [0, 40.0, 11.5], [0, 0, 1]]
    rig = {
        "CAM_FRONT": {"K": K, "T_ego_from_cam": rigid_transform(R_EGO_FROM_CV, [1.5, 0, 1.5]).tolist()},
        "CAM_BACK": {
            "K": K,
            "T_ego_from_cam": rigid_transform(yaw(np.pi) @ R_EGO_FROM_CV, [0, 0, 1.6]).tolist(),
        },
    }
    (tmp_path / "rig.json").write_text(json.dumps(rig))
    shots = {"CAM_FRONT": 0.1 + 0.1 * np.arange(10), "CAM_BACK": 0.1 + 0.1 * np.arange(10) + 0.023}
    for cam, ts in shots.items():
        (tmp_path / "images" / cam).mkdir(parents=True)
        for t in ts:
            Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(
                tmp_path / "images" / cam / f"{round(t * 1e9)}.png"
            )
    odo.convert(tmp_path, tmp_path / "odometry.csv", tmp_path / "rig.json", time_unit="ns", keyframe_every=5)
    frames = load_folder(tmp_path).scenes[0].frames
    assert len(frames) == 10 and [f.keyframe for f in frames].count(True) == 2
    for i, f in enumerate(frames):
        assert set(f.images) == {"CAM_FRONT", "CAM_BACK"}
        for cam, im in f.images.items():
            assert im.timestamp == pytest.approx(shots[cam][i], abs=1e-9)
            np.testing.assert_allclose(im.T_world_from_ego, ego_pose(im.timestamp), atol=1e-9)
        np.testing.assert_allclose(f.T_world_from_ego, f.images["CAM_FRONT"].T_world_from_ego)

    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(
        tmp_path / "images" / "CAM_FRONT" / f"{round(1.5e9)}.png"
    )
    with pytest.raises(OccLabelError) as e:
        odo.convert(tmp_path, tmp_path / "odometry.csv", tmp_path / "rig.json", time_unit="ns")
    assert "time 1.500000 s is outside the pose log (0.000000 .. 1.180000 s)" in one_line(e)
