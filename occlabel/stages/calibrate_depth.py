"""Stage 2, ``calibrate-depth``: metric scale and shift of relative depth from photometric consistency.

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

Algorithm, per scene and camera:
0. Sources: each neighbour offset o is strided (t + o*k, k <= ``max_stride``) until the camera baseline
   reaches ``target_baseline_m`` (:func:`choose_sources`): far points need parallax, and the fitted shift
   (hence far depth) is biased toward the camera when the baseline is short.
1. Coarse, at ``coarse_width`` on grey images, batched over frames x hypotheses: the full (s, r) grid on a
   few evenly spaced frames gives the scene-level (s, r) (mean normalised cost); then per frame a line
   search over s at the scene's r, and a local (s, r) grid around its best s, under a weak prior toward
   the scene value.
2. Fine: per-frame Adam on (s, r) at increasing resolutions (``widths``), same weak prior; the best
   iterate of each level is kept, then a small pattern search at the last level polishes it; a frame still
   moving after ``polish_rounds`` rounds (or stuck at a bound) is flagged ``not_converged``. At each level
   the pixels allowed to count are frozen around the current estimate (:meth:`PhotometricCue.freeze_region`):
   letting the hypothesis decide which pixels leave the image biases the fit toward less parallax.
3. Degenerate frames: no neighbour with a baseline >= ``min_baseline_m`` -> ``stationary``; fewer than
   ``min_valid_frac`` of the pixels informative -> ``low_valid``; both fall back to the robust (median)
   scene prior of the camera's good frames (or of the scene's other cameras) and get ``fallback``. With
   no prior at all the values are NaN (depth unknown rather than wrong).

Photometric error: Monodepth2's 0.85 (1 - SSIM) / 2 + 0.15 L1, minimum over sources, auto-masking by the
identity error, per-pair exposure gain, masks for sky, movable classes, borders and implausible depth.

The hypotheses are scored by "cues" (:class:`PhotometricCue` here): objects with ``evaluate(params,
frames) -> CueResult`` over ``[F x N x 2]`` hypotheses. Label-free cues of issue #4 (ground plane,
cross-camera overlap) slot in beside it with a weight.
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

from occlabel.datasets.base import load_image
from occlabel.errors import OccLabelError, StoreError
from occlabel.geometry.photometric import (
    border_mask,
    box_moments,
    fit_gain,
    min_reprojection,
    pixel_error,
    static_mask,
)
from occlabel.geometry.warp import (
    project_inverse_depth,
    relative_pose,
    sample,
    scale_intrinsics,
    warp_coefficients,
)
from occlabel.store.cache import FLAGS, Cache, open_cache
from occlabel.utils import progress_bar, resolve_device

log = logging.getLogger("occlabel.calibrate_depth")

METHOD = "photometric-affine"
METHOD_VERSION = 1


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

    Attributes:
        images: ``[T x 3 x h x w]`` float32 RGB in [0, 1] (zeros for frames that were not loaded).
        K: ``[T x 3 x 3]`` float32 intrinsics at the working resolution.
        T_world_from_cam: ``[T x 4 x 4]`` float64 camera poses.
        values: ``[F x h x w]`` float32 relative values of the target frames (NaN = none).
        static: ``[F x h x w]`` bool, pixels of the target frames allowed in the loss (static, not sky,
            finite value).
        targets: ``[F]`` long, frame indices of the targets.
        sources: ``[F x S]`` long, frame index of each neighbour (0 when missing).
        source_ok: ``[F x S]`` bool, neighbour exists, is loaded and has a baseline.
        baseline_m: ``[F x S]`` float64 numpy, camera-centre distance to each neighbour (NaN if missing).
        reference: the per-frame :class:`Reference`.
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
        dnorm, ok = _resize_masked(cam.dnorm, cam.static & torch.isfinite(cam.dnorm), (h, w))
        border = border_mask(h, w, max(1, round(cfg.border_frac * w)), dev)
        self.dnorm = dnorm
        self.mask = ok & border  # F h w
        self.sources = cam.sources
        self.source_ok = cam.source_ok
        T_wc = cam.T_world_from_cam
        T_src_from_tgt = relative_pose(T_wc[cam.targets][:, None], T_wc[cam.sources])  # F S 4 4
        Kt = K[cam.targets][:, None].expand(-1, cam.sources.shape[1], -1, -1)
        mp, e = warp_coefficients(Kt.double(), K[cam.sources].double(), T_src_from_tgt.double(), h, w)
        self.mp, self.e = mp.to(images.dtype), e.to(images.dtype)  # F S h w 3, F S 3
        # identity errors: each source as it is, against the target (exposure-corrected on the mask)
        src = images[cam.sources]  # F S 3 h w
        tgt = self.target[:, None].expand_as(src)
        if cfg.exposure == "gain":
            src = src * fit_gain(tgt, src, self.mask[:, None].expand(-1, src.shape[1], -1, -1))
        ident = pixel_error(tgt, src, cfg.ssim_weight, cfg.ssim_window, cfg.ssim)  # F S h w
        big = torch.finfo(ident.dtype).max / 4
        self.identity = torch.where(self.source_ok[..., None, None], ident, torch.full_like(ident, big))
        self.min_inv = 1.0 / cfg.max_depth_m
        self.max_inv = 1.0 / cfg.min_depth_m
        self.region: torch.Tensor | None = None  # F S h w, see freeze_region

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


def fit_camera(
    cam: CameraFrames, cfg: CalibrationConfig, space: str, fit: np.ndarray, max_chunk_elems: int
) -> FitResult:
    """Fit (s, r) for the target frames of one camera.

    Args:
        cam: the camera's frames (:class:`CameraFrames`).
        fit: ``[F]`` bool, frames to fit (others get NaN params and are left to the caller's fallback).
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
    idx = torch.as_tensor(np.flatnonzero(fit), device=dev, dtype=torch.long)
    if idx.numel() == 0:
        return FitResult(out_params, loss_out, frac_out, flags, np.full(2, np.nan), coarse_out)
    sub = _subset(cam, idx)
    (s_lo, s_hi), (r_lo, r_hi) = _bounds(cfg, space)

    timings: dict[str, float] = {}
    tic = time.perf_counter()
    # 1. coarse search at low resolution (grey): scene level on a subset, then per frame
    with torch.no_grad():
        cue = PhotometricCue(sub, cfg.coarse_width, cfg, space, max_chunk_elems, grey=True)
        grid = hypothesis_grid(cfg, space, dev)  # N 2
        n = idx.numel()
        pick = torch.linspace(0, n - 1, min(n, cfg.scene_frames), device=dev).round().long().unique()
        cost = cue.evaluate(grid[None].expand(pick.numel(), -1, -1).contiguous(), pick).loss
        norm = cost / cost.amin(1, keepdim=True).clamp(min=1e-9)
        scene = grid[norm.mean(0).argmin()]
        # per frame: s over the full range at the scene's r, then (s, r) around the best s
        s_line = grid[:: len(_r_grid(cfg, space)), 0]
        hyp1 = torch.stack([s_line, torch.full_like(s_line, float(scene[1]))], -1)
        c1 = cue.evaluate(hyp1[None].expand(n, -1, -1).contiguous()).loss
        c1 = c1 + cfg.prior_weight * c1.amin(1, keepdim=True) * _prior(hyp1[None], scene, cfg.prior_sigma)
        s_best = hyp1[c1.argmin(1), 0]  # F
        step = float(s_line[1] - s_line[0]) if s_line.numel() > 1 else 0.1
        ds = torch.arange(-3, 4, device=dev, dtype=torch.float32) * step / 2
        rr = torch.tensor(_r_grid(cfg, space), device=dev, dtype=torch.float32)
        local = torch.stack(torch.meshgrid(ds, rr, indexing="ij"), -1).reshape(-1, 2)  # M 2
        hyp2 = local[None].repeat(n, 1, 1)
        hyp2[..., 0] += s_best[:, None]
        cue.freeze_region(
            torch.stack([s_best, torch.full_like(s_best, float(scene[1]))], -1), cfg.region_margin_px
        )
        c2 = cue.evaluate(hyp2).loss
        loss_scale = c2.amin(1).clamp(min=1e-6)  # F
        c2 = c2 + cfg.prior_weight * loss_scale[:, None] * _prior(hyp2, scene, cfg.prior_sigma)
        params0 = hyp2[torch.arange(n, device=dev), c2.argmin(1)].clone()  # F 2
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
        params, best_loss, best_frac = _adam(
            cue, params, scene, loss_scale, cfg, iters, lr, (s_lo, s_hi), (r_lo, r_hi)
        )
        timings[f"refine_{width}"] = time.perf_counter() - tic - sum(timings.values())
    tic2 = time.perf_counter()
    # 3. polish by pattern search at the last level; frames that keep moving are not converged
    with torch.no_grad():
        params, best_loss, best_frac, moving = _polish(
            cue, params, best_loss, best_frac, scene, loss_scale, cfg
        )
        # final photometric loss, without the prior
        final = (
            best_loss - cfg.prior_weight * loss_scale * _prior(params[:, None], scene, cfg.prior_sigma)[:, 0]
        )
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
        out_params, loss_out, frac_out, flags, scene.cpu().numpy().astype(np.float64), coarse_out, timings
    )


