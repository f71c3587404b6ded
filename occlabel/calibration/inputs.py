"""What the fit of one camera reads: its sources, the rig's overlapping cameras, images and stored maps.

Sources: each neighbour offset o is strided (t + o*k, k <= ``max_stride``) until the camera baseline
reaches ``target_baseline_m`` (:func:`choose_sources`): far points need parallax, and the fitted shift
(hence far depth) is biased toward the camera when the baseline is short. The overlapping cameras of the
rig (:func:`overlapping_cameras`) at the same frame are appended as sources (the overlap cue); images this
close in time (``overlap_max_dt_s``) see movable objects where they are, so for these sources movable-class
pixels count too. :func:`load_camera` gathers it all into a :class:`CameraInputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from occlabel.calibration.config import CalibrationConfig
from occlabel.calibration.ground import GroundCue, ground_heights, sky_values
from occlabel.calibration.params import Reference, bounds, reference_percentiles
from occlabel.calibration.photometric import CameraFrames
from occlabel.conventions import SKY
from occlabel.conventions import scale_intrinsics as scale_intrinsics_np
from occlabel.datasets.base import load_image
from occlabel.errors import StoreError
from occlabel.geometry.photometric import static_mask
from occlabel.geometry.rig import view_overlap
from occlabel.store.cache import Cache


def overlapping_cameras(cache: Cache, scene, cfg: CalibrationConfig) -> dict[str, list[str]]:
    """Per camera, the other cameras of the rig whose view overlaps it (largest overlap first).

    A camera B overlaps A when, for points at 5 m, 20 m and infinity in front of A, on average at least
    ``overlap_min_frac`` of A's pixels land inside B's image, and the two centres are at least
    ``min_baseline_m`` apart (a baseline gives parallax). Judged on the first frame with both images, from
    the extrinsics ``T_ego_from_cam`` and the working-resolution intrinsics; at most
    ``overlap_max_cameras`` per camera.
    """
    cams = cache.cameras(scene.name)
    geo = {c: cache.geometry(scene.name, c) for c in cams}
    meta = {c: cache.camera_meta(scene.name, c) for c in cams}
    out: dict[str, list[str]] = {}
    for a in cams:
        found = []
        for b in cams:
            if b == a:
                continue
            both = np.flatnonzero(geo[a]["present"].astype(bool) & geo[b]["present"].astype(bool))
            if not len(both):
                continue
            t = int(both[0])
            imgs = scene.frames[t].images
            frac, base = view_overlap(
                torch.from_numpy(geo[a]["K"][t]),
                torch.from_numpy(geo[b]["K"][t]),
                torch.from_numpy(imgs[a].T_ego_from_cam),
                torch.from_numpy(imgs[b].T_ego_from_cam),
                (meta[a]["height"], meta[a]["width"]),
                (meta[b]["height"], meta[b]["width"]),
            )
            f = float(frac.mean())
            if f >= cfg.overlap_min_frac and base >= cfg.min_baseline_m:
                found.append((f, b))
        out[a] = [b for _, b in sorted(found, reverse=True)[: max(0, cfg.overlap_max_cameras)]]
    return out


def choose_sources(
    centres: np.ndarray,
    present: np.ndarray,
    targets: np.ndarray,
    neighbours: tuple[int, ...],
    target_baseline_m: float = 0.0,
    max_stride: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source frames of each target: per offset o, frame t + o*k with the baseline-adaptive stride k.

    k is the smallest stride in 1..max_stride whose camera-centre distance reaches ``target_baseline_m``
    (more parallax for far points when the ego is slow or the frame rate high); when none does, the
    stride with the largest baseline. Strides run only over frames that exist, so frames at sequence ends
    use the neighbours that exist.

    Args:
        centres: ``[T x 3]`` camera centres (world, metres).
        present: ``[T]`` bool, the camera has an image in that frame.
        targets: ``[F]`` frame indices.
        neighbours: frame offsets (non-zero).
    Returns:
        sources ``[F x S]`` long (0 where none), exists ``[F x S]`` bool, baseline ``[F x S]`` metres (NaN
        where none).
    """
    T = len(present)
    S = len(neighbours)
    sources = np.zeros((len(targets), S), np.int64)
    exists = np.zeros((len(targets), S), bool)
    baseline = np.full((len(targets), S), np.nan)
    for i, t in enumerate(targets):
        for j, o in enumerate(neighbours):
            best = None
            for k in range(1, max(1, int(max_stride)) + 1):
                u = t + o * k
                if not (0 <= u < T and present[u]):
                    continue
                b = float(np.linalg.norm(centres[u] - centres[t]))
                if best is None or b > best[1]:
                    best = (u, b)
                if b >= target_baseline_m:
                    best = (u, b)
                    break
            if best is not None:
                sources[i, j], baseline[i, j] = best
                exists[i, j] = True
    return sources, exists, baseline


