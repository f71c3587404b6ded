"""The stage commands calibrate-depth and voxelize: parse, then hand to cli.dispatch."""

from __future__ import annotations

import click

from occlabel.cli.dispatch import RayRun, StageCommand, dispatch, format_plan
from occlabel.cli.options import (
    STORE,
    device_option,
    dry_run_option,
    ints,
    option_option,
    overwrite_option,
    run_flags,
    scale_options,
    scenes_option,
)
from occlabel.errors import OccLabelError

#: calibrate-depth's flags that --option may also set; other keys: fields of CalibrationConfig
CALIBRATE_SETTINGS = (
    "neighbours", "target_baseline_m", "widths", "photometric", "overlap", "ground", "sky", "write_depth",
)  # fmt: skip
#: voxelize's flags that --option may also set; other keys: fields of VoxelizeOptions
VOXELIZE_SETTINGS = ("source", "window", "min_hits", "ray_stride")


@click.command("calibrate-depth")
@click.argument("cache", type=STORE)
@scenes_option
@device_option()
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
@option_option(
    "Any other calibration option (repeatable; VALUE read as YAML): a field of CalibrationConfig "
    "(occlabel.stages.calibrate_depth), e.g. max_stride=2, exposure=none, ground_max_depth_m=30."
)
@overwrite_option("Recalibrate frames already done.")
@click.option(
    "--write-depth",
    is_flag=True,
    help="Also store each frame's metric depth (float16 m, NaN = unknown) in the cache as metric_depth.",
)
@dry_run_option
@scale_options
@click.pass_context
@run_flags(settings=CALIBRATE_SETTINGS, reserved=("cache", "cache_path"))
def calibrate_depth(ctx, run, options, cache, neighbours, widths, **flags):
    """Stage 2: metric scale and shift of the relative depth from photometric consistency."""
    from occlabel.stages import calibrate_depth as stage
    from occlabel.store.cache import open_cache
    from occlabel.store.common import location_str

    def args():  # parsed when used, so that --dry-run checks them as a run does
        return dict(
            neighbours=ints(neighbours, "--neighbours"), widths=ints(widths, "--widths"), **flags, **options
        )

    def plan(scenes):
        args()  # the same checks as a real run
        return format_plan(
            "calibrate-depth", stage.plan(cache, scenes, run.overwrite), "frames", f"in {cache}"
        )

    def ray(scenes):
        c = open_cache(cache)
        kwargs = dict(cache=location_str(cache), overwrite=run.overwrite, **args())
        return RayRun(kwargs, location_str(cache), {s: len(c.cameras(s)) for s in scenes}, "cam")

    def local(scenes):
        kw = dict(scenes=scenes, device=run.device, overwrite=run.overwrite, progress=run.progress)
        stage.run(cache, **kw, **args())
        return cache

    lister = lambda scenes: scenes or open_cache(cache).scenes()  # noqa: E731
    # --overwrite recalibrates frames: it keeps the store, so shards may use it
    cmd = StageCommand(
        "calibrate-depth", lister, plan, local, ray, cache, "calibrated", overwrite_deletes_store=False
    )
    dispatch(cmd, run)


@click.command()
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
@scenes_option
@device_option()
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
@option_option(
    "Any other fusion option (repeatable; VALUE read as YAML), e.g. occ_ratio=0.5, moving_window=1, "
    "classes=semantickitti; see occlabel.stages.voxelize.VoxelizeOptions."
)
@overwrite_option("Delete an existing labels store first (default: resume).")
@dry_run_option
@scale_options
@click.pass_context
@run_flags(settings=VOXELIZE_SETTINGS, reserved=("cache", "cache_path", "out", "grid"))
def voxelize(
    ctx, run, options, cache, out, grid, grid_range, voxel_size, grid_frame, grid_pose, grid_camera, **flags
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
    from occlabel.stages import voxelize as stage
    from occlabel.store.cache import open_cache
    from occlabel.store.common import delete_store, location_str

    g = _voxel_grid(grid, grid_range, voxel_size, grid_frame)
    extra = dict(options)
    if grid_pose is not None:
        T = stage.read_matrix(grid_pose).tolist()
        if grid_camera is not None:
            extra.update(grid_camera=grid_camera, T_cam_from_grid=T)
        else:
            extra["T_ego_from_grid"] = T
    elif grid_camera is not None:
        raise OccLabelError("--grid-camera needs --grid-pose (the grid's pose in that camera)")
    args = dict(grid=g, **flags, **extra)

    def plan(scenes):
        rows = stage.plan(cache, out, scenes, run.overwrite, flags["source"])
        note = [f"grid {g.name} {'x'.join(map(str, g.shape))} @ {g.voxel_size:g} m, source {flags['source']}"]
        return format_plan("voxelize", rows, "keyframes", f"from {cache} into {out}", note)

    def ray(scenes):
        c = open_cache(cache)
        if run.overwrite:
            delete_store(out)  # once, here: the tasks create and resume it
        weights = {s: max(1, sum(c.scene_meta(s)["keyframes"])) for s in scenes}
        return RayRun(
            dict(cache=location_str(cache), out=location_str(out), **args), location_str(out), weights, "kf"
        )

    def local(scenes):
        kw = dict(scenes=scenes, device=run.device, overwrite=run.overwrite, progress=run.progress)
        return stage.run(cache, out, **kw, **args)

    lister = lambda scenes: scenes or open_cache(cache).scenes()  # noqa: E731
    dispatch(StageCommand("voxelize", lister, plan, local, ray, target=out), run)


def _voxel_grid(grid: str, grid_range: str | None, voxel_size: float | None, grid_frame: str):
    """The VoxelGrid of --grid, or of --grid-range / --voxel-size / --grid-frame (named --grid)."""
    from occlabel.conventions import get_grid
    from occlabel.geometry.voxel import make_grid

    if grid_range is None and voxel_size is None:
        try:
            return get_grid(grid)
        except KeyError as e:
            raise OccLabelError(str(e.args[0])) from None
    if grid_range is None or voxel_size is None:
        raise OccLabelError("--grid-range and --voxel-size go together")
    try:
        vals = [float(v) for v in grid_range.split(",")]
        if len(vals) != 6:
            raise ValueError(f"expected 6 numbers, got {len(vals)}")
        return make_grid(vals[:3], vals[3:], voxel_size, grid_frame, "custom" if grid == "occ3d" else grid)
    except ValueError as e:
        raise OccLabelError(f"--grid-range {grid_range}: {e}") from None


__all__ = ["calibrate_depth", "voxelize"]