def _adam(cue, params0, scene, loss_scale, cfg, iters, lr, s_bounds, r_bounds, betas=(0.9, 0.999), eps=1e-8):
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
                res = _objective(cue, p, frames, scene, loss_scale[frames], cfg)
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
    cue: PhotometricCue, params: torch.Tensor, frames: torch.Tensor, scene, loss_scale, cfg: CalibrationConfig
) -> CueResult:
    """Per-frame photometric loss + weak prior toward the scene value, ``[F']`` for params ``[F' x 2]``."""
    res = cue.evaluate(params[:, None], frames)
    prior = _prior(params[:, None], scene, cfg.prior_sigma)
    return CueResult(res.loss[:, 0] + cfg.prior_weight * loss_scale * prior[:, 0], res.valid_frac[:, 0])


def _polish(cue, params, loss, frac, scene, loss_scale, cfg: CalibrationConfig):
    """Pattern search around ``params`` ``[F x 2]``: up to ``polish_rounds`` moves to a better neighbour.

    Only the frames that moved in the previous round are evaluated again. Returns (params, objective,
    valid_frac, moving): ``moving`` ``[F]`` marks frames still improving after the last round.
    """
    ds, dr = cfg.polish_steps
    offsets = params.new_tensor([[ds, 0.0], [-ds, 0.0], [0.0, dr], [0.0, -dr]])
    active = torch.arange(params.shape[0], device=params.device)
    moving = torch.zeros(params.shape[0], dtype=torch.bool, device=params.device)
    for _ in range(cfg.polish_rounds):
        cand = params[active][:, None] + offsets[None]  # A 4 2
        res = cue.evaluate(cand, active)
        obj = res.loss + cfg.prior_weight * loss_scale[active][:, None] * _prior(cand, scene, cfg.prior_sigma)
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
    )


