"""One dispatcher for the stage commands: scenes -> shard -> dry run -> Ray or local.

A stage command parses its options into a :class:`StageCommand` (its scenes lister, its planner and its
two ways to run) and calls :func:`dispatch` with the shared :class:`~occlabel.cli.options.RunFlags`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from occlabel.cli.options import RunFlags
from occlabel.errors import OccLabelError


@dataclass
class RayRun:
    """A stage run as one Ray task per scene (occlabel.scale)."""

    kwargs: dict[str, Any]  # arguments of the per-scene task (scale.stage_task) besides the device
    store: str  # location of the store that gets the run's root record
    weights: dict[str, int]  # scene -> work items (progress)
    unit: str  # progress unit: img, cam, kf


@dataclass
class StageCommand:
    """What a stage command hands :func:`dispatch`; the callables take the scenes to run (None: all)."""

    name: str  # command name: extract-2d, calibrate-depth, voxelize
    list_scenes: Callable[[list[str] | None], list[str]]  # the scene names a run over them covers
    plan: Callable[[list[str] | None], str]  # the --dry-run text (the stage's planner, formatted)
    run: Callable[[list[str] | None], Any]  # a local run; returns what the done line names
    ray: Callable[[list[str]], RayRun]  # a Ray run (after any once-per-run preparation)
    target: Any  # the store the done line names after a Ray run
    done: str = "wrote"  # the done line: "<done> <store>"
    list_always: bool = False  # list (and so check) the scenes even without --shard or Ray
    overwrite_deletes_store: bool = True  # --overwrite deletes the store (so it excludes --shard K/N, N > 1)


def shard_plan(names: list[str], shard: str | None, overwrite_store: bool, what: str) -> list[str] | None:
    """The scenes to run: None without --shard (the stage's own default), else shard K/N's of ``names``."""
    from occlabel.scale import parse_shard, shard_scenes

    sh = parse_shard(shard)
    if sh is None:
        return None
    if overwrite_store and sh[1] > 1:
        raise OccLabelError(
            f"{what}: --overwrite deletes the whole store, which other shards write too; delete it once "
            "before the shards start, or run without --shard"
        )
    return shard_scenes(names, sh)


def run_ray(stage: str, scenes: list[str], job: RayRun, run: RunFlags) -> None:
    """One Ray task per scene of ``stage``, then the root record of the whole run."""
    from occlabel import scale

    t0 = time.perf_counter()
    with scale.ray_session(run.ray_address, run.workers):
        gpus, dev = scale.ray_resources(run.device)
        fn = scale.stage_task(stage, device=dev, **job.kwargs)
        try:
            scale.run_scenes(
                fn, scenes, "ray", num_gpus=gpus, max_retries=run.max_retries, progress=run.progress,
                desc=stage, weights=job.weights, unit=job.unit, what=stage,
            )  # fmt: skip
        finally:
            scale.summarize_stage(job.store, stage, scenes, time.perf_counter() - t0, "ray")


def dispatch(cmd: StageCommand, run: RunFlags) -> None:
    """Select the scenes (--scenes, --shard), then print the plan (--dry-run) or run the stage with the
    chosen executor, and print the done line."""
    selected = run.scenes
    if cmd.list_always or run.shard is not None or run.executor == "ray":
        listed = cmd.list_scenes(selected)
        overwrite = run.overwrite and cmd.overwrite_deletes_store
        sharded = shard_plan(listed, run.shard, overwrite, cmd.name)
        if sharded is not None and not sharded:
            click.echo(f"shard {run.shard}: no scenes; nothing to do")
            return
        if sharded is not None:
            selected = sharded
        elif run.executor == "ray":
            selected = listed
    if run.dry_run:
        click.echo(cmd.plan(selected))
        return
    if run.executor == "ray":
        run_ray(cmd.name, selected, cmd.ray(selected), run)
        click.echo(f"{cmd.done} {cmd.target}")
        return
    click.echo(f"{cmd.done} {cmd.run(selected)}")


def format_plan(stage: str, rows: list[dict[str, Any]], unit: str, where: str, notes: list[str] = ()) -> str:
    """The table ``--dry-run`` prints: per scene (and camera), items to do and already done."""
    todo = sum(r["todo"] for r in rows)
    done = sum(r["done"] for r in rows)
    scenes = len({r["scene"] for r in rows})
    cams = len({r.get("camera") for r in rows if r.get("camera")})
    head = f"{stage} --dry-run: {todo} {unit} to do, {done} already done; {scenes} scene(s)"
    head += f" x {cams} camera(s)" if cams else ""
    lines = [head + f" ({where})"]
    has_cam = any("camera" in r for r in rows)
    explain = {
        "waiting": "waiting: frames extract-2d has not produced yet (not counted as to do)",
        "uncalibrated": "uncalibrated: camera images of the scene without calibration (their depth is not fused)",
    }
    extra = [k for k in explain if any(r.get(k) for r in rows)]
    hdr = f"  {'scene':<18}" + (f"{'camera':<14}" if has_cam else "") + f"{'total':>7}{'to do':>7}{'done':>7}"
    hdr += "".join(f"{k:>14}" for k in extra)
    lines.append(hdr)
    for r in rows:
        line = f"  {r['scene']:<18}" + (f"{r.get('camera', ''):<14}" if has_cam else "")
        line += f"{r['total']:>7}{r['todo']:>7}{r['done']:>7}"
        line += "".join(f"{r.get(k, 0):>14}" for k in extra)
        lines.append(line)
    lines += [f"  {explain[k]}" for k in extra]
    lines += [f"  {n}" for n in notes]
    lines.append("nothing written (dry run)")
    return "\n".join(lines)


__all__ = ["RayRun", "StageCommand", "dispatch", "format_plan", "run_ray", "shard_plan"]
