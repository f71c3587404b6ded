"""CLI behaviour: --dry-run lists the work and writes nothing; --config YAML defaults, flags override them."""

import json

import pytest
from click.testing import CliRunner
from conftest import write_tiny_folder

from occlabel.cli import load_config, main


def run(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)])


def snapshot(path):
    """{relative path: (size, mtime_ns)} of every file under ``path``."""
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in path.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def two_scenes(tmp_path):
    """The tiny folder dataset with a second scene s1 (its own tokens)."""
    root = write_tiny_folder(tmp_path / "ds")
    doc = json.loads((root / "occlabel.json").read_text())
    s1 = json.loads(json.dumps(doc["scenes"][0]))
    s1["name"] = "s1"
    for f in s1["frames"]:
        f["token"] = "s1-" + f["token"]
    doc["scenes"].append(s1)
    (root / "occlabel.json").write_text(json.dumps(doc))
    return root


EXTRACT = ("--device", "cpu", "--depth-model", "oracle", "--semantic-model", "oracle", "--num-workers", "0")


def test_dry_runs_list_the_work_and_write_nothing(two_scenes, tmp_path):
    cache = tmp_path / "c.zarr"
    r = run("extract-2d", "--root", two_scenes, "--out", cache, *EXTRACT, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "6 images to do, 0 already done; 2 scene(s) x 1 camera(s)" in r.output
    assert "nothing written (dry run)" in r.output and not cache.exists()

    assert run("extract-2d", "--root", two_scenes, "--out", cache, *EXTRACT, "--scenes", "s0").exit_code == 0
    before = snapshot(cache)
    r = run("extract-2d", "--root", two_scenes, "--out", cache, *EXTRACT, "--dry-run")
    assert r.exit_code == 0 and "3 images to do, 3 already done" in r.output
    lines = {ln.split()[0]: ln.split()[2:5] for ln in r.output.splitlines() if ln.strip().startswith("s")}
    assert lines["s0"] == ["3", "0", "3"] and lines["s1"] == ["3", "3", "0"]

    r = run("calibrate-depth", cache, "--dry-run")
    assert r.exit_code == 0 and "3 frames to do, 0 already done" in r.output
    labels = tmp_path / "l.zarr"
    r = run("voxelize", cache, "--out", labels, "--dry-run", "--scenes", "s0")
    assert r.exit_code == 0 and "1 keyframes to do, 0 already done; 1 scene(s)" in r.output
    assert "uncalibrated" in r.output and not labels.exists()
    assert snapshot(cache) == before  # dry runs touched nothing


def test_config_file_sets_defaults_and_flags_override_it(two_scenes, tmp_path):
    cache = tmp_path / "c.zarr"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"extract-2d:\n  root: {two_scenes}\n  out: {cache}\n  depth-model: oracle\n  semantic_model: oracle\n"
        "  scenes: s0\n  device: cpu\n  num-workers: 0\n  dataset-option: {}\n"
        "calibrate-depth:\n  no-photometric: true\n  widths: [64, 128]\n"
    )
    r = run("--config", cfg, "extract-2d", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "3 images to do" in r.output and " s0 " in r.output and " s1 " not in r.output
    r = run("--config", cfg, "extract-2d", "--dry-run", "--scenes", "s1")  # the flag wins
    assert r.exit_code == 0 and " s1 " in r.output and " s0 " not in r.output
    assert run("--config", cfg, "extract-2d").exit_code == 0  # a real run from the file alone
    assert (cache / "s0").exists() and not (cache / "s1").exists()

    from occlabel.cli import main as group

    d = load_config(cfg, group)
    assert d["extract-2d"]["depth_model"] == "oracle" and d["extract-2d"]["dataset_options"] == []
    assert d["calibrate-depth"] == {"photometric": False, "widths": "64,128"}
    cfg.write_text("voxelize:\n  option: {occ_ratio: 0.4, classes: occ3d}\n  grid: occ3d\n")
    assert load_config(cfg, group)["voxelize"] == {
        "options": ["occ_ratio=0.4", "classes=occ3d"],
        "grid": "occ3d",
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("extract-2d:\n  batch-sise: 4\n", "extract-2d: unknown option 'batch-sise'"),
        ("extract2d:\n  batch-size: 4\n", "unknown command 'extract2d'"),
        ("extract-2d: [1, 2]\n", "extract-2d: expected a mapping"),
        ("extract-2d: {a: [\n", "not valid YAML"),
    ],
)
def test_config_mistakes_are_one_line_errors(tmp_path, text, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    r = CliRunner().invoke(main, ["--config", str(cfg), "info", str(tmp_path)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error: --config")
    assert message in r.output


def test_new_commands_are_listed():
    r = CliRunner().invoke(main, ["--help"])
    for cmd in ("show", "report", "info", "--config"):
        assert cmd in r.output
    for cmd in ("extract-2d", "calibrate-depth", "voxelize"):
        assert "--dry-run" in CliRunner().invoke(main, [cmd, "--help"]).output


def test_option_reaches_calibrate_depth(tiny_folder, tmp_path):
    cache = tmp_path / "c.zarr"
    assert run("extract-2d", "--root", tiny_folder, "--out", cache, *EXTRACT, "--width", "16").exit_code == 0
    r = CliRunner().invoke(main, ["-q", "calibrate-depth", str(cache), "--option", "nope=1"])
    assert r.exit_code == 2 and r.output == "error: calibrate-depth: unknown option(s) nope\n"
    r = run("calibrate-depth", cache, "--target-baseline-m", "2", "--option", "target_baseline_m=0.5")
    assert r.exit_code == 2 and "--option target_baseline_m and --target-baseline-m: give one" in r.output
    r = run(
        "calibrate-depth", cache, "--device", "cpu", "--option", "max_stride=2", "--option", "ground=false"
    )
    assert r.exit_code == 0, r.output
    from occlabel.store.cache import open_cache

    options = open_cache(cache).meta["stages"]["calibrate_depth"]["options"]
    assert options["max_stride"] == 2 and options["ground"] is False and options["widths"] == [96, 192, 384]
    # a flag's name sets that flag, with its checks
    r = run("calibrate-depth", cache, "--dry-run", "--option", "neighbours=[-1, x]")
    assert r.exit_code == 2 and "--neighbours: expected comma-separated integers" in r.output


def test_option_on_extract_2d_sets_stage_settings(tiny_folder, tmp_path):
    args = ("extract-2d", "--root", tiny_folder, "--out", tmp_path / "c.zarr", *EXTRACT, "--dry-run")
    assert run(*args, "--option", "batch_size=2", "--option", "width=16").exit_code == 0
    r = run(*args, "--option", "batch_size=0")
    assert r.exit_code == 2 and "'--batch-size': 0 is not in the range x>=1" in r.output
    r = run(*args, "--option", "depth_conf={}")
    assert (
        r.exit_code == 2 and "error: extract-2d: unknown option(s) depth_conf (known: batch_size" in r.output
    )
    r = run(*args, "--option", "scenes=s0")
    assert (
        r.exit_code == 2 and "--option scenes: set it with the command's own arguments and flags" in r.output
    )


def test_every_stage_command_has_option():
    for cmd in ("extract-2d", "calibrate-depth", "voxelize"):
        assert "--option KEY=VALUE" in CliRunner().invoke(main, [cmd, "--help"]).output