# --------------------------------------------------------------------------------------------------
# Stage entry point
# --------------------------------------------------------------------------------------------------


def run(
    cache_path: str | Path,
    scenes: list[str] | None = None,
    device: str = "auto",
    depth_key: str | None = None,
    semantics_key: str | None = None,
    neighbours: tuple[int, ...] = (-1, 1),
    progress: bool = True,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Calibrate the relative depth of every frame of a cache; returns ``cache_path``.

    Args:
        cache_path: CACHE.zarr written by extract-2d.
        scenes: scene names (default: all in the cache).
        device: "auto", "cpu", "cuda" or "cuda:N".
        depth_key, semantics_key: stored results to use (default: the cache's defaults; semantics are
            optional: without them no sky or moving-object masks are applied).
        neighbours: frame offsets used as sources (those that exist are used at sequence ends); each is
            strided up to ``max_stride`` times to reach ``target_baseline_m`` (see :func:`choose_sources`).
        progress: show a progress bar.
        overwrite: recalibrate frames already calibrated (otherwise they are skipped).
        options: any field of :class:`CalibrationConfig`.
    """
    unknown = set(options) - set(CalibrationConfig.__dataclass_fields__)
    if unknown:
        raise OccLabelError(f"calibrate-depth: unknown option(s) {', '.join(sorted(unknown))}")
    cfg = CalibrationConfig(**options)
    if cfg.exposure not in ("gain", "none"):
        raise OccLabelError(f"calibrate-depth: exposure must be 'gain' or 'none', got {cfg.exposure!r}")
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
    stats: dict[str, Any] = {"frames": 0, **{k: 0 for k in FLAGS}, "baselines": []}
    jobs = [(s, c) for s in names for c in cache.cameras(s)]
    bar = progress_bar(total=len(jobs), desc="calibrate-depth", enabled=progress, unit="cam")
    for sname in names:
        scene = dataset.scene(sname)
        results: dict[str, dict[str, Any]] = {}
        for cam in cache.cameras(sname):
            results[cam] = _calibrate_camera(
                cache, scene, cam, depth_key, semantics_key, neighbours, cfg, dev, max_elems, overwrite
            )
            bar.update(1)
        _fallback_and_write(cache, sname, results, depth_key, cfg, stats)
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
            "frames_calibrated": stats["frames"],
            "median_source_baseline_m": float(np.median(stats["baselines"])) if stats["baselines"] else None,
            "flag_counts": {k: stats[k] for k in FLAGS},
            "seconds": elapsed,
        },
    )
    log.info(
        "calibrate-depth: %d frames in %.1f s, flags %s",
        stats["frames"],
        elapsed,
        {k: stats[k] for k in FLAGS},
    )
    return Path(cache_path)


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


def _calibrate_camera(
    cache: Cache, scene, cam, depth_key, semantics_key, neighbours, cfg, dev, max_elems, overwrite
):
    """Fit the frames of one camera that need it; returns what :func:`_fallback_and_write` merges."""
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
    if semantics_key is not None:
        try:
            labels_all = cache.read_semantics(sname, cam, semantics_key)[0]
        except StoreError:
            labels_all = None

    targets = np.flatnonzero(todo)
    T_wc = geo["T_world_from_cam"]
    sources, exists, baseline = choose_sources(
        T_wc[:, :3, 3], present, targets, neighbours, cfg.target_baseline_m, cfg.max_stride
    )
    moving_ok = exists & (baseline >= cfg.min_baseline_m)

    # images of targets and sources at the working resolution, on the device
    need = np.union1d(targets, sources[exists])
    images = torch.zeros(T, 3, h, w, dtype=torch.float32, device=dev)
    for t in need:
        img = load_image(scene.frames[t].images[cam].path)
        x = torch.from_numpy(img).to(dev).permute(2, 0, 1)[None].float() / 255.0
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        images[t] = x[0].clamp(0, 1)

    values = torch.from_numpy(values_all[targets]).to(dev)
    finite = torch.isfinite(values)
    moving = None if cfg.ignore_moving else ()
    if labels_all is not None:
        lab = torch.from_numpy(np.ascontiguousarray(labels_all[targets])).to(dev)
        static = static_mask(lab, moving) & finite
    else:
        static = finite
    d_lo, d_hi, n_static = _percentiles(values, static, finite, cfg.percentiles, space)
    has_ref = np.isfinite(d_lo) & np.isfinite(d_hi)
    ref = Reference(np.where(has_ref, d_lo, 0.0), np.where(has_ref, d_hi, 1.0), space)
    camf = CameraFrames(
        images=images,
        K=torch.from_numpy(geo["K"]).float().to(dev),
        T_world_from_cam=torch.from_numpy(T_wc).double().to(dev),
        values=values,
        static=static,
        targets=torch.from_numpy(targets).to(dev),
        sources=torch.from_numpy(sources).to(dev),
        source_ok=torch.from_numpy(moving_ok).to(dev),
        baseline_m=baseline,
        reference=ref,
    )
    stationary = ~moving_ok.any(1)
    enough = n_static >= max(16, cfg.min_valid_frac * h * w)
    fit = ~stationary & has_ref & enough
    t0 = time.perf_counter()
    res = fit_camera(camf, cfg, space, fit, max_elems)
    log.debug("%s/%s: fitted %d frames in %.2f s", sname, cam, int(fit.sum()), time.perf_counter() - t0)
    flags = res.flags.copy()
    flags[stationary] |= FLAGS["stationary"]
    flags[~stationary & ~(has_ref & enough)] |= FLAGS["low_valid"]
    out.update(targets=targets, result=res, flags=flags, reference=ref, has_ref=has_ref, baseline_m=baseline)
    # earlier good calibrations of this camera join the scene prior (for fallbacks on a resumed run)
    if prev is not None:
        bad = degenerate_bits() | FLAGS["not_converged"]
        old = np.flatnonzero(prev["done"].astype(bool) & ~todo & ((prev["flags"] & bad) == 0))
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


def _fallback_and_write(
    cache: Cache, sname: str, results: dict, depth_key: str, cfg: CalibrationConfig, stats: dict
):
    """Fallback for degenerate frames from the robust scene prior, then merge with earlier results and write."""
    degenerate = FLAGS["stationary"] | FLAGS["low_valid"]

    def good_params(r):
        old = r.get("prior_params", np.zeros((0, 2)))
        if "result" not in r:
            return old
        ok = (r["flags"] & (degenerate | FLAGS["not_converged"])) == 0
        p = r["result"].params[ok]
        return np.concatenate([p[np.all(np.isfinite(p), 1)], old])

    per_cam = {cam: good_params(r) for cam, r in results.items()}
    everything = np.concatenate([p for p in per_cam.values()] + [np.zeros((0, 2))])
    for cam, r in results.items():
        T = r["T"]
        prev = r["prev"]
        arrays = {
            "scale": np.full(T, np.nan, np.float32),
            "shift": np.full(T, np.nan, np.float32),
            "loss": np.full(T, np.nan, np.float32),
            "valid_frac": np.zeros(T, np.float32),
            "flags": np.zeros(T, np.uint8),
            "done": np.zeros(T, bool),
        }
        if prev is not None:
            keep = prev["done"].astype(bool) & ~r["todo"]
            for k in arrays:
                arrays[k][keep] = prev[k][keep]
        if "result" in r:
            res, flags, ref, targets = r["result"], r["flags"].copy(), r["reference"], r["targets"]
            params = res.params.copy()
            own = per_cam[cam]
            prior_src = own if len(own) else everything
            need = (flags & degenerate) != 0
            if need.any():
                if len(prior_src):
                    prior = np.median(prior_src, 0)
                    params[need] = prior
                else:
                    params[need] = np.nan
                flags[need] |= FLAGS["fallback"]
            params[~r["has_ref"]] = np.nan
            a, b = ref.to_scale_shift(np.nan_to_num(params, nan=0.0))
            bad = ~np.all(np.isfinite(params), 1)
            a[bad], b[bad] = np.nan, np.nan
            arrays["scale"][targets] = a
            arrays["shift"][targets] = b
            arrays["loss"][targets] = res.loss
            arrays["valid_frac"][targets] = res.valid_frac
            arrays["flags"][targets] = flags
            arrays["done"][targets] = True
            stats["frames"] += len(targets)
            b = r["baseline_m"]
            stats["baselines"].extend(b[np.isfinite(b) & (b >= cfg.min_baseline_m)].tolist())
            for name, bit in FLAGS.items():
                stats[name] += int(((flags & bit) != 0).sum())
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
