"""Carve: free-space passes of the rays, and the keyframe's mask_camera.

A ray from the camera centre toward its point crosses voxels (occlabel.geometry.voxel.ray_free_samples, a
sample every ``step_fraction`` voxel); each sample is one pass. A ray stops short of its point by
``stop_frac`` of its length plus ``clearance`` voxels measured along the surface normal (at least one
voxel along the ray): a ray that meets a surface at a grazing angle runs just above it for metres and
would otherwise carve the voxels the surface occupies. Sky rays carve their whole length.

mask_camera rays run all the way to their point (Occ3D's "visible from the cameras of this sample").

Pure torch, no I/O. Voxels are flat row-major indices (``V = X·Y·Z``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from occlabel.conventions import VoxelGrid
from occlabel.fusion.gather import MaskRays, Rays
from occlabel.fusion.options import VoxelizeOptions
from occlabel.geometry.voxel import ray_free_samples


@dataclass
class Passes:
    """Free-space passes over the grid, in samples (multiply by step_fraction·ray_stride² for voxel
    lengths in pixel units).

    Attributes:
        raw: ``[V]`` float32, samples of all rays (no range weight; what the store keeps).
        static: ``[V]`` float32, range-weighted samples of all rays (the test of static-class voxels).
        moving: ``[V]`` float32, range-weighted samples of the key and near rays (moving-class voxels).
        n_rays: rays cast; n_samples: samples taken.
    """

    raw: torch.Tensor
    static: torch.Tensor
    moving: torch.Tensor
    n_rays: int
    n_samples: int


def free_fraction(rays: Rays, voxel_size: float, opts: VoxelizeOptions) -> torch.Tensor:
    """``[M]`` float32, the fraction of each ray (origin -> end) that carves: short of the point by
    ``stop_frac`` of the length plus ``clearance`` voxels along the normal (>= one voxel); 1 for sky."""
    vs = voxel_size
    length = (rays.ends - rays.origins).norm(dim=-1)
    stop = torch.clamp(opts.clearance * vs / rays.cos.clamp(min=0.02), min=vs) + opts.stop_frac * length
    return torch.where(rays.sky, torch.ones_like(length), (1 - stop / length.clamp(min=1e-9)).clamp(min=0))


def carve(
    rays: dict[str, Rays], grid: VoxelGrid, opts: VoxelizeOptions, device: torch.device | str
) -> Passes:
    """Passes of the ray groups ("key", "near", "far"; the "far" rays count for static voxels only).

    Args:
        rays: free-space rays by group in the grid's frame (:attr:`Observations.rays`).
        opts: resolved options (clearance, stop_frac, step_fraction, chunk).
    """
    dev = torch.device(device)
    V = grid.shape[0] * grid.shape[1] * grid.shape[2]
    raw, static, moving = (torch.zeros(V, dtype=torch.float32, device=dev) for _ in range(3))
    n_rays = n_samples = 0
    for group, r in rays.items():
        n_rays += r.origins.shape[0]
        o, e = r.origins, r.ends
        frac = free_fraction(r, grid.voxel_size, opts)
        for chunk, ray in ray_free_samples(
            o,
            o + (e - o) * frac[:, None],
            grid,
            step_fraction=opts.step_fraction,
            stop_before=0.0,
            chunk=opts.chunk,
            return_rays=True,
        ):
            n_samples += chunk.numel()
            raw += torch.bincount(chunk, minlength=V)
            b = torch.bincount(chunk, weights=r.range_w[ray], minlength=V)
            static += b
            if group != "far":
                moving += b
    return Passes(raw, static, moving, n_rays, n_samples)


def mask_camera(
    mask: MaskRays | None, grid: VoxelGrid, opts: VoxelizeOptions, device: torch.device | str
) -> tuple[torch.Tensor, int, int]:
    """Voxels the keyframe's mask_camera rays cross, all the way to their points.

    Returns:
        (``[V]`` bool crossed, rays cast, samples taken).
    """
    V = grid.shape[0] * grid.shape[1] * grid.shape[2]
    seen = torch.zeros(V, dtype=torch.bool, device=torch.device(device))
    if mask is None:
        return seen, 0, 0
    n_samples = 0
    for chunk in ray_free_samples(
        mask.origins, mask.ends, grid, step_fraction=opts.step_fraction, stop_before=0.0, chunk=opts.chunk
    ):
        n_samples += chunk.numel()
        seen[chunk] = True
    return seen, mask.origins.shape[0], n_samples


__all__ = ["Passes", "carve", "free_fraction", "mask_camera"]
