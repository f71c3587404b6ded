"""Voxel indexing and ray traversal in torch (voxel order [x, y, z], see occlabel.conventions).

Everything is vectorised: no Python loops over points, rays or voxels (rays are processed in chunks
only to bound memory).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from occlabel.conventions import VoxelGrid


def make_grid(
    lower: tuple[float, float, float] | list[float],
    upper: tuple[float, float, float] | list[float],
    voxel_size: float,
    frame: str = "ego",
    name: str = "custom",
) -> VoxelGrid:
    """A voxel grid over any axis-aligned box (a custom grid; the presets are conventions.GRIDS).

    Args:
        lower, upper: (x, y, z) corners in metres, in the grid's frame.
        voxel_size: edge of the cubic voxels, metres; every extent must be a whole number of voxels.
        frame: "ego" (the keyframe's ego frame) or "sensor" (placed with a T_ego_from_grid, see
            occlabel.stages.voxelize).
    Raises:
        ValueError: empty box, non-positive voxel, extents not a multiple of the voxel, unknown frame.
    """
    lo = tuple(float(v) for v in lower)
    hi = tuple(float(v) for v in upper)
    if len(lo) != 3 or len(hi) != 3:
        raise ValueError(f"grid range needs 3 lower and 3 upper values, got {lower} / {upper}")
    if not voxel_size > 0:
        raise ValueError(f"voxel size must be > 0, got {voxel_size}")
    if frame not in ("ego", "sensor"):
        raise ValueError(f"grid frame must be 'ego' or 'sensor', got {frame!r}")
    for axis, a, b in zip("xyz", lo, hi, strict=True):
        n = (b - a) / voxel_size
        if not b > a:
            raise ValueError(f"grid range: {axis} upper {b} must exceed lower {a}")
        if abs(n - round(n)) > 1e-6 * max(1.0, n):
            raise ValueError(
                f"grid range: {axis} extent {b - a:g} m is not a whole number of {voxel_size:g} m voxels"
            )
    return VoxelGrid(name, lo, hi, float(voxel_size), frame)


def grid_tensors(
    grid: VoxelGrid, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lower ``[3]``, upper ``[3]``, shape ``[3]`` long) of a grid as tensors."""
    lower = torch.tensor(grid.lower, device=device, dtype=dtype)
    upper = torch.tensor(grid.upper, device=device, dtype=dtype)
    shape = torch.tensor(grid.shape, device=device, dtype=torch.long)
    return lower, upper, shape


