"""The commands around the stages: synth, evaluate, export, show, report, info, demo (parse, call, print)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from occlabel.cli.options import scene_list, size
from occlabel.errors import OccLabelError


@click.command()
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
@click.option(
    "--size", "image_size", default=None, help="Image size WIDTHxHEIGHT (default: the layout's default)."
)
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
def synth(
    ctx, out, layout, n_scenes, frames, rig, image_size, seed, keyframe_every, fps, ego_speed, overwrite
):
    """Render a synthetic driving dataset with full ground truth (folder, nuScenes or KITTI layout)."""
    from occlabel.datasets.synthetic.layouts import synth_layout

    kw = {"size": size(image_size)} if image_size else {}
    kw.update(ego_speed=ego_speed, progress=ctx.obj["progress"], overwrite=overwrite, seed=seed)
    root = synth_layout(layout, out, n_scenes, frames, rig, keyframe_every, fps, **kw)
    click.echo(f"wrote synthetic dataset ({layout} layout): {root}")


@click.command()
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


@click.command()
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

    kw = dict(scenes=scene_list(scenes), allow_other_grid=allow_other_grid, progress=ctx.obj["progress"])
    if fmt == "semantickitti":
        path = export_semantickitti(labels, out, every=every, **kw)
    else:
        path = export_occ3d(labels, out, **kw)
    click.echo(f"wrote {path}")


@click.command()
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


@click.command()
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


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(store, as_json):
    """What a cache or labels store holds: scenes, cameras, frames, what each stage has done, provenance,
    size on disk."""
    from occlabel.viz.info import format_info, store_info

    res = store_info(store)
    click.echo(json.dumps(res, indent=1, default=str) if as_json else format_info(res))


@click.command()
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


#: the commands of this module, for the main group
COMMANDS = (synth, evaluate, export, show, report, info, demo)
