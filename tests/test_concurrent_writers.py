"""Two shards writing one store at the same time (real processes) give the stores of a single-process run,
array for array, with consistent metadata; a shard killed with SIGKILL mid-scene resumes on rerun.

The helpers here (the tiny synthetic dataset, the single-process reference run, store comparison) are also
used by test_scale.py (Ray) and test_s3.py (stores on S3).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import cli as _cli

from occlabel.cli import main
from occlabel.scale import shard_of
from occlabel.store.common import open_group, read_meta

#: calibrate-depth options that make it fast on 64x48 images (the tests compare, they do not score)
FAST = {
    "widths": (32,),
    "iters": (3,),
    "coarse_width": 32,
    "s_steps": 12,
    "r_grid": (0.0, 0.1, 0.3, 0.6),
    "polish_rounds": 1,
    "scene_frames": 2,
    "overlap": False,
}
#: a small custom grid (CLI flags), 40 x 40 x 8 voxels
GRID = ["--grid", "small", "--grid-range", "-10,-10,-1,10,10,3", "--voxel-size", "0.5"]
#: seed 0 names the scenes synth-0-000 (shard 1 of 2) and synth-0-001 (shard 0 of 2)
SEED = 0
#: fields of stage records that differ between two runs of the same work
VOLATILE = {"time", "host", "seconds", "created", "provenance", "version", "torch", "zarr", "python"}


def cli(*args) -> str:
    """conftest's cli, with exceptions raised (a failing writer shows its traceback)."""
    return _cli(*args, catch_exceptions=False)


def dataset(base: Path, frames: int = 5) -> Path:
    """The tiny synthetic dataset (2 scenes, one front camera, 64x48), made once per base directory."""
    root = base / f"ds{frames}"
    if not (root / "occlabel.json").exists():
        cli("synth", "--out", root, "--scenes", 2, "--frames", frames, "--size", "64x48", "--seed", SEED)
    return root


def extract_args(root: Path, out) -> list:
    return ["extract-2d", "--root", root, "--out", out, "--depth-model", "oracle", "--semantic-model", "oracle",
            "--device", "cpu", "--num-workers", "0", "--batch-size", "1"]  # fmt: skip


def voxelize_args(cache, out) -> list:
    return ["voxelize", cache, "--out", out, "--device", "cpu", *GRID]


def reference(base: Path) -> tuple[Path, Path]:
    """(cache, labels) of the whole pipeline in one process, made once per base directory."""
    from occlabel.stages import calibrate_depth

    d = base / "ref"
    cache, labels = d / "cache.zarr", d / "labels.zarr"
    if not (labels / "zarr.json").exists():
        root = dataset(base)
        cli(*extract_args(root, cache))
        calibrate_depth.run(cache, device="cpu", progress=False, **FAST)
        cli(*voxelize_args(cache, labels))
    return cache, labels


@pytest.fixture(scope="session")
def scale_base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "scale_shared"


def arrays(store) -> dict[str, np.ndarray]:
    """Every array of a store (path or URL) by its path."""
    out: dict[str, np.ndarray] = {}

    def walk(g: zarr.Group, prefix: str) -> None:
        for name, a in g.arrays():
            out[f"{prefix}{name}"] = a[:]
        for name, sub in g.groups():
            walk(sub, f"{prefix}{name}/")

    walk(open_group(store, mode="r"), "")
    return out


def assert_same_arrays(a, b) -> None:
    got, want = arrays(a), arrays(b)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def stable(rec):
    """A record without the fields that differ between runs (times, hosts, versions)."""
    if isinstance(rec, dict):
        return {k: stable(v) for k, v in rec.items() if k not in VOLATILE}
    return rec


def assert_consistent_meta(store, ref) -> None:
    """Root attrs with the same fields (and the same stage settings) as the reference; every scene with
    the reference's per-scene records, counts included."""
    g, r = open_group(store, mode="r"), open_group(ref, mode="r")
    gm, rm = read_meta(g), read_meta(r)
    assert set(gm) == set(rm)
    assert gm["kind"] == rm["kind"]
    for k in ("dataset", "default_depth", "default_semantics", "grid", "classes", "options", "source"):
        assert gm.get(k) == rm.get(k), k
    for stage in rm.get("stages", {}):
        assert set(gm["stages"][stage]) >= {"scenes"} and gm["stages"][stage]["version"]
    for scene in sorted(r.group_keys()):
        assert stable(read_meta(g[scene])) == stable(read_meta(r[scene])), scene


