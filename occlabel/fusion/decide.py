"""Decide: each voxel's class, occupied / free / unknown, and confidence, from the votes, passes and TSDF.

- Class: the most voted class; voxels without point votes take the band's (TSDF); where the near frames
  give a moving class at least ``moving_share`` of their votes, that class.
- Occupied: ``evidence >= min_hits`` and range-weighted votes >= ``occ_ratio`` × range-weighted passes
  (all rays for a static class, the moving window's for a moving class). With the TSDF, a static-class
  voxel is occupied instead where the weighted mean signed distance (carving passes counted as samples at
  +band, ``tsdf_carve``) is <= ``tsdf_occ`` voxels (behind the surface too unless not ``tsdf_behind``);
  voxels no TSDF sample reaches keep the vote test, and so do moving-class voxels unless ``tsdf_moving``.
- Free: not occupied, and crossed by a ray or seen from the keyframe; unknown otherwise.
- Confidence: occupied, the winning share of the votes × the points' mean confidence (TSDF-only voxels:
  the class's share of the band's votes); free, passes / (passes + votes); unknown 0.

Pure torch, no I/O. Voxels are flat row-major indices (``V = X·Y·Z``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from occlabel.fusion.carve import Passes
from occlabel.fusion.options import VoxelizeOptions
from occlabel.fusion.tsdf import Tsdf
from occlabel.fusion.vote import MovingClasses, Votes


@dataclass
class Decision:
    """The verdict over the grid, ``[V]`` each.

    Attributes:
        best: long, the winning class of every voxel (occupied or not).
        occupied: bool; free: bool (neither: unknown).
        confidence: float32 in [0, 1] (0 for unknown voxels).
    """

    best: torch.Tensor
    occupied: torch.Tensor
    free: torch.Tensor
    confidence: torch.Tensor


def winning_class(
    votes: Votes, tsdf: Tsdf | None, moving: MovingClasses, opts: VoxelizeOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """``best`` ``[V]`` long and its votes ``[V]`` float32 (the points' votes for that class)."""
    V = votes.votes.shape[0]
    weighted = votes.votes.sum(1)
    best_votes, best = votes.votes.max(1)
    if tsdf is not None:
        # voxels without point votes (placed by the TSDF alone) take the class of the band's votes
        best = torch.where(weighted > 0, best, tsdf.band_votes.argmax(1))
    NM = moving.count
    if NM and opts.moving_share > 0:
        # the near frames say "moving class": their verdict, whatever the far frames' static votes say
        nmv, nmi = votes.near_moving.view(V, NM).max(1)
        override = (nmv > 0) & (nmv >= opts.moving_share * votes.near_total)
        best = torch.where(override, moving.ids[nmi], best)
        best_votes = torch.where(override, votes.votes.gather(1, best[:, None])[:, 0], best_votes)
    return best, best_votes


def tsdf_surface(
    tsdf: Tsdf, is_moving: torch.Tensor, passes: Passes, voxel_size: float, opts: VoxelizeOptions
) -> torch.Tensor:
    """``[V]`` bool: the weighted mean signed distance, carving passes counted as samples at +band, is at
    most ``tsdf_occ`` voxels in front of the surface (behind it: inside the solid, unless not
    ``tsdf_behind``); False where no TSDF sample reached (see :func:`occupancy`)."""
    vs = voxel_size
    tau = opts.tsdf_band * vs
    wsum = torch.where(is_moving, tsdf.weight_moving, tsdf.weight)
    dsum = torch.where(is_moving, tsdf.dist_moving, tsdf.dist)
    carve = opts.tsdf_carve * float(opts.ray_stride**2) * torch.where(is_moving, passes.moving, passes.static)
    mean_sdf = (dsum + carve * tau) / (wsum + carve).clamp(min=1e-12)
    surface = (wsum > 0) & (mean_sdf <= opts.tsdf_occ * vs)
    if not opts.tsdf_behind:
        surface &= mean_sdf >= -opts.tsdf_occ * vs
    return surface


def occupancy(
    votes: Votes,
    passes: Passes,
    tsdf: Tsdf | None,
    is_moving: torch.Tensor,
    voxel_size: float,
    opts: VoxelizeOptions,
) -> torch.Tensor:
    """``[V]`` bool occupied (see the module docstring); ``is_moving`` ``[V]``: the winning class moves."""
    pass_w = opts.step_fraction * opts.ray_stride**2
    weighted = votes.votes.sum(1)
    p = torch.where(is_moving, passes.moving, passes.static) * pass_w
    occupied = (votes.evidence >= opts.min_hits) & (weighted >= opts.occ_ratio * p) & (votes.evidence > 0)
    if tsdf is None:
        return occupied
    surface = tsdf_surface(tsdf, is_moving, passes, voxel_size, opts)
    # voxels the TSDF has no sample of (points between the tsdf_stride rays) keep the vote test
    wsum = torch.where(is_moving, tsdf.weight_moving, tsdf.weight)
    surface = torch.where(wsum > 0, surface, occupied)
    return surface if opts.tsdf_moving else torch.where(is_moving, occupied, surface)


def confidence(
    votes: Votes,
    passes: Passes,
    tsdf: Tsdf | None,
    best: torch.Tensor,
    best_votes: torch.Tensor,
    occupied: torch.Tensor,
    free: torch.Tensor,
    opts: VoxelizeOptions,
) -> torch.Tensor:
    """``[V]`` float32 confidence (see the module docstring; not yet clamped to [0, 1])."""
    pass_w = opts.step_fraction * opts.ray_stride**2
    weighted = votes.votes.sum(1)
    # winning share of the votes x mean confidence of the points
    mean_conf = votes.evidence / (votes.counts.float() * opts.point_stride**2).clamp(min=1e-9)
    conf_occ = best_votes / weighted.clamp(min=1e-9) * mean_conf
    if tsdf is not None:  # voxels placed by the TSDF alone: the class's share of the band's votes
        bv = tsdf.band_votes
        share = bv.gather(1, best[:, None])[:, 0] / bv.sum(1).clamp(min=1e-9)
        conf_occ = torch.where(weighted > 0, conf_occ, share)
    passes_w = passes.static * pass_w
    conf_free = passes_w / (passes_w + weighted).clamp(min=1e-9)
    return torch.where(occupied, conf_occ, torch.where(free, conf_free, torch.zeros_like(conf_free)))


def decide(
    votes: Votes,
    passes: Passes,
    tsdf: Tsdf | None,
    seen: torch.Tensor,
    moving: MovingClasses,
    voxel_size: float,
    opts: VoxelizeOptions,
) -> Decision:
    """The verdict of every voxel.

    Args:
        tsdf: the TSDF sums (None: ``opts.tsdf`` is off).
        seen: ``[V]`` bool, voxels of the keyframe's mask_camera (free when not occupied).
        voxel_size: metres.
    """
    best, best_votes = winning_class(votes, tsdf, moving, opts)
    is_moving = moving.lut[best]
    occupied = occupancy(votes, passes, tsdf, is_moving, voxel_size, opts)
    free = ~occupied & ((passes.raw > 0) | seen)
    conf = confidence(votes, passes, tsdf, best, best_votes, occupied, free, opts)
    return Decision(best, occupied, free, conf)


def label_arrays(
    decision: Decision,
    votes: Votes,
    passes: Passes,
    seen: torch.Tensor,
    free_id: int,
    shape: tuple[int, int, int],
    opts: VoxelizeOptions,
) -> dict[str, np.ndarray]:
    """The stored arrays over the grid (X, Y, Z): semantics <uint8> (``free_id`` where not occupied),
    mask_camera <bool>, confidence <uint8> (× 255), hits <uint16>, passes <uint16> (ray length in voxels,
    at least 1 where a ray passed; both saturate at 65535)."""
    pass_w = opts.step_fraction * opts.ray_stride**2
    best = decision.best
    semantics = torch.where(decision.occupied, best, torch.full_like(best, free_id))
    passes_out = passes.raw * pass_w

    def out(x: torch.Tensor, dtype) -> np.ndarray:
        return x.view(shape).cpu().numpy().astype(dtype)

    return {
        "semantics": out(semantics, np.uint8),
        "mask_camera": out(seen, bool),
        "confidence": out((decision.confidence.clamp(0, 1) * 255).round(), np.uint8),
        "hits": out(votes.counts.clamp(max=65535), np.uint16),
        "passes": out(torch.where(passes_out > 0, passes_out.round().clamp(1, 65535), 0.0), np.uint16),
    }


__all__ = ["Decision", "confidence", "decide", "label_arrays", "occupancy", "tsdf_surface", "winning_class"]
