"""Scale-out: the scene is the unit of work (docs/scaling.md).

- **Shards** (``--shard K/N``, for job arrays such as SLURM's ``--array=0-(N-1)``): scene ``s`` belongs to
  shard ``blake2b-64(s) mod N`` (:func:`shard_of`). The hash depends on the scene's name alone, so every
  stage, every shard and every rerun agree on a scene's shard whatever scene list each one sees (a stage
  may list the cache while another shard is still creating its scenes). Shards are balanced in
  expectation only: with S scenes a shard gets about S/N ± sqrt(S/N).
- **Executors** (:func:`run_scenes`): ``local`` runs the scenes one after the other in this process;
  ``ray`` makes each scene a Ray task (``num_gpus=1`` on CUDA, ``num_cpus`` otherwise) on an existing
  cluster (``address``) or on a local Ray started in-process; failed scenes are retried ``max_retries``
  times, the driver shows one progress bar, and failures are reported together at the end
  (:class:`occlabel.errors.SkippedItemsError`, exit code 3).
- **Stage tasks** (:func:`extract_2d_scene`, :func:`calibrate_depth_scene`, :func:`voxelize_scene`): one
  scene of a stage, by calling the stage's ``run(..., scenes=[scene])``; what :func:`stage_task` binds
  and the executors call.

Concurrent writers of one store are safe because they write disjoint scene groups; see
occlabel.store.common for the root attributes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from occlabel.errors import OccLabelError, SkippedItemsError

log = logging.getLogger("occlabel.scale")

EXECUTORS = ("local", "ray")
#: environment passed on to Ray workers (store locations and endpoints; never credentials)
FORWARDED_ENV = ("OCCLABEL_STORAGE_OPTIONS", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


# ---------------------------------------------------------------------------------------------- shards
def parse_shard(value: str | None) -> tuple[int, int] | None:
    """``"K/N"`` (0 <= K < N) -> (K, N); None or "" -> None. K is 0-based, like SLURM_ARRAY_TASK_ID of
    ``--array=0-(N-1)``."""
    if value is None or not str(value).strip():
        return None
    k, sep, n = str(value).strip().partition("/")
    try:
        if not sep:
            raise ValueError
        ki, ni = int(k), int(n)
    except ValueError:
        raise OccLabelError(f"--shard {value!r}: expected K/N with integers 0 <= K < N, e.g. 0/4") from None
    if ni < 1 or not 0 <= ki < ni:
        raise OccLabelError(f"--shard {value!r}: expected 0 <= K < N (K is 0-based), e.g. 0/4 ... 3/4")
    return ki, ni


def shard_of(scene: str, n: int) -> int:
    """The shard (0..n-1) of scene ``scene``: blake2b-64 of its UTF-8 name, little-endian, modulo ``n``."""
    h = hashlib.blake2b(str(scene).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") % int(n)


def shard_scenes(scenes: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """The scenes of ``scenes`` in ``shard`` (K, N), in their given order; all of them when None."""
    if shard is None:
        return list(scenes)
    k, n = shard
    return [s for s in scenes if shard_of(s, n) == k]


# ---------------------------------------------------------------------------------------------- executors
class _Skipped:
    """A task's result when its scene finished with skipped items (not retried: the rest is written)."""

    def __init__(self, skipped: list[tuple[str, str]], message: str):
        self.skipped = skipped
        self.message = message


def _call(fn: Callable[[str], Any], scene: str) -> Any:
    try:
        return fn(scene)
    except SkippedItemsError as e:
        return _Skipped(list(e.skipped), str(e))


def _reason(e: BaseException) -> str:
    cause = getattr(e, "cause", None)  # ray.exceptions.RayTaskError wraps the task's exception
    e = cause if isinstance(cause, BaseException) else e
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}".rstrip(": ")


