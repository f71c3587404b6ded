"""Stage 3 — voxelize: fuse metric depth and 2D semantics over frames and cameras into voxel labels.

For every keyframe of a scene (output: one sample of LABELS.zarr, see occlabel.store.labels):

1. Lift. Every pixel with a metric depth and a class becomes a point in the grid's frame (the keyframe's
   ego frame, or a sensor frame placed in it, below),
   ``p_grid = T_grid_from_egokey @ T_egokey_from_world @ T_world_from_cam(t) @ (z · K⁻¹ [u, v, 1])``, for all
   cameras of the frames ``t`` within ``window`` frames of the keyframe. Static classes accumulate over the
   whole window; classes that can move (the class set's moving classes, or ``moving_classes``) only from
   frames within ``moving_window`` frames (default: the keyframe alone), so moving objects do not leave
   trails — except that far-frame points of a moving class count where the near frames voted that class
   (within ``moving_consistent`` voxels: a parked car is seen by the whole window), and a voxel takes the
   moving class its near-frame votes give at least ``moving_share`` of their votes there (so the far
   frames' static votes, boundary flips onto a parked car included, cannot outvote the keyframe).
   Each point votes for its class in its voxel with its semantic confidence times a range weight
   ``1 / (1 + (z / range_weight_m)²)`` (estimated depth: its error grows with range, so near views of a
   place outvote far ones; scatter-add over voxel × class). ``evidence`` = the confidence-weighted points,
   in pixel units (multiplied by point_stride²), without the range weight.
   Estimated depth first loses its *flying pixels* (:func:`flying_pixels`): the ramps that a blurred depth
   map draws across occlusion boundaries, which are neither the foreground nor the background surface.
2. Carve. Every ``ray_stride``-th pixel casts a ray from the camera centre toward its point; the voxels it
   crosses (geometry.voxel.ray_free_samples, a sample every step_fraction·voxel) collect free-space
   ``passes`` (ray length in voxels, scaled by ray_stride² to compare with pixel-unit evidence, and by
   the range weight of the ray's point). A ray stops short of its point by ``stop_frac`` of its length
   plus ``clearance`` voxels *measured along the surface normal* (estimated from the depth map,
   :func:`surface_cos`), at least one voxel: a ray that meets a surface at a grazing angle — the road
   ahead, a facade along the street — runs just above that surface for metres and would otherwise carve
   the voxels the surface itself occupies. Sky pixels (conventions.SKY) carve to ``sky_range_m``; pixels
   without depth cast nothing.
   A voxel is **occupied** when ``evidence >= min_hits`` and its range-weighted votes reach
   ``occ_ratio`` × its range-weighted passes, where passes count rays from the whole window for a voxel
   whose winning class is static, and only rays from the moving window for a moving class (the space a
   car fills now was free a second ago). It is **free** when not occupied and crossed by some ray (or
   seen from the keyframe, below), and **unknown** otherwise.
3. mask_camera: voxels crossed or hit by a ray of the keyframe's own cameras — the Occ3D meaning
   ("visible from the cameras of this sample"): every ``mask_stride``-th pixel's ray all the way to its
   surface point (sky: to sky_range_m), plus the voxels holding the keyframe's points.
4. Output, on the grid (default occ3d, 200×200×16 at 0.4 m): semantics <uint8: X, Y, Z> = winning class
   where occupied, the class set's free id (Occ3D 17, SemanticKITTI 0) elsewhere — **unknown voxels are
   written as free too, with mask_camera 0** (the Occ3D layout has no "unknown" label; users must apply
   mask_camera, exactly as Occ3D trainers and the Occ3D metric do). Every mask_camera voxel is occupied
   or free, never unknown.
   **TSDF** (``tsdf``, default for estimated depth): a noisy depth (σ ~0.5-1 m at 20 m) spreads a surface's
   points over several voxels, so votes alone make it thick and carving erodes it. Every
   ``tsdf_stride``-th pixel with a depth and a class also casts samples (every step_fraction voxel) in a
   band of ±``tsdf_band`` voxels *along the surface normal* around its point (at most tsdf_band /
   tsdf_min_cos along the ray); each carries the truncated signed distance (measured depth minus sample
   distance, along the ray, times |cos| to the normal: + in front, − behind) with its confidence × range
   weight; carving passes count as samples at +band (``tsdf_carve``). Errors are independent from image
   to image, so the weighted mean over the window localises the surface to a fraction of the noise. A
   voxel of a static class is occupied where that mean is <= ``tsdf_occ`` voxels (the surface crosses
   it, or it lies behind: inside the solid, which the keyframe's cameras do not see); voxels of a moving
   class (fused from the near frames only: little to average) keep the vote test unless ``tsdf_moving``,
   and so do voxels no TSDF sample reaches (points between the tsdf_stride rays).
   Voxels placed by the TSDF without point votes take the class of the band's votes (weighted towards
   the band's centre). confidence <uint8> = 255 × (confidence-weighted share of the winning class)
   for occupied voxels, 255 × passes / (passes + votes) for free voxels, 0 for unknown. hits <uint16> =
   number of points in the voxel, passes <uint16> = ray length through the voxel in voxel units, without
   the range weight (at least 1 where any ray passed; both saturate at 65535).

Defaults that depend on the depth (``source``): estimated depth (the cache's calibrated depth) fuses with
``occ_ratio`` 0.5, ``edge_tol`` 0.1 and ``range_weight_m`` 10; the dataset's ground-truth depth with 0, 0
and 0 (exact depth has no floaters or flying pixels to reject, and voxels at grazing angles keep far more
passes than hits). Measured by `make bench` (scripts/bench.py, voxelize_ablation).

Sources: "cache" (calibrated depth and semantics of the cache), "gt" (the dataset's ground-truth depth
and 2D semantics, resized to the cache's working resolution with nearest-neighbour, through the same
fusion: the gap between "labels from GT inputs" and "labels from estimated inputs" measures the estimates,
not the fusion), and the two halves "gt-depth" (GT depth, the cache's semantics) and "gt-semantics" (the
cache's depth, GT semantics), which split that gap between depth and semantics.

Classes: the labels use the class set of their 2D semantics (occlabel.store.labels.ClassSet): Occ3D (0-16,
free 17) by default and for the dataset's GT semantics, SemanticKITTI (1-19, free 0) when the semantics
were made with the ``semantickitti`` vocabulary, any other vocabulary's ids otherwise; ``classes``
overrides.

Grids not in the ego frame (SemanticKITTI's velodyne frame, SurroundOcc's LiDAR frame) sit on each
keyframe's LiDAR: the dataset's ``frame.T_ego_from_lidar`` (the KITTI adapter's ``T_ego_from_cam0 @ Tr``,
nuScenes' lidar2ego). Without one they are placed by ``T_ego_from_grid`` (one rigid 4×4 for every
keyframe), or by ``grid_camera`` + ``T_cam_from_grid``: the grid's pose relative to one camera, turned
into each keyframe's ``T_ego_from_grid = T_ego_from_world(t) @ T_world_from_cam(t) @ T_cam_from_grid``
(KITTI: the velodyne frame is ``Tr`` of calib.txt relative to camera 0, :func:`kitti_T_cam_from_velo`).
The pose of every sample is stored with it (``T_ego_from_grid``).

Everything per keyframe is vectorised torch on one device (CUDA when present): no Python loops over
pixels, points, rays or voxels (only over the camera views of the window). Camera views are prepared
once (camera-frame points and ray ends) and reused by the keyframes whose windows overlap.
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

from occlabel.conventions import SKY, UNLABELED, VoxelGrid, get_grid, invert_rigid, is_rigid
from occlabel.errors import OccLabelError, StoreError
from occlabel.geometry.voxel import flat_index, points_to_voxels, ray_free_samples, ray_segment_samples
from occlabel.store.cache import Cache, depth_from_relative, open_cache
from occlabel.store.common import location_str, store_location
from occlabel.store.labels import (
    CLASS_SETS,
    OCC3D,
    ClassSet,
    LabelsWriter,
    class_set_from_vocabulary,
)
from occlabel.utils import progress_bar, resize_nearest, resolve_device

log = logging.getLogger(__name__)

#: sources and where each takes (depth, semantics) from
SOURCES = {
    "cache": ("cache", "cache"),
    "gt": ("gt", "gt"),
    "gt-depth": ("gt", "cache"),
    "gt-semantics": ("cache", "gt"),
}


@dataclass
class VoxelizeOptions:
    """Fusion options (all recorded in the labels store; a resumed run must use the same ones).

    Fields left None that depend on ``source`` are resolved on creation (:meth:`resolve`); ``classes`` and
    ``moving_classes`` left None follow the 2D semantics (:func:`resolve_classes`).
    """

    #: "cache", "gt", "gt-depth" or "gt-semantics" (see the module docstring)
    source: str = "cache"
    #: frames each side of the keyframe whose static-class points and rays are fused
    window: int = 8
    #: frames each side whose moving-class points (and, for moving voxels, rays) count
    moving_window: int = 0
    #: class set of the labels ("occ3d", "semantickitti" or a vocabulary YAML); None: the semantics'
    classes: str | None = None
    #: classes that can move (accumulated only within moving_window); None: the class set's
    moving_classes: tuple[int, ...] | None = None
    #: minimum evidence (confidence-weighted points, pixel units) of an occupied voxel
    min_hits: float = 1.0
    #: occupied needs range-weighted votes >= occ_ratio * range-weighted passes; None: 0.5 for estimated
    #: depth (rejects floaters of noisy depth), 0 for ground-truth depth (has none)
    occ_ratio: float | None = None
    #: lift every n-th pixel along rows and columns
    point_stride: int = 1
    #: cast free-space rays from every n-th pixel along rows and columns
    ray_stride: int = 4
    #: mask_camera rays of the keyframe's cameras from every n-th pixel along rows and columns
    mask_stride: int = 2
    #: ray sample spacing, in voxels
    step_fraction: float = 0.5
    #: free-space rays stop this fraction of their length short of the point (on top of the clearance)
    stop_frac: float = 0.0
    #: free-space rays stop this many voxels from the surface, measured along its normal (at least one
    #: voxel along the ray); 0: one voxel along the ray whatever the angle
    clearance: float = 1.0
    #: pixel step of the finite differences that estimate surface normals
    normal_step: int = 2
    #: votes and passes weigh 1 / (1 + (z / range_weight_m)^2) by the depth z of their point; 0: off;
    #: None: 10 for estimated depth, 0 for ground-truth depth
    range_weight_m: float | None = None
    #: flying-pixel filter: relative inverse-depth slope per pixel (see flying_pixels); 0: off; None: 0.1
    #: for estimated depth, 0 for ground-truth depth
    edge_tol: float | None = None
    #: TSDF surface localisation (see the module docstring); None: on for estimated depth, off for
    #: ground-truth depth
    tsdf: bool | None = None
    #: TSDF truncation: the band of signed distances around each measured surface, voxels (normal distance)
    tsdf_band: float = 3.0
    #: TSDF: occupied where the weighted mean signed distance is <= this many voxels (in front of the
    #: surface; behind it is negative)
    tsdf_occ: float = 0.5
    #: TSDF rays from every n-th pixel along rows and columns
    tsdf_stride: int = 2
    #: TSDF: |cos| floor of a ray's band: along the ray it reaches at most tsdf_band / tsdf_min_cos voxels
    tsdf_min_cos: float = 0.25
    #: TSDF: voxels behind the surface (mean signed distance < -tsdf_occ voxels, inside the solid) are
    #: occupied too; False: only the surface layer |mean| <= tsdf_occ
    tsdf_behind: bool = True
    #: TSDF: each free-space pass (step_fraction voxel of a carving ray) counts as this many band samples
    #: of signed distance +tsdf_band (space carving: a ray that passes a voxel says it lies in front of
    #: every surface); 0: off
    tsdf_carve: float = 1.0
    #: TSDF test also for voxels of a moving class (fused from the near frames only, so there is little
    #: to average: the voting test decides them by default)
    tsdf_moving: bool = False
    #: a voxel takes the moving class that its near-frame (moving_window) votes give at least this share
    #: of all their votes there (the far frames' static votes, boundary flips included, cannot outvote
    #: it); 0: off
    moving_share: float = 0.5
    #: far-frame points (and TSDF rays) of a moving class count where the near frames voted that class
    #: within this many voxels (a parked car is seen by the whole window); -1: off
    moving_consistent: int = 0
    #: sky rays carve up to this distance from the camera, metres
    sky_range_m: float = 100.0
    #: depth beyond this is treated as unknown (no point, no ray), metres
    max_depth_m: float = 200.0
    #: pixels labelled UNLABELED that have a depth: "ignore" (free-space ray only) or "others" (class 0,
    #: class sets with a class 0 only)
    unlabeled: str = "ignore"
    #: ray samples materialised at once (bounds memory)
    chunk: int = 1 << 22
    #: <4 x 4> pose of the grid's frame in the ego frame, for grids not in the ego frame (None: identity)
    T_ego_from_grid: list | None = None
    #: camera the grid is placed relative to (with T_cam_from_grid), e.g. KITTI's velodyne from camera 0
    grid_camera: str | None = None
    #: <4 x 4> pose of the grid's frame in ``grid_camera``'s frame
    T_cam_from_grid: list | None = None

    def __post_init__(self) -> None:
        self.resolve()

    @property
    def estimated_depth(self) -> bool:
        return SOURCES.get(self.source, ("cache",))[0] == "cache"

    def resolve(self) -> VoxelizeOptions:
        """Fill the source-dependent defaults (in place); returns self."""
        est = self.estimated_depth
        if self.occ_ratio is None:
            self.occ_ratio = 0.5 if est else 0.0
        if self.range_weight_m is None:
            self.range_weight_m = 10.0 if est else 0.0
        if self.edge_tol is None:
            self.edge_tol = 0.1 if est else 0.0
        if self.tsdf is None:
            self.tsdf = est
        return self

    @classmethod
    def from_kwargs(cls, **kw: Any) -> VoxelizeOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise OccLabelError(
                f"voxelize: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        o = cls(**kw).resolve()
        if o.moving_classes is not None:
            o.moving_classes = tuple(int(c) for c in o.moving_classes)
        for name in ("T_ego_from_grid", "T_cam_from_grid"):
            if getattr(o, name) is not None:
                setattr(o, name, np.asarray(getattr(o, name), np.float64).tolist())
        o.validate()
        return o

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise OccLabelError(f"voxelize: source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.unlabeled not in ("ignore", "others"):
            raise OccLabelError(f"voxelize: unlabeled must be 'ignore' or 'others', got {self.unlabeled!r}")
        if self.window < 0 or self.moving_window < 0 or self.moving_window > self.window:
            raise OccLabelError("voxelize: need 0 <= moving_window <= window")
        if min(self.point_stride, self.ray_stride, self.mask_stride, self.normal_step, self.tsdf_stride) < 1:
            raise OccLabelError(
                "voxelize: point_stride, ray_stride, mask_stride, normal_step and tsdf_stride must be >= 1"
            )
        if self.tsdf_band <= 0 or not 0 < self.tsdf_min_cos <= 1 or self.tsdf_carve < 0:
            raise OccLabelError("voxelize: need tsdf_band > 0, 0 < tsdf_min_cos <= 1 and tsdf_carve >= 0")
        if not 0 <= self.moving_share <= 1 or self.moving_consistent < -1:
            raise OccLabelError("voxelize: need 0 <= moving_share <= 1 and moving_consistent >= -1")
        if not 0 < self.step_fraction <= 1:
            raise OccLabelError("voxelize: step_fraction must be in (0, 1]")
        if not 0 <= self.stop_frac < 1:
            raise OccLabelError("voxelize: stop_frac must be in [0, 1)")
        if self.min_hits <= 0 or self.occ_ratio < 0:
            raise OccLabelError("voxelize: need min_hits > 0 and occ_ratio >= 0")
        if self.clearance < 0 or self.range_weight_m < 0 or self.edge_tol < 0:
            raise OccLabelError("voxelize: clearance, range_weight_m and edge_tol must be >= 0")
        for name in ("T_ego_from_grid", "T_cam_from_grid"):
            T = getattr(self, name)
            if T is not None and not is_rigid(np.asarray(T, np.float64)):
                raise OccLabelError(f"voxelize: {name} must be a rigid 4x4 transform, got {T!r}")
        if (self.grid_camera is None) != (self.T_cam_from_grid is None):
            raise OccLabelError("voxelize: grid_camera and T_cam_from_grid go together")
        if self.grid_camera is not None and self.T_ego_from_grid is not None:
            raise OccLabelError("voxelize: give T_ego_from_grid or grid_camera + T_cam_from_grid, not both")


def resolve_classes(
    opts: VoxelizeOptions,
    cache: Cache | None = None,
    scene: str | None = None,
    semantics_key: str | None = None,
) -> ClassSet:
    """The class set of the labels: ``opts.classes``, else that of the 2D semantics they are made from.

    The cache's semantics record their vocabulary (:meth:`Cache.vocabulary`; semantics without one, the
    oracle and imported files, are Occ3D); the dataset's GT semantics are Occ3D.
    """
    from occlabel.models.vocab import load_vocabulary

    if (
        opts.classes is None
        and SOURCES[opts.source][1] == "cache"
        and cache is not None
        and scene is not None
    ):
        return class_set_from_vocabulary(cache.vocabulary(scene, cache.cameras(scene)[0], semantics_key))
    name = opts.classes
    if name is None or name == "occ3d":
        return OCC3D
    if name in CLASS_SETS:
        return CLASS_SETS[name]
    try:
        return class_set_from_vocabulary(load_vocabulary(name))
    except OccLabelError as e:
        raise OccLabelError(f"voxelize: class set {name!r}: {e}") from None


def read_matrix(spec: str | Path) -> np.ndarray:
    """A rigid transform <np.float64: 4, 4> from 12 or 16 comma/space-separated numbers (row-major; 12 =
    the top 3 × 4) or a file holding them (.txt, or .npy / .json of a 3 × 4 or 4 × 4 array).

    ``kitti:CALIB[:Pk]`` reads a KITTI odometry calib.txt and gives the velodyne's pose in camera k
    (:func:`kitti_T_cam_from_velo`; default P0, the frame ``Tr`` refers to).
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


