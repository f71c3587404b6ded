"""scripts/bench_ddad.py: the simulated inputs, the per-camera rows built from per-image results, and a tiny
run of the real stage on two DDAD cameras (one seed, width 96; skipped without ../shared/data)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_ddad.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ddad", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_ddad"] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_skips_without_data(bench, tmp_path, capsys):
    out = tmp_path / "b.md"
    assert bench.main(["--data", str(tmp_path / "absent"), "--out", str(out), "--work", str(tmp_path)]) == 0
    assert not out.exists()
    assert "absent" in capsys.readouterr().out


def test_densify_keeps_points_and_the_infinity_plateau(bench):
    h, w = 40, 60
    rows = np.repeat(np.arange(20, 40, 2), 30)
    cols = np.tile(np.arange(0, 60, 2), 10)
    z = 5.0 + cols / 10.0
    rho, below = bench.densify(rows, cols, z, h, w)
    np.testing.assert_allclose(rho[rows, cols], 1 / z, rtol=1e-9)  # interpolation passes through points
    assert (rho[:20] == 0).all() and not below[:20].any() and below[20:].all()
    disp, alpha, beta = bench.simulate(rho, bench.DISTORTIONS["mild"], np.random.default_rng(0))
    assert np.allclose(disp[:20], beta, atol=1e-6)  # the plateau maps to the affine's shift
    ratio = (disp[rows, cols] - beta) / (alpha * rho[rows, cols])
    assert np.abs(ratio - 1).max() < 0.2 and np.abs(ratio - 1).max() > 1e-4  # distorted, smoothly


def test_camera_rows_come_from_the_images(bench):
    R = bench.ImageResult
    res = [
        R("none", "mild", 0, "A", 0, 0.10, 0.05, -0.20, 0, "photometric", 0.1),  # wrong, not flagged
        R("none", "mild", 0, "A", 1, 0.06, 0.05, 0.02, 4, "photometric", 0.1),  # good, flagged
        R("none", "mild", 0, "B", 0, 0.03, 0.03, 0.01, 0, "photometric", 0.0),  # good, meets
    ]
    rows = {r.camera: r for r in bench.camera_rows(res)}
    assert list(rows) == ["A", "B", "all"]
    assert rows["A"].n == 2 and rows["A"].absrel == pytest.approx(0.08) and not rows["A"].ok
    assert (rows["A"].wrong, rows["A"].wrong_flagged, rows["A"].good_flagged, rows["A"].meets) == (1, 0, 1, 1)
    assert rows["B"].ok and rows["B"].meets == 1
    assert rows["all"].n == 3 and rows["all"].absrel == pytest.approx(np.mean([0.10, 0.06, 0.03]))
    assert rows["all"].meets == 2


def test_tiny_run_through_the_stage(bench, tmp_path):
    if not (bench.SAMPLE / bench.SCENE).is_dir():
        pytest.skip("DDAD sample ddad_dgp_test_scene not available (../shared/data is absent)")
    out = tmp_path / "b.md"
    argv = ["--out", str(out), "--work", str(tmp_path / "w"), "--width", "96", "--seeds", "0"]
    argv += ["--distortions", "mild", "--semantics", "stand-in", "--cameras", "CAMERA_01,CAMERA_05"]
    assert bench.main(argv) == 0
    images = json.loads((tmp_path / "w" / "results.json").read_text())["images"]
    assert len(images) == 6 and {r["camera"] for r in images} == {"CAMERA_01", "CAMERA_05"}
    for r in images:
        assert np.isfinite(r["absrel"]) and 0 < r["floor"] < 0.5
        assert r["floor"] <= r["absrel"] + 0.01  # the best affine is (about) a lower bound
    text = out.read_text()
    assert text.count(bench.BEGIN) == 1 and "semantics stand-in, distortion mild" in text
    mean = np.mean([r["absrel"] for r in images])
    assert f"| **all** | 6 | {mean:.3f} |" in text