def load_frame_image(path, size: tuple[int, int], dev) -> torch.Tensor:
    """``[3 x h x w]`` float32 RGB in [0, 1] of an image file, resized (antialiased) to ``size`` (h, w)."""
    img = load_image(path)
    x = torch.from_numpy(img).to(dev).permute(2, 0, 1)[None].float() / 255.0
    if x.shape[-2:] != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0].clamp(0, 1)


def image_time(frame, cam: str) -> float:
    """Timestamp (s) of camera ``cam``'s image of ``frame`` (the frame's when the image has none)."""
    ts = frame.images[cam].timestamp
    return float(frame.timestamp if ts is None else ts)


@dataclass
class CameraMaps:
    """The stored maps of one camera over the whole scene."""

    values: np.ndarray  # <float32: T, h, w> relative values (NaN = none)
    labels: np.ndarray | None  # <uint8: T, h, w> 2D semantics (None: no semantics)
    heights: np.ndarray  # <float32: 256> surface height per label (NaN: not ground), see ground_heights
    moving_ids: tuple[int, ...]  # the vocabulary's movable class ids


def read_maps(
    cache: Cache, scene: str, cam: str, depth_key: str, semantics_key: str | None, cfg: CalibrationConfig
) -> CameraMaps:
    """The camera's relative maps, and its semantics with their ground heights and movable classes (the
    Occ3D ids without semantics, or when they cannot be read)."""
    values = cache.read_depth(scene, cam, depth_key)  # T h w
    labels = None
    heights, moving_ids = ground_heights(None, cfg)
    if semantics_key is not None:
        try:
            labels = cache.read_semantics(scene, cam, semantics_key)[0]
            heights, moving_ids = ground_heights(cache.vocabulary(scene, cam, semantics_key), cfg)
        except StoreError:
            labels = None
    return CameraMaps(values, labels, heights, moving_ids)


@dataclass
class TemporalSources:
    """The temporal sources of the target frames (:func:`choose_sources`), each ``[F x S]``."""

    sources: np.ndarray  # int64 frame index (0 where none)
    exists: np.ndarray  # bool, the source exists
    baseline: np.ndarray  # float64 metres between the camera centres (NaN where none)
    moving_ok: np.ndarray  # bool, exists with a baseline >= min_baseline_m (the ego moved)
    ok: np.ndarray  # bool, moving_ok and the photometric cue is on: the source is used


def temporal_sources(
    T_world_from_cam: np.ndarray,
    present: np.ndarray,
    targets: np.ndarray,
    neighbours: tuple[int, ...],
    cfg: CalibrationConfig,
) -> TemporalSources:
    """Sources of ``targets`` ``[F]`` among the camera's frames (poses ``[T x 4 x 4]``, ``present`` ``[T]``)."""
    sources, exists, baseline = choose_sources(
        T_world_from_cam[:, :3, 3], present, targets, neighbours, cfg.target_baseline_m, cfg.max_stride
    )
    moving_ok = exists & (baseline >= cfg.min_baseline_m)
    return TemporalSources(sources, exists, baseline, moving_ok, moving_ok & cfg.photometric)


@dataclass
class SourcePool:
    """The source images: the camera's T frames (pool index = frame index), then, per overlapping camera j,
    its image of each target i at pool index ``T + j * F + i`` (resized to this camera's resolution)."""

    images: torch.Tensor  # [P x 3 x h x w] float32 RGB in [0, 1] (zeros where not loaded)
    K: np.ndarray  # [P x 3 x 3] intrinsics at this camera's working resolution
    T_world_from_cam: np.ndarray  # [P x 4 x 4]
    o_src: np.ndarray  # [F x O] int64 pool index of each overlapping camera's image (0 where none)
    o_ok: np.ndarray  # [F x O] bool, the image exists with a baseline >= min_baseline_m
    o_base: np.ndarray  # [F x O] float64 metres between the camera centres (NaN where none)
    o_sync: np.ndarray  # [F x O] bool, taken within overlap_max_dt_s of the target image


