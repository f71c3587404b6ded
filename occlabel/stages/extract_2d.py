"""Stage 1, ``extract-2d``: per image, relative depth and zero-shot semantics, cached per frame in Zarr.

Images are decoded in DataLoader workers, resized on the model's device to the working resolution, run
through the chosen depth and semantic backends in batches, and written one frame per chunk; a frame's
``done`` marker is set after its data, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from occlabel.datasets import Dataset, Scene
from occlabel.datasets.base import CameraImage
from occlabel.errors import OccLabelError, SkippedItemsError, StoreError
from occlabel.models import get_depth_model, get_semantic_model
from occlabel.stages.extract_data import Images, JobBatches, collate, to_device
from occlabel.store.cache import Cache, open_cache
from occlabel.store.common import store_location
from occlabel.utils import progress_bar, resolve_device

log = logging.getLogger("occlabel.extract_2d")

#: float16 mantissa bits kept in stored depth maps (relative rounding error <= 2^-(bits+1); 10 = exact)
DEFAULT_DEPTH_BITS = 7

#: default cap on the working width (pixels); images narrower than this keep their native size
DEFAULT_MAX_WIDTH = 640


def work_size(native: tuple[int, int], width: int | None = None) -> tuple[int, int]:
    """Working (width, height) for an image of native (width, height).

    ``width`` None keeps the native size up to DEFAULT_MAX_WIDTH; otherwise the image is scaled to ``width``
    keeping its aspect ratio (height rounded to the nearest pixel).
    """
    W0, H0 = native
    w = min(W0, DEFAULT_MAX_WIDTH) if width is None else int(width)
    if w <= 0:
        raise OccLabelError(f"working width must be positive, got {width}")
    return w, max(1, int(round(H0 * w / W0)))


def run(
    dataset: Dataset,
    out: str | Path,
    depth_model: str = "depth-anything-v2-small",
    semantic_model: str = "grounded-sam",
    scenes: list[str] | None = None,
    device: str = "auto",
    batch_size: int = 4,
    num_workers: int = 0,
    width: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    depth_conf: dict | None = None,
    semantic_conf: dict | None = None,
    depth_bits: int = DEFAULT_DEPTH_BITS,
    reuse_models: bool = False,
) -> Path | str:
    """Run stage 1 on ``dataset`` and write ``out`` (CACHE.zarr); returns ``out``.

    Args:
        dataset: loaded dataset records (see occlabel.datasets.open_dataset).
        out: cache path or fsspec URL (s3://...); created, or resumed when it exists (frames already done
            are skipped). Runs over disjoint scenes may write one cache at the same time (occlabel.scale).
        depth_model: depth backend name (its name keys the depth group, so backends live side by side).
        semantic_model: semantic backend name, or "none" for depth-only runs.
        scenes: scene names to process (all when None).
        device: "auto", "cpu", "cuda" or "cuda:N".
        batch_size: images per model call.
        num_workers: DataLoader worker processes decoding images.
        width: working width in pixels (None: native, capped at DEFAULT_MAX_WIDTH).
        seed: seed of the oracle backends' simulated errors.
        overwrite: delete an existing cache first.
        progress: show progress bars.
        depth_conf: options of the depth backend (its ``default_conf`` keys, e.g. {"model": dir}).
        semantic_conf: options of the semantic backend (e.g. {"model": dir, "vocab": "occ3d"}).
        depth_bits: float16 mantissa bits kept in the stored depth maps (10 = exact float16; the default 7
            bounds the relative rounding error by 0.4 % and makes maps several times smaller on disk).
        reuse_models: keep the loaded backends for the next call in this process with the same models,
            options and device (a Ray worker running one scene per call loads them once).
    Returns:
        ``out`` (a Path, or the URL string).
    """
    out = store_location(out)
    if not isinstance(depth_bits, int) or not 1 <= depth_bits <= 10:
        raise OccLabelError(
            f"depth bits must be an integer in 1..10 (10 = exact float16), got {depth_bits!r}"
        )
    dev = resolve_device(device)
    dconf = {"seed": seed} if depth_model == "oracle" else {}
    sconf = {"seed": seed} if semantic_model == "oracle" else {}
    dconf.update(depth_conf or {})
    sconf.update(semantic_conf or {})
    depth, sem = _load_models(depth_model, dconf, semantic_model, sconf, dev, reuse_models)
    cache = Cache.create(out, dataset, overwrite=overwrite)
    selected = dataset.select(scenes)
    t0 = time.perf_counter()
    total = sum(len(f.images) for s in selected for f in s.frames)
    bar = progress_bar(total=total, desc="extract-2d", enabled=progress, unit="img")
    try:
        jobs = [job for scene in selected for job in _plan_scene(cache, scene, depth, sem, width, depth_bits)]
        bar.update(total - sum(len(j.items) for j in jobs))
        n_images, skipped = _run_jobs(cache, jobs, depth, sem, batch_size, num_workers, depth_bits, bar)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    cache.update_meta(default_depth=depth.key, **({"default_semantics": sem.key} if sem else {}))
    settings = {
        "depth_model": depth.provenance(),
        "semantic_model": sem.provenance() if sem else None,
        "device": str(dev),
        "batch_size": batch_size,
        "width": width,
        "depth_bits": depth_bits,
        "seed": seed,
    }
    _record(cache, selected, jobs, settings, n_images, skipped, elapsed)
    log.info("extract-2d: %d images in %.1f s -> %s", n_images, elapsed, out)
    if skipped:
        raise SkippedItemsError(
            f"extract-2d: {len(skipped)} image(s) skipped, the rest is written to {out} (first: {skipped[0][1]}); "
            "fix them and rerun the same command to fill them in",
            skipped,
        )
    return out


#: the backends of the last run with reuse_models=True: (key, (depth, semantics))
_MODELS: dict[str, tuple[Any, Any]] = {}


def _record(
    cache: Cache,
    selected: list[Scene],
    jobs: list[_Job],
    settings: dict[str, Any],
    n_images: int,
    skipped: list[tuple[str, str]],
    elapsed: float,
) -> None:
    """The stage record: the run's settings and counts, and per scene the images this run wrote there (its
    pending frames less the skipped ones)."""
    per_scene: dict[str, dict[str, Any]] = {}
    for s in selected:
        pending = sum(len(j.items) for j in jobs if j.scene == s.name)
        bad = [{"image": k, "reason": r} for k, r in skipped if k.startswith(f"{s.name}/")]
        per_scene[s.name] = {**settings, "images_processed": pending - len(bad), "skipped": bad}
    cache.record_stage(
        "extract_2d",
        {
            **settings,
            "scenes": [s.name for s in selected],
            "images_processed": n_images,
            "skipped": [{"image": k, "reason": r} for k, r in skipped],
            "seconds": elapsed,
        },
        scenes=per_scene,
    )


def _load_models(depth_model, dconf, semantic_model, sconf, dev, reuse: bool) -> tuple[Any, Any]:
    """(depth backend, semantic backend or None); with ``reuse``, the previous call's when identical."""
    import json

    key = json.dumps([depth_model, dconf, semantic_model, sconf, str(dev)], sort_keys=True, default=str)
    if reuse and key in _MODELS:
        return _MODELS[key]
    depth = get_depth_model(depth_model, dconf or None, dev)
    sem = None if semantic_model == "none" else get_semantic_model(semantic_model, sconf or None, dev)
    _MODELS.clear()
    if reuse:
        _MODELS[key] = (depth, sem)
    return depth, sem


