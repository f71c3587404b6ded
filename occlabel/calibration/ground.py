"""Label-free cues from the semantics: the ground plane and the sky.

- Ground plane (:class:`GroundCue`): pixels of flat classes have the depth at which their ray meets the
  ego ground plane ``z_ego = ground_height_m + class height`` (the ego frame's origin on the road, z up,
  road locally flat and level; see occlabel.geometry.ground). A robust per-frame fit of (s, r) to them is
  the cue's own estimate; it adds a start and a weighted term to the photometric objective, is the
  cross-check, and is the fallback where there is no parallax. :func:`ground_heights` gives each label of a
  vocabulary its surface height (``CalibrationConfig.ground_classes``).
- Sky term (:func:`sky_cost`, disparity space): relative disparity models put the sky at (near) zero
  disparity; a weak term pulls the calibrated inverse depth of the frame's sky (:func:`sky_values`) toward
  0, which fixes the slope of the affine where the scene's depth range cannot (one facade plane, near
  objects masked).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from occlabel.calibration.config import CalibrationConfig
from occlabel.calibration.params import Reference, inverse_depth
from occlabel.conventions import OCC3D_MOVING, OCC3D_NAMES, SKY
from occlabel.geometry.ground import plane_depth, robust_linear_fit
from occlabel.models.vocab import Vocabulary


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


__all__ = ["GroundCue", "ground_heights", "sky_cost", "sky_values"]