def load_pool(
    cache: Cache,
    scene,
    cam: str,
    geo: dict[str, np.ndarray],
    targets: np.ndarray,
    temporal: TemporalSources,
    others: list[str],
    size: tuple[int, int],
    cfg: CalibrationConfig,
    dev: torch.device,
) -> SourcePool:
    """Load the targets, their temporal sources and the overlapping cameras' images into a pool."""
    h, w = size
    T, Fn, O = len(scene.frames), len(targets), len(others)
    P = T + O * Fn  # this camera's frames, then each other camera's image of each target
    pool = SourcePool(
        torch.zeros(P, 3, h, w, dtype=torch.float32, device=dev),
        np.tile(np.eye(3), (P, 1, 1)),
        np.tile(np.eye(4), (P, 1, 1)),
        np.zeros((Fn, O), np.int64),
        np.zeros((Fn, O), bool),
        np.full((Fn, O), np.nan),
        np.zeros((Fn, O), bool),
    )
    pool.K[:T], pool.T_world_from_cam[:T] = geo["K"], geo["T_world_from_cam"]
    need = np.union1d(targets, temporal.sources[temporal.ok]) if cfg.photometric else targets
    for t in need:
        pool.images[t] = load_frame_image(scene.frames[t].images[cam].path, (h, w), dev)
    for j, other in enumerate(others):
        _load_other(cache, scene, cam, other, j, targets, pool, cfg)
    return pool


def _load_other(cache: Cache, scene, cam: str, other: str, j: int, targets, pool: SourcePool, cfg) -> None:
    """Fill column ``j`` of the pool's overlap sources with camera ``other``'s images of the targets."""
    T, Fn = len(scene.frames), len(targets)
    h, w = pool.images.shape[-2:]
    g2 = cache.geometry(scene.name, other)
    m2 = cache.camera_meta(scene.name, other)
    sx, sy = w / m2["width"], h / m2["height"]
    T_wc = pool.T_world_from_cam
    for i, t in enumerate(targets):
        if not g2["present"][t]:
            continue
        k = T + j * Fn + i
        pool.images[k] = load_frame_image(scene.frames[t].images[other].path, (h, w), dev=pool.images.device)
        pool.K[k] = scale_intrinsics_np(g2["K"][t], sx, sy)
        T_wc[k] = g2["T_world_from_cam"][t]
        pool.o_src[i, j] = k
        pool.o_base[i, j] = float(np.linalg.norm(T_wc[k][:3, 3] - T_wc[t][:3, 3]))
        pool.o_ok[i, j] = pool.o_base[i, j] >= cfg.min_baseline_m
        dt = abs(image_time(scene.frames[t], other) - image_time(scene.frames[t], cam))
        pool.o_sync[i, j] = dt <= cfg.overlap_max_dt_s


@dataclass
class CameraInputs:
    """Everything the fit of one camera's target frames reads (:func:`load_camera`)."""

    camera: str
    space: str  # "disparity" or "depth_m"
    targets: np.ndarray  # [F] frame indices
    maps: CameraMaps  # the whole scene's stored maps
    frames: CameraFrames  # the targets and the source pool, on the device
    labels: torch.Tensor | None  # [F x h x w] uint8 semantics of the targets (None: none)
    has_ref: np.ndarray  # [F] bool, the frame has reference percentiles (a usable relative map)
    n_static: np.ndarray  # [F] static pixels
    temporal: TemporalSources
    has_overlap: np.ndarray  # [F] bool, an overlapping camera is a usable source
    moving: tuple[int, ...]  # movable class ids kept out of the static mask (none with ignore_moving off)