def kitti_T_cam_from_velo(calib_path: str | Path, camera: str = "P0") -> np.ndarray:
    """The velodyne frame in (rectified) camera ``camera``'s frame, <np.float64: 4, 4>, from a KITTI
    odometry ``calib.txt`` (lines ``P0: ...`` … ``P3: ...``, ``Tr: ...``).

    ``Tr`` maps velodyne points into camera 0. The other cameras of the odometry calibration are camera
    0 shifted along x (rectified stereo): camera k's projection is ``P_k = K [I | t_k]`` with
    ``t_k = K⁻¹ P_k[:, 3]``, so ``T_camk_from_velo = [I | t_k] @ Tr`` (SemanticKITTI's SSC grid is in
    this velodyne frame; MonoScene projects it into camera 2 the same way).
    """
    path = Path(calib_path)
    try:
        rows = {}
        for line in path.read_text().splitlines():
            key, sep, rest = line.partition(":")
            if sep:
                rows[key.strip()] = np.array(rest.split(), np.float64)
    except (OSError, ValueError) as e:
        raise OccLabelError(f"{path}: cannot read KITTI calibration ({e})") from None
    if "Tr" not in rows or rows["Tr"].size != 12:
        raise OccLabelError(f"{path}: no 'Tr:' line with 12 numbers (KITTI odometry calib.txt)")
    Tr = np.eye(4)
    Tr[:3] = rows["Tr"].reshape(3, 4)
    if camera not in rows or rows[camera].size != 12:
        raise OccLabelError(f"{path}: no '{camera}:' line with 12 numbers")
    P = rows[camera].reshape(3, 4)
    T_camk_from_cam0 = np.eye(4)
    T_camk_from_cam0[:3, 3] = np.linalg.solve(P[:, :3], P[:, 3])
    T = T_camk_from_cam0 @ Tr
    # KITTI's Tr is rigid only to ~1e-6; re-orthonormalise the rotation so downstream checks pass
    u, _, vt = np.linalg.svd(T[:3, :3])
    T[:3, :3] = u @ vt
    return T


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
        labels: ``[N]`` long class ids.
        weights: ``[N]`` float32 vote weight = semantic confidence × point_stride².
        point_range_w: ``[N]`` float32 range weight of each point (1 without range weighting).
        ray_ends_cam: ``[M x 3]`` float32 ray end points (ray_stride pixels with a depth, or sky).
        ray_sky: ``[M]`` bool, the ray is a sky ray (ends at sky_range_m).
        ray_cos: ``[M]`` float32 |cos| of the angle between the ray and the surface normal at its end
            (1 where no normal could be estimated, and for sky rays).
        ray_range_w: ``[M]`` float32 range weight of each ray (1 for sky rays).
        mask_ends_cam: ``[L x 3]`` float32 ends of the mask_camera rays (mask_stride pixels with a depth,
            or sky), or None when the view was prepared without them (only keyframe views need them).
        band_ends_cam: ``[B x 3]`` float32 surface points of the TSDF rays (tsdf_stride pixels with a depth
            and a class; empty when opts.tsdf is off).
        band_labels: ``[B]`` long class ids of those pixels.
        band_weights: ``[B]`` float32 TSDF weight = semantic confidence × range weight.
        band_cos: ``[B]`` float32 |cos| between ray and surface normal there (as ray_cos).
    """

    frame: int
    camera: str
    T_world_from_cam: np.ndarray
    points_cam: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    point_range_w: torch.Tensor
    ray_ends_cam: torch.Tensor
    ray_sky: torch.Tensor
    ray_cos: torch.Tensor
    ray_range_w: torch.Tensor
    mask_ends_cam: torch.Tensor | None = None
    band_ends_cam: torch.Tensor | None = None
    band_labels: torch.Tensor | None = None
    band_weights: torch.Tensor | None = None
    band_cos: torch.Tensor | None = None


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
    classes: ClassSet = OCC3D,
) -> View:
    """Camera-frame points and ray ends of one image.

    Args:
        depth_m: <float: h, w> metric z-depth, NaN / <= 0 where unknown (sky may be NaN or anything).
        labels: <uint8: h, w> class ids of ``classes``, SKY, UNLABELED (other ids: no point, ray only).
        confidence: <float: h, w> semantic confidence in [0, 1].
        K: <float: 3, 3> intrinsics of this (h, w) image.
        opts: resolved options (:meth:`VoxelizeOptions.resolve`).
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
    sky = lab == SKY
    has_depth = torch.isfinite(z) & (z > 0) & (z <= opts.max_depth_m) & ~sky
    nan = torch.full_like(z, float("nan"))
    if opts.edge_tol > 0:
        has_depth &= ~flying_pixels(torch.where(has_depth, z, nan), opts.edge_tol)
    if opts.range_weight_m > 0:
        range_w = 1.0 / (1.0 + (torch.nan_to_num(z, nan=0.0) / opts.range_weight_m) ** 2)
    else:
        range_w = torch.ones_like(z)
    if opts.unlabeled == "others" and 0 in classes.names:
        lab = torch.where(lab == UNLABELED, torch.zeros_like(lab), lab)
    is_class = torch.as_tensor(classes.is_class(), device=dev)

    ps = opts.point_stride
    zp, lp, cp, rp = z[::ps, ::ps], lab[::ps, ::ps], conf[::ps, ::ps], rays[::ps, ::ps]
    sel = has_depth[::ps, ::ps] & is_class[lp]
    points = rp[sel] * zp[sel][:, None]
    weights = cp[sel].clamp(0, 1) * float(ps * ps)
    cos = surface_cos(torch.where(has_depth, z, nan), rays, opts.normal_step)

    def ray_ends(stride: int) -> tuple[torch.Tensor, ...]:
        zr, rr, skr = z[::stride, ::stride], rays[::stride, ::stride], sky[::stride, ::stride]
        cast = has_depth[::stride, ::stride] | skr
        dirs, sk = rr[cast], skr[cast]
        ends = torch.where(
            sk[:, None],
            dirs / dirs.norm(dim=-1, keepdim=True) * opts.sky_range_m,
            dirs * torch.nan_to_num(zr[cast], nan=0.0)[:, None],
        )
        one = torch.ones_like(ends[:, 0])
        c = torch.where(sk, one, cos[::stride, ::stride][cast])
        w = torch.where(sk, one, range_w[::stride, ::stride][cast])
        return ends, sk, c, w

    ends, ray_sky, ray_cos, ray_w = ray_ends(opts.ray_stride)
    mask_ends = ray_ends(opts.mask_stride)[0] if with_mask else None
    bs = opts.tsdf_stride if opts.tsdf else H * W + 1  # no TSDF rays when off
    lb = lab[::bs, ::bs]
    bsel = has_depth[::bs, ::bs] & is_class[lb]
    band_ends = rays[::bs, ::bs][bsel] * z[::bs, ::bs][bsel][:, None]
    return View(
        frame=frame,
        camera=camera,
        T_world_from_cam=np.eye(4) if T_world_from_cam is None else np.asarray(T_world_from_cam, np.float64),
        points_cam=points,
        labels=lp[sel],
        weights=weights,
        point_range_w=range_w[::ps, ::ps][sel],
        ray_ends_cam=ends,
        ray_sky=ray_sky,
        ray_cos=ray_cos,
        ray_range_w=ray_w,
        mask_ends_cam=mask_ends,
        band_ends_cam=band_ends,
        band_labels=lb[bsel],
        band_weights=conf[::bs, ::bs][bsel].clamp(0, 1) * range_w[::bs, ::bs][bsel],
        band_cos=cos[::bs, ::bs][bsel],
    )