def run_scenes(
    fn: Callable[[str], Any],
    scenes: Sequence[str],
    executor: str = "local",
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    num_gpus: float = 0,
    num_cpus: float = 1,
    max_retries: int = 2,
    progress: bool = True,
    desc: str = "scenes",
    weights: dict[str, int] | None = None,
    unit: str = "scene",
    what: str = "run",
) -> dict[str, Any]:
    """Run ``fn(scene)`` for every scene; returns scene -> fn's result.

    Args:
        fn: the work of one scene (picklable for ``ray``: a top-level function or a functools.partial of
            one, e.g. from :func:`stage_task`). A SkippedItemsError it raises is not retried: its items
            are reported at the end (the scene's other work is written).
        executor: "local" (in this process, one scene after the other) or "ray" (a task per scene).
        ray_address: an existing Ray cluster ("auto", "ray://head:10001", "head:6379"); None starts a
            local Ray in this process with ``workers`` CPUs (default: all) unless Ray is already running.
        num_gpus, num_cpus: resources of one task (``ray``): num_gpus=1 for CUDA stages.
        max_retries: further attempts of a scene that raised or whose worker died.
        weights: scene -> units of work for the progress bar (default 1 per scene), e.g. its images.
        what: the name of the run in the final error ("extract-2d").
    Raises:
        SkippedItemsError: some scenes failed after every attempt, or skipped items; all other scenes are
            done. ``skipped`` lists (scene or item, reason).
    """
    if executor not in EXECUTORS:
        raise OccLabelError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    if max_retries < 0:
        raise OccLabelError(f"max retries must be >= 0, got {max_retries}")
    scenes = list(dict.fromkeys(scenes))
    from occlabel.utils import progress_bar

    w = {s: int((weights or {}).get(s, 1)) for s in scenes}
    bar = progress_bar(total=sum(w.values()), desc=desc, enabled=progress, unit=unit)
    results: dict[str, Any] = {}
    failed: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    try:
        if executor == "local":
            for s in scenes:
                for attempt in range(max_retries + 1):
                    try:
                        results[s] = _call(fn, s)
                        break
                    except Exception as e:  # noqa: BLE001 - reported per scene at the end
                        log.warning("%s: scene %s attempt %d failed: %s", what, s, attempt + 1, _reason(e))
                        if attempt == max_retries:
                            failed.append((s, _reason(e)))
                bar.update(w[s])
        else:
            _run_ray(
                fn, scenes, results, failed, bar, w, ray_address, workers, num_gpus, num_cpus, max_retries
            )
    finally:
        bar.close()
    log.info("%s: %d scenes in %.1f s with %s", what, len(scenes), time.perf_counter() - t0, executor)
    _report(results, failed, max_retries, what)
    return results


def _report(results: dict[str, Any], failed: list[tuple[str, str]], max_retries: int, what: str) -> None:
    skipped = [item for r in results.values() if isinstance(r, _Skipped) for item in r.skipped]
    if not failed and not skipped:
        return
    parts = []
    if failed:
        parts.append(
            f"{len(failed)} scene(s) failed after {max_retries + 1} attempt(s) ({', '.join(s for s, _ in failed)}; "
            f"first: {failed[0][1]})"
        )
    if skipped:
        parts.append(f"{len(skipped)} item(s) skipped (first: {skipped[0][1]})")
    raise SkippedItemsError(
        f"{what}: {'; '.join(parts)}; every other scene is written; rerun the same command to redo them",
        [(s, f"scene {s}: {r}") for s, r in failed] + skipped,
    )


def ray_resources(device: str, gpus: float | None = None) -> tuple[float, str]:
    """(GPUs per task, the device a task uses) for stage device ``device`` on the current Ray cluster:
    "cuda"/"cuda:N" -> one GPU, the task's own "cuda"; "auto" -> the same when the cluster has GPUs;
    "cpu" -> none."""
    import ray

    if device == "cpu":
        return 0.0, "cpu"
    if device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0):
        return (1.0 if gpus is None else gpus), "cuda"
    return 0.0, "cpu"


