"""Stage 2, ``calibrate-depth``: metric scale and shift of every frame's relative depth, from label-free cues.

The method (parameterisation, cues, fit, decision) is the package occlabel.calibration; this stage runs it
over a cache: per scene it plans each camera's frames to do (:func:`frames_to_do`, the same rule
:func:`plan` reports for ``info`` / ``--dry-run``), fits each camera (:func:`_fit_job` -> a
:class:`~occlabel.calibration.decide.CameraFit`), applies the scene-prior fallback and writes the
calibration arrays (:func:`_write_scene`), optionally the metric depth, and records the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occlabel.calibration.config import CUES, METHOD, METHOD_VERSION, CalibrationConfig, make_config
from occlabel.calibration.decide import (
    CameraFit,
    calibration_arrays,
    decide_camera,
    frame_cases,
    stored_prior_params,
)
from occlabel.calibration.fit import fit_camera
from occlabel.calibration.ground import ground_heights
from occlabel.calibration.inputs import choose_sources, ground_cue, load_camera, overlapping_cameras
from occlabel.calibration.params import inverse_depth
from occlabel.datasets import Scene
from occlabel.errors import OccLabelError, StoreError
from occlabel.store.cache import FLAGS, Cache, open_cache
from occlabel.utils import progress_bar, resolve_device

log = logging.getLogger("occlabel.calibrate_depth")


# --------------------------------------------------------------------------------------------------
# Plan: the frames to do
# --------------------------------------------------------------------------------------------------


@dataclass
class FrameState:
    """Where the frames of one camera stand (``[T]`` bool each)."""

    present: np.ndarray  # the camera has an image
    extracted: np.ndarray  # present and its relative depth is stored
    calibrated: np.ndarray  # extracted and calibrated

    def todo(self, overwrite: bool = False) -> np.ndarray:
        """The frames calibrate-depth fits: extracted, and not yet calibrated unless ``overwrite``."""
        return self.extracted & (overwrite | ~self.calibrated)


def frame_state(cache: Cache, scene: str, camera: str, depth_key: str | None = None) -> FrameState:
    """The :class:`FrameState` of a camera for depth result ``depth_key`` (default: the cache's); without
    that result nothing is extracted."""
    present = cache.geometry(scene, camera)["present"].astype(bool)
    extracted = np.zeros_like(present)
    calibrated = np.zeros_like(present)
    try:
        key = cache.resolve_key("depth", depth_key)
        extracted = cache.depth_done(scene, camera, key).astype(bool) & present
        if cache.has_calibration(scene, camera, key):
            calibrated = cache.read_calibration(scene, camera, key)["done"].astype(bool) & extracted
    except StoreError:
        pass
    return FrameState(present, extracted, calibrated)


def frames_to_do(
    cache: Cache, scene: str, camera: str, depth_key: str | None = None, overwrite: bool = False
) -> np.ndarray:
    """<bool: T> the frames of a camera that :func:`run` calibrates (:meth:`FrameState.todo`)."""
    return frame_state(cache, scene, camera, depth_key).todo(overwrite)


def plan(
    cache_path: str | Path, scenes: list[str] | None = None, overwrite: bool = False, depth_key=None
) -> list[dict[str, Any]]:
    """Per scene and camera, the frames :func:`run` would calibrate: {"scene", "camera", "total" (images),
    "todo", "done" (calibrated and kept), "waiting" (images without relative depth yet)}."""
    cache = open_cache(cache_path)
    rows = []
    for s in scenes or cache.scenes():
        for c in cache.cameras(s):
            st = frame_state(cache, s, c, depth_key)
            done = np.zeros_like(st.calibrated) if overwrite else st.calibrated
            rows.append(
                {
                    "scene": s,
                    "camera": c,
                    "total": int(st.present.sum()),
                    "todo": int(st.todo(overwrite).sum()),
                    "done": int(done.sum()),
                    "waiting": int((st.present & ~st.extracted).sum()),
                }
            )
    return rows


# --------------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------------


@dataclass
class _Settings:
    """What every camera's work in a run shares."""

    cache: Cache
    cfg: CalibrationConfig
    depth_key: str
    semantics_key: str | None
    neighbours: tuple[int, ...]
    dev: torch.device
    max_elems: int  # elements per batched evaluation
    overwrite: bool


@dataclass
class _Job:
    """One camera of a scene: its frames to do and the earlier calibration."""

    scene: Scene
    camera: str
    space: str  # "disparity" or "depth_m"
    todo: np.ndarray  # [T] bool
    previous: dict[str, np.ndarray] | None  # the stored calibration (None: none)
    others: list[str]  # overlapping cameras of the rig


@dataclass
class CalibrationStats:
    """Counts over the frames a run calibrated (one scene, or all)."""

    frames: int = 0
    flags: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLAGS, 0))
    cues: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CUES, 0))
    baselines: list[float] = field(default_factory=list)  # metres, of the temporal sources used

    def add(self, baseline_m: np.ndarray, flags: np.ndarray, cue: np.ndarray) -> None:
        """Count the calibrated frames with their final ``flags`` and ``cue`` ``[F]``."""
        self.frames += len(flags)
        self.baselines.extend(np.asarray(baseline_m).tolist())
        for name, bit in FLAGS.items():
            self.flags[name] += int(((flags & bit) != 0).sum())
        for name, code in CUES.items():
            self.cues[name] += int((cue == code).sum())

    def merge(self, other: CalibrationStats) -> None:
        self.frames += other.frames
        self.baselines += other.baselines
        for k, v in other.flags.items():
            self.flags[k] += v
        for k, v in other.cues.items():
            self.cues[k] += v

    def summary(self) -> dict[str, Any]:
        return {
            "frames_calibrated": self.frames,
            "median_source_baseline_m": float(np.median(self.baselines)) if self.baselines else None,
            "flag_counts": dict(self.flags),
            "cue_counts": dict(self.cues),
        }