def load_camera(
    cache: Cache,
    scene,
    cam: str,
    space: str,
    depth_key: str,
    semantics_key: str | None,
    neighbours: tuple[int, ...],
    cfg: CalibrationConfig,
    dev: torch.device,
    todo: np.ndarray,
    others=(),
) -> CameraInputs:
    """Read and load what the fit of frames ``todo`` ``[T]`` of camera ``cam`` needs.

    ``others``: overlapping cameras of the rig (:func:`overlapping_cameras`), used as sources at the same
    frame when ``cfg.overlap``.
    """
    geo = cache.geometry(scene.name, cam)
    maps = read_maps(cache, scene.name, cam, depth_key, semantics_key, cfg)
    targets = np.flatnonzero(todo)
    temporal = temporal_sources(
        geo["T_world_from_cam"], geo["present"].astype(bool), targets, neighbours, cfg
    )
    others = list(others) if cfg.overlap else []
    pool = load_pool(cache, scene, cam, geo, targets, temporal, others, maps.values.shape[-2:], cfg, dev)
    moving = maps.moving_ids if cfg.ignore_moving else ()
    values = torch.from_numpy(maps.values[targets]).to(dev)
    finite = torch.isfinite(values)
    lab = None
    static = solid = finite
    if maps.labels is not None:
        lab = torch.from_numpy(np.ascontiguousarray(maps.labels[targets])).to(dev)
        static = static_mask(lab, moving) & finite
        solid = (lab != SKY) & finite
    d_lo, d_hi, n_static = reference_percentiles(values, static, finite, cfg.percentiles, space)
    has_ref = np.isfinite(d_lo) & np.isfinite(d_hi)
    ref = Reference(np.where(has_ref, d_lo, 0.0), np.where(has_ref, d_hi, 1.0), space)
    sky = None
    if lab is not None and cfg.sky and space == "disparity":
        sky = sky_values(values, lab, ref, cfg.ground_erode_px + 1, cfg.sky_min_frac)
    frames = _camera_frames(pool, temporal, targets, values, static, solid, ref, sky, dev)
    return CameraInputs(
        cam, space, targets, maps, frames, lab, has_ref, n_static, temporal, pool.o_ok.any(1), moving
    )


def _camera_frames(
    pool: SourcePool, temporal: TemporalSources, targets, values, static, solid, ref, sky, dev
):
    """The :class:`CameraFrames` of the targets: temporal sources, then the overlap sources (source columns
    no frame can use are dropped: each costs a warp for nothing)."""
    all_sources = np.concatenate([temporal.sources, pool.o_src], 1)
    all_ok = np.concatenate([temporal.ok, pool.o_ok], 1)
    movable_ok = np.concatenate([np.zeros_like(temporal.ok), pool.o_ok & pool.o_sync], 1)
    all_base = np.concatenate([temporal.baseline, pool.o_base], 1)
    cols = all_ok.any(0)
    all_sources, all_ok, movable_ok, all_base = (
        x[:, cols] for x in (all_sources, all_ok, movable_ok, all_base)
    )
    return CameraFrames(
        images=pool.images,
        K=torch.from_numpy(pool.K).float().to(dev),
        T_world_from_cam=torch.from_numpy(pool.T_world_from_cam).double().to(dev),
        values=values,
        static=static,
        targets=torch.from_numpy(targets).to(dev),
        sources=torch.from_numpy(all_sources).to(dev),
        source_ok=torch.from_numpy(all_ok).to(dev),
        baseline_m=all_base,
        reference=ref,
        solid=solid,
        movable_ok=torch.from_numpy(movable_ok).to(dev),
        sky=sky,
    )


def ground_cue(inputs: CameraInputs, scene, cfg: CalibrationConfig) -> GroundCue | None:
    """The ground cue of the target frames, fitted (usable only where the frame has a reference); None when
    the cue is off, there are no semantics or the vocabulary has no ground class."""
    if not (cfg.ground and inputs.labels is not None and np.isfinite(inputs.maps.heights).any()):
        return None
    camf = inputs.frames
    T_ego_from_cam = np.stack([scene.frames[t].images[inputs.camera].T_ego_from_cam for t in inputs.targets])
    ground = GroundCue(
        camf.dnorm,
        inputs.labels,
        camf.K[camf.targets],
        torch.from_numpy(T_ego_from_cam).to(camf.values.device),
        torch.from_numpy(inputs.maps.heights),
        cfg,
        inputs.space,
    )
    h, w = camf.values.shape[-2:]
    s_b, r_b = bounds(cfg, inputs.space)
    ground.fit(s_b, r_b, cfg.ground_min_frac * h * w)
    ground.ok &= inputs.has_ref
    ground.params[~ground.ok] = np.nan
    return ground


__all__ = [
    "CameraInputs",
    "CameraMaps",
    "SourcePool",
    "TemporalSources",
    "choose_sources",
    "ground_cue",
    "image_time",
    "load_camera",
    "load_frame_image",
    "load_pool",
    "overlapping_cameras",
    "read_maps",
    "temporal_sources",
]