def flying_pixels(depth_m: torch.Tensor, tol: float, ramp_ratio: float = 1.3) -> torch.Tensor:
    """Pixels on blurred depth discontinuities ("flying pixels" between a foreground and its background).

    Inverse depth of a planar surface is affine in the pixel coordinates at any slant (the road at grazing
    angles included); a blurred occlusion boundary is a short steep ramp between two surfaces. Along rows
    and along columns, a pixel is flagged when (a) its inverse depth changes by more than ``tol`` of itself
    per pixel over ±1 px, ``ramp_ratio`` times faster than over ±3 px (the middle of a ramp), or (b) it lies
    strictly between its neighbours ±k px (k = 1, 2) and bends by more than ``3 tol`` of itself there (the
    ends of a ramp). Local extrema are kept: a pole or a trunk a few pixels wide is a bump, not a ramp.

    Args:
        depth_m: ``[H x W]`` float32 z-depth, NaN where unknown (NaN neighbours count as inverse depth 0,
            "infinitely far": the rim of an object against the sky is tested like any other boundary).
        tol: relative slope per pixel (0.1 keeps a few percent of per-pixel noise).
    Returns:
        ``[H x W]`` bool.
    """
    inv = torch.nan_to_num(1.0 / depth_m, nan=0.0, posinf=0.0)
    H, W = inv.shape
    pad = torch.nn.functional.pad(inv[None, None], (3, 3, 3, 3), mode="replicate")[0, 0]
    c = inv

    def nb(dv: int, du: int) -> torch.Tensor:
        return pad[3 + dv : 3 + dv + H, 3 + du : 3 + du + W]

    flag = torch.zeros_like(c, dtype=torch.bool)
    for av, au in ((0, 1), (1, 0)):
        s1 = (nb(av, au) - nb(-av, -au)).abs() / 2
        s3 = (nb(3 * av, 3 * au) - nb(-3 * av, -3 * au)).abs() / 6
        flag |= (s1 > tol * c) & (s1 > ramp_ratio * s3)
        for k in (1, 2):
            a, b = nb(k * av, k * au), nb(-k * av, -k * au)
            between = (torch.minimum(a, b) < c) & (c < torch.maximum(a, b))
            flag |= between & ((a + b - 2 * c).abs() > 3 * tol * c)
    return flag & (c > 0)


