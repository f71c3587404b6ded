"""Stage 2, ``calibrate-depth``: metric scale and shift of relative depth from label-free cues.

A depth foundation model gives, per image, a relative disparity d with ``1/z = a * d + b`` for unknown
``a > 0`` and ``b`` that differ from image to image. With no depth ground truth, (a, b) of each frame is
the pair that best re-synthesises the frame from its temporal neighbours, warped through the candidate
depth with the known camera poses (Monodepth2-style photometric error, see occlabel.geometry.photometric).

Parameterisation (per frame, independent of the unknown affine of the relative map). With d_lo, d_hi the
``percentiles`` of the frame's disparity over its static, non-sky pixels and d~ = (d - d_lo) / (d_hi - d_lo)::

    value(d) = a * d + b = exp(s) * ((1 - r) * d~ + r)

so ``s`` = log of the inverse depth at d_hi (the near reference, 1/metres) and ``r`` = ratio of the inverse
depths at d_lo and d_hi (far over near, < 1 so that a > 0). Both are scene quantities, well scaled for any
affine of the relative map (its scale may lie anywhere in 0.1-10x), so a scene-level fit in (s, r) is
meaningful across frames although (a, b) are not. ``a = exp(s) (1 - r) / (d_hi - d_lo)``,
``b = exp(s) r - a d_lo``. For metric-depth models (space "depth_m": z = a d + b) (s, r) mean the same
(near inverse depth, far/near inverse-depth ratio), with the near reference at d_lo:
``z = exp(-s) (1 + (1/r - 1) d~)``.

Label-free cues (each switchable: ``photometric``, ``overlap``, ``ground``, ``sky``):

- photometric (temporal): the frame's own neighbours as sources (:class:`PhotometricCue`);
- overlap: the overlapping cameras of the rig (:func:`overlapping_cameras`) at the same frame are further
  sources of the same objective, with the metric baseline of the extrinsics. Images this close in time
  (``overlap_max_dt_s``) see movable objects where they are, so for these sources movable-class pixels
  count too. It needs no ego motion;
- ground plane (:class:`GroundCue`): pixels of flat classes have the depth at which their ray meets the
  ego ground plane ``z_ego = ground_height_m + class height`` (the ego frame's origin on the road, z up,
  road locally flat and level; see occlabel.geometry.ground). A robust per-frame fit of (s, r) to them is
  the cue's own estimate; it adds a start and a weighted term to the photometric objective, is the
  cross-check, and is the fallback where there is no parallax;
- sky term (:func:`sky_cost`, disparity space): relative disparity models put the sky at (near) zero
  disparity; a weak term pulls the calibrated inverse depth of the frame's sky toward 0, which fixes the
  slope of the affine where the scene's depth range cannot (one facade plane, near objects masked).

Algorithm, per scene and camera:
0. Sources: each neighbour offset o is strided (t + o*k, k <= ``max_stride``) until the camera baseline
   reaches ``target_baseline_m`` (:func:`choose_sources`): far points need parallax, and the fitted shift
   (hence far depth) is biased toward the camera when the baseline is short. Overlapping cameras at the
   same frame are appended as sources.
1. Ground: the ground cue's fit of every frame (:meth:`GroundCue.fit`).
2. Coarse, at ``coarse_width`` on grey images, batched over frames x hypotheses: the full (s, r) grid on
   every frame; its mean normalised cost over a few evenly spaced frames gives the scene-level (s, r);
   then a local (s, r) grid around each frame's best (and around the ground estimate, where usable),
   under a weak prior toward the scene value, the ground term and the sky term.
3. Fine: per-frame Adam on (s, r) at increasing resolutions (``widths``), same terms; the best iterate of
   each level is kept, then a small pattern search at the last level polishes it; a frame still moving
   after ``polish_rounds`` rounds (or stuck at a bound) is flagged ``not_converged``. At each level the
   pixels allowed to count are frozen around the current estimate (:meth:`PhotometricCue.freeze_region`):
   letting the hypothesis decide which pixels leave the image biases the fit toward less parallax.
4. Decision (:func:`decide_cues`): the photometric fit unless it disagrees with the ground fit by more
   than ``cue_tolerance`` (flag ``cue_disagreement``) and its own loss does not reject the ground estimate
   by more than ``photometric_margin`` (then the ground estimate); the ground fit where there is no
   photometric fit (flag ``fallback``).
5. Degenerate frames: no temporal neighbour with a baseline >= ``min_baseline_m`` -> ``stationary`` (still
   fitted when overlapping cameras give a baseline: cue ``overlap``); fewer than ``min_valid_frac`` of
   the pixels informative -> ``low_valid``. Frames that no cue decided fall back to the robust (median)
   scene prior of the camera's decided frames (or of the scene's other cameras) and get ``fallback``. With
   no prior at all the values are NaN (depth unknown rather than wrong). ``calibration/cue`` records the
   deciding cue per frame (:data:`CUES`).

Photometric error: Monodepth2's 0.85 (1 - SSIM) / 2 + 0.15 L1, minimum over sources, auto-masking by the
identity error, per-pair exposure gain, masks for sky, movable classes (the vocabulary's, for temporal
sources), borders and implausible depth.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from occlabel.conventions import OCC3D_MOVING, OCC3D_NAMES, SKY
from occlabel.conventions import scale_intrinsics as scale_intrinsics_np
from occlabel.datasets.base import load_image
from occlabel.errors import OccLabelError, StoreError
from occlabel.geometry.ground import plane_depth, robust_linear_fit
from occlabel.geometry.photometric import (
    border_mask,
    box_moments,
    fit_gain,
    min_reprojection,
    pixel_error,
    static_mask,
)
from occlabel.geometry.rig import view_overlap
from occlabel.geometry.warp import (
    project_inverse_depth,
    relative_pose,
    sample,
    scale_intrinsics,
    warp_coefficients,
)
from occlabel.models.vocab import Vocabulary
from occlabel.store.cache import CALIBRATION_CUES, FLAGS, Cache, open_cache
from occlabel.utils import progress_bar, resolve_device

log = logging.getLogger("occlabel.calibrate_depth")

METHOD = "photometric-affine"
METHOD_VERSION = 2


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------


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


class CueResult(NamedTuple):
    """A cue's verdict on hypotheses.

    Attributes:
        loss: ``[F x N]`` cost per frame and hypothesis (lower is better; differentiable).
        valid_frac: ``[F x N]`` fraction of the frame's pixels that carried information.
    """

    loss: torch.Tensor
    valid_frac: torch.Tensor


# --------------------------------------------------------------------------------------------------
# Parameterisation
# --------------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """Per-frame reference disparities that make (s, r) independent of the relative map's affine.

    Attributes:
        d_lo, d_hi: ``[F]`` float64 numpy, the low and high percentiles of the frame's relative values.
        space: "disparity" (value = inverse depth) or "depth_m" (value = depth).
    """

    d_lo: np.ndarray
    d_hi: np.ndarray
    space: str = "disparity"

    def to_scale_shift(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) ``[F]`` of params ``[F x 2]`` = (s, r)."""
        s, r = params[:, 0].astype(np.float64), params[:, 1].astype(np.float64)
        span = self.d_hi - self.d_lo
        if self.space == "disparity":  # a d + b = inverse depth: exp(s) at d_hi, r exp(s) at d_lo
            a = np.exp(s) * (1 - r) / span
            return a, np.exp(s) * r - a * self.d_lo
        # a d + b = depth: exp(-s) at d_lo (near), exp(-s) / r at d_hi (far)
        with np.errstate(divide="ignore"):
            a = np.exp(-s) * (1 / r - 1) / span
        return a, np.exp(-s) - a * self.d_lo

    def from_scale_shift(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """params ``[F x 2]`` of (a, b) ``[F]`` (NaN where the values at the references are not positive)."""
        v_hi = a * self.d_hi + b
        v_lo = a * self.d_lo + b
        near, far = (v_hi, v_lo) if self.space == "disparity" else (1 / v_lo, 1 / v_hi)  # inverse depths
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = (near > 0) & np.isfinite(near)
            if self.space == "depth_m":
                ok &= (v_lo > 0) & (v_hi > 0)
            s = np.where(ok, np.log(np.where(ok, near, 1.0)), np.nan)
            r = np.where(ok, far / near, np.nan)
        return np.stack([s, r], 1)


def inverse_depth(params: torch.Tensor, dnorm: torch.Tensor, space: str = "disparity") -> torch.Tensor:
    """Inverse depth of hypotheses.

    In both spaces ``exp(s)`` is the inverse depth at the near reference and ``r`` the ratio of the far
    reference's inverse depth to it. Disparity: rho = exp(s) ((1 - r) d~ + r), d~ = 0 at the far
    reference d_lo. Depth: 1 / rho = exp(-s) (1 + (1/r - 1) d~), d~ = 0 at the near reference d_lo.

    Args:
        params: ``[F x N x 2]`` (s, r) per frame and hypothesis.
        dnorm: ``[F x H x W]`` normalised relative values d~ = (d - d_lo) / (d_hi - d_lo) (NaN allowed).
        space: "disparity" or "depth_m".
    Returns:
        ``[F x N x H x W]`` inverse depth 1/z (1/metres); -1 where the depth would not be positive.
    """
    s = params[..., 0, None, None]
    r = params[..., 1, None, None]
    if space == "disparity":
        return torch.exp(s) * ((1 - r) * dnorm[:, None] + r)
    den = 1 + (1 / r - 1) * dnorm[:, None]
    ok = den > 0
    return torch.where(ok, torch.exp(s) / torch.where(ok, den, torch.ones_like(den)), -torch.ones_like(den))


# --------------------------------------------------------------------------------------------------
# Data of one camera and its pyramid
# --------------------------------------------------------------------------------------------------


@dataclass
class CameraFrames:
    """Everything the fit needs for one camera of one scene, at the working resolution, on the device.

    Source images live in one pool: the camera's own frames first (pool index = frame index, 0..T-1), then
    any images of other cameras of the rig (the overlap cue), resized to this camera's working resolution.

    Attributes:
        images: ``[P x 3 x h x w]`` float32 RGB in [0, 1] (zeros for images that were not loaded).
        K: ``[P x 3 x 3]`` float32 intrinsics at the working resolution.
        T_world_from_cam: ``[P x 4 x 4]`` float64 camera poses.
        values: ``[F x h x w]`` float32 relative values of the target frames (NaN = none).
        static: ``[F x h x w]`` bool, pixels of the target frames allowed in the loss (static, not sky,
            finite value).
        targets: ``[F]`` long, frame indices of the targets.
        sources: ``[F x S]`` long, pool index of each source (0 when missing).
        source_ok: ``[F x S]`` bool, source exists, is loaded and has a baseline.
        baseline_m: ``[F x S]`` float64 numpy, camera-centre distance to each source (NaN if missing).
        reference: the per-frame :class:`Reference`.
        solid: ``[F x h x w]`` bool or None: pixels with a depth (not sky, finite value) whatever their class;
            sources marked in ``movable_ok`` may use them (default: ``static``).
        movable_ok: ``[F x S]`` bool or None: the source shows the scene at the target's instant (another
            camera of the rig), so pixels of movable classes are rigid for it (default: none).
        sky: ``[F]`` float32 or None: normalised relative value d~ of each frame's sky (median over its sky
            pixels; NaN: too little sky), for the sky term (disparity space).
    """

    images: torch.Tensor
    K: torch.Tensor
    T_world_from_cam: torch.Tensor
    values: torch.Tensor
    static: torch.Tensor
    targets: torch.Tensor
    sources: torch.Tensor
    source_ok: torch.Tensor
    baseline_m: np.ndarray
    reference: Reference
    solid: torch.Tensor | None = None
    movable_ok: torch.Tensor | None = None
    sky: torch.Tensor | None = None
    dnorm: torch.Tensor = field(init=False)

    def __post_init__(self):
        lo = torch.as_tensor(self.reference.d_lo, dtype=self.values.dtype, device=self.values.device)
        hi = torch.as_tensor(self.reference.d_hi, dtype=self.values.dtype, device=self.values.device)
        self.dnorm = (self.values - lo[:, None, None]) / (hi - lo).clamp(min=1e-12)[:, None, None]


def _resize_masked(
    x: torch.Tensor, m: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-downsample ``x`` ``[B x h x w]`` over its mask ``m``; a pixel stays valid only if fully covered."""
    if tuple(x.shape[-2:]) == tuple(size):
        return torch.where(m, x, torch.zeros_like(x)), m
    w = m.to(x.dtype)[:, None]
    num = F.interpolate(torch.where(m, x, torch.zeros_like(x))[:, None] * w, size=size, mode="area")
    den = F.interpolate(w, size=size, mode="area")
    return (num / den.clamp(min=1e-6))[:, 0], den[:, 0] > 0.999


class PhotometricCue:
    """Photometric reprojection cost of (s, r) hypotheses for the target frames at one pyramid level.

    Precomputes the level's images, masks, warp coefficients and the identity (unwarped) errors, so that
    evaluating hypotheses costs one batched warp and one SSIM per (frame, source, hypothesis).
    """

    def __init__(
        self,
        cam: CameraFrames,
        width: int,
        cfg: CalibrationConfig,
        space: str,
        max_chunk_elems: int,
        grey: bool = False,
    ):
        self.cfg, self.space, self.max_chunk_elems = cfg, space, max_chunk_elems
        h0, w0 = cam.images.shape[-2:]
        w = min(int(width), w0)
        h = max(8, int(round(h0 * w / w0)))
        self.size = (h, w)
        dev = cam.images.device
        images = cam.images
        if (h, w) != (h0, w0):
            images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        if grey:
            images = (images * images.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
        self.images = images
        self.channels = images.shape[1]
        self.target = images[cam.targets]  # F C h w
        self.target_moments = box_moments(self.target, cfg.ssim_window)
        K = scale_intrinsics(cam.K, w / w0, h / h0)
        finite = torch.isfinite(cam.dnorm)
        dnorm, ok = _resize_masked(cam.dnorm, cam.static & finite, (h, w))
        border = border_mask(h, w, max(1, round(cfg.border_frac * w)), dev)
        self.sources = cam.sources
        self.source_ok = cam.source_ok
        T_wc = cam.T_world_from_cam
        T_src_from_tgt = relative_pose(T_wc[cam.targets][:, None], T_wc[cam.sources])  # F S 4 4
        Kt = K[cam.targets][:, None].expand(-1, cam.sources.shape[1], -1, -1)
        mp, e = warp_coefficients(Kt.double(), K[cam.sources].double(), T_src_from_tgt.double(), h, w)
        self.mp, self.e = mp.to(images.dtype), e.to(images.dtype)  # F S h w 3, F S 3
        self.min_inv = 1.0 / cfg.max_depth_m
        self.max_inv = 1.0 / cfg.min_depth_m
        # sources that see the target's instant (other cameras of the rig) may use movable-class pixels too
        self.pix_ok: torch.Tensor | None = None  # F S h w, pixels each source may use (None: the mask)
        movable_ok = cam.movable_ok
        if movable_ok is not None and bool((movable_ok & cam.source_ok).any()) and cam.solid is not None:
            movable_ok = movable_ok & cam.source_ok
            # values over all solid pixels; a static pixel of the level averages the same values as before
            dnorm, solid = _resize_masked(cam.dnorm, cam.solid & finite, (h, w))
            solid = solid & self._reachable(movable_ok)
            self.pix_ok = torch.where(movable_ok[..., None, None], solid[:, None], ok[:, None])
            ok = ok | solid
        self.dnorm = dnorm
        self.mask = ok & border  # F h w
        # identity errors: each source as it is, against the target (exposure-corrected on the mask)
        src = images[cam.sources]  # F S 3 h w
        tgt = self.target[:, None].expand_as(src)
        if cfg.exposure == "gain":
            src = src * fit_gain(tgt, src, self.mask[:, None].expand(-1, src.shape[1], -1, -1))
        ident = pixel_error(tgt, src, cfg.ssim_weight, cfg.ssim_window, cfg.ssim)  # F S h w
        big = torch.finfo(ident.dtype).max / 4
        self.identity = torch.where(self.source_ok[..., None, None], ident, torch.full_like(ident, big))
        self.region: torch.Tensor | None = None  # F S h w, see freeze_region

    def _reachable(self, sources: torch.Tensor, depths_m=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0)) -> torch.Tensor:
        """``[F x h x w]`` bool: pixels that land inside one of the ``sources`` (``[F x S]`` bool) for some
        depth among ``depths_m`` or at infinity (where an overlapping camera can see them at all)."""
        Fn, S, h, w = self.mp.shape[:4]
        out = torch.zeros(Fn, h, w, dtype=torch.bool, device=self.mp.device)
        cols = [j for j in range(S) if bool(sources[:, j].any())]
        for rho in [0.0] + [1.0 / d for d in depths_m]:
            for j in cols:
                proj = project_inverse_depth(
                    torch.full((Fn, h, w), rho, dtype=self.mp.dtype, device=self.mp.device),
                    None,
                    None,
                    None,
                    (h, w),
                    min_inv_depth=-1.0,
                    coefficients=(self.mp[:, j], self.e[:, j]),
                )
                out |= proj.valid & sources[:, j, None, None]
        return out

    def freeze_region(self, params: torch.Tensor | None, margin_px: float = 2.0) -> None:
        """Fix, per frame and source, the pixels whose warp may count (None: unfreeze).

        Which pixels leave the source image depends on the hypothesis; scoring them differently (e.g. by
        their identity error) biases the fit toward hypotheses that keep pixels in view, i.e. toward less
        parallax. Near an estimate, the set of pixels that project at least ``margin_px`` inside the source
        under ``params`` ``[F x 2]`` is fixed instead; leaving the image then costs the clamped sample.
        """
        self.region = None
        if params is None:
            return
        h, w = self.size
        rho = inverse_depth(params[:, None].to(self.dnorm.dtype), self.dnorm, self.space)  # F 1 h w
        proj = project_inverse_depth(
            rho[:, None],
            None,
            None,
            None,
            (h, w),
            min_inv_depth=self.min_inv,
            max_inv_depth=self.max_inv,
            margin=margin_px,
            coefficients=(self.mp[:, :, None], self.e[:, :, None]),
        )
        self.region = proj.valid[:, :, 0] & self.source_ok[..., None, None]  # F S h w

    def frames_per_chunk(self, hypotheses: int = 1) -> int:
        """Frames whose ``hypotheses`` fit in one batched evaluation of ``max_chunk_elems`` elements."""
        h, w = self.size
        per_pair = self.sources.shape[1] * self.channels * h * w * hypotheses
        return max(1, self.max_chunk_elems // per_pair)

    @property
    def num_frames(self) -> int:
        return self.target.shape[0]

    def evaluate(self, params: torch.Tensor, frames: torch.Tensor | None = None) -> CueResult:
        """Photometric cost of hypotheses.

        Args:
            params: ``[F' x N x 2]`` (s, r) per frame and hypothesis (float32; differentiable).
            frames: ``[F']`` long indices into this level's target frames (default: all).
        Returns:
            :class:`CueResult` with ``[F' x N]`` loss (mean over the frame's static mask of the per-pixel
            minimum reprojection error) and valid fraction (pixels where a warp wins, over all pixels).
        """
        if frames is None:
            frames = torch.arange(self.num_frames, device=params.device)
        Fn, N = params.shape[:2]
        limit = self.frames_per_chunk()  # (frame, hypothesis) pairs per chunk
        losses, fracs = [], []
        if N <= limit:
            fc = max(1, limit // N)
            for i in range(0, Fn, fc):
                res = self._evaluate(params[i : i + fc], frames[i : i + fc])
                losses.append(res.loss)
                fracs.append(res.valid_frac)
            return CueResult(torch.cat(losses), torch.cat(fracs))
        for i in range(Fn):
            row_l, row_f = [], []
            for j in range(0, N, limit):
                res = self._evaluate(params[i : i + 1, j : j + limit], frames[i : i + 1])
                row_l.append(res.loss)
                row_f.append(res.valid_frac)
            losses.append(torch.cat(row_l, 1))
            fracs.append(torch.cat(row_f, 1))
        return CueResult(torch.cat(losses), torch.cat(fracs))

    def _evaluate(self, params: torch.Tensor, frames: torch.Tensor) -> CueResult:
        cfg = self.cfg
        Fn, N = params.shape[:2]
        S = self.sources.shape[1]
        h, w = self.size
        rho = inverse_depth(params, self.dnorm[frames], self.space)  # F N h w
        mask = self.mask[frames]  # F h w
        frozen = self.region is not None
        proj = project_inverse_depth(
            rho[:, None],
            None,
            None,
            None,
            (h, w),
            min_inv_depth=self.min_inv,
            max_inv_depth=self.max_inv,
            # with a frozen region, leaving the image does not invalidate (the sample is clamped)
            margin=-1e9 if frozen else 0.0,
            coefficients=(self.mp[frames][:, :, None], self.e[frames][:, :, None]),
        )  # F S N h w
        valid = proj.valid & self.source_ok[frames][:, :, None, None, None]
        if self.pix_ok is not None:
            valid = valid & self.pix_ok[frames][:, :, None]
        if frozen:
            valid = valid & self.region[frames][:, :, None]
        C = self.channels
        src = self.images[self.sources[frames]].reshape(Fn * S, C, h, w)
        warped = sample(src, proj.grid.reshape(Fn * S, N, h, w, 2))  # (F S) C N h w
        warped = warped.reshape(Fn, S, C, N, h, w).permute(0, 1, 3, 2, 4, 5)  # F S N C h w
        tgt = self.target[frames][:, None, None]  # F 1 1 C h w (broadcast, not copied)
        if cfg.exposure == "gain":
            warped = warped * fit_gain(tgt, warped, valid & mask[:, None, None])
        moments = None
        if cfg.ssim == "box":
            moments = tuple(m[frames][:, None, None] for m in self.target_moments)
        err = pixel_error(tgt, warped, cfg.ssim_weight, cfg.ssim_window, cfg.ssim, moments)  # F S N h w
        ident = self.identity[frames][:, :, None] if cfg.automask else None
        loss_map, used, has_warp = min_reprojection(err, valid, ident)  # F N h w
        m = mask[:, None]
        denom_mask = m if cfg.automask else (m & has_warp)
        loss = (loss_map * m).sum((-2, -1)) / denom_mask.sum((-2, -1)).clamp(min=1)
        frac = (used & m).sum((-2, -1)).float() / float(h * w)
        return CueResult(loss, frac)


class GroundCue:
    """Ground-plane cue: flat-ground pixels have the metric depth of the ego ground plane.

    For each target frame, pixels whose class is flat ground (with the class's surface height, see
    ``CalibrationConfig.ground_classes``) and whose ray meets that plane within ``ground_max_depth_m`` give
    an observation (d~, rho): the normalised relative value and the plane's inverse depth. Label boundaries
    are eroded by ``ground_erode_px``; at most ``ground_max_pixels`` observations per frame are kept (evenly
    subsampled, deterministic).

    :meth:`fit` fits (s, r) per frame alone, robustly (:func:`occlabel.geometry.ground.robust_linear_fit` on
    relative inverse-depth residuals: L1 start, then Tukey); :meth:`evaluate` scores hypotheses by a capped
    quadratic of the relative residuals over the fit's inliers (the term added to the photometric
    objective); :meth:`depth_ratio` compares two hypotheses on the ground pixels.

    Attributes:
        dnorm: ``[F x n]`` float32 normalised relative values d~ of the observations (0 in padding).
        inv_depth: ``[F x n]`` float32 inverse plane depth (1/metres; 1 in padding).
        present: ``[F x n]`` bool, real observations.
        count: ``[F]`` numpy int, ground pixels of each frame before subsampling.
        params: ``[F x 2]`` float64 numpy ground-alone (s, r) (NaN until :meth:`fit`, or where none).
        ok: ``[F]`` numpy bool, the ground fit is usable (enough pixels, inliers, inside the bounds).
        inlier_frac: ``[F]`` numpy, fraction of the observations within ``ground_inlier_tol`` of the fit.
        residual: ``[F]`` numpy, robust scale of the fit's relative residuals.
        inliers: ``[F x n]`` bool, observations within ``ground_inlier_tol`` of the fit.
    """

    def __init__(
        self,
        dnorm: torch.Tensor,
        labels: torch.Tensor,
        K: torch.Tensor,
        T_ego_from_cam: torch.Tensor,
        heights: torch.Tensor,
        cfg: CalibrationConfig,
        space: str,
    ):
        """
        Args:
            dnorm: ``[F x h x w]`` normalised relative values of the target frames (NaN = none).
            labels: ``[F x h x w]`` uint8 2D semantics.
            K: ``[F x 3 x 3]`` intrinsics at that resolution.
            T_ego_from_cam: ``[F x 4 x 4]`` camera (OpenCV) to ego (z up) of each target frame.
            heights: ``[256]`` float32 surface height above the road per label (NaN: not ground).
        """
        self.cfg, self.space = cfg, space
        Fn, h, w = dnorm.shape
        dev = dnorm.device
        z_surface = heights.to(dev)[labels.long()] + cfg.ground_height_m  # F h w, NaN off the ground
        ground = torch.isfinite(z_surface)
        r = int(cfg.ground_erode_px)
        if r > 0:  # same label all around: no boundary pixels (labels bleed, disparity is blurred there)
            lab = labels.float()[:, None]
            hi = F.max_pool2d(lab, 2 * r + 1, 1, r)
            lo = -F.max_pool2d(-lab, 2 * r + 1, 1, r)
            ground &= (hi == lo)[:, 0]
        depth, hit = plane_depth(K, T_ego_from_cam, h, w, z_surface, cfg.ground_max_depth_m)
        m = ground & hit & torch.isfinite(dnorm)
        self.count = m.sum((-2, -1)).cpu().numpy()
        n = int(max(1, min(cfg.ground_max_pixels, self.count.max(initial=0))))
        self.dnorm = torch.zeros(Fn, n, device=dev)
        self.inv_depth = torch.ones(Fn, n, device=dev)
        self.present = torch.zeros(Fn, n, dtype=torch.bool, device=dev)
        flat_d, flat_z = dnorm.reshape(Fn, -1), depth.reshape(Fn, -1)
        for i in range(Fn):
            idx = torch.nonzero(m[i].reshape(-1))[:, 0]
            if idx.numel() > n:  # evenly spaced over the (row-major) ground pixels
                idx = idx[torch.linspace(0, idx.numel() - 1, n, device=dev).round().long()]
            k = idx.numel()
            self.dnorm[i, :k] = flat_d[i, idx].float()
            self.inv_depth[i, :k] = 1.0 / flat_z[i, idx].float()
            self.present[i, :k] = True
        self.params = np.full((Fn, 2), np.nan)
        self.ok = np.zeros(Fn, bool)
        self.inlier_frac = np.zeros(Fn, np.float32)
        self.residual = np.full(Fn, np.nan, np.float32)
        self.inliers = torch.zeros_like(self.present)

    @property
    def num_frames(self) -> int:
        return self.dnorm.shape[0]

    def fit(self, s_bounds: tuple[float, float], r_bounds: tuple[float, float], min_pixels: float) -> None:
        """Fit (s, r) of every frame to its ground pixels alone; sets params, ok, inlier_frac, residual.

        Disparity space: rho = alpha d~ + beta with alpha = exp(s) (1 - r), beta = exp(s) r, fitted on the
        relative residual ``rho_hat / rho - 1`` (design [d~/rho, 1/rho], target 1). Depth space: z = c0 +
        c1 d~ with c0 = exp(-s), c1 = exp(-s) (1/r - 1), on ``z_hat / z - 1`` (design [rho, d~ rho]).
        A fit is usable with at least ``min_pixels`` ground pixels, an inlier fraction of at least
        ``ground_min_inliers`` and (s, r) inside the bounds.
        """
        cfg = self.cfg
        rho, d = self.inv_depth.double(), self.dnorm.double()
        if self.space == "disparity":
            A = torch.stack([d / rho, 1 / rho], -1)
        else:
            A = torch.stack([rho, d * rho], -1)
        fit = robust_linear_fit(A, torch.ones_like(rho), self.present.double())
        c = fit.coef.cpu().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.space == "disparity":
                near = c[:, 0] + c[:, 1]  # exp(s)
                ok = (c[:, 0] > 0) & (near > 0)
                s = np.log(np.where(ok, near, 1.0))
                r = c[:, 1] / np.where(ok, near, 1.0)
            else:
                ok = (c[:, 0] > 0) & (c[:, 0] + c[:, 1] > 0)
                s = -np.log(np.where(ok, c[:, 0], 1.0))
                r = c[:, 0] / np.where(ok, c[:, 0] + c[:, 1], 1.0)
        params = np.stack([s, r], 1)
        res = fit.residual
        self.inliers = self.present & (res.abs() <= cfg.ground_inlier_tol)
        npres = self.present.sum(1).clamp(min=1)
        self.inlier_frac = (self.inliers.sum(1).double() / npres).cpu().numpy().astype(np.float32)
        self.residual = fit.scale.cpu().numpy().astype(np.float32)
        ok &= np.all(np.isfinite(params), 1) & (self.count >= max(16, min_pixels))
        ok &= self.inlier_frac >= cfg.ground_min_inliers
        ok &= (params[:, 0] >= s_bounds[0]) & (params[:, 0] <= s_bounds[1])
        ok &= (params[:, 1] >= r_bounds[0]) & (params[:, 1] <= r_bounds[1])
        self.ok = ok
        self.params = np.where(ok[:, None], params, np.nan)
        self.inlier_frac = np.where(self.count > 0, self.inlier_frac, 0).astype(np.float32)

    def _rel(self, params: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``[F' x N x n]`` relative residuals rho_hat / rho - 1 of hypotheses ``[F' x N x 2]``."""
        rho_hat = inverse_depth(params, self.dnorm[frames][:, None], self.space)[:, :, 0]  # F' N n
        return rho_hat / self.inv_depth[frames][:, None] - 1

    def evaluate(self, params: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """``[F' x N]`` ground cost of hypotheses ``[F' x N x 2]``: mean over the inliers of the fit of
        ``min((e / ground_sigma)^2, 9)``, e the relative residual; 0 for frames without a usable fit."""
        if frames is None:
            frames = torch.arange(self.num_frames, device=params.device)
        ok = torch.as_tensor(self.ok, device=params.device)[frames]
        w = (self.inliers[frames] & ok[:, None]).to(params.dtype)[:, None]  # F' 1 n
        N, n = params.shape[1], self.dnorm.shape[1]
        step = max(1, (1 << 24) // max(1, frames.numel() * n))  # hypotheses per chunk: bounded memory
        out = []
        for j in range(0, N, step):
            e = self._rel(params[:, j : j + step], frames) / self.cfg.ground_sigma
            out.append(((e * e).clamp(max=9.0) * w).sum(-1) / w.sum(-1).clamp(min=1))
        return torch.cat(out, 1)

    def depth_ratio(self, params: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """``[F]`` median over each frame's ground inliers of depth(params) / depth(reference) (default
        reference: the ground fit); NaN where either is missing or the frame has no usable ground fit."""
        ref = self.params if reference is None else reference
        p = torch.as_tensor(np.nan_to_num(params), dtype=torch.float32, device=self.dnorm.device)
        q = torch.as_tensor(np.nan_to_num(ref), dtype=torch.float32, device=self.dnorm.device)
        rho_p = inverse_depth(p[:, None], self.dnorm[:, None], self.space)[:, 0, 0]  # F n
        rho_q = inverse_depth(q[:, None], self.dnorm[:, None], self.space)[:, 0, 0]
        ok = self.inliers & (rho_p > 0) & (rho_q > 0)
        ratio = torch.where(ok, rho_q / rho_p.clamp(min=1e-12), torch.full_like(rho_p, float("nan")))
        out = torch.nanmedian(ratio, dim=1).values.cpu().numpy().astype(np.float64)
        bad = ~self.ok | ~np.all(np.isfinite(params), 1) | ~np.all(np.isfinite(ref), 1)
        out[bad] = np.nan
        return out

    def subset(self, idx: torch.Tensor) -> GroundCue:
        """The cue restricted to target frames ``idx`` ``[F']`` (shares the tensors' storage)."""
        i = idx.cpu().numpy()
        out = object.__new__(GroundCue)
        out.cfg, out.space = self.cfg, self.space
        out.dnorm, out.inv_depth, out.present = self.dnorm[idx], self.inv_depth[idx], self.present[idx]
        out.inliers = self.inliers[idx]
        out.count, out.params, out.ok = self.count[i], self.params[i], self.ok[i]
        out.inlier_frac, out.residual = self.inlier_frac[i], self.residual[i]
        return out


# --------------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """Per-frame outcome of :func:`fit_camera` (numpy, ``[F]`` each; params ``[F x 2]``)."""

    params: np.ndarray
    loss: np.ndarray
    valid_frac: np.ndarray
    flags: np.ndarray
    scene_params: np.ndarray  # [2] the scene-level coarse (s, r)
    coarse_params: np.ndarray  # [F x 2] the per-frame coarse picks
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    #: [F] photometric loss at the ground cue's estimate, same level and masks as ``loss`` (NaN: none)
    loss_at_ground: np.ndarray | None = None


def hypothesis_grid(cfg: CalibrationConfig, space: str, device=None) -> torch.Tensor:
    """The coarse (s, r) grid ``[N x 2]`` float32 (s log-spaced over ``near_depth_range_m``)."""
    lo, hi = (math.log(1.0 / d) for d in reversed(cfg.near_depth_range_m))
    r = torch.tensor(_r_grid(cfg, space), dtype=torch.float32)
    s = torch.linspace(lo, hi, cfg.s_steps)
    ss, rr = torch.meshgrid(s, r, indexing="ij")
    return torch.stack([ss.reshape(-1), rr.reshape(-1)], -1).to(device)


def _bounds(cfg: CalibrationConfig, space: str) -> tuple[tuple[float, float], tuple[float, float]]:
    s_b = (math.log(1.0 / cfg.near_depth_range_m[1]) - 1.0, math.log(1.0 / cfg.near_depth_range_m[0]) + 1.0)
    return s_b, (cfg.r_bounds if space == "disparity" else cfg.r_bounds_depth)


def _r_grid(cfg: CalibrationConfig, space: str) -> tuple[float, ...]:
    return cfg.r_grid if space == "disparity" else cfg.r_grid_depth


def _prior(params: torch.Tensor, centre: torch.Tensor, sigma: tuple[float, float]) -> torch.Tensor:
    """``[F x N]`` squared Mahalanobis distance of params ``[F x N x 2]`` to ``centre`` ``[2]``."""
    sig = params.new_tensor(sigma)
    return (((params - centre) / sig) ** 2).sum(-1)


class _Penalty:
    """The terms added to the photometric loss, in units of each frame's loss scale: the weak prior toward
    the scene value, ``ground_weight`` x the ground cost (:meth:`GroundCue.evaluate`) with a ground cue, and
    ``sky_weight`` x the sky cost (:func:`sky_cost`) for frames with sky, in disparity space.
    """

    def __init__(
        self,
        scene: torch.Tensor,
        cfg: CalibrationConfig,
        ground: GroundCue | None,
        sky: torch.Tensor | None = None,
        space: str = "disparity",
    ):
        self.scene, self.cfg, self.ground = scene, cfg, ground
        use_sky = cfg.sky and cfg.sky_weight > 0 and space == "disparity" and sky is not None
        self.sky = sky if use_sky and bool(torch.isfinite(sky).any()) else None
        self.loss_scale: torch.Tensor | None = None  # [F], set after the coarse search

    def __call__(self, params: torch.Tensor, frames: torch.Tensor | None = None, scale=None) -> torch.Tensor:
        """``[F' x N]`` penalty of hypotheses ``[F' x N x 2]`` of frames ``frames`` (default: all)."""
        if frames is None:
            frames = torch.arange(params.shape[0], device=params.device)
        scale = self.loss_scale[frames] if scale is None else scale
        out = self.cfg.prior_weight * _prior(params, self.scene, self.cfg.prior_sigma)
        if self.ground is not None and self.cfg.ground_weight > 0:
            out = out + self.cfg.ground_weight * self.ground.evaluate(params, frames)
        if self.sky is not None:
            out = out + self.cfg.sky_weight * sky_cost(params, self.sky[frames], self.cfg.sky_sigma)
        return scale[:, None] * out


def sky_cost(params: torch.Tensor, sky: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[F x N]`` sky cost of hypotheses ``[F x N x 2]`` (disparity space): Huber(q / sigma) with the kink
    at 3 (u^2 below, 6|u| - 9 above: outliers pull linearly), where q = rho(d_sky) / exp(s) =
    (1 - r) d~_sky + r is the inverse depth the hypothesis gives the sky relative to the near reference's
    (0 for a sky at infinity); 0 where ``sky`` ``[F]`` is NaN."""
    ok = torch.isfinite(sky)
    d = torch.where(ok, sky, torch.zeros_like(sky))[:, None]
    u = ((1 - params[..., 1]) * d + params[..., 1]).abs() / sigma
    cost = torch.where(u <= 3, u * u, 6 * u - 9)
    return torch.where(ok[:, None], cost, torch.zeros_like(cost))


def fit_camera(
    cam: CameraFrames,
    cfg: CalibrationConfig,
    space: str,
    fit: np.ndarray,
    max_chunk_elems: int,
    ground: GroundCue | None = None,
) -> FitResult:
    """Fit (s, r) for the target frames of one camera.

    Args:
        cam: the camera's frames (:class:`CameraFrames`).
        fit: ``[F]`` bool, frames to fit (others get NaN params and are left to the caller's fallback).
        ground: the fitted ground cue of the same target frames, or None. Where its fit is usable it adds a
            start (the coarse search also looks around the ground estimate), a term to the objective
            (``ground_weight``) and ``loss_at_ground`` for the cross-check.
    Returns:
        :class:`FitResult`; flags carry ``low_valid`` and ``not_converged`` (the caller adds stationary and
        fallback).
    """
    dev = cam.images.device
    Fn = cam.targets.shape[0]
    out_params = np.full((Fn, 2), np.nan)
    loss_out = np.full(Fn, np.nan, np.float32)
    frac_out = np.zeros(Fn, np.float32)
    flags = np.zeros(Fn, np.uint8)
    coarse_out = np.full((Fn, 2), np.nan)
    at_ground = np.full(Fn, np.nan, np.float32)
    idx = torch.as_tensor(np.flatnonzero(fit), device=dev, dtype=torch.long)
    if idx.numel() == 0:
        return FitResult(out_params, loss_out, frac_out, flags, np.full(2, np.nan), coarse_out, {}, at_ground)
    sub = _subset(cam, idx)
    gsub = ground.subset(idx) if ground is not None and bool(ground.ok[fit].any()) else None
    g_ok = torch.as_tensor(gsub.ok, device=dev) if gsub is not None else None
    (s_lo, s_hi), (r_lo, r_hi) = _bounds(cfg, space)

    timings: dict[str, float] = {}
    tic = time.perf_counter()
    # 1. coarse search at low resolution (grey): scene level on a subset, then per frame
    with torch.no_grad():
        cue = PhotometricCue(sub, cfg.coarse_width, cfg, space, max_chunk_elems, grey=True)
        grid = hypothesis_grid(cfg, space, dev)  # N 2
        n = idx.numel()
        # the full (s, r) grid on every frame (a line over s at one r misses basins at other r)
        cost = cue.evaluate(grid[None].expand(n, -1, -1).contiguous()).loss  # F N
        pick = torch.linspace(0, n - 1, min(n, cfg.scene_frames), device=dev).round().long().unique()
        norm = cost[pick] / cost[pick].amin(1, keepdim=True).clamp(min=1e-9)
        scene = grid[norm.mean(0).argmin()]
        penalty = _Penalty(scene, cfg, gsub, sub.sky, space)
        hyp1 = grid[None].expand(n, -1, -1)
        c1 = cost + penalty(hyp1, scale=cost.amin(1))
        best1 = hyp1[torch.arange(n, device=dev), c1.argmin(1)]  # F 2
        s_line = grid[:: len(_r_grid(cfg, space)), 0]
        step = float(s_line[1] - s_line[0]) if s_line.numel() > 1 else 0.1
        ds = torch.arange(-3, 4, device=dev, dtype=torch.float32) * step / 2
        rr = torch.tensor(_r_grid(cfg, space), device=dev, dtype=torch.float32)
        local = torch.stack(torch.meshgrid(ds, rr, indexing="ij"), -1).reshape(-1, 2)  # M 2
        start = best1
        hyp2, c2 = _local_search(cue, local, start, cfg)
        loss_scale = c2.amin(1).clamp(min=1e-6)  # F
        penalty.loss_scale = loss_scale
        c2 = c2 + penalty(hyp2)
        params0 = hyp2[torch.arange(n, device=dev), c2.argmin(1)].clone()  # F 2
        best0 = c2.amin(1)
        if gsub is not None:  # the same local search around the ground estimate; keep the better start
            g_params = torch.as_tensor(np.nan_to_num(gsub.params), dtype=torch.float32, device=dev)
            g_start = torch.where(g_ok[:, None], g_params, start)
            rows = torch.nonzero(g_ok)[:, 0]
            hyp3, c3 = _local_search(cue, local, g_start[rows], cfg, rows)
            c3 = c3 + penalty(hyp3, rows)
            better = c3.amin(1) < best0[rows]
            params0[rows[better]] = hyp3[torch.arange(rows.numel(), device=dev), c3.argmin(1)][better]
    coarse_out[fit] = params0.cpu().numpy()
    timings["coarse"] = time.perf_counter() - tic

    # 2. per-frame refinement over the pyramid (Adam on (s, r), batched over frames)
    w0 = cam.images.shape[-1]
    widths = sorted({min(int(w), w0) for w in cfg.widths if w > 0}) or [w0]
    params = params0.clone()
    best_loss = best_frac = None
    for lvl, width in enumerate(widths):
        cue = PhotometricCue(sub, width, cfg, space, max_chunk_elems)
        cue.freeze_region(params, cfg.region_margin_px * width / cfg.coarse_width)
        iters = cfg.iters[min(lvl, len(cfg.iters) - 1)]
        lr = cfg.lr[min(lvl, len(cfg.lr) - 1)]
        params, best_loss, best_frac = _adam(cue, params, penalty, iters, lr, (s_lo, s_hi), (r_lo, r_hi))
        timings[f"refine_{width}"] = time.perf_counter() - tic - sum(timings.values())
    tic2 = time.perf_counter()
    # 3. polish by pattern search at the last level; frames that keep moving are not converged
    with torch.no_grad():
        params, best_loss, best_frac, moving = _polish(cue, params, best_loss, best_frac, penalty, cfg)
        final = best_loss - penalty(params[:, None])[:, 0]  # the photometric loss alone
        if gsub is not None:  # the photometric verdict on the ground estimate, region frozen at each
            rows = torch.nonzero(g_ok)[:, 0]
            margin = cfg.region_margin_px * widths[-1] / cfg.coarse_width
            cue.freeze_region(params, margin)
            own = cue.evaluate(params[rows][:, None], rows).loss[:, 0]
            cue.freeze_region(torch.where(g_ok[:, None], g_params, params), margin)
            other = cue.evaluate(g_params[rows][:, None], rows).loss[:, 0]
            ratio = (other / own.clamp(min=1e-9)).cpu().numpy()
            sub_at = np.full(n, np.nan, np.float32)
            sub_at[rows.cpu().numpy()] = final[rows].cpu().numpy() * ratio
            at_ground[fit] = sub_at
    p = params.cpu().numpy().astype(np.float64)
    out_params[fit] = p
    loss_out[fit] = final.cpu().numpy()
    frac_out[fit] = best_frac.cpu().numpy()
    f = np.zeros(idx.numel(), np.uint8)
    f[moving.cpu().numpy()] |= FLAGS["not_converged"]
    at_bound = (p[:, 0] <= s_lo + 1e-4) | (p[:, 0] >= s_hi - 1e-4) | (p[:, 1] >= r_hi - 1e-4)
    f[at_bound] |= FLAGS["not_converged"]
    f[frac_out[fit] < cfg.min_valid_frac] |= FLAGS["low_valid"]
    flags[fit] = f
    timings["polish"] = time.perf_counter() - tic2
    log.debug("fit_camera: %d frames, seconds %s", idx.numel(), {k: round(v, 2) for k, v in timings.items()})
    return FitResult(
        out_params,
        loss_out,
        frac_out,
        flags,
        scene.cpu().numpy().astype(np.float64),
        coarse_out,
        timings,
        at_ground,
    )


def _local_search(cue: PhotometricCue, local: torch.Tensor, start: torch.Tensor, cfg, frames=None):
    """Photometric cost of the grid ``local`` ``[M x 2]`` (offsets in s, absolute r) around each frame's
    ``start`` ``[F' x 2]`` s, with the region frozen at the start. Returns (hypotheses ``[F' x M x 2]``,
    cost ``[F' x M]``)."""
    hyp = local[None].repeat(start.shape[0], 1, 1)
    hyp[..., 0] += start[:, None, 0]
    if frames is None:
        cue.freeze_region(start, cfg.region_margin_px)
    else:
        full = torch.zeros(cue.num_frames, 2, device=start.device, dtype=start.dtype)
        full[frames] = start
        cue.freeze_region(full, cfg.region_margin_px)
    return hyp, cue.evaluate(hyp, frames).loss


def _adam(cue, params0, penalty, iters, lr, s_bounds, r_bounds, betas=(0.9, 0.999), eps=1e-8):
    """Batched Adam on per-frame (s, r) ``[F x 2]`` with a cosine-decayed step; returns the best iterate.

    Frames are independent (the objective is a sum of per-frame terms and Adam is per coordinate), so this
    is F independent 2-D optimisations run together. Returns (params, objective, valid_frac) ``[F]``.
    """
    params = params0.detach().clone()
    m = torch.zeros_like(params)
    v = torch.zeros_like(params)
    best = params.clone()
    best_loss = torch.full(params.shape[:1], float("inf"), device=params.device)
    best_frac = torch.zeros(params.shape[:1], device=params.device)
    lo = params.new_tensor([s_bounds[0], r_bounds[0]])
    hi = params.new_tensor([s_bounds[1], r_bounds[1]])
    chunk = cue.frames_per_chunk()
    for it in range(iters + 1):
        # the objective is a sum over frames: evaluate and differentiate chunk by chunk (bounded memory)
        losses, fracs, grads = [], [], []
        for i in range(0, params.shape[0], chunk):
            frames = torch.arange(i, min(i + chunk, params.shape[0]), device=params.device)
            p = params[frames].clone().requires_grad_(it < iters)
            with torch.set_grad_enabled(it < iters):
                res = _objective(cue, p, frames, penalty)
            if it < iters:
                grads.append(torch.autograd.grad(res.loss.sum(), p)[0])
            losses.append(res.loss.detach())
            fracs.append(res.valid_frac)
        loss, frac = torch.cat(losses), torch.cat(fracs)
        with torch.no_grad():
            better = loss < best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_frac = torch.where(better, frac, best_frac)
            best = torch.where(better[:, None], params, best)
        if it == iters:
            break
        g = torch.cat(grads)
        g = torch.nan_to_num(g)
        step = lr * 0.5 * (1 + math.cos(math.pi * it / max(iters, 1)))
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        mhat = m / (1 - betas[0] ** (it + 1))
        vhat = v / (1 - betas[1] ** (it + 1))
        params = torch.minimum(torch.maximum(params - step * mhat / (vhat.sqrt() + eps), lo), hi)
    return best, best_loss, best_frac


def _objective(
    cue: PhotometricCue, params: torch.Tensor, frames: torch.Tensor, penalty: _Penalty
) -> CueResult:
    """Per-frame photometric loss + penalty (prior, ground term), ``[F']`` for params ``[F' x 2]``."""
    res = cue.evaluate(params[:, None], frames)
    return CueResult(res.loss[:, 0] + penalty(params[:, None], frames)[:, 0], res.valid_frac[:, 0])


def _polish(cue, params, loss, frac, penalty: _Penalty, cfg: CalibrationConfig):
    """Pattern search around ``params`` ``[F x 2]``: up to ``polish_rounds`` moves to the best of the 8
    neighbours on the (``polish_steps``) lattice, if better.

    Only the frames that moved in the previous round are evaluated again. Returns (params, objective,
    valid_frac, moving): ``moving`` ``[F]`` marks frames still improving after the last round.
    """
    ds, dr = cfg.polish_steps
    # the 8 neighbours: diagonal moves follow the valley where s and r trade off (scale vs shift)
    offsets = params.new_tensor(
        [[ds, 0.0], [-ds, 0.0], [0.0, dr], [0.0, -dr], [ds, dr], [-ds, -dr], [ds, -dr], [-ds, dr]]
    )
    active = torch.arange(params.shape[0], device=params.device)
    moving = torch.zeros(params.shape[0], dtype=torch.bool, device=params.device)
    for _ in range(cfg.polish_rounds):
        cand = params[active][:, None] + offsets[None]  # A 8 2
        res = cue.evaluate(cand, active)
        obj = res.loss + penalty(cand, active)
        j = obj.argmin(1)
        rows = torch.arange(active.numel(), device=params.device)
        better = obj[rows, j] < loss[active] - 1e-7
        moved = active[better]
        params[moved] = cand[rows, j][better]
        loss[moved] = obj[rows, j][better]
        frac[moved] = res.valid_frac[rows, j][better]
        moving = torch.zeros_like(moving)
        moving[moved] = True
        active = moved
        if active.numel() == 0:
            break
    return params, loss, frac, moving


def _subset(cam: CameraFrames, idx: torch.Tensor) -> CameraFrames:
    i = idx.cpu().numpy()
    return CameraFrames(
        images=cam.images,
        K=cam.K,
        T_world_from_cam=cam.T_world_from_cam,
        values=cam.values[idx],
        static=cam.static[idx],
        targets=cam.targets[idx],
        sources=cam.sources[idx],
        source_ok=cam.source_ok[idx],
        baseline_m=cam.baseline_m[i],
        reference=Reference(cam.reference.d_lo[i], cam.reference.d_hi[i], cam.reference.space),
        solid=cam.solid[idx] if cam.solid is not None else None,
        movable_ok=cam.movable_ok[idx] if cam.movable_ok is not None else None,
        sky=cam.sky[idx] if cam.sky is not None else None,
    )


# --------------------------------------------------------------------------------------------------
# Stage entry point
# --------------------------------------------------------------------------------------------------


#: per-frame ``calibration/cue`` codes (the store's CALIBRATION_CUES): which cue decided the frame's values.
#: none 0: no value (scale, shift NaN); photometric 1: photometric fit with temporal sources (plus overlap
#: sources and the ground term where enabled); overlap 2: photometric fit from the overlapping cameras alone
#: (no temporal parallax); ground 3: the ground-plane fit alone; prior 4: the scene prior (median of the
#: camera's, or the scene's, decided frames).
CUES = CALIBRATION_CUES


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
    """Calibrate the relative depth of every frame of a cache; returns ``cache_path`` (a Path or the URL).

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
    unknown = set(options) - set(CalibrationConfig.__dataclass_fields__)
    if unknown:
        raise OccLabelError(f"calibrate-depth: unknown option(s) {', '.join(sorted(unknown))}")
    cfg = CalibrationConfig(**options)
    if cfg.exposure not in ("gain", "none"):
        raise OccLabelError(f"calibrate-depth: exposure must be 'gain' or 'none', got {cfg.exposure!r}")
    if not (cfg.photometric or cfg.overlap or cfg.ground):
        raise OccLabelError("calibrate-depth: every cue is switched off (photometric, overlap, ground)")
    neighbours = tuple(int(n) for n in neighbours if int(n) != 0)
    if not neighbours:
        raise OccLabelError("calibrate-depth: neighbours must contain a non-zero frame offset")
    torch.manual_seed(cfg.seed)
    dev = resolve_device(device)
    max_elems = cfg.max_chunk_elems or (2**26 if dev.type == "cuda" else 2**23)
    cache = open_cache(cache_path, "a")
    depth_key = cache.resolve_key("depth", depth_key)
    try:
        semantics_key = cache.resolve_key("semantics", semantics_key)
    except StoreError:
        semantics_key = None
    dataset = cache.open_dataset()
    names = scenes or cache.scenes()
    t0 = time.perf_counter()
    stats: dict[str, Any] = {
        "frames": 0,
        **{k: 0 for k in FLAGS},
        "baselines": [],
        "cues": dict.fromkeys(CUES, 0),
    }
    overlaps: dict[str, dict[str, list[str]]] = {}
    jobs = [(s, c) for s in names for c in cache.cameras(s)]
    bar = progress_bar(total=len(jobs), desc="calibrate-depth", enabled=progress, unit="cam")
    per_scene: dict[str, dict[str, Any]] = {}
    for sname in names:
        scene = dataset.scene(sname)
        rig = overlapping_cameras(cache, scene, cfg) if cfg.overlap else {}
        overlaps[sname] = rig
        results: dict[str, dict[str, Any]] = {}
        for cam in cache.cameras(sname):
            results[cam] = _calibrate_camera(
                cache,
                scene,
                cam,
                depth_key,
                semantics_key,
                neighbours,
                cfg,
                dev,
                max_elems,
                overwrite,
                rig.get(cam, []),
            )
            bar.update(1)
        sstats: dict[str, Any] = {
            "frames": 0,
            **{k: 0 for k in FLAGS},
            "baselines": [],
            "cues": dict.fromkeys(CUES, 0),
        }
        _fallback_and_write(cache, sname, results, depth_key, cfg, sstats)
        if write_depth:
            for cam, r in results.items():
                _write_metric_depth(cache, sname, cam, depth_key, semantics_key, r["todo"], cfg.max_depth_m)
        for k in ("frames", *FLAGS):
            stats[k] += sstats[k]
        stats["baselines"] += sstats["baselines"]
        for k, v in sstats["cues"].items():
            stats["cues"][k] += v
        per_scene[sname] = {
            "method": METHOD,
            "method_version": METHOD_VERSION,
            "depth_key": depth_key,
            "semantics_key": semantics_key,
            "neighbours": list(neighbours),
            "device": str(dev),
            "overwrite": overwrite,
            "options": cfg.to_dict(),
            "overlapping_cameras": rig,
            "frames_calibrated": sstats["frames"],
            "median_source_baseline_m": float(np.median(sstats["baselines"]))
            if sstats["baselines"]
            else None,
            "flag_counts": {k: sstats[k] for k in FLAGS},
            "cue_counts": sstats["cues"],
        }
    bar.close()
    elapsed = time.perf_counter() - t0
    cache.record_stage(
        "calibrate_depth",
        {
            "method": METHOD,
            "method_version": METHOD_VERSION,
            "depth_key": depth_key,
            "semantics_key": semantics_key,
            "neighbours": list(neighbours),
            "scenes": list(names),
            "device": str(dev),
            "overwrite": overwrite,
            "options": cfg.to_dict(),
            "overlapping_cameras": overlaps,
            "frames_calibrated": stats["frames"],
            "median_source_baseline_m": float(np.median(stats["baselines"])) if stats["baselines"] else None,
            "flag_counts": {k: stats[k] for k in FLAGS},
            "cue_counts": stats["cues"],
            "seconds": elapsed,
        },
        scenes=per_scene,
    )
    log.info(
        "calibrate-depth: %d frames in %.1f s, flags %s, cues %s",
        stats["frames"],
        elapsed,
        {k: stats[k] for k in FLAGS},
        stats["cues"],
    )
    return cache.path


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


def ground_heights(vocab: Vocabulary | None, cfg: CalibrationConfig) -> tuple[np.ndarray, tuple[int, ...]]:
    """Surface height above the road per 2D label, and the movable class ids, for a vocabulary.

    Args:
        vocab: the semantics' vocabulary (:meth:`Cache.vocabulary`); None (no semantics) means the Occ3D
            ids of occlabel.conventions.
    Returns:
        heights <np.float32: 256> (NaN for labels that are not flat ground; see
        ``CalibrationConfig.ground_classes``) and the ids of the vocabulary's movable classes.
    """
    names, moving = dict(zip(OCC3D_NAMES, range(len(OCC3D_NAMES)), strict=True)), OCC3D_MOVING
    if vocab is not None:
        names, moving = {c.name: c.id for c in vocab.classes}, vocab.moving_ids()
    heights = np.full(256, np.nan, np.float32)
    for name, h in cfg.ground_classes:
        if name in names:
            heights[names[name]] = float(h)
    return heights, tuple(moving)


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


def _load_image(path, size: tuple[int, int], dev) -> torch.Tensor:
    """``[3 x h x w]`` float32 RGB in [0, 1] of an image file, resized (antialiased) to ``size`` (h, w)."""
    img = load_image(path)
    x = torch.from_numpy(img).to(dev).permute(2, 0, 1)[None].float() / 255.0
    if x.shape[-2:] != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0].clamp(0, 1)


def _image_time(frame, cam: str) -> float:
    ts = frame.images[cam].timestamp
    return float(frame.timestamp if ts is None else ts)


def _calibrate_camera(
    cache: Cache, scene, cam, depth_key, semantics_key, neighbours, cfg, dev, max_elems, overwrite, others=()
):
    """Fit the frames of one camera that need it; returns what :func:`_fallback_and_write` merges.

    ``others``: overlapping cameras of the rig (:func:`overlapping_cameras`), used as sources at the same
    frame when ``cfg.overlap``.
    """
    sname = scene.name
    T = len(scene.frames)
    space = cache.depth_attrs(sname, cam, depth_key).get("space", "disparity")
    if space not in ("disparity", "depth_m"):
        raise StoreError(f"{cache.path}: {sname}/{cam}: unknown depth space {space!r}")
    geo = cache.geometry(sname, cam)
    present = geo["present"].astype(bool)
    depth_done = cache.depth_done(sname, cam, depth_key).astype(bool)
    prev = None
    if cache.has_calibration(sname, cam, depth_key):
        prev = cache.read_calibration(sname, cam, depth_key)
    prev_done = prev["done"].astype(bool) if prev is not None else np.zeros(T, bool)
    todo = present & depth_done & (overwrite | ~prev_done)
    out = {"space": space, "prev": prev, "todo": todo, "T": T}
    if not todo.any():
        return out

    values_all = cache.read_depth(sname, cam, depth_key)  # T h w
    h, w = values_all.shape[-2:]
    labels_all = None
    heights, moving_ids = ground_heights(None, cfg)
    if semantics_key is not None:
        try:
            labels_all = cache.read_semantics(sname, cam, semantics_key)[0]
            heights, moving_ids = ground_heights(cache.vocabulary(sname, cam, semantics_key), cfg)
        except StoreError:
            labels_all = None

    targets = np.flatnonzero(todo)
    Fn = len(targets)
    T_wc = geo["T_world_from_cam"]
    sources, exists, baseline = choose_sources(
        T_wc[:, :3, 3], present, targets, neighbours, cfg.target_baseline_m, cfg.max_stride
    )
    moving_ok = exists & (baseline >= cfg.min_baseline_m)
    temporal_ok = moving_ok & cfg.photometric

    # the pool of source images: this camera's frames, then each overlapping camera's frames
    others = list(others) if cfg.overlap else []
    P = T + len(others) * Fn  # this camera's frames, then each other camera's image of each target
    images = torch.zeros(P, 3, h, w, dtype=torch.float32, device=dev)
    K_pool = np.tile(np.eye(3), (P, 1, 1))
    T_pool = np.tile(np.eye(4), (P, 1, 1))
    K_pool[:T], T_pool[:T] = geo["K"], T_wc
    need = np.union1d(targets, sources[temporal_ok]) if cfg.photometric else targets
    for t in need:
        images[t] = _load_image(scene.frames[t].images[cam].path, (h, w), dev)
    o_src = np.zeros((Fn, len(others)), np.int64)
    o_ok = np.zeros((Fn, len(others)), bool)
    o_base = np.full((Fn, len(others)), np.nan)
    o_sync = np.zeros((Fn, len(others)), bool)
    for j, other in enumerate(others):
        g2 = cache.geometry(sname, other)
        m2 = cache.camera_meta(sname, other)
        sx, sy = w / m2["width"], h / m2["height"]
        for i, t in enumerate(targets):
            if not g2["present"][t]:
                continue
            k = T + j * Fn + i
            images[k] = _load_image(scene.frames[t].images[other].path, (h, w), dev)
            K_pool[k] = scale_intrinsics_np(g2["K"][t], sx, sy)
            T_pool[k] = g2["T_world_from_cam"][t]
            o_src[i, j] = k
            o_base[i, j] = float(np.linalg.norm(T_pool[k][:3, 3] - T_wc[t][:3, 3]))
            o_ok[i, j] = o_base[i, j] >= cfg.min_baseline_m
            dt = abs(_image_time(scene.frames[t], other) - _image_time(scene.frames[t], cam))
            o_sync[i, j] = dt <= cfg.overlap_max_dt_s

    values = torch.from_numpy(values_all[targets]).to(dev)
    finite = torch.isfinite(values)
    moving = moving_ids if cfg.ignore_moving else ()
    lab = None
    if labels_all is not None:
        lab = torch.from_numpy(np.ascontiguousarray(labels_all[targets])).to(dev)
        static = static_mask(lab, moving) & finite
        solid = (lab != SKY) & finite
    else:
        static = finite
        solid = finite
    d_lo, d_hi, n_static = _percentiles(values, static, finite, cfg.percentiles, space)
    has_ref = np.isfinite(d_lo) & np.isfinite(d_hi)
    ref = Reference(np.where(has_ref, d_lo, 0.0), np.where(has_ref, d_hi, 1.0), space)
    sky = None
    if lab is not None and cfg.sky and space == "disparity":
        sky = sky_values(values, lab, ref, cfg.ground_erode_px + 1, cfg.sky_min_frac)
    all_sources = np.concatenate([sources, o_src], 1)
    all_ok = np.concatenate([temporal_ok, o_ok], 1)
    movable_ok = np.concatenate([np.zeros_like(temporal_ok), o_ok & o_sync], 1)
    all_base = np.concatenate([baseline, o_base], 1)
    cols = all_ok.any(0)  # source columns no frame can use cost a warp each for nothing
    all_sources, all_ok, movable_ok, all_base = (
        x[:, cols] for x in (all_sources, all_ok, movable_ok, all_base)
    )
    camf = CameraFrames(
        images=images,
        K=torch.from_numpy(K_pool).float().to(dev),
        T_world_from_cam=torch.from_numpy(T_pool).double().to(dev),
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
    # ground cue: the ground-alone fit of every target frame
    ground = None
    if cfg.ground and lab is not None and np.isfinite(heights).any():
        T_ego_from_cam = np.stack([scene.frames[t].images[cam].T_ego_from_cam for t in targets])
        ground = GroundCue(
            camf.dnorm,
            lab,
            camf.K[camf.targets],
            torch.from_numpy(T_ego_from_cam).to(dev),
            torch.from_numpy(heights),
            cfg,
            space,
        )
        s_b, r_b = _bounds(cfg, space)
        ground.fit(s_b, r_b, cfg.ground_min_frac * h * w)
        ground.ok &= has_ref
        ground.params[~ground.ok] = np.nan

    stationary = ~moving_ok.any(1) if cfg.photometric else np.zeros(Fn, bool)
    has_temporal = temporal_ok.any(1)
    has_overlap = o_ok.any(1)
    n_solid = solid.sum((-2, -1)).cpu().numpy()
    min_px = max(16, cfg.min_valid_frac * h * w)
    enough = (has_temporal & (n_static >= min_px)) | (has_overlap & (n_solid >= min_px))
    fit = (has_temporal | has_overlap) & has_ref & enough
    t0 = time.perf_counter()
    res = fit_camera(camf, cfg, space, fit, max_elems, ground)
    log.debug("%s/%s: fitted %d frames in %.2f s", sname, cam, int(fit.sum()), time.perf_counter() - t0)
    flags = res.flags.copy()
    flags[stationary] |= FLAGS["stationary"]
    flags[(cfg.photometric | has_overlap) & ~stationary & ~(has_ref & enough)] |= FLAGS["low_valid"]
    ph_ok = fit & ((flags & FLAGS["low_valid"]) == 0)
    ph_cue = np.where(has_temporal, CUES["photometric"], CUES["overlap"]).astype(np.uint8)
    g_params = ground.params if ground is not None else np.full((Fn, 2), np.nan)
    g_ratio = ground.depth_ratio(res.params) if ground is not None else np.full(Fn, np.nan)
    params, cue, add = decide_cues(
        res.params, ph_ok, ph_cue, res.loss, res.loss_at_ground, g_params, g_ratio, cfg
    )
    flags |= add
    out.update(
        targets=targets,
        result=res,
        params=params,
        cue=cue,
        flags=flags,
        reference=ref,
        has_ref=has_ref,
        baseline_m=baseline[temporal_ok] if temporal_ok.any() else np.zeros(0),
        ground_params=g_params,
        ground_inliers=ground.inlier_frac if ground is not None else np.zeros(Fn, np.float32),
        ground_ratio=g_ratio,
    )
    # earlier good calibrations of this camera join the scene prior (for fallbacks on a resumed run)
    if prev is not None:
        old = np.flatnonzero(prev["done"].astype(bool) & ~todo & _decided(prev))
        if len(old):
            v = torch.from_numpy(values_all[old]).to(dev)
            fin = torch.isfinite(v)
            st = fin
            if labels_all is not None:
                st = (
                    static_mask(torch.from_numpy(np.ascontiguousarray(labels_all[old])).to(dev), moving) & fin
                )
            lo, hi, _ = _percentiles(v, st, fin, cfg.percentiles, space)
            p_old = Reference(lo, hi, space).from_scale_shift(prev["scale"][old], prev["shift"][old])
            out["prior_params"] = p_old[np.all(np.isfinite(p_old), 1)]
    return out


def sky_values(
    values: torch.Tensor, labels: torch.Tensor, ref: Reference, erode_px: int, min_frac: float
) -> torch.Tensor:
    """``[F]`` normalised relative value d~ of each frame's sky: the median over its SKY pixels that have sky
    all around (``erode_px``: the relative map is blurred across the horizon); NaN where fewer than
    ``min_frac`` of the pixels qualify.

    Args:
        values: ``[F x h x w]`` relative values; labels: ``[F x h x w]`` uint8; ref: the frames' references.
    """
    sky = (labels == SKY).float()[:, None]
    if erode_px > 0:
        sky = -F.max_pool2d(-sky, 2 * erode_px + 1, 1, erode_px)
    m = (sky[:, 0] > 0.5) & torch.isfinite(values)
    med = torch.nanmedian(torch.where(m, values, torch.full_like(values, float("nan"))).flatten(1), 1).values
    lo = torch.as_tensor(ref.d_lo, dtype=values.dtype, device=values.device)
    hi = torch.as_tensor(ref.d_hi, dtype=values.dtype, device=values.device)
    d = (med - lo) / (hi - lo).clamp(min=1e-12)
    enough = m.flatten(1).float().mean(1) >= min_frac
    return torch.where(enough, d, torch.full_like(d, float("nan")))


def decide_cues(
    ph_params: np.ndarray,
    ph_ok: np.ndarray,
    ph_cue: np.ndarray,
    ph_loss: np.ndarray,
    ph_loss_at_ground: np.ndarray | None,
    ground_params: np.ndarray,
    ground_ratio: np.ndarray,
    cfg: CalibrationConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame, the (s, r) to keep and the cue that decided it (before the scene-prior fallback).

    Rules, per frame:

    1. A photometric fit (``ph_ok``) and a usable ground fit: they agree when ``|ground_ratio - 1|``
       (median over the ground inliers of depth(photometric) / depth(ground)) is within
       ``cue_tolerance``; the photometric fit stands. Otherwise the frame gets ``cue_disagreement`` and the
       photometric fit stands only if its own objective rejects the ground estimate, i.e. its loss there
       is higher by more than ``photometric_margin``; else the ground estimate is taken. Rationale: the
       ground estimate is a direct metric measurement whose conditioning does not depend on texture or
       parallax, so it wins wherever the photometric objective cannot tell the two apart (flat or
       ambiguous cost: one facade plane, repeated texture, little parallax); a photometric objective that
       clearly prefers its own answer means the ground's assumptions failed (slope, kerbs, labels).
    2. A photometric fit only: it stands.
    3. A ground fit only (no temporal parallax and no overlap, or too few valid pixels): the ground
       estimate, flagged ``fallback``.
    4. Neither: cue ``none``; the caller falls back to the scene prior.

    Args:
        ph_params: ``[F x 2]`` photometric (s, r) (NaN where not fitted).
        ph_ok: ``[F]`` bool, the photometric fit is usable.
        ph_cue: ``[F]`` uint8, the code of the photometric fit (photometric or overlap).
        ph_loss, ph_loss_at_ground: ``[F]`` photometric loss at its own and at the ground estimate.
        ground_params: ``[F x 2]`` ground-alone (s, r), NaN where the ground fit is not usable.
        ground_ratio: ``[F]`` the depth ratio (NaN where not both).
    Returns:
        params ``[F x 2]``, cue ``[F]`` uint8 (:data:`CUES`), flags to add ``[F]`` uint8.
    """
    Fn = len(ph_ok)
    g_ok = np.all(np.isfinite(ground_params), 1)
    params = np.full((Fn, 2), np.nan)
    cue = np.full(Fn, CUES["none"], np.uint8)
    add = np.zeros(Fn, np.uint8)
    params[ph_ok] = ph_params[ph_ok]
    cue[ph_ok] = ph_cue[ph_ok]
    with np.errstate(invalid="ignore"):
        disagree = ph_ok & g_ok & (np.abs(ground_ratio - 1) > cfg.cue_tolerance)
        at_g = ph_loss_at_ground if ph_loss_at_ground is not None else np.full(Fn, np.nan)
        decisive = np.isfinite(at_g) & (at_g > ph_loss * (1 + cfg.photometric_margin))
    add[disagree] |= FLAGS["cue_disagreement"]
    take_ground = (disagree & ~decisive) | (~ph_ok & g_ok)
    params[take_ground] = ground_params[take_ground]
    cue[take_ground] = CUES["ground"]
    add[~ph_ok & g_ok] |= FLAGS["fallback"]
    return params, cue, add


def _decided(cal: dict[str, np.ndarray]) -> np.ndarray:
    """``[T]`` bool: stored frames whose values come from their own cue (they may feed the scene prior)."""
    if "cue" in cal:
        own = np.isin(cal["cue"], [CUES["photometric"], CUES["overlap"], CUES["ground"]])
        return own & ((cal["flags"] & FLAGS["not_converged"]) == 0)
    return (cal["flags"] & (degenerate_bits() | FLAGS["not_converged"])) == 0


def degenerate_bits() -> int:
    """Flag bits of frames whose values come from a fallback rather than their own fit."""
    return FLAGS["stationary"] | FLAGS["low_valid"] | FLAGS["fallback"]


def _percentiles(values, static, finite, percentiles, space):
    """Per-frame reference percentiles (d_lo, d_hi) ``[F]`` over static pixels (all finite pixels when there
    are too few), NaN where undefined; and the static pixel counts ``[F]``."""
    F_ = values.shape[0]
    d_lo = np.full(F_, np.nan)
    d_hi = np.full(F_, np.nan)
    n_static = static.sum((-2, -1)).cpu().numpy()
    q = torch.tensor([p / 100 for p in percentiles], device=values.device)
    for i in range(F_):
        vals = values[i][static[i]] if n_static[i] >= 16 else values[i][finite[i]]
        if space == "depth_m":
            vals = vals[vals > 0]
        if vals.numel() >= 16:
            lo, hi = (float(v) for v in torch.quantile(vals.float(), q))
            if hi > lo:
                d_lo[i], d_hi[i] = lo, hi
    return d_lo, d_hi, n_static


#: per-frame arrays of ``calibration/`` (name: dtype, fill for frames without a value)
_ARRAYS = {
    "scale": ("float32", np.nan),
    "shift": ("float32", np.nan),
    "loss": ("float32", np.nan),
    "valid_frac": ("float32", 0.0),
    "flags": ("uint8", 0),
    "cue": ("uint8", CUES["none"]),
    "ground_scale": ("float32", np.nan),
    "ground_shift": ("float32", np.nan),
    "ground_inliers": ("float32", 0.0),
    "ground_ratio": ("float32", np.nan),
    "done": ("bool", False),
}


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


def _fallback_and_write(
    cache: Cache, sname: str, results: dict, depth_key: str, cfg: CalibrationConfig, stats: dict
):
    """Scene-prior fallback for frames no cue decided, then merge with earlier results and write."""

    def good_params(r):
        old = r.get("prior_params", np.zeros((0, 2)))
        if "result" not in r:
            return old
        own = np.isin(r["cue"], [CUES["photometric"], CUES["overlap"], CUES["ground"]])
        ok = own & ((r["flags"] & FLAGS["not_converged"]) == 0)
        p = r["params"][ok]
        return np.concatenate([p[np.all(np.isfinite(p), 1)], old])

    per_cam = {cam: good_params(r) for cam, r in results.items()}
    everything = np.concatenate([p for p in per_cam.values()] + [np.zeros((0, 2))])
    for cam, r in results.items():
        T = r["T"]
        prev = r["prev"]
        arrays = {k: np.full(T, fill, dt) for k, (dt, fill) in _ARRAYS.items()}
        if prev is not None:
            keep = prev["done"].astype(bool) & ~r["todo"]
            for k in arrays:
                if k in prev:
                    arrays[k][keep] = prev[k][keep]
                elif k == "cue":  # stores written before the cue array: photometric or prior
                    fb = (prev["flags"] & degenerate_bits()) != 0
                    arrays[k][keep] = np.where(fb, CUES["prior"], CUES["photometric"])[keep]
        if "result" in r:
            res, flags, ref, targets = r["result"], r["flags"].copy(), r["reference"], r["targets"]
            params, cue = r["params"].copy(), r["cue"].copy()
            own = per_cam[cam]
            prior_src = own if len(own) else everything
            need = (cue == CUES["none"]) & r["has_ref"]
            if need.any():
                if len(prior_src):
                    params[need] = np.median(prior_src, 0)
                    cue[need] = CUES["prior"]
                flags[need] |= FLAGS["fallback"]
            params[~r["has_ref"]] = np.nan
            cue[~r["has_ref"]] = CUES["none"]
            a, b = ref.to_scale_shift(np.nan_to_num(params, nan=0.0))
            bad = ~np.all(np.isfinite(params), 1)
            a[bad], b[bad] = np.nan, np.nan
            ga, gb = ref.to_scale_shift(np.nan_to_num(r["ground_params"], nan=0.0))
            gbad = ~np.all(np.isfinite(r["ground_params"]), 1)
            ga[gbad], gb[gbad] = np.nan, np.nan
            new = {
                "scale": a,
                "shift": b,
                "loss": res.loss,
                "valid_frac": res.valid_frac,
                "flags": flags,
                "cue": cue,
                "ground_scale": ga,
                "ground_shift": gb,
                "ground_inliers": r["ground_inliers"],
                "ground_ratio": r["ground_ratio"],
                "done": True,
            }
            for k, v in new.items():
                arrays[k][targets] = v
            stats["frames"] += len(targets)
            stats["baselines"].extend(np.asarray(r["baseline_m"]).tolist())
            for name, bit in FLAGS.items():
                stats[name] += int(((flags & bit) != 0).sum())
            for name, code in CUES.items():
                stats["cues"][name] += int((cue == code).sum())
        if r["todo"].any() or prev is None:
            cache.write_calibration(
                sname,
                cam,
                arrays,
                {
                    "method": METHOD,
                    "method_version": METHOD_VERSION,
                    "space": r["space"],
                    "relation": "1/depth_m = scale*d + shift"
                    if r["space"] == "disparity"
                    else "depth_m = scale*d + shift",
                    "cues": dict(CUES),
                    "options": cfg.to_dict(),
                },
                key=depth_key,
            )


__all__ = [
    "CalibrationConfig",
    "CameraFrames",
    "CueResult",
    "FitResult",
    "PhotometricCue",
    "Reference",
    "choose_sources",
    "fit_camera",
    "hypothesis_grid",
    "inverse_depth",
    "run",
]