def run(
    cache_path: str | Path,
    scenes: list[str] | None = None,
    device: str = "auto",
    depth_key: str | None = None,
    semantics_key: str | None = None,
    neighbours: tuple[int, ...] = (-1, 1),
    progress: bool = False,
    overwrite: bool = False,
    write_depth: bool = False,
    **options: Any,
) -> Path | str:
    """Calibrate the relative depth of every frame of a cache; returns the cache's location (a Path, or the
    URL string of a remote store).

    Args:
        cache_path: CACHE.zarr written by extract-2d (a path or fsspec URL). Runs over disjoint scenes may
            calibrate one cache at the same time (occlabel.scale); each scene is calibrated on its own.
        scenes: scene names (default: all in the cache).
        device: "auto", "cpu", "cuda" or "cuda:N".
        depth_key, semantics_key: stored results to use (default: the cache's defaults; semantics are
            optional: without them no sky or moving-object masks are applied and there is no ground cue).
        neighbours: frame offsets used as sources (those that exist are used at sequence ends); each is
            strided up to ``max_stride`` times to reach ``target_baseline_m`` (see :func:`choose_sources`).
        progress: show a progress bar.
        overwrite: recalibrate frames already calibrated (otherwise they are skipped).
        write_depth: also store each calibrated frame's metric depth (float16 metres, NaN where unknown or
            sky) as ``metric_depth`` beside the relative map, for tools that read depth maps directly
            (:meth:`Cache.read_metric_depth`); frames calibrated now, and any calibrated frame without one.
        options: any field of :class:`CalibrationConfig`.
    """
    cfg = make_config(options)
    neighbours = tuple(int(n) for n in neighbours if int(n) != 0)
    if not neighbours:
        raise OccLabelError("calibrate-depth: neighbours must contain a non-zero frame offset")
    dev = resolve_device(device)
    with _seeded(cfg.seed, dev):
        cache = open_cache(cache_path, "a")
        depth_key = cache.resolve_key("depth", depth_key)
        try:
            semantics_key = cache.resolve_key("semantics", semantics_key)
        except StoreError:
            semantics_key = None
        max_elems = cfg.max_chunk_elems or (2**26 if dev.type == "cuda" else 2**23)
        s = _Settings(cache, cfg, depth_key, semantics_key, neighbours, dev, max_elems, overwrite)
        _run_scenes(s, scenes or cache.scenes(), progress, write_depth)
    return cache.path