@dataclass
class _Job:
    """The pending frames of one (scene, camera): what the loader decodes and where outputs go."""

    scene: str
    camera: str
    size: tuple[int, int]  # working (w, h)
    native: tuple[int, int]  # native (h, w) of the camera's images (its first image's)
    items: list[tuple[int, CameraImage, str]]  # (frame index, record, key)
    depth_done: np.ndarray  # (T,) bool, already written
    sem_done: np.ndarray  # (T,) bool


def _plan_scene(cache: Cache, scene: Scene, depth, sem, width, depth_bits) -> list[_Job]:
    """Create (or check, when resuming) the scene's groups; one job per camera with frames left to do."""
    image_size = {cam: scene.image_size(cam) for cam in scene.cameras}  # (W, H), read once
    sizes = {cam: work_size(wh, width) for cam, wh in image_size.items()}
    cache.init_scene(scene, sizes, image_size)
    jobs = []
    for cam in scene.cameras:
        cache.init_depth(
            scene.name,
            cam,
            depth.key,
            {"model": depth.provenance(), "space": depth.space, "mantissa_bits": depth_bits},
        )
        if sem is not None:
            cache.init_semantics(scene.name, cam, sem.key, {"model": sem.provenance()}, sem.vocab)
        d_done = cache.depth_done(scene.name, cam, depth.key)
        s_done = cache.semantics_done(scene.name, cam, sem.key) if sem is not None else None
        have, done = frames_done(scene, cam, d_done, s_done)
        items = [
            (t, f.images[cam], f"{scene.name}/{cam}/{f.token}")
            for t, f in enumerate(scene.frames)
            if have[t] and not done[t]
        ]
        if items:
            s_done = np.ones_like(d_done) if s_done is None else s_done
            jobs.append(_Job(scene.name, cam, sizes[cam], image_size[cam][::-1], items, d_done, s_done))
    return jobs


