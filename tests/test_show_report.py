"""Looking at the labels: show (labels and cache pictures), the 3D render and camera projection, report, info."""

import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import cli
from PIL import Image

from occlabel.cli import main
from occlabel.conventions import FREE, GRIDS, VoxelGrid
from occlabel.viz.bev import bev_rgb
from occlabel.viz.render import (
    BACKGROUND_RGB,
    bev_pixel,
    cast_rays,
    class_palette,
    project_labels,
    render_oblique,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny synthetic run (oracle backends): 6 frames, 2 keyframes, ground truth in the dataset."""
    d = tmp_path_factory.mktemp("show")
    cli("synth", "--out", d / "ds", "--frames", 6, "--size", "128x80", "--seed", 3)
    cli("extract-2d", "--root", d / "ds", "--out", d / "cache.zarr", "--device", "cpu", "--depth-model", "oracle",
        "--semantic-model", "oracle")  # fmt: skip
    cli("calibrate-depth", d / "cache.zarr", "--device", "cpu", "--widths", "64")
    cli("voxelize", d / "cache.zarr", "--out", d / "labels.zarr", "--device", "cpu")
    return d


# ------------------------------------------------------------------ known answers (no run needed)


def test_cast_rays_known_answer():
    occ = np.zeros((10, 6, 4), bool)
    occ[7, 2, 1] = True
    occ[4, 2, 1] = True  # nearer along +x: the one a ray from x < 0 meets first
    o = np.array([[-3.0, 2.5, 1.5], [12.0, 2.5, 1.5], [7.5, 2.5, 9.0], [-3.0, 4.5, 1.5]])
    d = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 0, -1.0], [1.0, 0, 0]])
    hit, t, axis = cast_rays(occ, o, d)
    assert hit[0].tolist() == [4, 2, 1] and t[0] == pytest.approx(7.0) and axis[0] == 0
    assert hit[1].tolist() == [7, 2, 1] and t[1] == pytest.approx(4.0) and axis[1] == 0
    assert (
        hit[2].tolist() == [7, 2, 1] and t[2] == pytest.approx(7.0) and axis[2] == 2
    )  # from above: top face
    assert hit[3].tolist() == [-1, -1, -1] and np.isinf(t[3])


def test_bev_orientation_and_ego_position():
    g = GRIDS["occ3d"]
    sem = np.full(g.shape, FREE, np.uint8)
    sem[199, 199, 0] = 4  # front-left corner
    img = bev_rgb(sem, None, FREE, class_palette())
    assert (img[0, 0] == class_palette()[4]).all()  # forward up, left left
    # the ego origin sits at the centre of the occ3d BEV, 1 m forward is 2.5 px up
    c = bev_pixel(np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]]), g)
    assert (
        np.allclose(c[0], [99.5, 99.5])
        and np.allclose(c[1], [99.5, 97.0])
        and np.allclose(c[2], [97.0, 99.5])
    )
    # a grid starting at x = 0 (SemanticKITTI's) has the ego at its bottom edge
    k = GRIDS["semantickitti"]
    assert np.allclose(bev_pixel(np.zeros((1, 3)), k)[0], [127.5, 255.5])


def test_projection_of_one_voxel_lands_where_the_camera_model_says():
    g = VoxelGrid("t", (-10.0, -10.0, -2.0), (30.0, 10.0, 4.0), 0.4)
    sem = np.full(g.shape, FREE, np.uint8)
    i, j, k = 60, 22, 8  # centre (14.2, -1.0, 1.4) in the grid (= ego) frame
    sem[i, j, k] = 4
    centre = np.array(g.lower) + (np.array([i, j, k]) + 0.5) * g.voxel_size
    # a front camera 1.5 m up, looking along +x (OpenCV: x right = -y ego, y down = -z ego, z = +x ego)
    T_ego_from_cam = np.eye(4)
    T_ego_from_cam[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    T_ego_from_cam[:3, 3] = [0.5, 0.0, 1.5]
    W, H = 200, 120
    K = np.array([[180.0, 0, 99.5], [0, 180.0, 59.5], [0, 0, 1]])
    labels, depth = project_labels(sem, g, K, T_ego_from_cam, (W, H), FREE)
    p_cam = np.linalg.inv(T_ego_from_cam) @ np.append(centre, 1.0)
    uv = (K @ p_cam[:3])[:2] / p_cam[2]
    vs, us = np.nonzero(labels == 4)
    assert len(us) > 4
    assert abs(us.mean() - uv[0]) < 0.75 and abs(vs.mean() - uv[1]) < 0.75
    assert np.nanmin(depth) == pytest.approx(p_cam[2] - 0.2, abs=1e-6)  # the front face, z-buffered
    # a voxel in front of it on the same ray hides it
    sem[i - 5, j, k] = 11
    labels, _ = project_labels(sem, g, K, T_ego_from_cam, (W, H), FREE)
    assert labels[int(round(uv[1])), int(round(uv[0]))] == 11


def test_render_oblique_is_fast_and_draws_classes():
    g = GRIDS["occ3d"]
    rng = np.random.default_rng(0)
    sem = np.full(g.shape, FREE, np.uint8)
    sem[:, :, 2] = 11  # road everywhere
    sem[rng.integers(0, 200, 300), rng.integers(0, 200, 300), 3] = 4
    sem[120:125, 90:110, 3:12] = 15  # a wall ahead
    t0 = time.perf_counter()
    img = render_oblique(sem, g, class_palette(), FREE, width=720)
    seconds = time.perf_counter() - t0
    assert seconds < 5.0, seconds
    assert img.shape[1] == 720 and 200 < img.shape[0] < 720 and img.dtype == np.uint8
    flat = img.reshape(-1, 3)
    road = np.all(flat == class_palette()[11], 1)  # road tops, unshaded
    assert road.mean() > 0.3
    assert np.all(flat == np.array(BACKGROUND_RGB), 1).mean() > 0.05
    assert (np.abs(flat.astype(int) - [230, 230, 250]).sum(1) < 90).any()  # the wall, shaded manmade
    assert (np.abs(flat.astype(int) - [220, 20, 60]).sum(1) < 40).any()  # the ego car


# ------------------------------------------------------------------ show


def test_show_labels_with_ground_truth_and_camera(run, tmp_path):
    out = tmp_path / "labels.png"
    text = cli("show", run / "labels.zarr", "--out", out, "--camera", "CAM_FRONT")
    w, h = map(int, re.search(r"\((\d+)x(\d+) px\)", text).groups())
    assert Image.open(out).size == (w, h)
    assert w > 1000 and h > 1000  # two columns (labels, ground truth) x three rows
    from occlabel.viz.show import labels_figure

    r = labels_figure(run / "labels.zarr", tmp_path / "b.png", scene="synth-3-000", dpi=60)
    assert r["ground_truth"] is not None and r["metrics"]["iou_geometry"] > 0.1
    assert Image.open(r["path"]).size == r["size"]
    assert r["size"][1] < h  # no camera row


def test_show_cache_frame(run, tmp_path):
    from occlabel.viz.show import cache_figure

    r = cache_figure(run / "cache.zarr", tmp_path / "c.png", frame=5, dpi=60)
    assert Image.open(r["path"]).size == r["size"] and r["frame"] == 5
    p = r["photometric"]
    assert p is not None and p["sources"]
    assert p["after_mean"] < p["before_mean"]  # calibrated depth re-synthesises the frame better than none
    text = cli("show", run / "cache.zarr", "--out", tmp_path / "d.png", "--camera", "CAM_FRONT")
    assert "wrote" in text and (tmp_path / "d.png").stat().st_size > 10_000


def test_show_errors_are_one_line(run, tmp_path):
    r = CliRunner().invoke(
        main, ["show", str(run / "labels.zarr"), "--out", str(tmp_path / "x.png"), "--sample", "nope"]
    )
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "no done sample with token 'nope'" in r.output
    r = CliRunner().invoke(
        main, ["show", str(run / "labels.zarr"), "--out", str(tmp_path / "x.png"), "--camera", "X"]
    )
    assert r.exit_code == 2 and "not a camera" in r.output


# ------------------------------------------------------------------ info


def test_info_counts(run):
    text = cli("info", run / "cache.zarr")
    assert "occlabel cache" in text and "6/6" in text and "1 scene(s), 6 images, 2 keyframes" in text
    assert "calibrate-depth" in text and "size per image" in text
    res = json.loads(cli("info", run / "cache.zarr", "--json"))
    cam = res["scenes"][0]["cameras"][0]
    assert res["images"] == 6 and cam["depth"] == {"oracle": 6} and cam["calibrated"] == 6
    text = cli("info", run / "labels.zarr")
    assert "occlabel labels" in text and "200x200x16" in text and "2 samples done" in text
    res = json.loads(cli("info", run / "labels.zarr", "--json"))
    assert res["samples"] == 2 and res["scenes"][0]["done"] == 2


# ------------------------------------------------------------------ report


@pytest.fixture(scope="module")
def report(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    text = cli("report", run, "--out", out, "--samples", 1)
    assert "empty" not in text, text
    return out


def test_report_has_every_section_and_no_external_assets(report):
    from occlabel.viz.report import SECTIONS

    page = report.read_text()
    for s in SECTIONS:
        body = page.split(f"<section id='{s}'>", 1)[1].split("</section>", 1)[0]
        assert len(body) > 200, s
    assert page.count("data:image/png;base64,") >= 4
    assert not re.search(r"(src|href)=['\"](https?:|//|/)", page)
    assert "calibration/cue" in page and "Flagged frames" in page and "IoU" in page


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_browser() is None, reason="no headless browser (apt-get install chromium)")
def test_report_renders_in_a_headless_browser(report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
           "--window-size=1400,2400", "--hide-scrollbars", report.resolve().as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=90, capture_output=True)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1400)
    # the header band is dark, the page is not blank, and pictures add colour
    assert img[:40].mean() < 90
    assert img.std() > 30 and len(np.unique(img.reshape(-1, 3)[::97], axis=0)) > 50