@contextmanager
def _seeded(seed: int, dev: torch.device) -> Iterator[None]:
    """torch's generators of the CPU (and of ``dev`` when CUDA) seeded with ``seed`` inside; the caller's
    states are restored afterwards. The method draws nothing at random: the seed is kept for provenance."""
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(dev):
                torch.cuda.manual_seed(seed)
        yield


def _run_scenes(s: _Settings, names: list[str], progress: bool, write_depth: bool) -> None:
    """Calibrate scene after scene (each written when done), then record the run."""
    dataset = s.cache.open_dataset()
    t0 = time.perf_counter()
    stats = CalibrationStats()
    overlaps: dict[str, dict[str, list[str]]] = {}
    per_scene: dict[str, dict[str, Any]] = {}
    bar = progress_bar(
        total=sum(len(s.cache.cameras(n)) for n in names),
        desc="calibrate-depth",
        enabled=progress,
        unit="cam",
    )
    for sname in names:
        scene = dataset.scene(sname)
        rig, jobs = _plan_scene(s, scene)
        fits = {}
        for job in jobs:
            fits[job.camera] = _fit_job(s, job)
            bar.update(1)
        sstats = _write_scene(s, sname, fits)
        if write_depth:
            for cam, fit in fits.items():
                _write_metric_depth(
                    s.cache, sname, cam, s.depth_key, s.semantics_key, fit.todo, s.cfg.max_depth_m
                )
        stats.merge(sstats)
        overlaps[sname] = rig
        per_scene[sname] = _record(s, rig, sstats)
    bar.close()
    elapsed = time.perf_counter() - t0
    s.cache.record_stage(
        "calibrate_depth", {**_record(s, overlaps, stats, names), "seconds": elapsed}, scenes=per_scene
    )
    log.info(
        "calibrate-depth: %d frames in %.1f s, flags %s, cues %s",
        stats.frames,
        elapsed,
        stats.flags,
        stats.cues,
    )


def _plan_scene(s: _Settings, scene: Scene) -> tuple[dict[str, list[str]], list[_Job]]:
    """The rig's overlapping cameras (with the overlap cue) and one job per camera of the scene."""
    cache, sname = s.cache, scene.name
    rig = overlapping_cameras(cache, scene, s.cfg) if s.cfg.overlap else {}
    jobs = []
    for cam in cache.cameras(sname):
        space = cache.depth_attrs(sname, cam, s.depth_key).get("space", "disparity")
        if space not in ("disparity", "depth_m"):
            raise StoreError(f"{cache.path}: {sname}/{cam}: unknown depth space {space!r}")
        prev = None
        if cache.has_calibration(sname, cam, s.depth_key):
            prev = cache.read_calibration(sname, cam, s.depth_key)
        todo = frames_to_do(cache, sname, cam, s.depth_key, s.overwrite)
        jobs.append(_Job(scene, cam, space, todo, prev, rig.get(cam, [])))
    return rig, jobs


def _fit_job(s: _Settings, job: _Job) -> CameraFit:
    """Fit the frames of one camera that need it, and decide their values (before the scene prior)."""
    out = CameraFit(job.space, len(job.scene.frames), job.todo, job.previous)
    if not job.todo.any():
        return out
    cfg = s.cfg
    inputs = load_camera(
        s.cache, job.scene, job.camera, job.space, s.depth_key, s.semantics_key, s.neighbours, cfg, s.dev,
        job.todo, job.others,
    )  # fmt: skip
    ground = ground_cue(inputs, job.scene, cfg)
    camf = inputs.frames
    n_solid = camf.solid.sum((-2, -1)).cpu().numpy()
    h, w = camf.values.shape[-2:]
    t = inputs.temporal
    cases = frame_cases(
        t.ok, t.moving_ok, inputs.has_overlap, inputs.has_ref, inputs.n_static, n_solid, h * w, cfg
    )
    t0 = time.perf_counter()
    res = fit_camera(camf, cfg, job.space, cases.fit, s.max_elems, ground)
    log.debug(
        "%s/%s: fitted %d frames in %.2f s",
        job.scene.name,
        job.camera,
        int(cases.fit.sum()),
        time.perf_counter() - t0,
    )
    out.decision = decide_camera(inputs, cases, res, ground, cfg)
    if (
        job.previous is not None
    ):  # earlier good calibrations join the scene prior (fallbacks on a resumed run)
        maps = inputs.maps
        out.prior_params = stored_prior_params(
            maps.values, maps.labels, job.previous, job.todo, inputs.moving, cfg, job.space, s.dev
        )
    return out


