"""The extract-2d command: parse, then hand to cli.dispatch."""

from __future__ import annotations

from pathlib import Path

import click

from occlabel.cli.dispatch import RayRun, StageCommand, dispatch, format_plan
from occlabel.cli.options import (
    STORE,
    device_option,
    dry_run_option,
    key_values,
    option_option,
    overwrite_option,
    run_flags,
    scale_options,
    scenes_option,
)
from occlabel.datasets import DATASET_KINDS
from occlabel.errors import OccLabelError

#: extract-2d's settings that --option may also set (each has a flag; the backends have their own options)
EXTRACT_SETTINGS = ("batch_size", "num_workers", "width", "seed", "depth_bits")


@click.command("extract-2d")
@click.option(
    "--dataset",
    "kind",
    type=click.Choice(list(DATASET_KINDS)),
    default="folder",
    show_default=True,
    help="Dataset adapter: folder (occlabel.json; synthetic is the same), nuscenes, kitti (odometry / "
    "SemanticKITTI), kitti-raw (OXTS poses) or dgp (DDAD and other DGP scene datasets) (docs/datasets.md).",
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
    help="Official split: nuScenes train, val, test, mini_train, mini_val ...; KITTI train, val, test; DGP/DDAD "
    "train, val, test.",
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
@scenes_option
@device_option("auto, cpu, cuda or cuda:N.")
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
@option_option(
    "A stage setting by name (repeatable; VALUE read as YAML), as its flag would set it: batch_size, "
    "num_workers, width, seed or depth_bits, e.g. batch_size=8. Backend options: --depth-option, "
    "--semantic-option."
)
@overwrite_option("Delete an existing cache first (default: resume).")
@dry_run_option
@scale_options
@click.pass_context
@run_flags(settings=EXTRACT_SETTINGS)
def extract_2d(ctx, run, options, kind, root, ds_version, split, dataset_options, out, **flags):
    """Stage 1: relative depth and semantics per image, cached in Zarr.

    \b
    Examples:
      occlabel extract-2d --root data --out cache.zarr --depth-model depth-anything-v2-small \\
          --semantic-model grounded-sam --vocab occ3d
      occlabel extract-2d --root data --out cache.zarr --depth-model files:my_depth --depth-kind depth \\
          --semantic-model files:my_labels --semantic-option mapping=map.yaml
    """
    from occlabel.datasets import open_dataset
    from occlabel.datasets.options import adapter_options
    from occlabel.models.confs import backend_confs
    from occlabel.stages import extract_2d as stage
    from occlabel.utils import default_workers

    if options:
        raise OccLabelError(
            f"extract-2d: unknown option(s) {', '.join(sorted(options))} (known: {', '.join(EXTRACT_SETTINGS)})"
        )
    if flags["num_workers"] is None:
        flags["num_workers"] = 0 if run.executor == "ray" else default_workers()
    depth_model, semantic_model = flags["depth_model"], flags["semantic_model"]
    depth_conf, semantic_conf = backend_confs(
        depth_model, semantic_model, flags["detector"], flags["segmenter"], flags["vocab"], flags["depth_kind"],
        key_values(flags["depth_options"], "--depth-option"),
        key_values(flags["semantic_options"], "--semantic-option"),
    )  # fmt: skip
    ds_opts = key_values(dataset_options, "--dataset-option", keep_colons=True)
    ds = open_dataset(kind, root, **adapter_options(kind, ds_opts, ds_version, split))
    args = {k: flags[k] for k in ("depth_model", "semantic_model", *EXTRACT_SETTINGS)}
    args.update(depth_conf=depth_conf, semantic_conf=semantic_conf)

    def plan(scenes):
        from occlabel.models.base import store_key

        sem_key = None if semantic_model == "none" else store_key(semantic_model)
        rows = stage.plan(ds, out, store_key(depth_model), sem_key, scenes, run.overwrite)
        note = [f"depth {store_key(depth_model)}, semantics {sem_key or 'none'}; models not loaded"]
        return format_plan("extract-2d", rows, "images", f"into {out}", note)

    def ray(scenes):
        from occlabel.store.cache import Cache
        from occlabel.store.common import location_str

        Cache.create(out, ds, overwrite=run.overwrite)  # once, here: the tasks resume it
        where = dict(dataset_kind=ds.kind, dataset_root=str(ds.root), dataset_options=ds.options)
        weights = {s.name: sum(len(f.images) for f in s.frames) for s in ds.select(scenes)}
        return RayRun({**where, "out": location_str(out), **args}, location_str(out), weights, "img")

    def local(scenes):
        return stage.run(
            ds, out, scenes=scenes, device=run.device, overwrite=run.overwrite, progress=run.progress, **args
        )

    lister = lambda scenes: [s.name for s in ds.select(scenes)]  # noqa: E731
    dispatch(StageCommand("extract-2d", lister, plan, local, ray, target=out, list_always=True), run)


__all__ = ["EXTRACT_SETTINGS", "extract_2d"]
