"""The optimisers of the fit and the terms they minimise besides the photometric loss.

Objective of a frame at hypothesis p = (s, r): photometric loss (:class:`PhotometricCue`) + :class:`Penalty`
(weak prior toward the scene value, ground term, sky term, each in units of the frame's loss scale).
Searches, each batched over frames (the objective is a sum of per-frame terms, so frames are independent):
a local grid around a start (:func:`local_search`), Adam with a cosine-decayed step (:func:`adam`) and a
pattern search on a small lattice (:func:`polish`).
"""

from __future__ import annotations

import math

import torch

from occlabel.calibration.config import CalibrationConfig
from occlabel.calibration.ground import GroundCue, sky_cost
from occlabel.calibration.photometric import CueResult, PhotometricCue


def _prior(params: torch.Tensor, centre: torch.Tensor, sigma: tuple[float, float]) -> torch.Tensor:
    """``[F x N]`` squared Mahalanobis distance of params ``[F x N x 2]`` to ``centre`` ``[2]``."""
    sig = params.new_tensor(sigma)
    return (((params - centre) / sig) ** 2).sum(-1)


class Penalty:
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


def local_search(cue: PhotometricCue, local: torch.Tensor, start: torch.Tensor, cfg, frames=None):
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


def adam(cue, params0, penalty, iters, lr, s_bounds, r_bounds, betas=(0.9, 0.999), eps=1e-8):
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
    cue: PhotometricCue, params: torch.Tensor, frames: torch.Tensor, penalty: Penalty
) -> CueResult:
    """Per-frame photometric loss + penalty (prior, ground term), ``[F']`` for params ``[F' x 2]``."""
    res = cue.evaluate(params[:, None], frames)
    return CueResult(res.loss[:, 0] + penalty(params[:, None], frames)[:, 0], res.valid_frac[:, 0])


def polish(cue, params, loss, frac, penalty: Penalty, cfg: CalibrationConfig):
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


__all__ = ["Penalty", "adam", "local_search", "polish"]