# ---------------------------------------------------------------------------------------------- the tests
SHARD_SCRIPT = textwrap.dedent(
    """
    import sys
    from click.testing import CliRunner
    from occlabel.cli import main
    from occlabel.scale import shard_scenes
    from occlabel.stages import calibrate_depth
    from occlabel.store.cache import open_cache

    shard, root, cache, labels, fast = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], eval(sys.argv[5])
    def cli(*args):
        r = CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    cli("extract-2d", "--root", root, "--out", cache, "--depth-model", "oracle", "--semantic-model", "oracle",
        "--device", "cpu", "--num-workers", "0", "--batch-size", "1", "--shard", shard)
    k, n = (int(v) for v in shard.split("/"))
    names = shard_scenes(open_cache(cache).scenes(), (k, n))
    calibrate_depth.run(cache, scenes=names, device="cpu", progress=False, **fast)
    cli("voxelize", cache, "--out", labels, "--device", "cpu", "--grid", "small", "--grid-range",
        "-10,-10,-1,10,10,3", "--voxel-size", "0.5", "--shard", shard)
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_two_shards_at_once_equal_one_process(scale_base, tmp_path):
    ref_cache, ref_labels = reference(scale_base)
    root = dataset(scale_base)
    assert sorted(shard_of(f"synth-{SEED}-{i:03d}", 2) for i in range(2)) == [0, 1]  # one scene each
    cache, labels = tmp_path / "cache.zarr", tmp_path / "labels.zarr"
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), f"{k}/2", str(root), str(cache), str(labels), repr(FAST)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for k in (0, 1)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-3000:]
    assert_same_arrays(cache, ref_cache)
    assert_same_arrays(labels, ref_labels)
    assert_consistent_meta(cache, ref_cache)
    assert_consistent_meta(labels, ref_labels)
    # the cache's per-scene records say what each shard wrote there
    c = open_group(cache, mode="r")
    for scene in c.group_keys():
        rec = read_meta(c[scene])["stages"]
        assert rec["extract_2d"]["images_processed"] == 5 and rec["calibrate_depth"]["frames_calibrated"] == 5


def test_shard_cli_refuses_overwrite_and_skips_empty_shard(scale_base, tmp_path):
    root = dataset(scale_base)
    r = CliRunner().invoke(
        main, [*map(str, extract_args(root, tmp_path / "c.zarr")), "--shard", "0/2", "--overwrite"]
    )
    assert r.exit_code == 2 and "--overwrite deletes the whole store" in r.output
    r = CliRunner().invoke(main, [*map(str, extract_args(root, tmp_path / "c.zarr")), "--shard", "2/2"])
    assert r.exit_code == 2 and "0 <= K < N" in r.output
    # 3 shards: one of them has no scene of the two
    empty = next(k for k in range(3) if all(shard_of(f"synth-{SEED}-{i:03d}", 3) != k for i in range(2)))
    out = cli(*extract_args(root, tmp_path / "c.zarr"), "--shard", f"{empty}/3")
    assert "no scenes" in out and not (tmp_path / "c.zarr").exists()


def _done(cache: Path, scene: str) -> int:
    try:
        g = zarr.open_group(str(cache / scene / "CAM_FRONT"), mode="r")
        return int((g["depth/oracle/done"][:] & g["semantics/oracle/done"][:]).sum())
    except Exception:  # not created yet
        return 0


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_sigkill_of_one_shard_then_rerun(scale_base, tmp_path):
    frames = 16
    root = dataset(scale_base, frames)
    ref = tmp_path / "ref.zarr"
    cli(*extract_args(root, ref))
    cache = tmp_path / "cache.zarr"
    victim = f"synth-{SEED}-001"  # shard 0 of 2
    cmd = [sys.executable, "-m", "occlabel", "-q", *map(str, extract_args(root, cache))]
    procs = {k: subprocess.Popen([*cmd, "--shard", f"{k}/2"], env=_env()) for k in (0, 1)}
    t0 = time.time()
    while _done(cache, victim) < 2 and procs[0].poll() is None and time.time() - t0 < 120:
        time.sleep(0.02)
    killed_at = _done(cache, victim)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    assert procs[1].wait(timeout=300) == 0
    assert killed_at < frames, "shard 0 finished before it could be killed"
    # the other shard's scene is complete; the killed one resumes and the store equals one run's
    assert _done(cache, f"synth-{SEED}-000") == frames
    subprocess.run([*cmd, "--shard", "0/2"], env=_env(), check=True)
    assert_same_arrays(cache, ref)
    meta = read_meta(open_group(cache, mode="r"))
    assert meta["kind"] == "cache" and meta["default_depth"] == "oracle" and "extract_2d" in meta["stages"]
    rec = read_meta(open_group(cache, mode="r")[victim])["stages"]["extract_2d"]
    assert rec["images_processed"] <= frames - killed_at  # the rerun wrote only what was missing