def init_ray(address: str | None = None, workers: int | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray with ``workers`` CPUs; True when this
    call started it (the caller shuts it down). Already running: nothing is done."""
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    runtime_env = {"env_vars": env} if env else None
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(
            num_cpus=workers or os.cpu_count() or 1,
            include_dashboard=False,
            runtime_env=runtime_env,
            log_to_driver=True,
        )
    return True


class ray_session:
    """``with ray_session(address, workers):`` Ray for the block (see :func:`init_ray`); a Ray this
    started is shut down at the end."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address, self.workers, self.started = address, workers, False

    def __enter__(self) -> ray_session:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise OccLabelError(
                '--executor ray needs Ray: pip install "occlabel[scale]" (or "ray[default]")'
            ) from None
        self.started = init_ray(self.address, self.workers)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            import ray

            ray.shutdown()


def _remote_call(fn, scene: str) -> Any:
    # inside a Ray worker: the stages log at WARNING and show no progress bars
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return _call(fn, scene)


def _run_ray(fn, scenes, results, failed, bar, w, address, workers, num_gpus, num_cpus, max_retries) -> None:
    try:
        import ray
    except ImportError:
        raise OccLabelError(
            '--executor ray needs Ray: pip install "occlabel[scale]" (or "ray[default]")'
        ) from None
    started = init_ray(address, workers)
    try:
        task = ray.remote(_remote_call).options(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_retries=max_retries,
            retry_exceptions=True,
            name="occlabel-scene",
        )
        fn_ref = ray.put(fn)
        pending = {task.remote(fn_ref, s): s for s in scenes}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                s = pending.pop(ref)
                try:
                    results[s] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, ...
                    failed.append((s, _reason(e)))
                bar.update(w[s])
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------- stage tasks
def _torch_threads() -> None:
    # a Ray task owns num_cpus CPUs: Ray sets OMP_NUM_THREADS to them; torch reads it only at start-up
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        import torch

        torch.set_num_threads(int(n))


@functools.lru_cache(maxsize=2)
def _dataset(kind: str, root: str, options_json: str):
    import json

    from occlabel.datasets import open_dataset

    return open_dataset(kind, root, **json.loads(options_json))


def extract_2d_scene(
    scene: str, *, dataset_kind: str, dataset_root: str, dataset_options: dict, out: str, **kwargs: Any
) -> dict[str, Any]:
    """extract-2d of one scene into the cache ``out``: the dataset is opened once per process; models are
    kept between scenes (``reuse_models``). ``kwargs``: the other arguments of extract_2d.run."""
    import json

    from occlabel.stages import extract_2d

    _torch_threads()
    ds = _dataset(dataset_kind, str(dataset_root), json.dumps(dataset_options or {}, sort_keys=True))
    kwargs = {"progress": False, "reuse_models": True, **kwargs}
    extract_2d.run(ds, out, scenes=[scene], overwrite=False, **kwargs)
    return {"scene": scene}


def calibrate_depth_scene(scene: str, *, cache: str, **kwargs: Any) -> dict[str, Any]:
    """calibrate-depth of one scene of ``cache``; ``kwargs``: the other arguments of calibrate_depth.run."""
    from occlabel.stages import calibrate_depth

    _torch_threads()
    calibrate_depth.run(cache, scenes=[scene], progress=False, **kwargs)
    return {"scene": scene}


def voxelize_scene(scene: str, *, cache: str, out: str, **kwargs: Any) -> dict[str, Any]:
    """voxelize of one scene of ``cache`` into ``out``; ``kwargs``: the other arguments of voxelize.run."""
    from occlabel.stages import voxelize

    _torch_threads()
    voxelize.run(cache, out, scenes=[scene], progress=False, overwrite=False, **kwargs)
    return {"scene": scene}


STAGE_TASKS = {
    "extract-2d": extract_2d_scene,
    "calibrate-depth": calibrate_depth_scene,
    "voxelize": voxelize_scene,
}


def stage_task(stage: str, **kwargs: Any) -> Callable[[str], Any]:
    """The per-scene callable of ``stage`` with its arguments bound (picklable, for :func:`run_scenes`)."""
    return functools.partial(STAGE_TASKS[stage], **kwargs)


def summarize_stage(store: str, stage: str, scenes: Sequence[str], seconds: float, executor: str) -> None:
    """After a run of one task per scene: the root's record of ``stage`` (each task wrote its own, for its
    one scene) becomes the whole run's, from the scenes' records (occlabel.store.common.scene_records):
    the scenes, summed counts, the wall time and the executor."""
    from occlabel.store.common import open_root, scene_records, update_root_meta

    kind = "labels" if stage == "voxelize" else "cache"
    root = open_root(store, kind, create=False, mode="a")
    key = stage.replace("-", "_")
    recs = scene_records(root, key, list(scenes))
    if not recs:
        return
    first = next(iter(recs.values()))

    def total(field: str) -> Any:
        vals = [r.get(field) for r in recs.values()]
        if all(isinstance(v, int | float) for v in vals):
            return sum(vals)
        if all(isinstance(v, list) for v in vals):
            return [x for v in vals for x in v]
        if all(isinstance(v, dict) for v in vals):
            out: dict = {}
            for v in vals:
                for k, x in v.items():
                    out[k] = out[k] + x if isinstance(x, int | float) and k in out else x
            return out
        return first.get(field)

    def update(meta: dict[str, Any]) -> None:
        if kind == "labels":
            stats = dict(meta.get("stats") or {})
            stats.update(
                keyframes_written=total("keyframes_written"), executor=executor, seconds_wall=seconds
            )
            meta["stats"] = stats
            return
        rec = {k: v for k, v in first.items() if k not in ("overlapping_cameras",)}
        for field in ("images_processed", "skipped", "frames_calibrated", "flag_counts", "cue_counts"):
            if field in first:
                rec[field] = total(field)
        if "overlapping_cameras" in first:
            rec["overlapping_cameras"] = {s: r.get("overlapping_cameras", {}) for s, r in recs.items()}
        if "median_source_baseline_m" in first:
            rec["median_source_baseline_m"] = None  # a median of medians is not the run's median
        rec.update(scenes=list(recs), seconds=seconds, executor=executor)
        meta.setdefault("stages", {})[key] = rec

    update_root_meta(root, update)


__all__ = [
    "EXECUTORS",
    "calibrate_depth_scene",
    "extract_2d_scene",
    "init_ray",
    "parse_shard",
    "ray_resources",
    "ray_session",
    "run_scenes",
    "shard_of",
    "shard_scenes",
    "stage_task",
    "summarize_stage",
    "voxelize_scene",
]
