"""Stage 3, ``voxelize``: fuse metric depth and 2D semantics over frames and cameras into voxel labels.

For every keyframe of the chosen scenes of a calibrated cache, one sample of LABELS.zarr
(occlabel.store.labels). The method — lift, carve, TSDF, decide — lives in occlabel.fusion (its docstring
describes it, its options are :class:`occlabel.fusion.VoxelizeOptions`); this module plans the keyframes
left to do (:func:`plan`; a resumed run skips the done ones), runs the fusion over them, and records the
run in the store. ``--grid-pose`` matrices are read by :func:`read_matrix`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occlabel.conventions import VoxelGrid, get_grid, is_rigid
from occlabel.datasets.kitti import kitti_T_cam_from_velo
from occlabel.errors import OccLabelError, StoreError
from occlabel.fusion import (
    FUSION_PRESETS,
    SOURCES,
    View,
    ViewSource,
    VoxelizeOptions,
    flying_pixels,
    fuse_keyframe,
    fusion_preset,
    grid_pose,
    prepare_view,
    resolve_classes,
    surface_cos,
)
from occlabel.store.cache import Cache, open_cache
from occlabel.store.common import location_str, store_location
from occlabel.store.labels import ClassSet, LabelsWriter
from occlabel.utils import progress_bar, resolve_device

log = logging.getLogger(__name__)


def read_matrix(spec: str | Path) -> np.ndarray:
    """A rigid transform <np.float64: 4, 4> from 12 or 16 comma/space-separated numbers (row-major; 12 =
    the top 3 × 4) or a file holding them (.txt, or .npy / .json of a 3 × 4 or 4 × 4 array).

    ``kitti:CALIB[:Pk]`` reads a KITTI odometry calib.txt and gives the velodyne's pose in camera k
    (occlabel.datasets.kitti.kitti_T_cam_from_velo; default P0, the frame ``Tr`` refers to).
    """
    text = str(spec).strip()
    if text.startswith("kitti:"):
        path, _, cam = text[len("kitti:") :].partition(":")
        return kitti_T_cam_from_velo(path, cam or "P0")
    p = Path(text)
    try:
        if p.suffix == ".npy" and p.is_file():
            vals = np.load(p).astype(np.float64).ravel()
        elif p.suffix == ".json" and p.is_file():
            import json

            vals = np.asarray(json.loads(p.read_text()), np.float64).ravel()
        elif p.is_file():
            vals = np.array(p.read_text().replace(",", " ").split(), np.float64)
        else:
            vals = np.array(text.replace(",", " ").split(), np.float64)
    except (ValueError, OSError) as e:
        raise OccLabelError(f"cannot read a 4x4 transform from {text!r} ({e})") from None
    if vals.size not in (12, 16):
        raise OccLabelError(f"a transform needs 12 or 16 numbers, got {vals.size} from {text!r}")
    T = np.eye(4)
    T[: vals.size // 4] = vals.reshape(-1, 4)
    if not is_rigid(T):
        raise OccLabelError(f"transform from {text!r} is not rigid: {T.tolist()}")
    return T


# --------------------------------------------------------------------------------------------------
# Plan: the keyframes left to do (one rule for run and for info / --dry-run)
# --------------------------------------------------------------------------------------------------


def _keyframes(smeta: dict[str, Any]) -> list[int]:
    """Frame positions of a scene's keyframes (the samples of the labels store, in order)."""
    return [t for t, k in enumerate(smeta["keyframes"]) if k]


def _todo(done: np.ndarray) -> list[int]:
    """Sample positions still to write, from the store's <bool: N> done markers."""
    return [i for i in range(len(done)) if not done[i]]


@dataclass
class _Job:
    """The keyframes of one scene left to voxelize."""

    scene: str
    keys: list[int]  # frame positions of the scene's keyframes
    indices: list[int]  # positions in ``keys`` not done yet


