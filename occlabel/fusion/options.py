"""Fusion options: :class:`VoxelizeOptions`, the depth sources, and the named presets of the defaults that
depend on the depth (:data:`FUSION_PRESETS`), plus the class set the labels use (:func:`resolve_classes`).

Every field is recorded in the labels store (``options``); a resumed run must use the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from occlabel.conventions import is_rigid
from occlabel.errors import OccLabelError
from occlabel.store.cache import Cache
from occlabel.store.labels import CLASS_SETS, OCC3D, ClassSet, class_set_from_vocabulary

#: sources and where each takes (depth, semantics) from
SOURCES = {
    "cache": ("cache", "cache"),
    "gt": ("gt", "gt"),
    "gt-depth": ("gt", "cache"),
    "gt-semantics": ("cache", "gt"),
}

#: the fusion defaults that depend on the depth, by preset name: "estimated" for a source whose depth is
#: the cache's calibrated (estimated) depth, "gt" for the dataset's ground-truth depth (exact depth has no
#: floaters or flying pixels to reject, and voxels at grazing angles keep far more passes than hits).
#: Measured by `make bench` (scripts/bench.py, voxelize_ablation). Fields left None take these
#: (:meth:`VoxelizeOptions.resolve`, preset :func:`fusion_preset` of the source).
FUSION_PRESETS: dict[str, dict[str, Any]] = {
    "estimated": {"occ_ratio": 0.5, "range_weight_m": 10.0, "edge_tol": 0.1, "tsdf": True},
    "gt": {"occ_ratio": 0.0, "range_weight_m": 0.0, "edge_tol": 0.0, "tsdf": False},
}


def fusion_preset(source: str) -> str:
    """Name of the :data:`FUSION_PRESETS` entry of a source: "estimated" when its depth comes from the
    cache ("cache", "gt-semantics"; unknown sources too, which validation then rejects), else "gt"."""
    return "estimated" if SOURCES.get(source, ("cache",))[0] == "cache" else "gt"


@dataclass
class VoxelizeOptions:
    """Fusion options (all recorded in the labels store; a resumed run must use the same ones).

    Fields left None that depend on ``source`` take its preset (:data:`FUSION_PRESETS`) on creation
    (:meth:`resolve`); ``classes`` and ``moving_classes`` left None follow the 2D semantics
    (:func:`resolve_classes`).
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
    #: occupied needs range-weighted votes >= occ_ratio * range-weighted passes; None: the preset's, 0.5 for
    #: estimated depth (rejects floaters of noisy depth), 0 for ground-truth depth (has none)
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
        return fusion_preset(self.source) == "estimated"

    def resolve(self) -> VoxelizeOptions:
        """Fill the source-dependent defaults left None from the source's preset (:data:`FUSION_PRESETS`,
        in place); returns self."""
        for name, value in FUSION_PRESETS[fusion_preset(self.source)].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
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