def _write_scene(s: _Settings, sname: str, fits: dict[str, CameraFit]) -> CalibrationStats:
    """Scene-prior fallback for frames no cue decided (the camera's own decided frames, else the scene's),
    then merge with earlier results and write each camera that changed; returns the scene's counts."""
    stats = CalibrationStats()
    own = {cam: fit.own_params() for cam, fit in fits.items()}
    everything = np.concatenate(list(own.values()) + [np.zeros((0, 2))])
    for cam, fit in fits.items():
        arrays = calibration_arrays(fit, own[cam] if len(own[cam]) else everything)
        if fit.decision is not None:
            targets = fit.decision.targets
            stats.add(fit.decision.baseline_m, arrays["flags"][targets], arrays["cue"][targets])
        if fit.todo.any() or fit.previous is None:
            s.cache.write_calibration(
                sname, cam, arrays, _calibration_attrs(fit.space, s.cfg), key=s.depth_key
            )
    return stats


def _calibration_attrs(space: str, cfg: CalibrationConfig) -> dict[str, Any]:
    """The attrs of a camera's ``calibration/`` group."""
    return {
        "method": METHOD,
        "method_version": METHOD_VERSION,
        "space": space,
        "relation": "1/depth_m = scale*d + shift" if space == "disparity" else "depth_m = scale*d + shift",
        "cues": dict(CUES),
        "options": cfg.to_dict(),
    }


def _record(
    s: _Settings, overlaps: dict, stats: CalibrationStats, scenes: list[str] | None = None
) -> dict[str, Any]:
    """The stage record of one scene (``overlaps``: its rig) or, with ``scenes``, of the run (``overlaps``
    per scene)."""
    rec: dict[str, Any] = {
        "method": METHOD,
        "method_version": METHOD_VERSION,
        "depth_key": s.depth_key,
        "semantics_key": s.semantics_key,
        "neighbours": list(s.neighbours),
    }
    if scenes is not None:
        rec["scenes"] = list(scenes)
    rec.update(
        device=str(s.dev), overwrite=s.overwrite, options=s.cfg.to_dict(), overlapping_cameras=overlaps
    )
    return {**rec, **stats.summary()}


def _write_metric_depth(
    cache: Cache,
    scene: str,
    camera: str,
    depth_key: str,
    semantics_key: str | None,
    todo: np.ndarray,
    max_depth_m: float,
) -> None:
    """Store the metric depth of the camera's calibrated frames that were just calibrated or have none."""
    done = cache.read_calibration(scene, camera, depth_key)["done"].astype(bool)
    have = cache.metric_depth_done(scene, camera, depth_key)
    for t in np.flatnonzero(done & (np.asarray(todo, bool) | ~have)):
        depth = cache.metric_depth(scene, camera, int(t), depth_key, semantics_key, max_depth_m=max_depth_m)
        cache.write_metric_depth(scene, camera, depth_key, int(t), depth)


__all__ = [
    "CUES",
    "METHOD",
    "METHOD_VERSION",
    "CalibrationConfig",
    "CalibrationStats",
    "FrameState",
    "choose_sources",
    "fit_camera",
    "frame_state",
    "frames_to_do",
    "ground_heights",
    "inverse_depth",
    "plan",
    "run",
]