def surface_cos(depth_m: torch.Tensor, rays: torch.Tensor, step: int = 2) -> torch.Tensor:
    """|cos| of the angle between each pixel's viewing ray and the surface normal, from the depth map.

    The normal is the cross product of the differences of the back-projected points along rows and columns
    (central over ``step`` px each side; one-sided where a neighbour has no depth, at borders, edges and
    next to the sky).

    Args:
        depth_m: ``[H x W]`` float32 z-depth, NaN where unknown.
        rays: ``[H x W x 3]`` float32 ray directions with z = 1 (camera frame).
        step: pixel step of the central differences.
    Returns:
        ``[H x W]`` float32 in [0, 1]; 1 where no normal can be formed (treated as frontal).
    """
    P = rays * depth_m[..., None]

    def diff(dim: int) -> torch.Tensor:
        # central difference over ±step px; one-sided (forward, then backward) where a neighbour is missing
        n = P.shape[dim]
        out = torch.full_like(P, float("nan"))
        if n <= step:
            return out
        fwd = P.narrow(dim, step, n - step) - P.narrow(dim, 0, n - step)  # at 0 .. n-step-1
        f = torch.full_like(P, float("nan"))
        b = torch.full_like(P, float("nan"))
        f.narrow(dim, 0, n - step).copy_(fwd)
        b.narrow(dim, step, n - step).copy_(fwd)
        if n > 2 * step:
            out.narrow(dim, step, n - 2 * step).copy_(
                P.narrow(dim, 2 * step, n - 2 * step) - P.narrow(dim, 0, n - 2 * step)
            )
        out = torch.where(torch.isfinite(out), out, f)
        return torch.where(torch.isfinite(out), out, b)

    du, dv = diff(1), diff(0)
    n = torch.nn.functional.normalize(torch.cross(du, dv, dim=-1), dim=-1)
    c = (n * torch.nn.functional.normalize(rays, dim=-1)).sum(-1).abs()
    return torch.where(torch.isfinite(c), c, torch.ones_like(c))


