"""occlabel.scale: shard parsing and partition, run_scenes' retries and final report (local and Ray), and a
Ray run of the three stages (one task per scene, through the CLI's --executor ray where it has the flags)
that equals a single-process run, array for array."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_concurrent_writers import (
    FAST,
    SEED,
    assert_consistent_meta,
    assert_same_arrays,
    cli,
    dataset,
    extract_args,
    reference,
    scale_base,  # noqa: F401 - fixture
    voxelize_args,
)

from occlabel.errors import OccLabelError, SkippedItemsError
from occlabel.scale import parse_shard, run_scenes, shard_of, shard_scenes, stage_task


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3/4 ") == (3, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/4", "1", "a/b", "0/0"):
        with pytest.raises(OccLabelError):
            parse_shard(bad)


def test_partition_is_stable_and_disjoint():
    # pinned: blake2b-64 of the name, little-endian, mod N (docs/scaling.md); never changes across versions
    assert [shard_of(f"synth-{SEED}-{i:03d}", 2) for i in range(4)] == [1, 0, 0, 1]
    names = [f"scene-{i:04d}" for i in range(200)]
    parts = [shard_scenes(names, (k, 8)) for k in range(8)]
    assert sorted(s for p in parts for s in p) == sorted(names)
    assert all(10 <= len(p) <= 40 for p in parts)
    # a scene's shard does not depend on the other scenes listed
    assert shard_scenes(names[:7], (3, 8)) == [s for s in parts[3] if s in names[:7]]


def _flaky(scene: str, marker_dir: str) -> str:
    marker = Path(marker_dir) / scene
    if scene == "bad":
        raise ValueError("always broken")
    if scene == "skips":
        raise SkippedItemsError("1 image skipped", [("skips/cam/t0", "skips/cam/t0: unreadable")])
    if scene == "flaky" and not marker.exists():
        marker.touch()
        raise RuntimeError("first attempt fails")
    return scene.upper()


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="ray is not installed")
    # the workers import this module (the test's functions): tests/ and the repository on their path
    here = Path(__file__).resolve().parent
    path = f"{here}:{here.parent}"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_run_scenes_retries_and_reports(executor, tmp_path, request):
    import functools

    if executor == "ray":
        request.getfixturevalue("ray_local")
    fn = functools.partial(_flaky, marker_dir=str(tmp_path))
    with pytest.raises(SkippedItemsError) as e:
        run_scenes(fn, ["ok", "flaky", "bad", "skips"], executor, max_retries=1, progress=False, what="t")
    items = dict(e.value.skipped)
    assert set(items) == {"bad", "skips/cam/t0"}, items
    assert "always broken" in items["bad"]
    assert "1 scene(s) failed after 2 attempt(s)" in str(e.value) and (tmp_path / "flaky").exists()
    assert run_scenes(fn, ["ok", "flaky"], executor, progress=False) == {"ok": "OK", "flaky": "FLAKY"}


def test_ray_run_equals_one_process(scale_base, tmp_path, ray_local):  # noqa: F811
    ref_cache, ref_labels = reference(scale_base)
    root = dataset(scale_base)
    cache, labels = tmp_path / "cache.zarr", tmp_path / "labels.zarr"
    # extract-2d and voxelize through the CLI (a Ray task per scene on the Ray of this module) ...
    cli(*extract_args(root, cache), "--executor", "ray")
    # ... calibrate-depth with the fast options, which only the Python API takes
    scenes = sorted(p.name for p in cache.iterdir() if p.is_dir())
    fn = stage_task("calibrate-depth", cache=str(cache), device="cpu", **FAST)
    run_scenes(fn, scenes, "ray", progress=False)
    cli(*voxelize_args(cache, labels), "--executor", "ray")
    assert_same_arrays(cache, ref_cache)
    assert_same_arrays(labels, ref_labels)
    assert_consistent_meta(cache, ref_cache)
    assert_consistent_meta(labels, ref_labels)
    from occlabel.store.cache import open_cache

    rec = open_cache(cache).meta["stages"]["extract_2d"]  # the driver's summary of the whole run
    assert rec["executor"] == "ray" and sorted(rec["scenes"]) == scenes and rec["images_processed"] == 10
