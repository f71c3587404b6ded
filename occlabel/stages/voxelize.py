"""Stage 3 — voxelize: fuse metric depth and 2D semantics over frames and cameras into voxel labels.

For every keyframe of a scene (output: one sample of LABELS.zarr, see occlabel.store.labels):

1. Lift. Every pixel with a metric depth and a class becomes a point in the keyframe's ego frame,
   ``p_egokey = T_egokey_from_world @ T_world_from_cam(t) @ (z · K⁻¹ [u, v, 1])``, for all cameras of the
   frames ``t`` within ``window`` frames of the keyframe. Static classes accumulate over the whole window;
   classes that can move (``moving_classes``, default conventions.OCC3D_MOVING) only from frames within
   ``moving_window`` frames (default: the keyframe alone), so moving objects do not leave trails.
   Each point votes for its class in its voxel with its semantic confidence (scatter-add over
   voxel × class); ``evidence`` = sum of the votes, in pixel units (multiplied by point_stride²).
2. Carve. Every ``ray_stride``-th pixel casts a ray from the camera centre to its point; the voxels it
   crosses before the point (geometry.voxel.ray_free_samples: samples every step_fraction·voxel, stopping
   one voxel plus ``stop_frac``·length short of the point) collect free-space ``passes``, measured in
   ray-lengths of one voxel and scaled by ray_stride² so that they compare with pixel-unit evidence.
   Sky pixels (conventions.SKY) carve to ``sky_range_m``. Pixels without depth cast nothing.
   A voxel is **occupied** when ``evidence >= min_hits`` and ``evidence >= occ_ratio · passes``, where
   passes count rays from the whole window for a voxel whose winning class is static, and only rays from
   the moving window for a moving class (the space a car fills now was free a second ago).
   It is **free** when not occupied and crossed by some ray (or seen from the keyframe, below), and
   **unknown** otherwise. occ_ratio defaults to 0.2 for estimated depth (noise floaters collect many
   passes) and 0 for ``source="gt"`` (exact depth: free space never overrides a hit; voxels the road
   crosses at grazing angles collect far more passes than hits and must stay occupied).
3. mask_camera: voxels crossed or hit by a ray of the keyframe's own cameras — the Occ3D meaning
   ("visible from the cameras of this sample"): every ``mask_stride``-th pixel's ray all the way to its
   surface point (sky: to sky_range_m), plus the voxels holding the keyframe's points.
4. Output, on the grid (default occ3d, 200×200×16 at 0.4 m) in the keyframe's ego frame:
   semantics <uint8: X, Y, Z> = winning class (0-16) where occupied, 17 (free) elsewhere — **unknown
   voxels are written as 17 too, with mask_camera 0** (the Occ3D layout has no "unknown" label; users
   must apply mask_camera, exactly as Occ3D trainers and the Occ3D metric do). Every mask_camera voxel is
   occupied or free, never unknown. confidence <uint8> = 255 × (confidence-weighted share of the winning
   class among the voxel's points) for occupied voxels, 255 × passes / (passes + evidence) for free
   voxels, 0 for unknown. hits <uint16> = number of points in the voxel, passes <uint16> = passes rounded
   (at least 1 where any ray passed; both saturate at 65535).

Everything per keyframe is vectorised torch on one device (CUDA when present): no Python loops over
pixels, points, rays or voxels (only over the camera views of the window). Camera views are prepared
once (camera-frame points and ray ends) and reused by the keyframes whose windows overlap.

``source="gt"`` fuses the dataset's ground-truth depth and 2D semantics instead of the cache's estimates
(resized to the cache's working resolution with nearest-neighbour), through the same fusion: the gap
between "labels from GT inputs" and "labels from estimated inputs" measures the estimates, not the fusion.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occlabel.conventions import (
    FREE,
    OCC3D_MOVING,
    OCC3D_NUM_SEMANTIC,
    SKY,
    UNLABELED,
    VoxelGrid,
    get_grid,
    invert_rigid,
)
from occlabel.errors import OccLabelError, StoreError
from occlabel.geometry.voxel import flat_index, points_to_voxels, ray_free_samples
from occlabel.store.cache import Cache, depth_from_relative, open_cache
from occlabel.store.labels import LabelsWriter
from occlabel.utils import progress_bar, resize_nearest, resolve_device

log = logging.getLogger(__name__)


@dataclass
class VoxelizeOptions:
    """Fusion options (all recorded in the labels store; a resumed run must use the same ones)."""

    #: "cache": calibrated depth and semantics of the cache; "gt": the dataset's GT depth and semantics
    source: str = "cache"
    #: frames each side of the keyframe whose static-class points and rays are fused
    window: int = 8
    #: frames each side whose moving-class points (and, for moving voxels, rays) count
    moving_window: int = 0
    #: classes that can move (accumulated only within moving_window)
    moving_classes: tuple[int, ...] = OCC3D_MOVING
    #: minimum evidence (confidence-weighted points, pixel units) of an occupied voxel
    min_hits: float = 1.0
    #: occupied needs evidence >= occ_ratio * passes (1.0: hits must outnumber passes); None: 0.2 for
    #: source "cache" (rejects floaters of noisy depth), 0 for "gt" (exact depth has none, and voxels
    #: crossed at grazing angles, e.g. the road's, collect far more passes than hits)
    occ_ratio: float | None = None
    #: lift every n-th pixel along rows and columns
    point_stride: int = 1
    #: cast free-space rays from every n-th pixel along rows and columns
    ray_stride: int = 4
    #: mask_camera rays of the keyframe's cameras from every n-th pixel along rows and columns
    mask_stride: int = 2
    #: ray sample spacing, in voxels
    step_fraction: float = 0.5
    #: free-space rays stop this fraction of their length (plus one voxel) short of the point
    stop_frac: float = 0.0
    #: sky rays carve up to this distance from the camera, metres
    sky_range_m: float = 100.0
    #: depth beyond this is treated as unknown (no point, no ray), metres
    max_depth_m: float = 200.0
    #: pixels labelled UNLABELED that have a depth: "ignore" (free-space ray only) or "others" (class 0)
    unlabeled: str = "ignore"
    #: ray samples materialised at once (bounds memory)
    chunk: int = 1 << 22
    #: <4 x 4> pose of the grid's frame in the ego frame, for grids not in the ego frame (None: identity)
    T_ego_from_grid: list | None = None

    def __post_init__(self) -> None:
        if self.occ_ratio is None:
            self.occ_ratio = 0.2 if self.source == "cache" else 0.0

    @classmethod
    def from_kwargs(cls, **kw: Any) -> VoxelizeOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise OccLabelError(
                f"voxelize: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        o = cls(**kw)
        o.moving_classes = tuple(int(c) for c in o.moving_classes)
        o.validate()
        return o

    def validate(self) -> None:
        if self.source not in ("cache", "gt"):
            raise OccLabelError(f"voxelize: source must be 'cache' or 'gt', got {self.source!r}")
        if self.unlabeled not in ("ignore", "others"):
            raise OccLabelError(f"voxelize: unlabeled must be 'ignore' or 'others', got {self.unlabeled!r}")
        if self.window < 0 or self.moving_window < 0 or self.moving_window > self.window:
            raise OccLabelError("voxelize: need 0 <= moving_window <= window")
        if min(self.point_stride, self.ray_stride, self.mask_stride) < 1:
            raise OccLabelError("voxelize: point_stride, ray_stride and mask_stride must be >= 1")
        if not 0 < self.step_fraction <= 1:
            raise OccLabelError("voxelize: step_fraction must be in (0, 1]")
        if not 0 <= self.stop_frac < 1:
            raise OccLabelError("voxelize: stop_frac must be in [0, 1)")
        if self.min_hits <= 0 or self.occ_ratio < 0:
            raise OccLabelError("voxelize: need min_hits > 0 and occ_ratio >= 0")


# --------------------------------------------------------------------------------------------------
# Geometry (no I/O)
# --------------------------------------------------------------------------------------------------


@dataclass
class View:
    """One camera image prepared for fusion (camera frame, on the fusion device).

    Attributes:
        frame: position of the image's frame in the scene.
        camera: camera name.
        T_world_from_cam: <np.float64: 4, 4> camera pose.
        points_cam: ``[N x 3]`` float32 surface points (point_stride pixels with a depth and a class).
        labels: ``[N]`` long class ids 0-16.
        weights: ``[N]`` float32 vote weight = semantic confidence × point_stride².
        ray_ends_cam: ``[M x 3]`` float32 ray end points (ray_stride pixels with a depth, or sky).
        ray_sky: ``[M]`` bool, the ray is a sky ray (ends at sky_range_m).
        mask_ends_cam: ``[L x 3]`` float32 ends of the mask_camera rays (mask_stride pixels with a depth,
            or sky), or None when the view was prepared without them (only keyframe views need them).
    """

    frame: int
    camera: str
    T_world_from_cam: np.ndarray
    points_cam: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    ray_ends_cam: torch.Tensor
    ray_sky: torch.Tensor
    mask_ends_cam: torch.Tensor | None = None


def prepare_view(
    depth_m: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    confidence: np.ndarray | torch.Tensor,
    K: np.ndarray,
    opts: VoxelizeOptions,
    device: torch.device | str = "cpu",
    frame: int = 0,
    camera: str = "",
    T_world_from_cam: np.ndarray | None = None,
    with_mask: bool = True,
) -> View:
    """Camera-frame points and ray ends of one image.

    Args:
        depth_m: <float: h, w> metric z-depth, NaN / <= 0 where unknown (sky may be NaN or anything).
        labels: <uint8: h, w> class ids 0-16, SKY, UNLABELED.
        confidence: <float: h, w> semantic confidence in [0, 1].
        K: <float: 3, 3> intrinsics of this (h, w) image.
        with_mask: also prepare the mask_camera rays (needed for views of a keyframe).
    """
    dev = torch.device(device)
    z = torch.as_tensor(np.asarray(depth_m, np.float32), device=dev)
    lab = torch.as_tensor(np.asarray(labels, np.uint8), device=dev).long()
    conf = torch.as_tensor(np.asarray(confidence, np.float32), device=dev)
    H, W = z.shape
    Kinv = torch.as_tensor(np.linalg.inv(np.asarray(K, np.float64)), dtype=torch.float32, device=dev)
    v, u = torch.meshgrid(
        torch.arange(H, device=dev, dtype=torch.float32),
        torch.arange(W, device=dev, dtype=torch.float32),
        indexing="ij",
    )
    rays = torch.stack([u, v, torch.ones_like(u)], -1) @ Kinv.T  # H W 3, z = 1
    has_depth = torch.isfinite(z) & (z > 0) & (z <= opts.max_depth_m)
    sky = lab == SKY
    if opts.unlabeled == "others":
        lab = torch.where(lab == UNLABELED, torch.zeros_like(lab), lab)

    ps = opts.point_stride
    zp, lp, cp, rp = z[::ps, ::ps], lab[::ps, ::ps], conf[::ps, ::ps], rays[::ps, ::ps]
    sel = has_depth[::ps, ::ps] & (lp < OCC3D_NUM_SEMANTIC) & ~sky[::ps, ::ps]
    points = rp[sel] * zp[sel][:, None]
    weights = cp[sel].clamp(0, 1) * float(ps * ps)

    def ray_ends(stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        zr, rr, skr = z[::stride, ::stride], rays[::stride, ::stride], sky[::stride, ::stride]
        cast = (has_depth[::stride, ::stride] & ~skr) | skr
        dirs = rr[cast]
        ends = torch.where(
            skr[cast][:, None],
            dirs / dirs.norm(dim=-1, keepdim=True) * opts.sky_range_m,
            dirs * torch.nan_to_num(zr[cast], nan=0.0)[:, None],
        )
        return ends, skr[cast]

    ends, ray_sky = ray_ends(opts.ray_stride)
    mask_ends = ray_ends(opts.mask_stride)[0] if with_mask else None
    return View(
        frame=frame,
        camera=camera,
        T_world_from_cam=np.eye(4) if T_world_from_cam is None else np.asarray(T_world_from_cam, np.float64),
        points_cam=points,
        labels=lp[sel],
        weights=weights,
        ray_ends_cam=ends,
        ray_sky=ray_sky,
        mask_ends_cam=mask_ends,
    )


def fuse_keyframe(
    views: Iterable[View],
    key_frame: int,
    T_world_from_egokey: np.ndarray,
    grid: VoxelGrid,
    opts: VoxelizeOptions,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Fuse prepared views into the voxel labels of one keyframe (see the module docstring).

    Args:
        views: the window's views (their ``frame`` relative to ``key_frame`` decides static/moving use).
        key_frame: position of the keyframe in the scene.
        T_world_from_egokey: <float64: 4, 4> the keyframe's ego pose; the grid lives in its ego frame
            (or in the frame ``opts.T_ego_from_grid`` places there).
    Returns:
        numpy arrays over the grid (X, Y, Z): semantics uint8, mask_camera bool, confidence uint8,
        hits uint16, passes uint16; and "stats" (points, rays, samples counted).
    """
    dev = torch.device(device)
    shape = grid.shape
    V = shape[0] * shape[1] * shape[2]
    NC = OCC3D_NUM_SEMANTIC
    moving_lut = torch.zeros(256, dtype=torch.bool, device=dev)
    if opts.moving_classes:
        moving_lut[list(opts.moving_classes)] = True
    T_grid_from_world = invert_rigid(T_world_from_egokey)
    if opts.T_ego_from_grid is not None:
        T_grid_from_world = invert_rigid(np.asarray(opts.T_ego_from_grid, np.float64)) @ T_grid_from_world

    pts, labs, wts, near_pt, key_pt, mask_o, mask_e = [], [], [], [], [], [], []
    rays: dict[str, tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = {
        g: ([], [], []) for g in ("key", "near", "far")
    }
    for v in views:
        dt = abs(v.frame - key_frame)
        T = torch.as_tensor(T_grid_from_world @ v.T_world_from_cam, dtype=torch.float32, device=dev)
        R, t = T[:3, :3], T[:3, 3]
        n = v.points_cam.shape[0]
        pts.append(v.points_cam @ R.T + t)
        labs.append(v.labels)
        wts.append(v.weights)
        near_pt.append(torch.full((n,), dt <= opts.moving_window, dtype=torch.bool, device=dev))
        key_pt.append(torch.full((n,), dt == 0, dtype=torch.bool, device=dev))
        group = "key" if dt == 0 else ("near" if dt <= opts.moving_window else "far")
        ends = v.ray_ends_cam @ R.T + t
        rays[group][0].append(t.expand_as(ends))
        rays[group][1].append(ends)
        rays[group][2].append(v.ray_sky)
        if dt == 0:
            if v.mask_ends_cam is None:
                raise ValueError(f"view {v.camera}/{v.frame} of the keyframe was prepared without mask rays")
            me = v.mask_ends_cam @ R.T + t
            mask_o.append(t.expand_as(me))
            mask_e.append(me)

    counts = torch.zeros(V, dtype=torch.long, device=dev)
    votes = torch.zeros(V * NC, dtype=torch.float32, device=dev)
    seen = torch.zeros(V, dtype=torch.bool, device=dev)
    n_points = 0
    if pts:
        p = torch.cat(pts)
        lab = torch.cat(labs)
        w = torch.cat(wts)
        near = torch.cat(near_pt)
        key = torch.cat(key_pt)
        idx, valid = points_to_voxels(p, grid)
        flat = flat_index(idx, shape)
        use = valid & (~moving_lut[lab] | near)
        n_points = int(use.sum())
        counts += torch.bincount(flat[use], minlength=V)
        votes.index_add_(0, flat[use] * NC + lab[use], w[use])
        seen[flat[valid & key]] = True
    votes = votes.view(V, NC)

    passes_static = torch.zeros(V, dtype=torch.long, device=dev)
    passes_moving = torch.zeros(V, dtype=torch.long, device=dev)
    n_rays = n_samples = 0
    for group, (origins, ends, sky) in rays.items():
        if not origins:
            continue
        o, e, s = torch.cat(origins), torch.cat(ends), torch.cat(sky)
        n_rays += o.shape[0]
        if opts.stop_frac > 0:
            e_free = torch.where(s[:, None], e, o + (e - o) * (1.0 - opts.stop_frac))
        else:
            e_free = e
        for chunk in ray_free_samples(o, e_free, grid, step_fraction=opts.step_fraction, chunk=opts.chunk):
            n_samples += chunk.numel()
            b = torch.bincount(chunk, minlength=V)
            passes_static += b
            if group != "far":
                passes_moving += b
    if mask_o:
        # mask_camera: the keyframe's rays all the way to their surface point (as Occ3D's ray casting)
        o, e = torch.cat(mask_o), torch.cat(mask_e)
        n_rays += o.shape[0]
        for chunk in ray_free_samples(
            o, e, grid, step_fraction=opts.step_fraction, stop_before=0.0, chunk=opts.chunk
        ):
            n_samples += chunk.numel()
            seen[chunk] = True

    pass_w = opts.step_fraction * opts.ray_stride**2
    evidence = votes.sum(1)
    best_votes, best = votes.max(1)
    passes = torch.where(moving_lut[best], passes_moving, passes_static).float() * pass_w
    occupied = (evidence >= opts.min_hits) & (evidence >= opts.occ_ratio * passes) & (evidence > 0)
    passes_s = passes_static.float() * pass_w
    free = ~occupied & ((passes_static > 0) | seen)

    semantics = torch.where(occupied, best, torch.full_like(best, FREE))
    pix = counts.float() * float(opts.point_stride**2)
    conf_occ = best_votes / pix.clamp(min=1e-9)
    conf_free = passes_s / (passes_s + evidence).clamp(min=1e-9)
    confidence = torch.where(occupied, conf_occ, torch.where(free, conf_free, torch.zeros_like(conf_free)))

    def out(x: torch.Tensor, dtype) -> np.ndarray:
        return x.view(shape).cpu().numpy().astype(dtype)

    return {
        "semantics": out(semantics, np.uint8),
        "mask_camera": out(seen, bool),
        "confidence": out((confidence.clamp(0, 1) * 255).round(), np.uint8),
        "hits": out(counts.clamp(max=65535), np.uint16),
        "passes": out(torch.where(passes_s > 0, passes_s.round().clamp(1, 65535), 0.0), np.uint16),
        "stats": {
            "points": n_points,
            "rays": n_rays,
            "samples": n_samples,
            "occupied": int(occupied.sum()),
            "free": int(free.sum()),
            "mask_camera": int(seen.sum()),
        },
    }


# --------------------------------------------------------------------------------------------------
# Inputs (I/O only)
# --------------------------------------------------------------------------------------------------


class _ViewSource:
    """Prepared views of one scene, kept while keyframe windows need them."""

    def __init__(self, cache: Cache, scene: str, opts: VoxelizeOptions, device: torch.device):
        self.cache, self.scene, self.opts, self.device = cache, scene, opts, device
        self.cameras = cache.cameras(scene)
        self.keyframes = {t for t, k in enumerate(cache.scene_meta(scene)["keyframes"]) if k}
        self.geometry = {cam: cache.geometry(scene, cam) for cam in self.cameras}
        self._views: dict[tuple[str, int], View | None] = {}
        self.skipped: dict[str, int] = {}

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def views(self, frames: range) -> list[View]:
        out = []
        for t in frames:
            for cam in self.cameras:
                if not self.geometry[cam]["present"][t]:
                    continue
                k = (cam, t)
                if k not in self._views:
                    self._views[k] = self._load(cam, t)
                if self._views[k] is not None:
                    out.append(self._views[k])
        return out

    def evict_before(self, t0: int) -> None:
        for k in [k for k in self._views if k[1] < t0]:
            del self._views[k]

    def _load(self, cam: str, t: int) -> View | None:
        raise NotImplementedError

    def _view(self, cam: str, t: int, depth: np.ndarray, labels: np.ndarray, conf: np.ndarray) -> View:
        """Prepare frame ``t`` of ``cam`` from its metric depth, labels and confidence <float32: h, w>."""
        g = self.geometry[cam]
        return prepare_view(
            depth,
            labels,
            conf,
            g["K"][t],
            self.opts,
            self.device,
            t,
            cam,
            g["T_world_from_cam"][t],
            with_mask=t in self.keyframes,
        )


class _CacheViews(_ViewSource):
    """Calibrated metric depth and semantics from the cache."""

    def __init__(self, cache, scene, opts, device, depth_key: str, semantics_key: str):
        super().__init__(cache, scene, opts, device)
        self.depth_key, self.semantics_key = depth_key, semantics_key
        self.space, self.cal, self.depth_done, self.sem_done = {}, {}, {}, {}
        for cam in self.cameras:
            self.space[cam] = cache.depth_attrs(scene, cam, depth_key).get("space", "disparity")
            if not cache.has_calibration(scene, cam, depth_key):
                raise StoreError(
                    f"{cache.path}: {scene}/{cam} depth {depth_key!r} is not calibrated; run calibrate-depth first"
                )
            self.cal[cam] = cache.read_calibration(scene, cam, depth_key)
            self.depth_done[cam] = cache.depth_done(scene, cam, depth_key)
            self.sem_done[cam] = cache.semantics_done(scene, cam, semantics_key)

    def _load(self, cam: str, t: int) -> View | None:
        if not (self.depth_done[cam][t] and self.sem_done[cam][t]):
            self._skip("not extracted")
            return None
        cal = self.cal[cam]
        if not cal["done"][t]:
            self._skip("not calibrated")
            return None
        rel = self.cache.read_depth(self.scene, cam, self.depth_key, t)
        depth = depth_from_relative(
            rel, float(cal["scale"][t]), float(cal["shift"][t]), self.space[cam], self.opts.max_depth_m
        )
        labels, conf = self.cache.read_semantics(self.scene, cam, self.semantics_key, t)
        return self._view(cam, t, depth, labels, conf)


class _GTViews(_ViewSource):
    """Ground-truth depth and 2D semantics from the dataset, resized to the cache's working resolution."""

    def __init__(self, cache, scene, opts, device, dataset):
        super().__init__(cache, scene, opts, device)
        self.frames = dataset.scene(scene).frames
        tokens = cache.scene_meta(scene)["tokens"]
        if [f.token for f in self.frames] != list(tokens):
            raise StoreError(
                f"{cache.path}: scene {scene!r} has other frames than the dataset; re-run extract-2d"
            )
        self.size = {
            cam: (cache.camera_meta(scene, cam)["height"], cache.camera_meta(scene, cam)["width"])
            for cam in self.cameras
        }

    def _load(self, cam: str, t: int) -> View | None:
        from occlabel.datasets.base import load_depth_m, load_semantics

        im = self.frames[t].images.get(cam)
        if im is None:
            return None
        if im.depth_path is None or im.semantics_path is None:
            raise OccLabelError(
                f"voxelize source='gt': {self.scene}/{self.frames[t].token}/{cam} has no ground-truth "
                f"{'depth' if im.depth_path is None else 'semantics'} in the dataset"
            )
        h, w = self.size[cam]
        depth = resize_nearest(load_depth_m(im.depth_path), h, w)
        labels = resize_nearest(load_semantics(im.semantics_path), h, w)
        return self._view(cam, t, depth, labels, np.ones((h, w), np.float32))


# --------------------------------------------------------------------------------------------------
# Stage entry point
# --------------------------------------------------------------------------------------------------


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
        cache_path: CACHE.zarr (or an open Cache) with extract-2d and calibrate-depth done
            (``source="gt"`` needs only its scenes and geometry, and the dataset's GT depth/semantics).
        out: labels store to write; resumed when it exists (done samples are skipped) unless ``overwrite``.
        grid: preset name (conventions.GRIDS) or a VoxelGrid.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:N".
        depth_key, semantics_key: cache results to use (default: the cache's defaults).
        window: frames each side of the keyframe fused for static classes.
        min_hits: minimum evidence of an occupied voxel (confidence-weighted pixels).
        options: the other fields of VoxelizeOptions (source, moving_window, occ_ratio, ray_stride, ...).
    Returns:
        ``out`` as a Path.
    """
    opts = VoxelizeOptions.from_kwargs(window=window, min_hits=min_hits, **options)
    if isinstance(grid, str):
        try:
            grid = get_grid(grid)
        except KeyError as e:
            raise OccLabelError(str(e.args[0])) from None
    if grid.frame != "ego" and opts.T_ego_from_grid is None:
        raise OccLabelError(
            f"voxelize: grid {grid.name!r} lives in the {grid.frame!r} frame; pass T_ego_from_grid (4x4) to place it"
        )
    cache = cache_path if isinstance(cache_path, Cache) else open_cache(cache_path)
    dev = resolve_device(device)
    dataset = None
    if opts.source == "cache":
        depth_key = cache.resolve_key("depth", depth_key)
        semantics_key = cache.resolve_key("semantics", semantics_key)
    else:
        depth_key = semantics_key = None
        dataset = cache.open_dataset()
    names = list(scenes) if scenes else cache.scenes()
    for s in names:
        cache.scene_meta(s)  # raises a StoreError naming the scene when missing

    writer = LabelsWriter.create(
        out,
        grid,
        {
            "cache": str(Path(cache.path).resolve()),
            "source": opts.source,
            "depth_key": depth_key,
            "semantics_key": semantics_key,
            "options": asdict(opts),
        },
        overwrite=overwrite,
    )

    todo: list[tuple[str, list[int]]] = []
    for s in names:
        smeta = cache.scene_meta(s)
        keys = [t for t, k in enumerate(smeta["keyframes"]) if k]
        writer.init_scene(
            s,
            tokens=[smeta["tokens"][t] for t in keys],
            frame_indices=keys,
            timestamps=[smeta["timestamps"][t] for t in keys],
            T_world_from_ego=cache.root[s]["T_world_from_ego"][:][keys] if keys else np.zeros((0, 4, 4)),
        )
        done = writer.done(s)
        todo.append((s, [i for i in range(len(keys)) if not done[i]]))

    total = sum(len(ix) for _, ix in todo)
    bar = progress_bar(total=total, desc="voxelize", enabled=progress, unit="kf")
    t_load = t_fuse = t_write = 0.0
    cpu0 = time.process_time()
    stats_sum: dict[str, int] = {}
    skipped: dict[str, int] = {}
    n_written = 0
    for s, indices in todo:
        if not indices:
            continue
        smeta = cache.scene_meta(s)
        T = len(smeta["tokens"])
        keys = [t for t, k in enumerate(smeta["keyframes"]) if k]
        T_we = cache.root[s]["T_world_from_ego"][:]
        if opts.source == "cache":
            src: _ViewSource = _CacheViews(cache, s, opts, dev, depth_key, semantics_key)
        else:
            src = _GTViews(cache, s, opts, dev, dataset)
        for n, i in enumerate(indices):
            tk = keys[i]
            t0 = time.perf_counter()
            views = src.views(range(max(0, tk - opts.window), min(T, tk + opts.window + 1)))
            t1 = time.perf_counter()
            res = fuse_keyframe(views, tk, T_we[tk], grid, opts, dev)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t2 = time.perf_counter()
            writer.write_sample(s, i, res)
            t3 = time.perf_counter()
            t_load, t_fuse, t_write = t_load + t1 - t0, t_fuse + t2 - t1, t_write + t3 - t2
            for k, v in res["stats"].items():
                stats_sum[k] = stats_sum.get(k, 0) + v
            n_written += 1
            if not views:
                skipped["keyframes without views"] = skipped.get("keyframes without views", 0) + 1
            if n + 1 < len(indices):
                src.evict_before(keys[indices[n + 1]] - opts.window)
            bar.update(1)
        for k, v in src.skipped.items():
            skipped[f"views {k}"] = skipped.get(f"views {k}", 0) + v
    bar.close()
    if skipped:
        log.warning("voxelize: skipped %s", ", ".join(f"{v} {k}" for k, v in skipped.items()))
    writer.update_meta(
        drop=("evaluation",) if n_written else (),  # new samples make an earlier evaluation stale
        stats={
            "keyframes_written": n_written,
            "keyframes_skipped_done": sum(len(writer.done(s)) for s in names) - n_written,
            "seconds": {"load": round(t_load, 3), "fuse": round(t_fuse, 3), "write": round(t_write, 3)},
            "seconds_per_keyframe": round((t_load + t_fuse + t_write) / n_written, 4) if n_written else None,
            "cpu_seconds_per_keyframe": round((time.process_time() - cpu0) / n_written, 4)
            if n_written
            else None,
            "device": str(dev),
            "totals": stats_sum,
            "skipped": skipped,
        },
    )
    return Path(out)


__all__ = ["run", "VoxelizeOptions", "View", "prepare_view", "fuse_keyframe"]
