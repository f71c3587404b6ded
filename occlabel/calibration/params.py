"""The affine parameterisation (s, r) of a frame's relative map, and the search space over it.

A depth foundation model gives, per image, a relative disparity d with ``1/z = a * d + b`` for unknown
``a > 0`` and ``b`` that differ from image to image. With d_lo, d_hi the ``percentiles`` of the frame's
disparity over its static, non-sky pixels (:func:`reference_percentiles`) and d~ = (d - d_lo) / (d_hi - d_lo)::

    value(d) = a * d + b = exp(s) * ((1 - r) * d~ + r)

so ``s`` = log of the inverse depth at d_hi (the near reference, 1/metres) and ``r`` = ratio of the inverse
depths at d_lo and d_hi (far over near, < 1 so that a > 0). Both are scene quantities, well scaled for any
affine of the relative map (its scale may lie anywhere in 0.1-10x), so a scene-level fit in (s, r) is
meaningful across frames although (a, b) are not. ``a = exp(s) (1 - r) / (d_hi - d_lo)``,
``b = exp(s) r - a d_lo``. For metric-depth models (space "depth_m": z = a d + b) (s, r) mean the same
(near inverse depth, far/near inverse-depth ratio), with the near reference at d_lo:
``z = exp(-s) (1 + (1/r - 1) d~)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from occlabel.calibration.config import CalibrationConfig


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


def hypothesis_grid(cfg: CalibrationConfig, space: str, device=None) -> torch.Tensor:
    """The coarse (s, r) grid ``[N x 2]`` float32 (s log-spaced over ``near_depth_range_m``)."""
    lo, hi = (math.log(1.0 / d) for d in reversed(cfg.near_depth_range_m))
    r = torch.tensor(r_grid(cfg, space), dtype=torch.float32)
    s = torch.linspace(lo, hi, cfg.s_steps)
    ss, rr = torch.meshgrid(s, r, indexing="ij")
    return torch.stack([ss.reshape(-1), rr.reshape(-1)], -1).to(device)


def bounds(cfg: CalibrationConfig, space: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """(s bounds, r bounds) kept while refining: s one unit beyond the grid's near depth range."""
    s_b = (math.log(1.0 / cfg.near_depth_range_m[1]) - 1.0, math.log(1.0 / cfg.near_depth_range_m[0]) + 1.0)
    return s_b, (cfg.r_bounds if space == "disparity" else cfg.r_bounds_depth)


def r_grid(cfg: CalibrationConfig, space: str) -> tuple[float, ...]:
    """The grid values of r for the relative map's ``space``."""
    return cfg.r_grid if space == "disparity" else cfg.r_grid_depth


def reference_percentiles(
    values: torch.Tensor, static: torch.Tensor, finite: torch.Tensor, percentiles, space: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


__all__ = ["Reference", "bounds", "hypothesis_grid", "inverse_depth", "r_grid", "reference_percentiles"]
