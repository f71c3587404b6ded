"""Options of the calibration method: :class:`CalibrationConfig`, the method's name and version, cue codes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from occlabel.errors import OccLabelError
from occlabel.store.calibration import CALIBRATION_CUES

METHOD = "photometric-affine"
METHOD_VERSION = 2


@dataclass
class CalibrationConfig:
    """Options of calibrate-depth (every one can be passed to :func:`run` as a keyword)."""

    # ---- parameterisation and search space
    percentiles: tuple[float, float] = (5.0, 95.0)  # disparity percentiles d_lo, d_hi defining d~
    near_depth_range_m: tuple[float, float] = (0.5, 150.0)  # grid range of the near reference's depth
    s_steps: int = 48  # log-spaced grid values of s
    r_grid: tuple[float, ...] = (0.0, 0.03, 0.07, 0.12, 0.2, 0.3, 0.45, 0.6, 0.8)  # grid of r (disparity)
    r_grid_depth: tuple[float, ...] = (0.01, 0.03, 0.07, 0.12, 0.2, 0.3, 0.45, 0.6, 0.8)  # r grid (depth_m)
    r_bounds: tuple[float, float] = (-0.05, 0.97)  # r kept in these bounds while refining (disparity)
    r_bounds_depth: tuple[float, float] = (0.002, 0.97)  # same for space depth_m (r > 0: finite far depth)
    min_depth_m: float = 0.1  # depths below are implausible: such pixels do not use their warp
    max_depth_m: float = 200.0  # depths above are implausible (as the cache's metric_depth)
    # ---- pyramid
    coarse_width: int = 64  # width (px) of the grid-search level (evaluated on grey images)
    scene_frames: int = 6  # frames (evenly spaced) whose full-grid costs give the scene-level (s, r)
    widths: tuple[int, ...] = (96, 192, 384)  # widths of the refinement levels (capped at the working width)
    iters: tuple[int, ...] = (20, 15, 8)  # Adam iterations per refinement level (last value repeats)
    lr: tuple[float, ...] = (0.03, 0.015, 0.008)  # Adam learning rate per level (cosine-decayed in a level)
    # ---- photometric error
    ssim_weight: float = 0.85  # alpha in alpha * (1 - SSIM) / 2 + (1 - alpha) * L1
    ssim_window: int = 3  # SSIM window (px)
    ssim: str = "box"  # "box" (Monodepth2, fast) or "gaussian" (kornia.metrics.ssim)
    automask: bool = True  # Monodepth2 auto-masking (identity error competes in the minimum)
    exposure: str = "gain"  # "gain": per-pair, per-channel gain on the overlap; "none"
    border_frac: float = 0.02  # border excluded from the loss, as a fraction of the width (>= 1 px)
    region_margin_px: float = 1.5  # fixed region: pixels this far inside the source (px at coarse_width)
    ignore_moving: bool = True  # exclude movable classes (occlabel.conventions.OCC3D_MOVING)
    # ---- prior (scene-level fit -> per-frame fits)
    prior_weight: float = 0.01  # weight of the prior, relative to the frame's photometric loss
    prior_sigma: tuple[float, float] = (1.0, 0.5)  # prior widths in (s, r)
    # ---- degenerate cases and convergence
    min_baseline_m: float = 0.05  # neighbours closer than this give no parallax (stationary ego)
    target_baseline_m: float = 1.0  # stride each neighbour offset (up to max_stride) to reach this baseline
    max_stride: int = 3  # largest stride of a neighbour offset (1: exactly the given neighbours)
    min_valid_frac: float = 0.05  # frames whose loss uses fewer pixels are flagged low_valid
    polish_steps: tuple[float, float] = (0.005, 0.005)  # pattern-search steps in (s, r) after Adam
    polish_rounds: int = 6  # a frame still moving after this many rounds is flagged not_converged
    # ---- cues (each can be switched off; see the module docstring)
    photometric: bool = True  # temporal photometric cue: neighbour frames of the same camera as sources
    overlap: bool = True  # overlap cue: overlapping cameras of the rig at the same instant as further sources
    ground: bool = True  # ground-plane cue: flat-ground pixels at the depth the extrinsics give them
    # ---- ground cue
    #: (class name, surface height above the road in metres): flat classes whose pixels are ground; names
    #: the semantics' vocabulary does not have are ignored (occ3d: driveable_surface, other_flat, sidewalk;
    #: semantickitti: road, parking, other-ground, sidewalk). Kerb-raised surfaces sit 0.15 m up.
    ground_classes: tuple[tuple[str, float], ...] = (
        ("driveable_surface", 0.0),
        ("road", 0.0),
        ("parking", 0.0),
        ("other_flat", 0.15),
        ("other-ground", 0.15),
        ("sidewalk", 0.15),
    )
    ground_height_m: float = 0.0  # z of the road surface in the ego frame (0: ego origin on the ground)
    ground_max_depth_m: float = 40.0  # ground pixels farther than this (z-depth on the plane) are not used
    ground_erode_px: int = 1  # a ground pixel needs the same class within this radius (label boundaries)
    ground_min_frac: float = 0.01  # fewer ground pixels than this fraction of the image: no ground fit
    ground_inlier_tol: float = 0.1  # inlier: |relative inverse-depth residual| below this
    ground_min_inliers: float = 0.5  # a ground fit is usable with at least this inlier fraction
    ground_max_pixels: int = 4096  # ground pixels per frame kept (evenly subsampled)
    ground_weight: float = 0.02  # weight of the ground term in the photometric objective (x loss scale)
    ground_sigma: float = 0.05  # relative residual worth one unit of ground cost (capped at 3 sigma)
    cue_tolerance: float = 0.05  # cues disagree when |median depth ratio over ground pixels - 1| exceeds this
    photometric_margin: float = 0.02  # on disagreement the photometric fit stands only if its loss at the
    # ground estimate is higher than at its own by more than this fraction
    # ---- sky term (disparity space): relative disparity models put the sky at (near) zero disparity, so
    # the calibrated inverse depth of the frame's sky pixels should be ~0. It fixes the slope of the affine
    # where the scene's depth range is too narrow to (one facade plane, or near objects masked as movable)
    sky: bool = True
    sky_weight: float = 0.02  # weight of the sky term in the objective (x loss scale)
    sky_sigma: float = 0.03  # sky inverse depth, relative to the near reference's, worth one unit of cost
    sky_min_frac: float = 0.005  # frames with fewer (eroded) sky pixels have no sky term
    # ---- overlap cue
    overlap_min_frac: float = 0.03  # cameras that see at least this fraction of the target's pixels overlap
    overlap_max_cameras: int = 2  # at most this many overlapping cameras per target (largest overlap first)
    overlap_max_dt_s: float = 0.01  # movable classes count in the overlap cue when the two images are this
    # close in time (a moving object is where both cameras see it)
    # ---- compute
    max_chunk_elems: int = 0  # elements per batched evaluation (0: 2**23 on CPU, 2**26 on CUDA)
    seed: int = 0  # torch seed (the method draws nothing at random; kept for provenance)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: per-frame ``calibration/cue`` codes (the store's CALIBRATION_CUES): which cue decided the frame's values.
#: none 0: no value (scale, shift NaN); photometric 1: photometric fit with temporal sources (plus overlap
#: sources and the ground term where enabled); overlap 2: photometric fit from the overlapping cameras alone
#: (no temporal parallax); ground 3: the ground-plane fit alone; prior 4: the scene prior (median of the
#: camera's, or the scene's, decided frames).
CUES = CALIBRATION_CUES


def make_config(options: dict[str, Any]) -> CalibrationConfig:
    """The :class:`CalibrationConfig` of keyword ``options``; OccLabelError on unknown or inconsistent ones."""
    unknown = set(options) - set(CalibrationConfig.__dataclass_fields__)
    if unknown:
        raise OccLabelError(f"calibrate-depth: unknown option(s) {', '.join(sorted(unknown))}")
    cfg = CalibrationConfig(**options)
    if cfg.exposure not in ("gain", "none"):
        raise OccLabelError(f"calibrate-depth: exposure must be 'gain' or 'none', got {cfg.exposure!r}")
    if not (cfg.photometric or cfg.overlap or cfg.ground):
        raise OccLabelError("calibrate-depth: every cue is switched off (photometric, overlap, ground)")
    return cfg


__all__ = ["CUES", "METHOD", "METHOD_VERSION", "CalibrationConfig", "make_config"]
