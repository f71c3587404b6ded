"""Ground-truth occupancy of the synthetic world on a voxel grid in an (upright) ego frame.

Definitions (exact, no sampling for objects):

- a voxel is occupied by an object when the object's closed solid intersects the voxel's open cube
  (``prims.overlaps_cells``); its class is the class of the highest-priority object there
  (``PRIORITY``: small and moving things over large static ones);
- a voxel is ground when the ground surface passes through it: the surface height (0 on the road,
  ``kerb_h`` elsewhere) at one of 3 x 3 sample points of the voxel's footprint lies in [z_lower, z_upper),
  or the kerb face crosses it; its class is the majority class of those samples (kerb faces count as
  sidewalk). Objects win over ground;
- everything else is free (``FREE`` = 17), including the space below the ground.

Camera visibility (``mask_camera``): voxels crossed by a ray from a camera centre to its first surface
(sky rays: to ``max_range``), plus the voxel holding the surface point. "Crossed" is sampled with
``occlabel.geometry.voxel.ray_free_samples`` every voxel length (``step_fraction=1``): a voxel that a
ray only clips for less than that can be missed; 99.5% of random points along camera rays fall in marked
voxels (99.9% at ``step_fraction=0.5``, which costs twice the time).
"""

from __future__ import annotations

import numpy as np
import torch

from occlabel.conventions import FREE, OCC3D_ID, VoxelGrid
from occlabel.datasets.synthetic.prims import Prims, overlaps_cells
from occlabel.datasets.synthetic.raycast import expand_ranges
from occlabel.datasets.synthetic.road import SIDEWALK
from occlabel.geometry.voxel import flat_index, points_to_voxels, ray_free_samples

#: Class priority where solids of several classes share a voxel (higher wins).
PRIORITY = {
    "pedestrian": 10,
    "bicycle": 9,
    "motorcycle": 9,
    "traffic_cone": 8,
    "barrier": 7,
    "car": 6,
    "truck": 6,
    "bus": 6,
    "trailer": 6,
    "construction_vehicle": 6,
    "others": 5,
    "manmade": 4,
    "vegetation": 3,
}


def _priority_lut() -> torch.Tensor:
    lut = torch.zeros(32, dtype=torch.long)
    for name, p in PRIORITY.items():
        lut[OCC3D_ID[name]] = p
    return lut


def prims_in_ego(prims: Prims, T_world_from_ego: np.ndarray) -> Prims:
    """The primitives moved into an upright ego frame (T_world_from_ego must be a yaw-only rotation)."""
    T = np.asarray(T_world_from_ego, np.float64)
    if abs(T[2, 2] - 1.0) > 1e-6:
        raise ValueError("the synthetic world's occupancy needs an upright ego frame (yaw-only pose)")
    T_ew = np.linalg.inv(T)
    yaw = float(np.arctan2(T_ew[1, 0], T_ew[0, 0]))
    # rotate about the world origin in float64 to keep precision far from it, then cast
    c = prims.centre.double()
    cen = c @ torch.from_numpy(T_ew[:3, :3]).T + torch.from_numpy(T_ew[:3, 3])
    out = Prims(**{k: getattr(prims, k) for k in prims.__dataclass_fields__})
    out.centre = cen.float()
    out.yaw = prims.yaw + yaw
    return out


