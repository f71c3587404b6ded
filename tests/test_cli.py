"""The command line: version, help, one-line errors with exit code 2, stages through the CLI."""

import json
import re

import click
import numpy as np
import pytest
from click.testing import CliRunner

from occlabel import __version__
from occlabel.cli import main
from occlabel.errors import OccLabelError
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
        "extract-2d", "--root", tiny_folder, "--out", tmp_path / "c.zarr", "--device", "cpu", "--width", "16",
        "--depth-model", "oracle", "--semantic-model", "oracle",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cache = open_cache(tmp_path / "c.zarr")
    d = cache.read_depth("s0", "CAM_FRONT")
    assert d.shape == (3, 12, 16) and np.isfinite(d).all()


def test_backend_confs_route_flags_to_backend_options(tmp_path):
    from occlabel.models.confs import backend_confs

    d, s = backend_confs(
        f"files:{tmp_path}",
        "clipseg",
        segmenter="some/clipseg",
        vocab="semantickitti",
        depth_kind="depth",
        depth_options=("extensions=[.npy]",),
        semantic_options=("threshold=0.25", "input_size=352"),
    )
    assert d == {"kind": "depth", "extensions": [".npy"]}
    assert s == {"model": "some/clipseg", "vocab": "semantickitti", "threshold": 0.25, "input_size": 352}
    # box-prompted backends take --segmenter as their SAM checkpoint and --detector as the box model
    _, s = backend_confs("oracle", "grounded-sam", detector="det", segmenter="sam")
    assert s == {"detector": "det", "segmenter": "sam"}
    assert backend_confs("oracle", "none") == ({}, {})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"semantic_model": "clipseg", "detector": "x"},
            "--detector does not apply to --semantic-model clipseg",
        ),
        ({"semantic_model": "none", "vocab": "occ3d"}, "--vocab: not used with --semantic-model none"),
        ({"depth_model": "depth-anything-v2-small", "depth_kind": "depth"}, "--depth-kind applies to"),
        ({"semantic_options": ("threshold",)}, "expected KEY=VALUE"),
        ({"semantic_model": "nope"}, "unknown semantic model 'nope'"),
    ],
)
def test_backend_confs_errors(kwargs, message):
    from occlabel.models.confs import backend_confs

    args = {"depth_model": "oracle", "semantic_model": "oracle", **kwargs}
    with pytest.raises((OccLabelError, click.BadParameter), match=re.escape(message)):
        backend_confs(**args)


def test_unknown_backend_option_is_one_line_error(tiny_folder, tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "extract-2d",
            "--root",
            str(tiny_folder),
            "--out",
            str(tmp_path / "c.zarr"),
            "--depth-option",
            "bogus=1",
        ],
    )
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "unknown option(s) bogus" in r.output
