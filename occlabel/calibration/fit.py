"""The fit of (s, r) for the target frames of one camera (:func:`fit_camera`).

1. Coarse, at ``coarse_width`` on grey images, batched over frames x hypotheses: the full (s, r) grid on
   every frame; its mean normalised cost over a few evenly spaced frames gives the scene-level (s, r);
   then a local (s, r) grid around each frame's best (and around the ground estimate, where usable),
   under a weak prior toward the scene value, the ground term and the sky term.
2. Fine: per-frame Adam on (s, r) at increasing resolutions (``widths``), same terms; the best iterate of
   each level is kept. At each level the pixels allowed to count are frozen around the current estimate
   (:meth:`PhotometricCue.freeze_region`): letting the hypothesis decide which pixels leave the image
   biases the fit toward less parallax.
3. Polish: a small pattern search at the last level; a frame still moving after ``polish_rounds`` rounds
   (or stuck at a bound) is flagged ``not_converged``. Where the ground fit is usable, the photometric
   loss at the ground estimate is measured for the cue decision (occlabel.calibration.decide).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from occlabel.calibration.config import CalibrationConfig
from occlabel.calibration.ground import GroundCue
from occlabel.calibration.params import bounds, hypothesis_grid, r_grid
from occlabel.calibration.photometric import CameraFrames, PhotometricCue, subset_frames
from occlabel.calibration.search import Penalty, adam, local_search, polish
from occlabel.store.calibration import FLAGS

log = logging.getLogger("occlabel.calibrate_depth")


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


@dataclass
class _Coarse:
    """Outcome of the coarse search over the fitted frames F'."""

    params: torch.Tensor  # [F' x 2] the per-frame starts of the refinement
    scene: torch.Tensor  # [2] the scene-level (s, r)
    penalty: Penalty  # the terms besides the photometric loss (loss scale set)


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
    out = FitResult(
        np.full((Fn, 2), np.nan),
        np.full(Fn, np.nan, np.float32),
        np.zeros(Fn, np.float32),
        np.zeros(Fn, np.uint8),
        np.full(2, np.nan),
        np.full((Fn, 2), np.nan),
        {},
        np.full(Fn, np.nan, np.float32),
    )
    idx = torch.as_tensor(np.flatnonzero(fit), device=dev, dtype=torch.long)
    if idx.numel() == 0:
        return out
    sub = subset_frames(cam, idx)
    gsub = ground.subset(idx) if ground is not None and bool(ground.ok[fit].any()) else None
    timings = out.timings
    tic = time.perf_counter()
    # 1. coarse search at low resolution (grey): scene level on a subset, then per frame
    with torch.no_grad():
        coarse = _coarse(sub, cfg, space, max_chunk_elems, gsub)
    out.coarse_params[fit] = coarse.params.cpu().numpy()
    timings["coarse"] = time.perf_counter() - tic
    # 2. per-frame refinement over the pyramid (Adam on (s, r), batched over frames)
    cue, params, best_loss, best_frac = _refine(sub, coarse, cfg, space, max_chunk_elems, timings, tic)
    tic2 = time.perf_counter()
    # 3. polish by pattern search at the last level; frames that keep moving are not converged
    with torch.no_grad():
        params, best_loss, best_frac, moving = polish(cue, params, best_loss, best_frac, coarse.penalty, cfg)
        final = best_loss - coarse.penalty(params[:, None])[:, 0]  # the photometric loss alone
        if gsub is not None:
            out.loss_at_ground[fit] = _loss_at_ground(cue, params, final, gsub, cfg, cue.size[1])
    p = params.cpu().numpy().astype(np.float64)
    out.params[fit] = p
    out.loss[fit] = final.cpu().numpy()
    out.valid_frac[fit] = best_frac.cpu().numpy()
    out.flags[fit] = _fit_flags(p, moving.cpu().numpy(), out.valid_frac[fit], cfg, space)
    timings["polish"] = time.perf_counter() - tic2
    log.debug("fit_camera: %d frames, seconds %s", idx.numel(), {k: round(v, 2) for k, v in timings.items()})
    out.scene_params = coarse.scene.cpu().numpy().astype(np.float64)
    return out