@torch.no_grad()
def object_occupancy(prims_ego: Prims, grid: VoxelGrid) -> torch.Tensor:
    """Object classes on the grid, ``[X x Y x Z]`` long (-1 where no object), prims in the grid's frame."""
    shape = grid.shape
    X, Y, Z = shape
    lower = torch.tensor(grid.lower, dtype=torch.float32)
    vs = grid.voxel_size
    out_code = torch.full((X * Y * Z,), -1, dtype=torch.long)
    if len(prims_ego) == 0:
        return out_code.reshape(shape)
    cor = prims_ego.corners()  # P 8 3
    lo = torch.floor((cor.amin(1) - lower) / vs).long()
    hi = torch.floor((cor.amax(1) - lower) / vs).long()
    n = torch.tensor(shape)
    lo = torch.maximum(lo, torch.zeros_like(lo))
    hi = torch.minimum(hi, n - 1)
    ext = (hi - lo + 1).clamp(min=0)
    cnt = ext.prod(-1)
    pidx, k = expand_ranges(torch.arange(len(prims_ego)), torch.zeros_like(cnt), cnt)
    if pidx.numel() == 0:
        return out_code.reshape(shape)
    e = ext[pidx]
    iz = k % e[:, 2]
    iy = (k // e[:, 2]) % e[:, 1]
    ix = k // (e[:, 2] * e[:, 1])
    idx = lo[pidx] + torch.stack([ix, iy, iz], -1)
    centre = lower + (idx.float() + 0.5) * vs
    ok = overlaps_cells(prims_ego, pidx, centre, vs / 2)
    flat = flat_index(idx[ok], shape)
    cls = prims_ego.cls[pidx[ok]]
    code = _priority_lut()[cls] * 32 + cls
    out_code.scatter_reduce_(0, flat, code, reduce="amax")
    out = torch.where(out_code >= 0, out_code % 32, out_code)
    return out.reshape(shape)


@torch.no_grad()
def ground_occupancy(road, T_world_from_ego: np.ndarray, grid: VoxelGrid, samples: int = 3) -> torch.Tensor:
    """Ground classes on the grid, ``[X x Y x Z]`` long (-1 where the ground surface does not pass)."""
    X, Y, Z = grid.shape
    vs = grid.voxel_size
    off = (torch.arange(samples, dtype=torch.float64) + 0.5) / samples * vs
    gx = grid.lower[0] + torch.arange(X, dtype=torch.float64)[:, None] * vs + off[None]  # X S
    gy = grid.lower[1] + torch.arange(Y, dtype=torch.float64)[:, None] * vs + off[None]  # Y S
    ex = gx[:, None, :, None].expand(X, Y, samples, samples)
    ey = gy[None, :, None, :].expand(X, Y, samples, samples)
    T = torch.from_numpy(np.asarray(T_world_from_ego, np.float64))
    wx = T[0, 0] * ex + T[0, 1] * ey + T[0, 3]
    wy = T[1, 0] * ex + T[1, 1] * ey + T[1, 3]
    g = road.ground(wx.reshape(-1).float(), wy.reshape(-1).float())
    h_ego = g["h"].double() - T[2, 3]
    k = torch.floor((h_ego - grid.lower[2]) / vs).long()
    col = torch.arange(X * Y).repeat_interleave(samples * samples)
    # kerb faces: columns with both road and raised samples; they add a sidewalk vote to the layers that
    # span [0, kerb_h]
    is_road = (g["h"] == 0).reshape(X * Y, -1)
    kerb_col = torch.nonzero(is_road.any(1) & (~is_road).any(1))[:, 0]
    k0 = int(np.floor((0.0 - float(T[2, 3]) - grid.lower[2]) / vs))
    k1 = int(np.floor((road.kerb_h - float(T[2, 3]) - grid.lower[2]) / vs))
    kmin, kmax = min(int(k.min()), k0), max(int(k.max()), k1)
    kmin, kmax = max(kmin, 0), min(kmax, Z - 1)
    out = torch.full((X * Y, Z), -1, dtype=torch.long)
    if kmax < kmin:
        return out.reshape(X, Y, Z)
    classes = torch.unique(torch.cat([g["cls"], torch.tensor([SIDEWALK])]))
    lut = torch.zeros(int(classes.max()) + 1, dtype=torch.long)
    lut[classes] = torch.arange(classes.numel())
    nk, nc = kmax - kmin + 1, classes.numel()
    votes = torch.zeros((X * Y * nk, nc), dtype=torch.long)
    valid = (k >= kmin) & (k <= kmax)
    votes.index_put_(
        ((col[valid] * nk + k[valid] - kmin), lut[g["cls"][valid]]),
        torch.ones(int(valid.sum()), dtype=torch.long),
        accumulate=True,
    )
    for kk in range(max(k0, kmin), min(k1, kmax) + 1):
        votes[kerb_col * nk + kk - kmin, lut[SIDEWALK]] += 1
    has = votes.sum(1) > 0
    best = torch.where(has, classes[votes.argmax(1)], torch.full((X * Y * nk,), -1, dtype=torch.long))
    out[:, kmin : kmax + 1] = best.reshape(X * Y, nk)
    return out.reshape(X, Y, Z)


def occupancy(world, T_world_from_ego: np.ndarray, grid: VoxelGrid, t: float) -> np.ndarray:
    """Occ3D-style semantics <np.uint8: X, Y, Z> (class ids 0-16, ``FREE`` = 17) of the world at time t
    on ``grid`` placed in the ego frame given by ``T_world_from_ego`` (upright)."""
    prims = prims_in_ego(world.prims_at(t), T_world_from_ego)
    obj = object_occupancy(prims, grid)
    gnd = ground_occupancy(world.road, T_world_from_ego, grid)
    sem = torch.where(obj >= 0, obj, torch.where(gnd >= 0, gnd, torch.full_like(obj, FREE)))
    return sem.to(torch.uint8).numpy()


@torch.no_grad()
def visibility_mask(
    origins: torch.Tensor, ends: torch.Tensor, hit: torch.Tensor, grid: VoxelGrid, step_fraction: float = 1.0
) -> np.ndarray:
    """Voxels seen by rays: crossed on the way from ``origins`` to ``ends`` or holding a hit end point.

    Args:
        origins, ends: ``[N x 3]`` float32 in the grid's frame (sky rays: ends at the maximum range).
        hit: ``[N]`` bool, the ray ends on a surface (its end voxel is marked too).
    Returns:
        <np.uint8: X, Y, Z> 0/1.
    """
    shape = grid.shape
    mask = torch.zeros(int(np.prod(shape)), dtype=torch.bool)
    for flat in ray_free_samples(origins, ends, grid, step_fraction=step_fraction, stop_before=0.0):
        mask[flat] = True
    idx, valid = points_to_voxels(ends[hit], grid)
    mask[flat_index(idx[valid], shape)] = True
    return mask.reshape(shape).to(torch.uint8).numpy()
