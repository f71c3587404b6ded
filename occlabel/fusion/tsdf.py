"""TSDF: truncated signed distances around each measured surface, to localise it below the depth noise.

Every TSDF ray (``tsdf_stride`` pixels with a depth and a class) casts samples every ``step_fraction``
voxel in a band of ±``tsdf_band`` voxels *along the surface normal* around its point (at most
tsdf_band / tsdf_min_cos along the ray). Each sample carries the signed distance (measured depth minus
sample distance along the ray, times |cos| to the normal: + in front, − behind, clamped to the band) with
the ray's confidence × range weight × tsdf_stride². Rays of a moving class count only from the moving
window, or where the near frames confirm the class (:func:`occlabel.fusion.vote.accept_far_moving`);
the sums of those rays that count for moving-class voxels are kept apart. The band also votes for its
class, weighted towards its centre (``1.05 - |sdf| / band``), for voxels without point votes.

Pure torch, no I/O. Voxels are flat row-major indices (``V = X·Y·Z``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from occlabel.conventions import VoxelGrid
from occlabel.fusion.gather import Band
from occlabel.fusion.options import VoxelizeOptions
from occlabel.fusion.vote import MovingClasses, accept_far_moving
from occlabel.geometry.voxel import flat_index, points_to_voxels, ray_segment_samples


@dataclass
class Tsdf:
    """Weighted signed-distance sums over the grid (distances in metres).

    Attributes:
        weight: ``[V]`` float32, sample weights of all counted rays.
        dist: ``[V]`` float32, weight × signed distance of all counted rays.
        weight_moving, dist_moving: ``[V]`` float32, the same over the rays that count for moving classes.
        band_votes: ``[V x NC]`` float32, the band's class votes.
        n_rays: TSDF rays cast; n_samples: samples taken.
    """

    weight: torch.Tensor
    dist: torch.Tensor
    weight_moving: torch.Tensor
    dist_moving: torch.Tensor
    band_votes: torch.Tensor
    n_rays: int
    n_samples: int


def fuse_tsdf(
    band: Band | None,
    grid: VoxelGrid,
    n_classes: int,
    moving: MovingClasses,
    consistent: torch.Tensor | None,
    opts: VoxelizeOptions,
) -> Tsdf:
    """The TSDF sums of the band rays (see the module docstring).

    Args:
        band: TSDF rays in the grid's frame (None: none; all sums zero).
        n_classes: NC, the class set's size.
        consistent: ``[NM x V]`` bool of :class:`occlabel.fusion.vote.Votes` (None: far rays of moving
            classes never count).
        opts: resolved options (tsdf_band, tsdf_min_cos, tsdf_stride, step_fraction, chunk).
    """
    dev = moving.lut.device
    shape = grid.shape
    V = shape[0] * shape[1] * shape[2]
    vs = grid.voxel_size
    tau = opts.tsdf_band * vs
    w_all, d_all, w_mov, d_mov = (torch.zeros(V, dtype=torch.float32, device=dev) for _ in range(4))
    band_votes = torch.zeros(V * n_classes, dtype=torch.float32, device=dev)
    n_rays = n_samples = 0
    if band is not None:
        o, e, lab, w, cos, mov_acc = _counted(band, grid, moving, consistent)
        n_rays = o.shape[0]
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
            w_all += torch.bincount(chunk, weights=ww, minlength=V)
            d_all += torch.bincount(chunk, weights=ww * sdf, minlength=V)
            m = mov_acc[ray]
            w_mov += torch.bincount(chunk[m], weights=ww[m], minlength=V)
            d_mov += torch.bincount(chunk[m], weights=(ww * sdf)[m], minlength=V)
            band_votes.index_add_(0, chunk * n_classes + lab[ray], ww * (1.05 - sdf.abs() / tau))
    return Tsdf(w_all, d_all, w_mov, d_mov, band_votes.view(V, n_classes), n_rays, n_samples)


def _counted(
    band: Band, grid: VoxelGrid, moving: MovingClasses, consistent: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """The band rays that count: static classes, near frames, and far frames the near frames confirm.

    Returns:
        origins, ends, labels, weights, cos of those rays, and ``[B']`` bool: the ray counts for voxels of
        a moving class (near, or confirmed).
    """
    bflat = flat_index(points_to_voxels(band.ends, grid)[0], grid.shape)
    far_ok = ~band.near & accept_far_moving(consistent, moving, bflat, band.labels)
    use = ~moving.lut[band.labels] | band.near | far_ok
    mov_acc = band.near | far_ok  # rays that count for voxels of a moving class
    return (
        band.origins[use],
        band.ends[use],
        band.labels[use],
        band.weights[use],
        band.cos[use],
        mov_acc[use],
    )


__all__ = ["Tsdf", "fuse_tsdf"]
