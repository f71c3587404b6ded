"""The command line: version, help, one-line errors with exit code 2, stages through the CLI."""

import json

import numpy as np
from click.testing import CliRunner

from occlabel import __version__
from occlabel.cli import main
from occlabel.store.cache import open_cache


def run(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)])


def test_version_and_help():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for cmd in ("synth", "extract-2d", "calibrate-depth", "voxelize", "evaluate", "export", "demo"):
        assert cmd in r.output


def test_user_errors_are_one_line_exit_2(tmp_path, tiny_folder):
    doc = json.loads((tiny_folder / "occlabel.json").read_text())
    doc["scenes"][0]["frames"][1]["images"]["CAM_FRONT"]["K"] = [[1, 2, 3]]
    (tiny_folder / "occlabel.json").write_text(json.dumps(doc))
    r = run("extract-2d", "--root", tiny_folder, "--out", tmp_path / "c.zarr")
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and r.output.startswith("error: ")
    assert "frame 'f001', field 'images.CAM_FRONT.K'" in r.output
    assert "Traceback" not in r.output

    r = run("calibrate-depth", tmp_path / "nothing.zarr")
    assert r.exit_code == 2 and "no such store" in r.output
    r = run("evaluate", tmp_path / "nothing.zarr")
    assert r.exit_code == 2 and "no such store" in r.output


def test_unknown_model_and_device(tmp_path, tiny_folder):
    r = run("extract-2d", "--root", tiny_folder, "--out", tmp_path / "c.zarr", "--depth-model", "nope")
    assert r.exit_code == 2 and "unknown depth model 'nope'" in r.output
    r = run("extract-2d", "--root", tiny_folder, "--out", tmp_path / "c.zarr", "--device", "tpu")
    assert r.exit_code == 2 and "--device 'tpu'" in r.output


def test_extract_2d_through_cli(tmp_path, tiny_folder):
    r = run(
        "extract-2d", "--root", tiny_folder, "--out", tmp_path / "c.zarr", "--device", "cpu", "--width", "16"
    )
    assert r.exit_code == 0, r.output
    cache = open_cache(tmp_path / "c.zarr")
    d = cache.read_depth("s0", "CAM_FRONT")
    assert d.shape == (3, 12, 16) and np.isfinite(d).all()