def points_to_voxels(points: torch.Tensor, grid: VoxelGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel index of each point.

    Args:
        points: ``[N x 3]`` points in the grid's frame, metres.
    Returns:
        idx ``[N x 3]`` long (i, j, k) and valid ``[N]`` bool (inside the grid).
    """
    lower, _, shape = grid_tensors(grid, points.device, points.dtype)
    idx = torch.floor((points - lower) / grid.voxel_size).long()
    valid = ((idx >= 0) & (idx < shape)).all(-1) & torch.isfinite(points).all(-1)
    return idx.clamp(min=torch.zeros_like(shape), max=shape - 1), valid


def flat_index(idx: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Row-major flat index ``[N]`` of voxel indices ``[N x 3]`` in a grid of ``shape`` (X, Y, Z)."""
    return (idx[..., 0] * shape[1] + idx[..., 1]) * shape[2] + idx[..., 2]


def clip_rays_to_box(
    origins: torch.Tensor, dirs: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distance of rays through an axis-aligned box (slab method).

    Args:
        origins: ``[N x 3]``; dirs: ``[N x 3]`` unit directions; lower, upper: ``[3]``.
    Returns:
        t_near, t_far ``[N]``; a ray misses the box where ``t_far < max(t_near, 0)``.
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (lower - origins) * inv
    t1 = (upper - origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far


def ray_free_samples(
    origins: torch.Tensor,
    ends: torch.Tensor,
    grid: VoxelGrid,
    step_fraction: float = 0.5,
    stop_before: float | None = None,
    chunk: int = 1 << 22,
    return_rays: bool = False,
) -> Iterator[torch.Tensor] | Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Flat voxel indices that rays pass through before reaching their end points (free space).

    Each ray from ``origins[n]`` to ``ends[n]`` is sampled every ``step_fraction * voxel_size`` metres
    inside the grid; samples closer than ``stop_before`` (default: one voxel) to the end point are
    dropped so that the voxel holding the surface is not marked free.

    Args:
        origins: ``[N x 3]`` ray starts (camera centres) in the grid frame.
        ends: ``[N x 3]`` ray ends (surface points, or far points for sky rays).
        grid: the voxel grid.
        return_rays: also yield, for every sample, the index of its ray in ``origins``.
    Yields:
        ``[M]`` long flat indices (with repeats: one per sample), chunk by chunk; with ``return_rays``,
        tuples (flat indices ``[M]``, ray indices ``[M]`` long).
    """
    if origins.shape[0] == 0:
        return
    stop = grid.voxel_size if stop_before is None else stop_before
    vec = ends - origins
    length = vec.norm(dim=-1)
    dirs = vec / length.clamp(min=1e-9)[:, None]
    for flat, ray, _ in ray_segment_samples(
        origins, dirs, torch.zeros_like(length), length - stop, grid, grid.voxel_size * step_fraction, chunk
    ):
        yield (flat, ray) if return_rays else flat


def ray_segment_samples(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    t_start: torch.Tensor,
    t_end: torch.Tensor,
    grid: VoxelGrid,
    step: float,
    chunk: int = 1 << 22,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Samples every ``step`` metres along ray segments, inside the grid.

    Ray n's segment runs from ``t_start[n]`` to ``t_end[n]`` metres along ``dirs[n]`` from ``origins[n]``
    (clipped to the grid's box); its samples lie at ``t_start + (k + 0.5) * step`` (the last one clamped
    to ``t_end``), k = 0 .. ceil(length / step) - 1.

    Args:
        origins: ``[N x 3]`` ray starts in the grid frame, metres.
        dirs: ``[N x 3]`` unit directions.
        t_start, t_end: ``[N]`` segment bounds along each ray, metres (empty where t_end <= t_start).
        step: sample spacing, metres.
        chunk: samples materialised at once (bounds memory).
    Yields:
        (flat voxel index ``[M]`` long, ray index ``[M]`` long into the inputs, distance along the ray
        ``[M]`` float of every sample), chunk by chunk; samples outside the grid are dropped.
    """
    if origins.shape[0] == 0:
        return
    lower, upper, shape = grid_tensors(grid, origins.device, origins.dtype)
    t_near, t_far = clip_rays_to_box(origins, dirs, lower, upper)
    t_start = torch.maximum(t_start, t_near)
    t_end = torch.minimum(t_far, t_end)
    n_samples = torch.ceil((t_end - t_start) / step).clamp(min=0).long()
    keep = n_samples > 0
    ray_index = torch.nonzero(keep)[:, 0]
    origins, dirs, t_start, n_samples = origins[keep], dirs[keep], t_start[keep], n_samples[keep]
    t_end = t_end[keep]
    if origins.shape[0] == 0:
        return
    # Rays are grouped so that each chunk materialises at most ~chunk samples.
    cum = torch.cumsum(n_samples, 0)
    start = 0
    total = int(cum[-1])
    done = 0
    while done < total:
        stop_idx = int(torch.searchsorted(cum, torch.tensor(done + chunk, device=cum.device), right=True))
        stop_idx = max(stop_idx, start + 1)
        sl = slice(start, stop_idx)
        ns = n_samples[sl]
        ray_id = torch.repeat_interleave(torch.arange(ns.shape[0], device=ns.device), ns)
        first = torch.cumsum(ns, 0) - ns
        k = torch.arange(int(ns.sum()), device=ns.device) - first[ray_id]
        t = t_start[sl][ray_id] + (k.to(origins.dtype) + 0.5) * step
        t = torch.minimum(t, t_end[sl][ray_id])
        pts = origins[sl][ray_id] + dirs[sl][ray_id] * t[:, None]
        idx, valid = points_to_voxels(pts, grid)
        flat = flat_index(idx[valid], tuple(int(s) for s in shape))
        yield flat, ray_index[sl][ray_id[valid]], t[valid]
        done = int(cum[stop_idx - 1])
        start = stop_idx
