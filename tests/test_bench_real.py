"""scripts/bench_real.py: the Markdown block it writes, and its KITTI raw + LiDAR check of the ground cue
(three frames, ground cue only: a few seconds; skipped without ../shared/data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_real.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_real", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_write_section_replaces_only_its_block(bench, tmp_path):
    out = tmp_path / "b.md"
    out.write_text("# Benchmarks\n\nintro\n")
    bench.write_section(out, f"{bench.BEGIN}\nfirst\n{bench.END}")
    assert out.read_text() == f"# Benchmarks\n\nintro\n\n{bench.BEGIN}\nfirst\n{bench.END}\n"
    out.write_text(out.read_text() + "\n<!-- other:begin -->\nkept\n<!-- other:end -->\ntail\n")
    bench.write_section(out, f"{bench.BEGIN}\nsecond\n{bench.END}")
    text = out.read_text()
    assert "first" not in text and text.count(bench.BEGIN) == 1
    assert text.startswith("# Benchmarks\n\nintro\n\n" + bench.BEGIN + "\nsecond\n" + bench.END)
    assert text.endswith("<!-- other:begin -->\nkept\n<!-- other:end -->\ntail\n")


def test_skips_without_data(bench, tmp_path, capsys):
    out = tmp_path / "b.md"
    assert bench.main(["--data", str(tmp_path / "absent"), "--out", str(out), "--work", str(tmp_path)]) == 0
    assert not out.exists()
    assert "absent" in capsys.readouterr().out


def test_plane_from_affine_inverts_the_level_plane(bench):
    alpha, beta = np.array([3.0, 10.0]), np.array([0.05, -0.02])
    h, pitch = bench.plane_from_affine(1 / alpha, -beta / alpha, alpha, beta)
    np.testing.assert_allclose(h, bench.CAM_HEIGHT_M)
    np.testing.assert_allclose(pitch, 0.0, atol=1e-9)
    # a camera 1.5 m up pitched down by 1 degree: 1/z = (y_n cos t + sin t) / h
    t, hh = np.radians(1.0), 1.5
    a = np.cos(t) * bench.CAM_HEIGHT_M / hh / alpha
    b = np.sin(t) / hh - a * beta
    h, pitch = bench.plane_from_affine(a, b, alpha, beta)
    np.testing.assert_allclose(h, hh, rtol=1e-9)
    np.testing.assert_allclose(pitch, 1.0, rtol=1e-9)


def test_kitti_raw_ground_cue_against_lidar(bench, tmp_path):
    src = bench.SHARED_DATA / bench.KITTI_RAW
    if not src.is_dir():
        pytest.skip("real sample kitti_raw_depth_3frames not available (../shared/data is absent)")
    res = bench.bench_raw(src, tmp_path, "cpu", seed=0, ground_min_frac=0.002, variants=("trapezoid",))
    rows = res["trapezoid"]["rows"]
    assert len(rows) == 3
    for r in rows:
        assert r["cue"] == "ground"
        # the LiDAR road plane is KITTI's: cam2 about 1.65 m over a nearly level road
        assert abs(r["plane"]["height_m"] - bench.CAM_HEIGHT_M) < 0.1
        # the ground cue's metric scale from that assumption: within 10 % of the true affine, and the
        # calibrated depth within 15 % of the LiDAR's on average
        assert abs(r["scale_err"]) < 0.1
        assert r["absrel_20"] < 0.15