def _plan_scene(cache: Cache, writer: LabelsWriter, scene: str) -> _Job:
    """Create (or check, when resuming) the scene's group of the labels store; its keyframes to do."""
    smeta = cache.scene_meta(scene)
    keys = _keyframes(smeta)
    writer.init_scene(
        scene,
        tokens=[smeta["tokens"][t] for t in keys],
        frame_indices=keys,
        timestamps=[smeta["timestamps"][t] for t in keys],
        T_world_from_ego=cache.root[scene]["T_world_from_ego"][:][keys] if keys else np.zeros((0, 4, 4)),
    )
    return _Job(scene, keys, _todo(writer.done(scene)))


def plan(
    cache_path: str | Path, out: str | Path, scenes=None, overwrite: bool = False, source: str = "cache"
) -> list[dict]:
    """Rows of the keyframes voxelize would write into ``out`` (and how many frames lack calibration),
    without writing anything: per scene ``{"scene", "total", "todo", "done", "uncalibrated"}``.

    Args:
        cache_path: CACHE.zarr; out: the labels store (read when it exists and not ``overwrite``).
        scenes: scene names (default all); source: "cache" counts the images not calibrated yet.
    """
    from occlabel.store.labels import open_labels

    cache = open_cache(cache_path)
    labels = None
    if Path(out).exists() and not overwrite:
        try:
            labels = open_labels(out)
        except StoreError:
            labels = None
    rows = []
    for s in scenes or cache.scenes():
        keys = _keyframes(cache.scene_meta(s))
        done = np.zeros(len(keys), bool)
        if labels is not None and s in labels.scenes():
            d = labels.root[s]["done"][:].astype(bool)
            if len(d) == len(keys):
                done = d
        rows.append(
            {
                "scene": s,
                "total": len(keys),
                "todo": len(_todo(done)),
                "done": int(done.sum()),
                "uncalibrated": _uncalibrated(cache, s) if source == "cache" else 0,
            }  # fmt: skip
        )
    return rows


def _uncalibrated(cache: Cache, scene: str) -> int:
    """Images of ``scene`` (all cameras) present but not calibrated (the default depth's calibration)."""
    waiting = 0
    for c in cache.cameras(scene):
        present = cache.geometry(scene, c)["present"].astype(bool)
        try:
            cal = cache.read_calibration(scene, c)["done"].astype(bool)
        except StoreError:
            cal = np.zeros_like(present)
        waiting += int((present & ~cal).sum())
    return waiting


# --------------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------------


@dataclass
class _Inputs:
    """What every keyframe of the run reads: the resolved options, grid, cache, device and class set."""

    opts: VoxelizeOptions
    grid: VoxelGrid
    cache: Cache
    device: torch.device
    depth_key: str | None
    semantics_key: str | None
    names: list[str]  # scenes
    lidar_grid: bool  # a sensor grid placed on each keyframe's LiDAR (the dataset's T_ego_from_lidar)
    dataset: Any  # the dataset (GT sources, LiDAR grids), else None
    classes: ClassSet | None = None


@dataclass
class _Tally:
    """Seconds, fusion totals and skips of a run (recorded in the store's stats)."""

    load: float = 0.0
    fuse: float = 0.0
    write: float = 0.0
    written: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str, n: int = 1) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + n


