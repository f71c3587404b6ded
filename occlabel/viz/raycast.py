"""Ray casting through a voxel grid: the first occupied voxel along each ray, by an exact voxel traversal
(Amanatides & Woo 3D DDA), vectorised over rays. Pure numpy; what occlabel.viz.render's oblique render and
camera overlay are drawn with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cast_rays(
    occupied: np.ndarray, origins: np.ndarray, dirs: np.ndarray, t_min: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first occupied voxel along each ray (exact 3D DDA traversal, vectorised over rays).

    Args:
        occupied: <bool: X, Y, Z> voxels that stop a ray.
        origins: <float: N, 3> ray origins in voxel index units (voxel (i, j, k) spans [i, i+1) x ...).
        dirs: <float: N, 3> ray directions in the same units (need not be unit length).
        t_min: rays start at ``origins + t_min * dirs``.
    Returns:
        index <np.int64: N, 3> of the hit voxel (-1 where the ray hits nothing), t <np.float64: N> ray
        parameter where it enters that voxel (inf where none), and axis <np.int8: N>: the axis (0 x, 1 y,
        2 z) of the face it entered through (-1 when the ray starts inside the voxel).
    """
    occ = np.ascontiguousarray(occupied, bool)
    shape = np.array(occ.shape, np.int64)
    o = np.asarray(origins, np.float64).reshape(-1, 3)
    d = np.asarray(dirs, np.float64).reshape(-1, 3)
    n = len(o)
    out = _Hits(np.full((n, 3), -1, np.int64), np.full(n, np.inf), np.full(n, -1, np.int8))
    inv, t_enter, axis0, t_exit = _clip_to_grid(o, d, shape)
    start = np.maximum(t_enter, t_min)
    rays = np.flatnonzero(start < t_exit)
    if not len(rays):
        return out.index, out.t, out.axis
    oo, dd, t = o[rays], d[rays], start[rays]
    ax = np.where(t_enter[rays] >= t_min, axis0[rays], -1)
    idx = _first_voxel(oo, dd, t, ax, shape)
    step = np.sign(dd).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        boundary = np.where(step > 0, idx + 1, idx).astype(np.float64)
        tmax = np.where(step != 0, (boundary - oo) / np.where(dd != 0, dd, 1.0), np.inf)
        tdelta = np.where(step != 0, np.abs(inv[rays]), np.inf)
    _march(occ, shape, out, rays, idx, t, tmax, tdelta, step, ax.astype(np.int8))
    return out.index, out.t, out.axis


@dataclass(frozen=True)
class _Hits:
    """What :func:`cast_rays` returns, filled in place by :func:`_march`: index <np.int64: N, 3> (-1: no
    hit), t <np.float64: N> (inf: none), axis <np.int8: N> (-1: started inside)."""

    index: np.ndarray
    t: np.ndarray
    axis: np.ndarray


def _clip_to_grid(o: np.ndarray, d: np.ndarray, shape: np.ndarray):
    """Slab test of rays o + t d <N, 3> against the box [0, shape): (1 / d <N, 3> (inf where d is 0),
    t_enter <N>, the axis it enters through <N>, t_exit <N>); t_enter >= t_exit: the ray misses."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1.0), np.inf)
        ta, tb = (0 - o) * inv, (shape - o) * inv
    zero = d == 0
    inside = (o >= 0) & (o < shape)
    t_lo = np.where(zero, np.where(inside, -np.inf, np.inf), np.minimum(ta, tb))
    t_hi = np.where(zero, np.where(inside, np.inf, -np.inf), np.maximum(ta, tb))
    return inv, t_lo.max(1), t_lo.argmax(1), t_hi.min(1)


def _first_voxel(
    oo: np.ndarray, dd: np.ndarray, t: np.ndarray, ax: np.ndarray, shape: np.ndarray
) -> np.ndarray:
    """<np.int64: M, 3> the voxel each ray starts in at parameter ``t`` (``ax`` >= 0: entered through a face
    of that axis)."""
    idx = np.floor(oo + dd * t[:, None]).astype(np.int64)
    # entering through a face, the entry coordinate rounds onto the boundary: take the voxel behind it
    r = np.flatnonzero(ax >= 0)
    a = ax[r]
    idx[r, a] = np.where(
        dd[r, a] > 0,
        np.ceil(oo[r, a] + dd[r, a] * t[r] - 0.5),
        np.floor(oo[r, a] + dd[r, a] * t[r] + 0.5) - 1,
    )
    return np.clip(idx, 0, shape - 1)


def _march(occ, shape, out: _Hits, rays, idx, t, tmax, tdelta, step, ax) -> None:
    """Step the rays ``rays`` voxel by voxel (DDA: along the axis of the nearest boundary ``tmax``) until
    each hits an occupied voxel (recorded in ``out``) or leaves the grid."""
    strides = np.array([shape[1] * shape[2], shape[2], 1], np.int64)
    flat = occ.ravel()
    alive = np.ones(len(rays), bool)
    hi = shape - 1
    while len(rays):
        # rays that left the grid or hit keep stepping until the next compaction; they are masked out
        h = flat[np.clip(idx, 0, hi) @ strides] & alive
        if h.any():
            out.index[rays[h]] = idx[h]
            out.t[rays[h]] = t[h]
            out.axis[rays[h]] = ax[h]
        a = np.argmin(tmax, 1)
        k = np.arange(len(a))
        t = tmax[k, a]
        ia = idx[k, a] + step[k, a]
        idx[k, a] = ia
        tmax[k, a] += tdelta[k, a]
        ax = a.astype(np.int8)
        alive &= ~h & (ia >= 0) & (ia < shape[a])
        n_alive = int(alive.sum())
        if n_alive < 0.7 * len(alive):  # compact: fewer rays to step
            rays, idx, t, tmax, tdelta, step, ax = (x[alive] for x in (rays, idx, t, tmax, tdelta, step, ax))
            alive = np.ones(n_alive, bool)


__all__ = ["cast_rays"]