def grid_pose(
    opts: VoxelizeOptions, T_world_from_ego: np.ndarray, T_world_from_cam: np.ndarray | None
) -> np.ndarray:
    """``T_ego_from_grid`` <np.float64: 4, 4> of one keyframe (identity for grids in the ego frame).

    Args:
        T_world_from_ego: the keyframe's ego pose; T_world_from_cam: the pose of ``opts.grid_camera`` at
            the keyframe (needed only when the grid is placed relative to a camera).
    """
    if opts.grid_camera is not None:
        if T_world_from_cam is None:
            raise OccLabelError(f"voxelize: grid camera {opts.grid_camera!r} has no image at this keyframe")
        return (
            invert_rigid(T_world_from_ego) @ T_world_from_cam @ np.asarray(opts.T_cam_from_grid, np.float64)
        )
    if opts.T_ego_from_grid is not None:
        return np.asarray(opts.T_ego_from_grid, np.float64)
    return np.eye(4)


def fuse_keyframe(
    views: Iterable[View],
    key_frame: int,
    T_world_from_egokey: np.ndarray,
    grid: VoxelGrid,
    opts: VoxelizeOptions,
    device: torch.device | str = "cpu",
    classes: ClassSet = OCC3D,
    T_ego_from_grid: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fuse prepared views into the voxel labels of one keyframe (see the module docstring).

    Args:
        views: the window's views (their ``frame`` relative to ``key_frame`` decides static/moving use).
        key_frame: position of the keyframe in the scene.
        T_world_from_egokey: <float64: 4, 4> the keyframe's ego pose.
        opts: resolved options (:meth:`VoxelizeOptions.resolve`).
        classes: the class set (vote ids, free id, default moving classes).
        T_ego_from_grid: <float64: 4, 4> the grid's frame in that ego frame (default:
            ``opts.T_ego_from_grid`` or identity).
    Returns:
        numpy arrays over the grid (X, Y, Z): semantics uint8, mask_camera bool, confidence uint8,
        hits uint16, passes uint16; "T_ego_from_grid" <4, 4>; and "stats" (points, rays, samples counted).
    """
    dev = torch.device(device)
    shape = grid.shape
    V = shape[0] * shape[1] * shape[2]
    NC = classes.size
    moving = classes.moving if opts.moving_classes is None else opts.moving_classes
    moving_lut = torch.zeros(256, dtype=torch.bool, device=dev)
    if moving:
        moving_lut[list(moving)] = True
    if T_ego_from_grid is None:
        T_ego_from_grid = grid_pose(opts, T_world_from_egokey, None) if opts.grid_camera is None else None
        if T_ego_from_grid is None:
            raise ValueError("fuse_keyframe: a camera-placed grid needs T_ego_from_grid")
    T_ego_from_grid = np.asarray(T_ego_from_grid, np.float64)
    T_grid_from_world = invert_rigid(T_ego_from_grid) @ invert_rigid(T_world_from_egokey)

    pts, labs, wts, rws, near_pt, key_pt, mask_o, mask_e = ([] for _ in range(8))
    rays: dict[str, tuple[list[torch.Tensor], ...]] = {
        g: ([], [], [], [], []) for g in ("key", "near", "far")
    }
    band: tuple[list[torch.Tensor], ...] = ([], [], [], [], [], [])  # origin, end, label, weight, cos, near
    for v in views:
        dt = abs(v.frame - key_frame)
        T = torch.as_tensor(T_grid_from_world @ v.T_world_from_cam, dtype=torch.float32, device=dev)
        R, t = T[:3, :3], T[:3, 3]
        n = v.points_cam.shape[0]
        pts.append(v.points_cam @ R.T + t)
        labs.append(v.labels)
        wts.append(v.weights)
        rws.append(v.point_range_w)
        near_pt.append(torch.full((n,), dt <= opts.moving_window, dtype=torch.bool, device=dev))
        key_pt.append(torch.full((n,), dt == 0, dtype=torch.bool, device=dev))
        group = "key" if dt == 0 else ("near" if dt <= opts.moving_window else "far")
        ends = v.ray_ends_cam @ R.T + t
        for lst, x in zip(
            rays[group], (t.expand_as(ends), ends, v.ray_sky, v.ray_cos, v.ray_range_w), strict=True
        ):
            lst.append(x)
        if opts.tsdf and v.band_ends_cam is not None and v.band_ends_cam.shape[0]:
            be = v.band_ends_cam @ R.T + t
            nb = be.shape[0]
            for lst, x in zip(
                band,
                (
                    t.expand_as(be),
                    be,
                    v.band_labels,
                    v.band_weights,
                    v.band_cos,
                    torch.full((nb,), dt <= opts.moving_window, dtype=torch.bool, device=dev),
                ),
                strict=True,
            ):
                lst.append(x)
        if dt == 0:
            if v.mask_ends_cam is None:
                raise ValueError(f"view {v.camera}/{v.frame} of the keyframe was prepared without mask rays")
            me = v.mask_ends_cam @ R.T + t
            mask_o.append(t.expand_as(me))
            mask_e.append(me)

    # moving classes: their position in the list of moving classes (-1: static)
    mov_ids = torch.tensor(sorted(moving), dtype=torch.long, device=dev)
    NM = int(mov_ids.numel())
    mov_pos = torch.full((256,), -1, dtype=torch.long, device=dev)
    if NM:
        mov_pos[mov_ids] = torch.arange(NM, device=dev)

    counts = torch.zeros(V, dtype=torch.long, device=dev)
    evidence = torch.zeros(V, dtype=torch.float32, device=dev)  # confidence-weighted points
    votes = torch.zeros(V * NC, dtype=torch.float32, device=dev)  # confidence x range weight, per class
    near_total = torch.zeros(V, dtype=torch.float32, device=dev)  # near-frame votes, all classes
    near_mov = torch.zeros(V * max(NM, 1), dtype=torch.float32, device=dev)  # near votes per moving class
    consistent = None  # [NM x V] bool: the near frames voted that moving class within moving_consistent
    seen = torch.zeros(V, dtype=torch.bool, device=dev)
    n_points = 0

    def accept_far_moving(flat: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
        """far-frame observations of a moving class that the near frames confirm at their voxel"""
        if consistent is None:
            return torch.zeros_like(flat, dtype=torch.bool)
        pos = mov_pos[lab]
        return (pos >= 0) & consistent[pos.clamp(min=0), flat]

    if pts:
        p, lab, w, rw = torch.cat(pts), torch.cat(labs), torch.cat(wts), torch.cat(rws)
        near, key = torch.cat(near_pt), torch.cat(key_pt)
        idx, valid = points_to_voxels(p, grid)
        flat = flat_index(idx, shape)
        is_mov = moving_lut[lab]
        nv = valid & near
        near_total.index_add_(0, flat[nv], w[nv] * rw[nv])
        nm = nv & is_mov
        if NM:
            near_mov.index_add_(0, flat[nm] * NM + mov_pos[lab[nm]], w[nm] * rw[nm])
        if NM and opts.moving_consistent >= 0:
            consistent = near_mov.view(V, NM).T.reshape(NM, 1, *shape) > 0
            r = opts.moving_consistent
            if r > 0:
                consistent = (
                    torch.nn.functional.max_pool3d(consistent.float(), 2 * r + 1, stride=1, padding=r) > 0
                )
            consistent = consistent.reshape(NM, V)
        use = valid & (~is_mov | near)
        use |= valid & ~near & accept_far_moving(flat, lab)
        n_points = int(use.sum())
        counts += torch.bincount(flat[use], minlength=V)
        evidence.index_add_(0, flat[use], w[use])
        votes.index_add_(0, flat[use] * NC + lab[use], w[use] * rw[use])
        seen[flat[valid & key]] = True
    votes = votes.view(V, NC)

    # free-space passes: raw (stored) and range-weighted (the occupancy test), all rays and moving-window rays
    passes_raw = torch.zeros(V, dtype=torch.float32, device=dev)
    passes_static = torch.zeros(V, dtype=torch.float32, device=dev)
    passes_moving = torch.zeros(V, dtype=torch.float32, device=dev)
    n_rays = n_samples = 0
    vs = grid.voxel_size
    tau = opts.tsdf_band * vs
    for group, parts in rays.items():
        if not parts[0]:
            continue
        o, e, sky, cos, ray_w = (torch.cat(x) for x in parts)
        n_rays += o.shape[0]
        # free length: short of the point by stop_frac of the length plus the clearance along the normal
        length = (e - o).norm(dim=-1)
        stop = torch.clamp(opts.clearance * vs / cos.clamp(min=0.02), min=vs) + opts.stop_frac * length
        frac = torch.where(sky, torch.ones_like(length), (1 - stop / length.clamp(min=1e-9)).clamp(min=0))
        for chunk, ray in ray_free_samples(
            o,
            o + (e - o) * frac[:, None],
            grid,
            step_fraction=opts.step_fraction,
            stop_before=0.0,
            chunk=opts.chunk,
            return_rays=True,
        ):
            n_samples += chunk.numel()
            passes_raw += torch.bincount(chunk, minlength=V)
            b = torch.bincount(chunk, weights=ray_w[ray], minlength=V)
            passes_static += b
            if group != "far":
                passes_moving += b

    # TSDF: signed distances (normal direction, + in front) of samples in a band around each surface point
    tsdf_w = tsdf_d = tsdf_wm = tsdf_dm = band_votes = None
    if opts.tsdf:
        tsdf_w, tsdf_d, tsdf_wm, tsdf_dm = (torch.zeros(V, dtype=torch.float32, device=dev) for _ in range(4))
        band_votes = torch.zeros(V * NC, dtype=torch.float32, device=dev)
        if band[0]:
            o, e, lab, w, cos, near = (torch.cat(x) for x in band)
            bflat = flat_index(points_to_voxels(e, grid)[0], shape)
            far_ok = ~near & accept_far_moving(bflat, lab)
            use = ~moving_lut[lab] | near | far_ok
            mov_acc = near | far_ok  # rays that count for voxels of a moving class
            o, e, lab, w, cos, mov_acc = o[use], e[use], lab[use], w[use], cos[use], mov_acc[use]
            n_rays += o.shape[0]
            r = (e - o).norm(dim=-1)
            dirs = (e - o) / r.clamp(min=1e-9)[:, None]
            # signed distance along the normal = along the ray x |cos| (floored like the band's length:
            # measured, the floor keeps the band's full ±tau and fills grazing surfaces better)
            c = cos.clamp(min=opts.tsdf_min_cos)
            half = tau / c  # band half-length along the ray
            for chunk, ray, tt in ray_segment_samples(
                o, dirs, r - half, r + half, grid, opts.step_fraction * vs, opts.chunk
            ):
                n_samples += chunk.numel()
                sdf = ((r[ray] - tt) * c[ray]).clamp(-tau, tau)
                ww = w[ray] * float(opts.tsdf_stride**2)
                tsdf_w += torch.bincount(chunk, weights=ww, minlength=V)
                tsdf_d += torch.bincount(chunk, weights=ww * sdf, minlength=V)
                m = mov_acc[ray]
                tsdf_wm += torch.bincount(chunk[m], weights=ww[m], minlength=V)
                tsdf_dm += torch.bincount(chunk[m], weights=(ww * sdf)[m], minlength=V)
                band_votes.index_add_(0, chunk * NC + lab[ray], ww * (1.05 - sdf.abs() / tau))
        band_votes = band_votes.view(V, NC)

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
    weighted = votes.sum(1)
    best_votes, best = votes.max(1)
    if band_votes is not None:
        # voxels without point votes (placed by the TSDF alone) take the class of the band's votes
        bb = band_votes.argmax(1)
        best = torch.where(weighted > 0, best, bb)
    if NM and opts.moving_share > 0:
        # the near frames say "moving class": their verdict, whatever the far frames' static votes say
        nmv, nmi = near_mov.view(V, NM).max(1)
        override = (nmv > 0) & (nmv >= opts.moving_share * near_total)
        best = torch.where(override, mov_ids[nmi], best)
        best_votes = torch.where(override, votes.gather(1, best[:, None])[:, 0], best_votes)
    is_moving = moving_lut[best]
    passes = torch.where(is_moving, passes_moving, passes_static) * pass_w
    occupied = (evidence >= opts.min_hits) & (weighted >= opts.occ_ratio * passes) & (evidence > 0)
    if opts.tsdf:
        # weighted mean signed distance, carving passes counted as samples at +band; occupied where it is
        # at most tsdf_occ voxels in front of the surface (behind it: inside the solid)
        wsum = torch.where(is_moving, tsdf_wm, tsdf_w)
        dsum = torch.where(is_moving, tsdf_dm, tsdf_d)
        carve = (
            opts.tsdf_carve * float(opts.ray_stride**2) * torch.where(is_moving, passes_moving, passes_static)
        )
        mean_sdf = (dsum + carve * tau) / (wsum + carve).clamp(min=1e-12)
        surface = (wsum > 0) & (mean_sdf <= opts.tsdf_occ * vs)
        if not opts.tsdf_behind:
            surface &= mean_sdf >= -opts.tsdf_occ * vs
        # voxels the TSDF has no sample of (points between the tsdf_stride rays) keep the vote test
        surface = torch.where(wsum > 0, surface, occupied)
        occupied = surface if opts.tsdf_moving else torch.where(is_moving, occupied, surface)
    passes_out = passes_raw * pass_w
    free = ~occupied & ((passes_raw > 0) | seen)

    semantics = torch.where(occupied, best, torch.full_like(best, classes.free))
    # winning share of the votes x mean confidence of the points
    mean_conf = evidence / (counts.float() * opts.point_stride**2).clamp(min=1e-9)
    conf_occ = best_votes / weighted.clamp(min=1e-9) * mean_conf
    if band_votes is not None:  # voxels placed by the TSDF alone: the class's share of the band's votes
        share = band_votes.gather(1, best[:, None])[:, 0] / band_votes.sum(1).clamp(min=1e-9)
        conf_occ = torch.where(weighted > 0, conf_occ, share)
    passes_w = passes_static * pass_w
    conf_free = passes_w / (passes_w + weighted).clamp(min=1e-9)
    confidence = torch.where(occupied, conf_occ, torch.where(free, conf_free, torch.zeros_like(conf_free)))

    def out(x: torch.Tensor, dtype) -> np.ndarray:
        return x.view(shape).cpu().numpy().astype(dtype)

    return {
        "semantics": out(semantics, np.uint8),
        "mask_camera": out(seen, bool),
        "confidence": out((confidence.clamp(0, 1) * 255).round(), np.uint8),
        "hits": out(counts.clamp(max=65535), np.uint16),
        "passes": out(torch.where(passes_out > 0, passes_out.round().clamp(1, 65535), 0.0), np.uint16),
        "T_ego_from_grid": T_ego_from_grid,
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
    """Prepared views of one scene, kept while keyframe windows need them.

    Depth comes from the cache (calibrated) or the dataset's ground truth, and so do the semantics
    (``SOURCES[opts.source]``); ground-truth maps are resized to the cache's working resolution with
    nearest-neighbour, and GT semantics have confidence 1.
    """

    def __init__(
        self,
        cache: Cache,
        scene: str,
        opts: VoxelizeOptions,
        device: torch.device,
        classes: ClassSet,
        depth_key: str | None = None,
        semantics_key: str | None = None,
        dataset=None,
    ):
        self.cache, self.scene, self.opts, self.device, self.classes = cache, scene, opts, device, classes
        self.depth_from, self.sem_from = SOURCES[opts.source]
        self.depth_key, self.semantics_key = depth_key, semantics_key
        self.cameras = cache.cameras(scene)
        self.keyframes = {t for t, k in enumerate(cache.scene_meta(scene)["keyframes"]) if k}
        self.geometry = {cam: cache.geometry(scene, cam) for cam in self.cameras}
        self._views: dict[tuple[str, int], View | None] = {}
        self.skipped: dict[str, int] = {}
        if self.depth_from == "cache":
            self.space, self.cal, self.depth_done = {}, {}, {}
            for cam in self.cameras:
                self.space[cam] = cache.depth_attrs(scene, cam, depth_key).get("space", "disparity")
                if not cache.has_calibration(scene, cam, depth_key):
                    raise StoreError(
                        f"{cache.path}: {scene}/{cam} depth {depth_key!r} is not calibrated; run calibrate-depth first"
                    )
                self.cal[cam] = cache.read_calibration(scene, cam, depth_key)
                self.depth_done[cam] = cache.depth_done(scene, cam, depth_key)
        if self.sem_from == "cache":
            self.sem_done = {cam: cache.semantics_done(scene, cam, semantics_key) for cam in self.cameras}
        if "gt" in (self.depth_from, self.sem_from):
            self.frames = dataset.scene(scene).frames
            if [f.token for f in self.frames] != list(cache.scene_meta(scene)["tokens"]):
                raise StoreError(
                    f"{cache.path}: scene {scene!r} has other frames than the dataset; re-run extract-2d"
                )

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

    def _gt_image(self, cam: str, t: int, what: str):
        im = self.frames[t].images.get(cam)
        if im is None or getattr(im, f"{what}_path") is None:
            raise OccLabelError(
                f"voxelize source={self.opts.source!r}: {self.scene}/{self.frames[t].token}/{cam} has no "
                f"ground-truth {what} in the dataset"
            )
        return im

    def _load(self, cam: str, t: int) -> View | None:
        from occlabel.datasets.base import load_depth_m, load_semantics

        h, w = (
            self.cache.camera_meta(self.scene, cam)["height"],
            self.cache.camera_meta(self.scene, cam)["width"],
        )
        if self.depth_from == "cache":
            cal = self.cal[cam]
            if not self.depth_done[cam][t]:
                self._skip("not extracted")
                return None
            if not cal["done"][t]:
                self._skip("not calibrated")
                return None
        if self.sem_from == "cache" and not self.sem_done[cam][t]:
            self._skip("not extracted")
            return None
        if self.depth_from == "cache":
            rel = self.cache.read_depth(self.scene, cam, self.depth_key, t)
            depth = depth_from_relative(
                rel, float(cal["scale"][t]), float(cal["shift"][t]), self.space[cam], self.opts.max_depth_m
            )
        else:
            depth = resize_nearest(load_depth_m(self._gt_image(cam, t, "depth").depth_path), h, w)
        if self.sem_from == "cache":
            labels, conf = self.cache.read_semantics(self.scene, cam, self.semantics_key, t)
        else:
            labels = resize_nearest(load_semantics(self._gt_image(cam, t, "semantics").semantics_path), h, w)
            conf = np.ones((h, w), np.float32)
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
            classes=self.classes,
        )


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
    if lidar_grid:
        for s in names:
            keyframes = [f for f in dataset.scene(s).frames if f.keyframe]
            missing = [f.token for f in keyframes if f.T_ego_from_lidar is None]
            if missing:
                raise OccLabelError(
                    f"voxelize: grid {grid.name!r} lives in the {grid.frame!r} (LiDAR) frame, but keyframe "
                    f"{s}/{missing[0]} has no T_ego_from_lidar in the dataset; place the grid with "
                    "T_ego_from_grid (4x4) or grid_camera + T_cam_from_grid (CLI: --grid-pose, --grid-camera)"
                )
    if opts.grid_camera is not None:
        for s in names:
            if opts.grid_camera not in cache.cameras(s):
                raise OccLabelError(
                    f"voxelize: grid camera {opts.grid_camera!r} is not a camera of scene {s!r} "
                    f"(has: {', '.join(cache.cameras(s))})"
                )
    classes = resolve_classes(opts, cache, names[0] if names else None, semantics_key)

    writer = LabelsWriter.create(
        out,
        grid,
        {
            "classes": classes.to_dict(),
            "cache": location_str(cache.path),
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
        src = _ViewSource(cache, s, opts, dev, classes, depth_key, semantics_key, dataset)
        for n, i in enumerate(indices):
            tk = keys[i]
            t0 = time.perf_counter()
            views = src.views(range(max(0, tk - opts.window), min(T, tk + opts.window + 1)))
            t1 = time.perf_counter()
            if lidar_grid:
                T_eg = np.asarray(dataset.scene(s).frames[tk].T_ego_from_lidar, np.float64)
            else:
                T_wc = None
                if opts.grid_camera is not None and src.geometry[opts.grid_camera]["present"][tk]:
                    T_wc = src.geometry[opts.grid_camera]["T_world_from_cam"][tk]
                T_eg = grid_pose(opts, T_we[tk], T_wc)
            res = fuse_keyframe(views, tk, T_we[tk], grid, opts, dev, classes=classes, T_ego_from_grid=T_eg)
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
    return store_location(out)


__all__ = [
    "SOURCES",
    "View",
    "VoxelizeOptions",
    "flying_pixels",
    "fuse_keyframe",
    "grid_pose",
    "kitti_T_cam_from_velo",
    "prepare_view",
    "read_matrix",
    "resolve_classes",
    "run",
    "surface_cos",
]