def frames_done(
    scene: Scene, camera: str, depth_done: np.ndarray, sem_done: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The to-do rule of extract-2d, for one camera of a scene: ``(have, done)``, each <bool: T>.

    ``have``: the camera has an image in the frame; ``done``: it has, and its stored depth and semantics
    (``sem_done`` None: a depth-only run) are both marked done. The frames to do are ``have & ~done``.
    """
    have = np.array([camera in f.images for f in scene.frames], bool)
    done = have & depth_done.astype(bool)
    if sem_done is not None:
        done &= sem_done.astype(bool)
    return have, done


def plan(
    dataset: Dataset,
    out: str | Path,
    depth_key: str,
    semantics_key: str | None,
    scenes: list[str] | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """What a run into ``out`` would do, read-only (``--dry-run``): one row per (scene, camera) with the
    images in ``total``, ``todo`` and ``done`` (the rule of :func:`frames_done` on the stored markers of
    results ``depth_key`` / ``semantics_key``; None: a depth-only run). Nothing is created or written."""
    cache = None
    if Path(out).exists() and not overwrite:
        try:
            cache = open_cache(out)
        except StoreError:
            cache = None
    rows = []
    for scene in dataset.select(scenes):
        for cam in scene.cameras:
            d_done, s_done = _stored_done(cache, scene, cam, depth_key, semantics_key)
            have, done = frames_done(scene, cam, d_done, s_done)
            rows.append(
                {"scene": scene.name, "camera": cam, "total": int(have.sum()),
                 "todo": int((have & ~done).sum()), "done": int(done.sum())}
            )  # fmt: skip
    return rows


def _stored_done(cache, scene: Scene, cam: str, depth_key: str, semantics_key: str | None):
    """(depth done, semantics done or None) <T> of a camera in an existing cache; none done when the cache,
    the camera or a result is missing or has another number of frames."""
    none = np.zeros(len(scene.frames), bool)
    if cache is None or scene.name not in cache.root or f"{scene.name}/{cam}" not in cache.root:
        return none, None
    try:
        d = cache.depth_done(scene.name, cam, depth_key)
        s = cache.semantics_done(scene.name, cam, semantics_key) if semantics_key is not None else None
    except StoreError:
        return none, None
    if len(d) != len(none) or (s is not None and len(s) != len(none)):
        return none, None
    return d, s


def _run_jobs(
    cache: Cache, jobs: list[_Job], depth, sem, batch_size, num_workers, depth_bits, bar
) -> tuple[int, list[tuple[str, str]]]:
    """Decode (DataLoader workers) -> models (device) -> write (a background thread), overlapped.

    One loader serves all jobs, so worker processes start once per run. Writes go to one writer thread,
    at most two batches behind the models; a frame's semantics, then its depth (each with its done marker
    after its data) are written in order, so a killed run never leaves a frame done but incomplete.
    Images that cannot be read are skipped (left not done, so a rerun retries them).

    Returns:
        (images written, skipped images as (key, reason)).
    """
    if not jobs:
        return 0, []
    flat = [(j, *item) for j, job in enumerate(jobs) for item in job.items]
    native = {f"{job.scene}/{job.camera}": job.native for job in jobs}
    dataset = Images(
        [(t, rec, key) for _, t, rec, key in flat], depth.needs_gt, sem is not None and sem.needs_gt, native
    )
    loader = DataLoader(
        dataset,
        batch_sampler=JobBatches(jobs, batch_size),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=depth.device.type == "cuda",
        persistent_workers=False,
    )
    bounds = np.cumsum([0] + [len(job.items) for job in jobs])
    pending: deque[Future] = deque()
    done_count = 0
    skipped: list[tuple[str, str]] = []

    def write(job: _Job, ts: list[int], disp: np.ndarray, labels, conf) -> int:
        for i, t in enumerate(ts):
            if sem is not None and not job.sem_done[t]:
                cache.write_semantics(job.scene, job.camera, sem.key, t, labels[i], conf[i])
            if not job.depth_done[t]:
                cache.write_depth(job.scene, job.camera, depth.key, t, disp[i], depth_bits)
        return len(ts)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="occlabel-writer") as writer:
        try:
            first = 0
            for raw in loader:
                job = jobs[int(np.searchsorted(bounds, first, side="right") - 1)]
                first += raw["n"]
                for key, reason in raw["errors"]:
                    log.info("skipped %s", reason if reason.startswith(key) else f"{key}: {reason}")
                    skipped.append((key, reason))
                bar.update(len(raw["errors"]))
                if not raw["t"]:
                    continue
                batch = to_device(raw, depth.device, job.size)
                disp = depth(batch).float().cpu().numpy()
                labels = conf = None
                if sem is not None:
                    lab, cf = sem(batch)
                    labels = lab.cpu().numpy()
                    conf = (cf.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
                while len(pending) >= 2:
                    n = pending.popleft().result()
                    done_count += n
                    bar.update(n)
                pending.append(writer.submit(write, job, list(batch["t"]), disp, labels, conf))
            while pending:
                n = pending.popleft().result()
                done_count += n
                bar.update(n)
        finally:
            for f in pending:
                f.cancel()
    return done_count, skipped