def run(
    cache_path: str | Path | Cache,
    out: str | Path,
    grid: str | VoxelGrid = "occ3d",
    scenes: list[str] | None = None,
    device: str = "auto",
    depth_key: str | None = None,
    semantics_key: str | None = None,
    window: int = 8,
    min_hits: float = 1.0,
    progress: bool = True,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Voxelize every keyframe of ``scenes`` (default all) of a calibrated cache into LABELS.zarr ``out``.

    Args:
        cache_path: CACHE.zarr (or an open Cache) with extract-2d and calibrate-depth done (``source``
            "gt" needs only its scenes and geometry, and the dataset's GT depth and semantics).
        out: labels store to write; resumed when it exists (done samples are skipped) unless ``overwrite``.
        grid: preset name (conventions.GRIDS) or a VoxelGrid (any range and voxel size).
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:N".
        depth_key, semantics_key: cache results to use (default: the cache's defaults).
        window: frames each side of the keyframe fused for static classes.
        min_hits: minimum evidence of an occupied voxel (confidence-weighted pixels).
        options: the other fields of VoxelizeOptions (source, classes, moving_window, occ_ratio,
            ray_stride, T_ego_from_grid, grid_camera, T_cam_from_grid, ...).
    Returns:
        ``out`` as a Path.
    """
    opts = VoxelizeOptions.from_kwargs(window=window, min_hits=min_hits, **options)
    inp = _inputs(cache_path, grid, scenes, device, depth_key, semantics_key, opts)
    writer = LabelsWriter.create(
        out,
        inp.grid,
        {
            "classes": inp.classes.to_dict(),
            "cache": location_str(inp.cache.path),
            "source": opts.source,
            "depth_key": inp.depth_key,
            "semantics_key": inp.semantics_key,
            "options": asdict(opts),
        },
        overwrite=overwrite,
    )
    jobs = [_plan_scene(inp.cache, writer, s) for s in inp.names]
    cpu0 = time.process_time()
    tally = _run_jobs(inp, writer, jobs, progress)
    _record(writer, inp, tally, time.process_time() - cpu0)
    return store_location(out)


def _inputs(cache_path, grid, scenes, device, depth_key, semantics_key, opts: VoxelizeOptions) -> _Inputs:
    """Resolve the grid, cache, device, result keys, scenes and class set; check the grid can be placed."""
    if isinstance(grid, str):
        try:
            grid = get_grid(grid)
        except KeyError as e:
            raise OccLabelError(str(e.args[0])) from None
    cache = cache_path if isinstance(cache_path, Cache) else open_cache(cache_path)
    dev = resolve_device(device)
    depth_from, sem_from = SOURCES[opts.source]
    depth_key = cache.resolve_key("depth", depth_key) if depth_from == "cache" else None
    semantics_key = cache.resolve_key("semantics", semantics_key) if sem_from == "cache" else None
    # a sensor grid without an explicit pose sits on each keyframe's LiDAR (the dataset's T_ego_from_lidar)
    lidar_grid = grid.frame != "ego" and opts.T_ego_from_grid is None and opts.grid_camera is None
    dataset = cache.open_dataset() if "gt" in (depth_from, sem_from) or lidar_grid else None
    names = list(scenes) if scenes else cache.scenes()
    for s in names:
        cache.scene_meta(s)  # raises a StoreError naming the scene when missing
    inp = _Inputs(opts, grid, cache, dev, depth_key, semantics_key, names, lidar_grid, dataset)
    _check_grid_placement(inp)
    inp.classes = resolve_classes(opts, cache, names[0] if names else None, semantics_key)
    return inp


def _check_grid_placement(inp: _Inputs) -> None:
    """Every keyframe of a LiDAR grid has its LiDAR pose; the grid camera is a camera of every scene."""
    grid, opts, cache = inp.grid, inp.opts, inp.cache
    if inp.lidar_grid:
        for s in inp.names:
            keyframes = [f for f in inp.dataset.scene(s).frames if f.keyframe]
            missing = [f.token for f in keyframes if f.T_ego_from_lidar is None]
            if missing:
                raise OccLabelError(
                    f"voxelize: grid {grid.name!r} lives in the {grid.frame!r} (LiDAR) frame, but keyframe "
                    f"{s}/{missing[0]} has no T_ego_from_lidar in the dataset; place the grid with "
                    "T_ego_from_grid (4x4) or grid_camera + T_cam_from_grid (CLI: --grid-pose, --grid-camera)"
                )
    if opts.grid_camera is not None:
        for s in inp.names:
            if opts.grid_camera not in cache.cameras(s):
                raise OccLabelError(
                    f"voxelize: grid camera {opts.grid_camera!r} is not a camera of scene {s!r} "
                    f"(has: {', '.join(cache.cameras(s))})"
                )


def _run_jobs(inp: _Inputs, writer: LabelsWriter, jobs: list[_Job], progress: bool) -> _Tally:
    """Fuse and write every keyframe of the jobs, scene by scene; views are shared by overlapping windows."""
    bar = progress_bar(total=sum(len(j.indices) for j in jobs), desc="voxelize", enabled=progress, unit="kf")
    tally = _Tally()
    for job in jobs:
        if job.indices:
            _run_scene(inp, writer, job, bar, tally)
    bar.close()
    if tally.skipped:
        log.warning("voxelize: skipped %s", ", ".join(f"{v} {k}" for k, v in tally.skipped.items()))
    return tally


def _run_scene(inp: _Inputs, writer: LabelsWriter, job: _Job, bar, tally: _Tally) -> None:
    """Fuse and write the job's keyframes in order, evicting views no later window needs."""
    opts, s = inp.opts, job.scene
    T = len(inp.cache.scene_meta(s)["tokens"])
    T_we = inp.cache.root[s]["T_world_from_ego"][:]
    src = ViewSource(
        inp.cache, s, opts, inp.device, inp.classes, inp.depth_key, inp.semantics_key, inp.dataset
    )
    for n, i in enumerate(job.indices):
        tk = job.keys[i]
        t0 = time.perf_counter()
        views = src.views(range(max(0, tk - opts.window), min(T, tk + opts.window + 1)))
        t1 = time.perf_counter()
        T_eg = _keyframe_grid_pose(inp, src, s, tk, T_we[tk])
        res = fuse_keyframe(
            views, tk, T_we[tk], inp.grid, opts, inp.device, classes=inp.classes, T_ego_from_grid=T_eg
        )
        if inp.device.type == "cuda":
            torch.cuda.synchronize(inp.device)
        t2 = time.perf_counter()
        writer.write_sample(s, i, res)
        t3 = time.perf_counter()
        tally.load, tally.fuse, tally.write = (
            tally.load + t1 - t0,
            tally.fuse + t2 - t1,
            tally.write + t3 - t2,
        )
        for k, v in res["stats"].items():
            tally.totals[k] = tally.totals.get(k, 0) + v
        tally.written += 1
        if not views:
            tally.skip("keyframes without views")
        if n + 1 < len(job.indices):
            src.evict_before(job.keys[job.indices[n + 1]] - opts.window)
        bar.update(1)
    for k, v in src.skipped.items():
        tally.skip(f"views {k}", v)


def _keyframe_grid_pose(inp: _Inputs, src: ViewSource, scene: str, tk: int, T_world_from_ego) -> np.ndarray:
    """``T_ego_from_grid`` of keyframe ``tk``: its LiDAR pose (LiDAR grids), else :func:`grid_pose`."""
    if inp.lidar_grid:
        return np.asarray(inp.dataset.scene(scene).frames[tk].T_ego_from_lidar, np.float64)
    T_wc = None
    cam = inp.opts.grid_camera
    if cam is not None and src.geometry[cam]["present"][tk]:
        T_wc = src.geometry[cam]["T_world_from_cam"][tk]
    return grid_pose(inp.opts, T_world_from_ego, T_wc)


def _record(writer: LabelsWriter, inp: _Inputs, tally: _Tally, cpu_seconds: float) -> None:
    """The run's stats in the store (new samples drop an earlier, now stale, evaluation)."""
    n = tally.written
    writer.update_meta(
        drop=("evaluation",) if n else (),
        stats={
            "keyframes_written": n,
            "keyframes_skipped_done": sum(len(writer.done(s)) for s in inp.names) - n,
            "seconds": {
                "load": round(tally.load, 3),
                "fuse": round(tally.fuse, 3),
                "write": round(tally.write, 3),
            },
            "seconds_per_keyframe": round((tally.load + tally.fuse + tally.write) / n, 4) if n else None,
            "cpu_seconds_per_keyframe": round(cpu_seconds / n, 4) if n else None,
            "device": str(inp.device),
            "totals": tally.totals,
            "skipped": tally.skipped,
        },
    )


# FUSION_PRESETS, View, flying_pixels, fusion_preset, prepare_view, surface_cos, kitti_T_cam_from_velo:
# re-exported (importable from here as before occlabel.fusion and occlabel.datasets.kitti held them)
__all__ = [
    "FUSION_PRESETS",
    "SOURCES",
    "View",
    "VoxelizeOptions",
    "flying_pixels",
    "fuse_keyframe",
    "fusion_preset",
    "grid_pose",
    "kitti_T_cam_from_velo",
    "plan",
    "prepare_view",
    "read_matrix",
    "resolve_classes",
    "run",
    "surface_cos",
]
