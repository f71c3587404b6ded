"""The ``occlabel`` command line: a thin layer over the stage functions (occlabel.stages.*).

User mistakes (OccLabelError) print one line and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from occlabel import __version__
from occlabel.errors import OccLabelError

log = logging.getLogger("occlabel")


def _scenes(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


class _StoreType(click.ParamType):
    """A store location: a local path (a Path) or an fsspec URL such as s3://bucket/x.zarr (a string)."""

    name = "PATH|URL"

    def convert(self, value, param, ctx):
        from occlabel.store.common import store_location

        return value if isinstance(value, Path) else store_location(str(value))


STORE = _StoreType()


def _scale_options(f):
    """--shard, --executor, --ray-address, --workers, --max-retries (docs/scaling.md)."""
    opts = [
        click.option(
            "--shard",
            default=None,
            metavar="K/N",
            help="Only the scenes of shard K of N (0-based; a scene's shard is a stable hash of its name), "
            "e.g. --shard $SLURM_ARRAY_TASK_ID/8. Shards may write one store at the same time.",
        ),
        click.option(
            "--executor",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="local: the scenes one after the other in this process; ray: one Ray task per scene.",
        ),
        click.option(
            "--ray-address",
            default=None,
            help="Ray cluster to use (auto, head:6379, ray://head:10001); default: a local Ray started here.",
        ),
        click.option(
            "--workers",
            default=None,
            type=click.IntRange(1),
            help="CPUs of the local Ray (--executor ray without --ray-address); default: all cores.",
        ),
        click.option(
            "--max-retries",
            default=2,
            show_default=True,
            type=click.IntRange(0),
            help="--executor ray: further attempts of a failed scene; failed scenes are listed at the end.",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _shard_plan(names: list[str], shard: str | None, overwrite_store: bool, what: str) -> list[str] | None:
    """The scenes to run: all ``names`` without --shard (None: the stage's own default), else the shard's."""
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


def _run_ray(
    ctx, stage: str, scenes: list[str], store, weights, unit, kwargs, device, ray_address, workers, retries
):
    """One Ray task per scene of ``stage``, then the root record of the whole run."""
    import time

    from occlabel import scale

    t0 = time.perf_counter()
    with scale.ray_session(ray_address, workers):
        gpus, dev = scale.ray_resources(device)
        fn = scale.stage_task(stage, device=dev, **kwargs)
        try:
            scale.run_scenes(
                fn, scenes, "ray", num_gpus=gpus, max_retries=retries, progress=ctx.obj["progress"],
                desc=stage, weights=weights, unit=unit, what=stage,
            )  # fmt: skip
        finally:
            scale.summarize_stage(store, stage, scenes, time.perf_counter() - t0, "ray")


def _ints(value: str, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{name}: expected comma-separated integers, got {value!r}") from None
    if not out:
        raise click.BadParameter(f"{name}: expected at least one integer")
    return out


def _size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT like 320x192, got {value!r}") from None
    return w, h


def load_config(path: Path, group: click.Group) -> dict[str, dict]:
    """``--config`` YAML -> click ``default_map``: one section per command, keys the option names as
    flags (``depth-model``, ``batch-size``; ``_`` works too), values as on the command line (lists for
    repeatable options, a mapping for ``*-option`` KEY=VALUE pairs, ``no-photometric: true`` or
    ``photometric: false``). Unknown commands and options are a one-line error."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise OccLabelError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise OccLabelError(f"--config {path}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OccLabelError(
            f"--config {path}: expected a mapping of command names to options, e.g. 'extract-2d: {{batch-size: 4}}'"
        )
    out: dict[str, dict] = {}
    for section, opts in data.items():
        cmd = group.commands.get(str(section))
        if cmd is None:
            raise OccLabelError(
                f"--config {path}: unknown command {section!r} (known: {', '.join(sorted(group.commands))})"
            )
        if opts is None:
            continue
        if not isinstance(opts, dict):
            raise OccLabelError(f"--config {path}: {section}: expected a mapping of option names to values")
        flags: dict[str, click.Option] = {}
        for p in cmd.params:
            if isinstance(p, click.Option):
                for o in (*p.opts, *p.secondary_opts):
                    if o.startswith("--"):
                        flags[o[2:]] = p
        values: dict = {}
        for key, value in opts.items():
            name = str(key).replace("_", "-")
            p = flags.get(name)
            if p is None:
                raise OccLabelError(
                    f"--config {path}: {section}: unknown option {key!r} (known: {', '.join(sorted(flags))})"
                )
            if value is None:
                continue
            if "--" + name in p.secondary_opts:  # no-photometric: true
                value = not value
            if p.multiple:
                if isinstance(value, dict):
                    value = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
                elif not isinstance(value, list | tuple):
                    value = [value]
                value = [str(v) for v in value]
            elif isinstance(value, list | tuple):
                value = ",".join(map(str, value))
            values[p.name] = value
        out[cmd.name] = values
    return out


class _Group(click.Group):
    """Turns OccLabelError into one line on stderr and exit code 2 (traceback only with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OccLabelError as e:
            if ctx.find_root().params.get("debug"):
                raise
            for item, reason in getattr(e, "skipped", [])[1:]:
                click.echo(f"skipped: {reason if reason.startswith(item) else f'{item}: {reason}'}", err=True)
            click.echo(f"error: {e}", err=True)
            sys.exit(getattr(e, "exit_code", 2))
        except KeyboardInterrupt:
            click.echo("interrupted: finished frames are kept; rerun the same command to resume", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="occlabel")
@click.option("-v", "--verbose", count=True, help="Log what each stage does (-vv: debug messages).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars (warnings and errors still print).")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML of option defaults, one section per command (extract-2d: {depth-model: oracle, batch-size: "
    "8}); options on the command line override it.",
)
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, debug: bool, config_file: Path | None) -> None:
    """occlabel: 3D semantic occupancy labels from cameras alone.

    \b
    Pipeline:  extract-2d -> calibrate-depth -> voxelize -> evaluate / export
    Look:      show (a picture), report (an HTML page of a run), info (what a store holds)
    Try it:    occlabel demo
    """
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"progress": not quiet}
    if config_file is not None:
        # the subcommand's context is made after this callback and takes its defaults from here
        ctx.default_map = load_config(config_file, ctx.command)


@main.command()
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Dataset root to write."
)
@click.option(
    "--layout",
    type=click.Choice(["folder", "nuscenes", "kitti", "kitti-raw"]),
    default="folder",
    show_default=True,
    help="On-disk layout: the folder format (occlabel.json), nuScenes (v1.0-mini-style tables, samples/, "
    "sweeps/), KITTI odometry (sequences/XX, poses/XX.txt, SemanticKITTI voxels) or KITTI raw "
    "(<date>/<date>_drive_NNNN_sync with OXTS poses).",
)
@click.option(
    "--scenes", "n_scenes", default=1, show_default=True, type=click.IntRange(1), help="Number of scenes."
)
@click.option("--frames", default=20, show_default=True, type=click.IntRange(2), help="Frames per scene.")
@click.option(
    "--rig",
    type=click.Choice(["front", "surround", "stereo"]),
    default=None,
    help="Cameras: front (one; KITTI: cam2) or surround (six, nuScenes-like); KITTI layouts also stereo "
    "(cam0-cam3). Default: surround for nuscenes, front otherwise.",
)
@click.option("--size", default=None, help="Image size WIDTHxHEIGHT (default: the layout's default).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--keyframe-every",
    default=None,
    type=click.IntRange(1),
    help="Keyframe cadence in frames (default 5; nuscenes 6: 2 Hz samples at 12 Hz).",
)
@click.option(
    "--fps",
    default=None,
    type=click.FloatRange(min=0.1),
    help="Frame rate (default 10; nuscenes 12, the camera rate).",
)
@click.option(
    "--ego-speed",
    default=None,
    type=click.FloatRange(min=0.0),
    help="Ego speed in m/s (default: 5-10 at random; 0 parks).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
@click.pass_context
def synth(ctx, out, layout, n_scenes, frames, rig, size, seed, keyframe_every, fps, ego_speed, overwrite):
    """Render a synthetic driving dataset with full ground truth (folder, nuScenes or KITTI layout)."""
    kw = {"size": _size(size)} if size else {}
    kw.update(ego_speed=ego_speed, progress=ctx.obj["progress"], overwrite=overwrite, seed=seed)
    if layout == "nuscenes":
        from occlabel.datasets.synthetic.nuscenes_layout import synth_nuscenes

        if rig == "stereo":
            raise OccLabelError(
                "--rig stereo is for --layout kitti or kitti-raw (nuscenes: front or surround)"
            )
        root = synth_nuscenes(
            out, scenes=n_scenes, frames=frames, rig=rig or "surround", keyframe_every=keyframe_every or 6,
            fps=fps or 12.0, **kw,
        )  # fmt: skip
    elif layout == "kitti":
        from occlabel.datasets.synthetic.kitti_layout import synth_kitti

        if rig == "surround":
            raise OccLabelError("--rig surround is for --layout folder or nuscenes (kitti: front or stereo)")
        cams = (0, 1, 2, 3) if rig == "stereo" else (2,)
        root = synth_kitti(
            out, sequences=n_scenes, frames=frames, cameras=cams, keyframe_every=keyframe_every or 5,
            fps=fps or 10.0, **kw,
        )  # fmt: skip
    elif layout == "kitti-raw":
        from occlabel.datasets.synthetic.kitti_raw_layout import synth_kitti_raw

        if rig == "surround":
            raise OccLabelError(
                "--rig surround is for --layout folder or nuscenes (kitti-raw: front or stereo)"
            )
        cams = (0, 1, 2, 3) if rig == "stereo" else (2,)
        root = synth_kitti_raw(
            out, drives=n_scenes, frames=frames, cameras=cams, keyframe_every=keyframe_every or 5,
            fps=fps or 10.0, **kw,
        )  # fmt: skip
    else:
        from occlabel.datasets.synthetic import synth as _synth

        if rig == "stereo":
            raise OccLabelError("--rig stereo is for --layout kitti or kitti-raw (folder: front or surround)")
        root = _synth(
            out, scenes=n_scenes, frames=frames, rig=rig or "front", keyframe_every=keyframe_every or 5,
            fps=fps or 10.0, **kw,
        )  # fmt: skip
    click.echo(f"wrote synthetic dataset ({layout} layout): {root}")


def default_workers() -> int:
    """Decoding workers when not given: half the CPU cores (the rest feed the model), 1 to 4."""
    import os

    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _options(values: tuple[str, ...], flag: str) -> dict:
    """``KEY=VALUE`` pairs (VALUE read as YAML: 0.2, true, [1, 2], text) -> dict."""
    import yaml

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{flag}: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def dataset_opts(kind: str, version: str | None, split: str | None, values: tuple[str, ...]) -> dict:
    """Adapter options from ``--version``, ``--split`` and ``--dataset-option KEY=VALUE`` (VALUE read as YAML,
    except that a value with ':' stays a string: frames=10:50)."""
    opts = _options(values, "--dataset-option")
    for item in values:  # YAML reads 10:50 as a base-60 integer
        key, _, value = item.partition("=")
        if ":" in value and not value.strip().startswith(("[", "{")):
            opts[key.strip()] = value.strip()
    for flag, key, value, kinds in (("--version", "version", version, ("nuscenes",)),
                                    ("--split", "split", split, ("nuscenes", "kitti"))):  # fmt: skip
        if value is None:
            continue
        if kind not in kinds:
            raise OccLabelError(f"{flag} applies to --dataset {' or '.join(kinds)}, not {kind}")
        if key in opts and opts[key] != value:
            raise OccLabelError(f"{flag} {value} contradicts --dataset-option {key}={opts[key]}")
        opts[key] = value
    return opts


def backend_confs(
    depth_model: str,
    semantic_model: str,
    detector: str | None = None,
    segmenter: str | None = None,
    vocab: str | None = None,
    depth_kind: str | None = None,
    depth_options: tuple[str, ...] = (),
    semantic_options: tuple[str, ...] = (),
) -> tuple[dict, dict]:
    """The backends' conf dicts from the extract-2d flags, checked against their ``default_conf``.

    ``--segmenter`` sets a backend's "segmenter" (box-prompted SAM backends) or else its "model" (CLIPSeg,
    closed-set); ``--detector`` its "detector"; ``--vocab`` its "vocab"; ``--depth-kind`` the files depth
    backend's "kind". A flag the chosen backend does not take is a one-line error.
    """
    from occlabel.models.base import depth_backend_class, semantic_backend_class

    dconf = _options(depth_options, "--depth-option")
    sconf = _options(semantic_options, "--semantic-option")
    dkeys = depth_backend_class(depth_model).default_conf
    if depth_kind is not None:
        if "kind" not in dkeys:
            raise OccLabelError(f"--depth-kind applies to --depth-model files:DIR, not {depth_model!r}")
        dconf["kind"] = depth_kind
    flags = {"--detector": detector, "--segmenter": segmenter, "--vocab": vocab}
    given = [f for f, v in flags.items() if v is not None]
    if semantic_model == "none":
        if given or sconf:
            what = ", ".join(given + (["--semantic-option"] if sconf else []))
            raise OccLabelError(f"{what}: not used with --semantic-model none (a depth-only run)")
        return dconf, {}
    skeys = semantic_backend_class(semantic_model).default_conf
    for flag, value in flags.items():
        if value is None:
            continue
        key = {"--detector": "detector", "--vocab": "vocab"}.get(flag)
        if flag == "--segmenter":
            key = "segmenter" if "segmenter" in skeys else "model"
        if key not in skeys:
            raise OccLabelError(f"{flag} does not apply to --semantic-model {semantic_model}")
        sconf[key] = value
    return dconf, sconf


@main.command("extract-2d")
@click.option(
    "--dataset",
    "kind",
    type=click.Choice(["folder", "synthetic", "nuscenes", "kitti", "kitti-raw"]),
    default="folder",
    show_default=True,
    help="Dataset adapter: folder (occlabel.json; synthetic is the same), nuscenes, kitti (odometry / "
    "SemanticKITTI) or kitti-raw (OXTS poses) (docs/datasets.md).",
)
@click.option(
    "--root",
    required=True,
    type=click.Path(path_type=Path),
    help="Dataset root (nuScenes: the dataroot; KITTI: the directory holding sequences/; KITTI raw: the "
    "directory holding <date>/).",
)
@click.option(
    "--version",
    "ds_version",
    default=None,
    help="nuScenes version: v1.0-mini (default), v1.0-trainval, v1.0-test.",
)
@click.option(
    "--split",
    default=None,
    help="Official split: nuScenes train, val, test, mini_train, mini_val ...; KITTI train, val, test.",
)
@click.option(
    "--dataset-option",
    "dataset_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any adapter option (repeatable), e.g. scenes=scene-0061,scene-0103 or sequences=08, cameras=cam3, "
    "sweeps=false (docs/datasets.md).",
)
@click.option(
    "--out",
    required=True,
    type=STORE,
    help="Cache store to write (CACHE.zarr): a path or a URL (s3://bucket/run/cache.zarr).",
)
@click.option(
    "--depth-model",
    default="depth-anything-v2-small",
    show_default=True,
    help="Depth backend: depth-anything-v2-small|base|large, depth-anything-v1-small, a hub repo id, a "
    "local model directory, files:DIR (per-image maps you already have), or oracle (synthetic data).",
)
@click.option(
    "--semantic-model",
    default="grounded-sam",
    show_default=True,
    help="Semantic backend: grounded-sam, owlv2-sam, clipseg, semseg (closed-set), files:DIR, oracle, "
    "or none (depth only).",
)
@click.option(
    "--detector", default=None, help="Box detector for grounded-sam / owlv2-sam: hub id or directory."
)
@click.option(
    "--segmenter",
    default=None,
    help="SAM / SAM2 checkpoint for grounded-sam / owlv2-sam, or the CLIPSeg / closed-set model itself "
    "(hub repo id or local directory).",
)
@click.option(
    "--vocab", default=None, help="Vocabulary of the semantic model: occ3d, semantickitti or a YAML file."
)
@click.option(
    "--depth-kind",
    type=click.Choice(["disparity", "depth"]),
    default=None,
    help="What files:DIR depth maps hold: affine-invariant disparity or metric depth.",
)
@click.option(
    "--depth-option",
    "depth_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any option of the depth backend (repeatable), e.g. input_size=518.",
)
@click.option(
    "--semantic-option",
    "semantic_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any option of the semantic backend (repeatable), e.g. box_threshold=0.25 or mode=single-pass.",
)
@click.option(
    "--depth-bits",
    default=7,
    show_default=True,
    type=click.IntRange(1, 10),
    help="float16 mantissa bits kept in stored depth (10 = exact; 7: <= 0.4 % rounding, ~2.5x smaller).",
)
@click.option("--scenes", default=None, help="Comma-separated scene names (default: all).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1))
@click.option(
    "--num-workers",
    default=None,
    type=click.IntRange(0),
    help="Image decoding worker processes (default: half the CPU cores, at most 4; 0 = decode inline).",
)
@click.option(
    "--width",
    default=None,
    type=click.IntRange(8),
    help="Working width in pixels (default: native, at most 640).",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the oracle backends' simulated errors."
)
@click.option("--overwrite", is_flag=True, help="Delete an existing cache first (default: resume).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the work (scenes x cameras x frames to do / done) and exit; write nothing.",
)
@_scale_options
@click.pass_context
def extract_2d(
    ctx,
    kind,
    root,
    ds_version,
    split,
    dataset_options,
    out,
    depth_model,
    semantic_model,
    detector,
    segmenter,
    vocab,
    depth_kind,
    depth_options,
    semantic_options,
    depth_bits,
    scenes,
    device,
    batch_size,
    num_workers,
    width,
    seed,
    overwrite,
    dry_run,
    shard,
    executor,
    ray_address,
    workers,
    max_retries,
):
    """Stage 1: relative depth and semantics per image, cached in Zarr.

    \b
    Examples:
      occlabel extract-2d --root data --out cache.zarr --depth-model depth-anything-v2-small \\
          --semantic-model grounded-sam --vocab occ3d
      occlabel extract-2d --root data --out cache.zarr --depth-model files:my_depth --depth-kind depth \\
          --semantic-model files:my_labels --semantic-option mapping=map.yaml
    """
    from occlabel.datasets import open_dataset
    from occlabel.stages import extract_2d as stage

    if num_workers is None:
        num_workers = 0 if executor == "ray" else default_workers()
    depth_conf, semantic_conf = backend_confs(
        depth_model, semantic_model, detector, segmenter, vocab, depth_kind, depth_options, semantic_options
    )
    ds = open_dataset(kind, root, **dataset_opts(kind, ds_version, split, dataset_options))
    selected = _scenes(scenes)
    sharded = _shard_plan([s.name for s in ds.select(selected)], shard, overwrite, "extract-2d")
    if sharded is not None:
        if not sharded:
            click.echo(f"shard {shard}: no scenes; nothing to do")
            return
        selected = sharded
    if dry_run:
        from occlabel.models.base import store_key
        from occlabel.viz.info import format_plan, plan_extract

        sem_key = None if semantic_model == "none" else store_key(semantic_model)
        rows = plan_extract(ds, out, store_key(depth_model), sem_key, selected, overwrite)
        note = [f"depth {store_key(depth_model)}, semantics {sem_key or 'none'}; models not loaded"]
        click.echo(format_plan("extract-2d", rows, "images", f"into {out}", note))
        return
    if executor == "ray":
        from occlabel.store.cache import Cache
        from occlabel.store.common import location_str

        Cache.create(out, ds, overwrite=overwrite)  # once, here: the tasks resume it
        names = [s.name for s in ds.select(selected)]
        _run_ray(
            ctx, "extract-2d", names, location_str(out),
            {s.name: sum(len(f.images) for f in s.frames) for s in ds.select(selected)}, "img",
            dict(
                dataset_kind=ds.kind, dataset_root=str(ds.root), dataset_options=ds.options,
                out=location_str(out), depth_model=depth_model, semantic_model=semantic_model,
                batch_size=batch_size, num_workers=num_workers, width=width, seed=seed,
                depth_conf=depth_conf, semantic_conf=semantic_conf, depth_bits=depth_bits,
            ),
            device, ray_address, workers, max_retries,
        )  # fmt: skip
        click.echo(f"wrote {out}")
        return
    path = stage.run(
        ds,
        out,
        depth_model=depth_model,
        semantic_model=semantic_model,
        scenes=selected,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        width=width,
        seed=seed,
        overwrite=overwrite,
        progress=ctx.obj["progress"],
        depth_conf=depth_conf,
        semantic_conf=semantic_conf,
        depth_bits=depth_bits,
    )
    click.echo(f"wrote {path}")


@main.command("calibrate-depth")
@click.argument("cache", type=STORE)
@click.option("--scenes", default=None, help="Comma-separated scene names (default: all).")
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--neighbours", default="-1,1", show_default=True, help="Source frame offsets, comma-separated."
)
@click.option(
    "--target-baseline-m",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Stride each neighbour offset (up to 3x) until the camera has moved this far.",
)
@click.option(
    "--widths",
    default="96,192,384",
    show_default=True,
    help="Image widths of the refinement levels (capped at the working width).",
)
@click.option(
    "--photometric/--no-photometric",
    default=True,
    show_default=True,
    help="Temporal photometric cue (neighbour frames of the same camera).",
)
@click.option(
    "--overlap/--no-overlap",
    default=True,
    show_default=True,
    help="Overlap cue: overlapping cameras of the rig at the same instant as further sources.",
)
@click.option(
    "--ground/--no-ground",
    default=True,
    show_default=True,
    help="Ground-plane cue: road and sidewalk pixels at the depth the extrinsics give them.",
)
@click.option(
    "--sky/--no-sky", default=True, show_default=True, help="Sky term: sky pixels at (near) zero disparity."
)
@click.option("--overwrite", is_flag=True, help="Recalibrate frames already done.")
@click.option(
    "--write-depth",
    is_flag=True,
    help="Also store each frame's metric depth (float16 m, NaN = unknown) in the cache as metric_depth.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the work (scenes x cameras x frames to do / done) and exit; write nothing.",
)
@_scale_options
@click.pass_context
def calibrate_depth(
    ctx,
    cache,
    scenes,
    device,
    neighbours,
    target_baseline_m,
    widths,
    photometric,
    overlap,
    ground,
    sky,
    overwrite,
    write_depth,
    dry_run,
    shard,
    executor,
    ray_address,
    workers,
    max_retries,
):
    """Stage 2: metric scale and shift of the relative depth from photometric consistency."""
    from occlabel.stages import calibrate_depth as stage

    selected = _scenes(scenes)
    if shard is not None or executor == "ray":
        from occlabel.store.cache import open_cache

        listed = selected or open_cache(cache).scenes()
        sharded = _shard_plan(listed, shard, False, "calibrate-depth")
        if sharded is not None and not sharded:
            click.echo(f"shard {shard}: no scenes; nothing to do")
            return
        selected = sharded if sharded is not None else listed
    if dry_run:
        from occlabel.viz.info import format_plan, plan_calibrate

        _ints(neighbours, "--neighbours")  # the same checks as a real run
        _ints(widths, "--widths")
        rows = plan_calibrate(cache, selected, overwrite)
        click.echo(format_plan("calibrate-depth", rows, "frames", f"in {cache}"))
        return
    if executor == "ray":
        from occlabel.store.cache import open_cache
        from occlabel.store.common import location_str

        c = open_cache(cache)
        _run_ray(
            ctx, "calibrate-depth", selected, location_str(cache), {s: len(c.cameras(s)) for s in selected},
            "cam",
            dict(
                cache=location_str(cache), neighbours=_ints(neighbours, "--neighbours"),
                target_baseline_m=target_baseline_m, widths=_ints(widths, "--widths"), overwrite=overwrite,
                photometric=photometric, overlap=overlap, ground=ground, sky=sky, write_depth=write_depth,
            ),
            device, ray_address, workers, max_retries,
        )  # fmt: skip
        click.echo(f"calibrated {cache}")
        return
    stage.run(
        cache,
        scenes=selected,
        device=device,
        neighbours=_ints(neighbours, "--neighbours"),
        target_baseline_m=target_baseline_m,
        widths=_ints(widths, "--widths"),
        overwrite=overwrite,
        progress=ctx.obj["progress"],
        photometric=photometric,
        overlap=overlap,
        ground=ground,
        sky=sky,
        write_depth=write_depth,
    )
    click.echo(f"calibrated {cache}")


@main.command()
@click.argument("cache", type=STORE)
@click.option(
    "--out",
    required=True,
    type=STORE,
    help="Labels store to write (LABELS.zarr): a path or a URL (s3://bucket/run/labels.zarr).",
)
@click.option(
    "--grid",
    default="occ3d",
    show_default=True,
    help="Voxel grid preset: occ3d (200x200x16, 0.4 m, ego), semantickitti (256x256x32, 0.2 m, velodyne), "
    "surroundocc (200x200x16, 0.5 m, LiDAR); with --grid-range, the name of a custom grid.",
)
@click.option(
    "--grid-range",
    default=None,
    metavar="X0,Y0,Z0,X1,Y1,Z1",
    help="A custom grid over this box (metres, in the grid's frame); needs --voxel-size.",
)
@click.option(
    "--voxel-size", default=None, type=click.FloatRange(min=0, min_open=True), help="Custom grid voxel, m."
)
@click.option(
    "--grid-frame",
    type=click.Choice(["ego", "sensor"]),
    default="ego",
    show_default=True,
    help="Frame of a custom grid: the keyframe's ego frame, or a sensor frame placed as below.",
)
@click.option(
    "--grid-pose",
    default=None,
    help="Pose of a sensor grid: T_ego_from_grid (12 or 16 numbers, or a .txt/.npy/.json file), or with "
    "--grid-camera T_cam_from_grid, e.g. kitti:calib.txt (velodyne in camera 0 via Tr) or "
    "kitti:calib.txt:P2. Default: the dataset's T_ego_from_lidar of each keyframe.",
)
@click.option("--grid-camera", default=None, help="Camera that --grid-pose is relative to.")
@click.option("--scenes", default=None, help="Comma-separated scene names (default: all).")
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--source",
    type=click.Choice(["cache", "gt", "gt-depth", "gt-semantics"]),
    default="cache",
    show_default=True,
    help="Fuse the cache's calibrated depth and semantics, the dataset's ground truth, or GT for one of the "
    "two (ablations).",
)
@click.option(
    "--window", default=8, show_default=True, type=click.IntRange(0), help="Frames each side of a keyframe."
)
@click.option(
    "--min-hits", default=1.0, show_default=True, type=click.FloatRange(min=0), help="Votes a voxel needs."
)
@click.option(
    "--ray-stride",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Carve free space along every n-th ray.",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other fusion option (repeatable; VALUE read as YAML), e.g. occ_ratio=0.5, moving_window=1, "
    "classes=semantickitti; see occlabel.stages.voxelize.VoxelizeOptions.",
)
@click.option("--overwrite", is_flag=True, help="Delete an existing labels store first (default: resume).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the work (scenes x cameras x frames to do / done) and exit; write nothing.",
)
@_scale_options
@click.pass_context
def voxelize(
    ctx,
    cache,
    out,
    grid,
    grid_range,
    voxel_size,
    grid_frame,
    grid_pose,
    grid_camera,
    scenes,
    device,
    source,
    window,
    min_hits,
    ray_stride,
    options,
    overwrite,
    dry_run,
    shard,
    executor,
    ray_address,
    workers,
    max_retries,
):
    """Stage 3: fuse depth and semantics over frames and cameras into voxel labels.

    \b
    Examples:
      occlabel voxelize cache.zarr --out labels.zarr --grid occ3d
      occlabel voxelize cache.zarr --out kitti.zarr --grid semantickitti   # on each keyframe's LiDAR
      occlabel voxelize cache.zarr --out kitti.zarr --grid semantickitti \\
          --grid-camera cam2 --grid-pose kitti:sequences/08/calib.txt:P2
      occlabel voxelize cache.zarr --out fine.zarr --grid fine --grid-range -20,-20,-2,20,20,4 --voxel-size 0.2
    """
    from occlabel.conventions import get_grid
    from occlabel.geometry.voxel import make_grid
    from occlabel.stages import voxelize as stage

    if grid_range is not None or voxel_size is not None:
        if grid_range is None or voxel_size is None:
            raise OccLabelError("--grid-range and --voxel-size go together")
        try:
            vals = [float(v) for v in grid_range.split(",")]
            if len(vals) != 6:
                raise ValueError(f"expected 6 numbers, got {len(vals)}")
            g = make_grid(vals[:3], vals[3:], voxel_size, grid_frame, "custom" if grid == "occ3d" else grid)
        except ValueError as e:
            raise OccLabelError(f"--grid-range {grid_range}: {e}") from None
    else:
        try:
            g = get_grid(grid)
        except KeyError as e:
            raise OccLabelError(str(e.args[0])) from None
    extra = _options(options, "--option")
    if grid_pose is not None:
        T = stage.read_matrix(grid_pose).tolist()
        if grid_camera is not None:
            extra.update(grid_camera=grid_camera, T_cam_from_grid=T)
        else:
            extra["T_ego_from_grid"] = T
    elif grid_camera is not None:
        raise OccLabelError("--grid-camera needs --grid-pose (the grid's pose in that camera)")
    selected = _scenes(scenes)
    if shard is not None or executor == "ray":
        from occlabel.store.cache import open_cache

        listed = selected or open_cache(cache).scenes()
        sharded = _shard_plan(listed, shard, overwrite, "voxelize")
        if sharded is not None and not sharded:
            click.echo(f"shard {shard}: no scenes; nothing to do")
            return
        selected = sharded if sharded is not None else listed
    if dry_run:
        from occlabel.viz.info import format_plan, plan_voxelize

        rows = plan_voxelize(cache, out, selected, overwrite, source)
        note = [f"grid {g.name} {'x'.join(map(str, g.shape))} @ {g.voxel_size:g} m, source {source}"]
        click.echo(format_plan("voxelize", rows, "keyframes", f"from {cache} into {out}", note))
        return
    if executor == "ray":
        from occlabel.store.cache import open_cache
        from occlabel.store.common import delete_store, location_str

        c = open_cache(cache)
        if overwrite:
            delete_store(out)  # once, here: the tasks create and resume it
        _run_ray(
            ctx, "voxelize", selected, location_str(out),
            {s: max(1, sum(c.scene_meta(s)["keyframes"])) for s in selected}, "kf",
            dict(
                cache=location_str(cache), out=location_str(out), grid=g, source=source, window=window,
                min_hits=min_hits, ray_stride=ray_stride, **extra,
            ),
            device, ray_address, workers, max_retries,
        )  # fmt: skip
        click.echo(f"wrote {out}")
        return
    path = stage.run(
        cache,
        out,
        grid=g,
        scenes=selected,
        device=device,
        source=source,
        window=window,
        min_hits=min_hits,
        ray_stride=ray_stride,
        overwrite=overwrite,
        progress=ctx.obj["progress"],
        **extra,
    )
    click.echo(f"wrote {path}")


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the results as JSON.",
)
@click.option(
    "--gt",
    "gt_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Ground-truth directory: Occ3D (gts/<scene>/<token>/labels.npz) or SemanticKITTI "
    "(sequences/XX/voxels/NNNNNN.label, .invalid). Default: the dataset's own ground truth.",
)
@click.option(
    "--format",
    "gt_format",
    type=click.Choice(["occ3d", "semantickitti"]),
    default=None,
    help="Ground-truth layout and protocol (Occ3D mIoU, or SemanticKITTI SSC). Default: detected.",
)
@click.pass_context
def evaluate(ctx, store, json_out, gt_dir, gt_format):
    """Evaluate a labels store (Occ3D or SemanticKITTI SSC protocol) or a cache (depth metrics)."""
    from occlabel.store.common import store_kind

    kind = store_kind(store)
    if kind == "labels":
        from occlabel.stages import evaluate as stage

        res = stage.run(
            store, json_out=json_out, progress=ctx.obj["progress"], gt=gt_dir, gt_format=gt_format
        )
        click.echo(stage.format_table(res))
    else:
        if gt_dir is not None or gt_format is not None:
            raise OccLabelError("--gt and --format apply to labels stores, not to caches")
        from occlabel.stages import evaluate_depth as stage

        res = stage.run(store, progress=ctx.obj["progress"])
        click.echo(stage.format_table(res))
        if json_out:
            json_out.write_text(json.dumps(res, indent=1))


@main.command()
@click.argument("labels", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["occ3d", "semantickitti"]), default="occ3d", show_default=True
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--scenes", default=None, help="Comma-separated scene names (default: all).")
@click.option(
    "--every",
    default=5,
    show_default=True,
    type=click.IntRange(1),
    help="semantickitti: write keyframes whose frame index is a multiple of this (SemanticKITTI's cadence).",
)
@click.option("--allow-other-grid", is_flag=True, help="Export a grid other than the format's own.")
@click.pass_context
def export(ctx, labels, fmt, out, scenes, every, allow_other_grid):
    """Write labels in a layout trainers read.

    \b
    occ3d:          gts/<scene>/<token>/labels.npz (semantics, mask_camera, mask_lidar)
    semantickitti:  sequences/XX/voxels/NNNNNN.label (raw ids) + .invalid (bit-packed, not observed)
    """
    from occlabel.store.export import export_occ3d, export_semantickitti

    kw = dict(scenes=_scenes(scenes), allow_other_grid=allow_other_grid, progress=ctx.obj["progress"])
    if fmt == "semantickitti":
        path = export_semantickitti(labels, out, every=every, **kw)
    else:
        path = export_occ3d(labels, out, **kw)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write.")
@click.option("--sample", default=None, help="Labels: the sample (token) to draw (default: the middle one).")
@click.option(
    "--scene",
    default=None,
    help="Labels: the middle sample of this scene. Cache: the scene (default: first).",
)
@click.option(
    "--camera",
    default=None,
    help="Labels: also project the labels into this camera's image. Cache: the camera (default: first).",
)
@click.option(
    "--frame",
    default=None,
    help="Cache: frame position in the scene or its token (default: the middle calibrated keyframe).",
)
@click.option(
    "--gt",
    "gt_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Labels: Occ3D ground truth directory (gts/<scene>/<token>/labels.npz). Default: the dataset's own.",
)
@click.option("--dpi", default=100, show_default=True, type=click.IntRange(30, 400))
def show(store, out, sample, scene, camera, frame, gt_dir, dpi):
    """Draw a labels sample or a cache frame into a PNG.

    \b
    LABELS.zarr: bird's-eye view with the ego car and an oblique 3D render, beside the ground truth
                 when the dataset has one; --camera adds the labels projected into that camera.
    CACHE.zarr:  image with semantics, relative disparity, calibrated metric depth, and the
                 photometric error before / after calibration.
    \b
    Examples:
      occlabel show runs/demo/labels.zarr --out bev.png --camera CAM_FRONT
      occlabel show runs/demo/cache.zarr --out frame.png --frame 10
    """
    from occlabel.store.common import store_kind
    from occlabel.viz import show as viz

    if store_kind(store) == "labels":
        if frame is not None:
            raise OccLabelError("--frame applies to caches; pick a labels sample with --sample or --scene")
        if sample is not None and scene is not None:
            raise OccLabelError("--sample and --scene: give one of the two")
        r = viz.labels_figure(store, out, sample=sample, scene=scene, camera=camera, gt=gt_dir, dpi=dpi)
    else:
        if sample is not None or gt_dir is not None:
            raise OccLabelError("--sample and --gt apply to labels stores; pick a cache frame with --frame")
        r = viz.cache_figure(store, out, scene=scene, camera=camera, frame=frame, dpi=dpi)
    w, h = r["size"]
    click.echo(f"wrote {r['path']} ({w}x{h} px)")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="HTML file to write (default: RUN_DIR/report.html).",
)
@click.option("--samples", default=3, show_default=True, type=click.IntRange(0), help="Labels samples shown.")
@click.pass_context
def report(ctx, run_dir, out, samples):
    """One self-contained HTML page about a run directory (its CACHE.zarr and LABELS.zarr stores):
    configuration and provenance, time per stage, calibration diagnostics, per-class IoU, storage,
    and a gallery of `show` pictures."""
    from occlabel.viz.info import human_bytes
    from occlabel.viz.report import build_report

    if out is None:  # beside a store given directly, never inside it
        out = (run_dir.parent if (run_dir / "zarr.json").exists() else run_dir) / "report.html"
    r = build_report(run_dir, out, samples=samples, progress=ctx.obj["progress"])
    empty = [k for k, v in r["sections"].items() if not v]
    click.echo(
        f"wrote {r['path']} ({human_bytes(r['bytes'])})" + (f"; empty: {', '.join(empty)}" if empty else "")
    )


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(store, as_json):
    """What a cache or labels store holds: scenes, cameras, frames, what each stage has done, provenance,
    size on disk."""
    from occlabel.viz.info import format_info, store_info

    res = store_info(store)
    click.echo(json.dumps(res, indent=1, default=str) if as_json else format_info(res))


@main.command()
@click.option(
    "--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--rig", type=click.Choice(["front", "surround"]), default="front", show_default=True)
@click.option("--frames", default=20, show_default=True, type=click.IntRange(5))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@click.pass_context
def demo(ctx, out, rig, frames, seed, device):
    """Run the whole pipeline on the built-in synthetic scene (foundation models simulated by oracles)."""
    from occlabel.pipelines import demo as _demo

    _demo(
        out, rig=rig, frames=frames, seed=seed, device=device, progress=ctx.obj["progress"], echo=click.echo
    )


if __name__ == "__main__":  # pragma: no cover
    main()