def _ground_params(gsub: GroundCue, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground estimates ``[F' x 2]`` float32 (0 where none) and where they are usable ``[F']``."""
    g_params = torch.as_tensor(np.nan_to_num(gsub.params), dtype=torch.float32, device=dev)
    return g_params, torch.as_tensor(gsub.ok, device=dev)


def _coarse(
    sub: CameraFrames, cfg: CalibrationConfig, space: str, max_chunk_elems: int, gsub: GroundCue | None
) -> _Coarse:
    """Step 1 (no gradients): the full grid on every frame, the scene value, then local grids."""
    dev = sub.images.device
    cue = PhotometricCue(sub, cfg.coarse_width, cfg, space, max_chunk_elems, grey=True)
    grid = hypothesis_grid(cfg, space, dev)  # N 2
    n = sub.targets.shape[0]
    # the full (s, r) grid on every frame (a line over s at one r misses basins at other r)
    cost = cue.evaluate(grid[None].expand(n, -1, -1).contiguous()).loss  # F N
    pick = torch.linspace(0, n - 1, min(n, cfg.scene_frames), device=dev).round().long().unique()
    norm = cost[pick] / cost[pick].amin(1, keepdim=True).clamp(min=1e-9)
    scene = grid[norm.mean(0).argmin()]
    penalty = Penalty(scene, cfg, gsub, sub.sky, space)
    hyp1 = grid[None].expand(n, -1, -1)
    c1 = cost + penalty(hyp1, scale=cost.amin(1))
    start = hyp1[torch.arange(n, device=dev), c1.argmin(1)]  # F 2
    local = _local_grid(grid, cfg, space)
    hyp2, c2 = local_search(cue, local, start, cfg)
    penalty.loss_scale = c2.amin(1).clamp(min=1e-6)  # F
    c2 = c2 + penalty(hyp2)
    params0 = hyp2[torch.arange(n, device=dev), c2.argmin(1)].clone()  # F 2
    if gsub is not None:  # the same local search around the ground estimate; keep the better start
        g_params, g_ok = _ground_params(gsub, dev)
        g_start = torch.where(g_ok[:, None], g_params, start)
        rows = torch.nonzero(g_ok)[:, 0]
        hyp3, c3 = local_search(cue, local, g_start[rows], cfg, rows)
        c3 = c3 + penalty(hyp3, rows)
        better = c3.amin(1) < c2.amin(1)[rows]
        params0[rows[better]] = hyp3[torch.arange(rows.numel(), device=dev), c3.argmin(1)][better]
    return _Coarse(params0, scene, penalty)


def _local_grid(grid: torch.Tensor, cfg: CalibrationConfig, space: str) -> torch.Tensor:
    """``[M x 2]`` local grid: offsets in s of half the coarse grid's step (-3..3), absolute r values."""
    dev = grid.device
    s_line = grid[:: len(r_grid(cfg, space)), 0]
    step = float(s_line[1] - s_line[0]) if s_line.numel() > 1 else 0.1
    ds = torch.arange(-3, 4, device=dev, dtype=torch.float32) * step / 2
    rr = torch.tensor(r_grid(cfg, space), device=dev, dtype=torch.float32)
    return torch.stack(torch.meshgrid(ds, rr, indexing="ij"), -1).reshape(-1, 2)


def _refine(sub, coarse: _Coarse, cfg: CalibrationConfig, space: str, max_chunk_elems: int, timings, tic):
    """Step 2: Adam at each width of the pyramid, region frozen at the level's start. Returns the last
    level's cue, and params ``[F' x 2]``, objective and valid fraction ``[F']`` of the best iterates."""
    (s_lo, s_hi), (r_lo, r_hi) = bounds(cfg, space)
    w0 = sub.images.shape[-1]
    widths = sorted({min(int(w), w0) for w in cfg.widths if w > 0}) or [w0]
    params = coarse.params.clone()
    best_loss = best_frac = None
    for lvl, width in enumerate(widths):
        cue = PhotometricCue(sub, width, cfg, space, max_chunk_elems)
        cue.freeze_region(params, cfg.region_margin_px * width / cfg.coarse_width)
        iters = cfg.iters[min(lvl, len(cfg.iters) - 1)]
        lr = cfg.lr[min(lvl, len(cfg.lr) - 1)]
        params, best_loss, best_frac = adam(
            cue, params, coarse.penalty, iters, lr, (s_lo, s_hi), (r_lo, r_hi)
        )
        timings[f"refine_{width}"] = time.perf_counter() - tic - sum(timings.values())
    return cue, params, best_loss, best_frac


def _loss_at_ground(
    cue: PhotometricCue,
    params: torch.Tensor,
    final: torch.Tensor,
    gsub: GroundCue,
    cfg: CalibrationConfig,
    width: int,
) -> np.ndarray:
    """``[F']`` the photometric verdict on the ground estimate: the final loss times the ratio of the loss
    at the ground estimate to the loss at ``params``, region frozen at each (NaN: no usable ground fit)."""
    g_params, g_ok = _ground_params(gsub, params.device)
    rows = torch.nonzero(g_ok)[:, 0]
    margin = cfg.region_margin_px * width / cfg.coarse_width
    cue.freeze_region(params, margin)
    own = cue.evaluate(params[rows][:, None], rows).loss[:, 0]
    cue.freeze_region(torch.where(g_ok[:, None], g_params, params), margin)
    other = cue.evaluate(g_params[rows][:, None], rows).loss[:, 0]
    ratio = (other / own.clamp(min=1e-9)).cpu().numpy()
    out = np.full(params.shape[0], np.nan, np.float32)
    out[rows.cpu().numpy()] = final[rows].cpu().numpy() * ratio
    return out


def _fit_flags(p: np.ndarray, moving: np.ndarray, frac: np.ndarray, cfg: CalibrationConfig, space: str):
    """``[F']`` uint8 flags of the fitted frames: ``not_converged`` (still moving, or at an s bound or the
    upper r bound) and ``low_valid`` (valid fraction below ``min_valid_frac``)."""
    (s_lo, s_hi), (_, r_hi) = bounds(cfg, space)
    f = np.zeros(len(p), np.uint8)
    f[moving] |= FLAGS["not_converged"]
    at_bound = (p[:, 0] <= s_lo + 1e-4) | (p[:, 0] >= s_hi - 1e-4) | (p[:, 1] >= r_hi - 1e-4)
    f[at_bound] |= FLAGS["not_converged"]
    f[frac < cfg.min_valid_frac] |= FLAGS["low_valid"]
    return f


__all__ = ["FitResult", "fit_camera"]
