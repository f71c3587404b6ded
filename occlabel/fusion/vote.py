"""Vote: the window's surface points vote for their class in their voxel.

Static classes vote from the whole window; classes that can move only from the moving window (``near``),
except far-frame points of a moving class where the near frames voted that class within
``moving_consistent`` voxels (a parked car is seen by the whole window). Each point votes with its
semantic confidence times its range weight (scatter-add over voxel × class); ``evidence`` counts the
confidence-weighted points without the range weight. Voxels are flat row-major indices of the grid
(``V = X·Y·Z``; occlabel.geometry.voxel.flat_index).

Pure torch, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from occlabel.conventions import VoxelGrid
from occlabel.fusion.gather import Points
from occlabel.fusion.options import VoxelizeOptions
from occlabel.geometry.voxel import flat_index, points_to_voxels


@dataclass
class MovingClasses:
    """The classes that can move, as lookups on the fusion device.

    Attributes:
        lut: ``[256]`` bool, the id is a moving class.
        ids: ``[NM]`` long, the moving class ids in increasing order.
        pos: ``[256]`` long, an id's position in ``ids`` (-1: static).
    """

    lut: torch.Tensor
    ids: torch.Tensor
    pos: torch.Tensor

    @property
    def count(self) -> int:
        """NM, the number of moving classes."""
        return int(self.ids.numel())

    @classmethod
    def create(cls, moving: Iterable[int], device: torch.device | str = "cpu") -> MovingClasses:
        """From the moving class ids (the options' ``moving_classes``, else the class set's)."""
        dev = torch.device(device)
        moving = tuple(moving)
        lut = torch.zeros(256, dtype=torch.bool, device=dev)
        if moving:
            lut[list(moving)] = True
        ids = torch.tensor(sorted(moving), dtype=torch.long, device=dev)
        pos = torch.full((256,), -1, dtype=torch.long, device=dev)
        if ids.numel():
            pos[ids] = torch.arange(int(ids.numel()), device=dev)
        return cls(lut, ids, pos)


@dataclass
class Votes:
    """The points' votes over the grid (``V`` voxels, ``NC`` class ids, ``NM`` moving classes).

    Attributes:
        counts: ``[V]`` long, points counted in each voxel.
        evidence: ``[V]`` float32, confidence-weighted points (pixel units, no range weight).
        votes: ``[V x NC]`` float32, confidence × range weight per class.
        near_total: ``[V]`` float32, near-frame votes of all classes.
        near_moving: ``[V·max(NM, 1)]`` float32, near-frame votes per moving class (row-major V × NM).
        consistent: ``[NM x V]`` bool, the near frames voted that moving class within
            ``moving_consistent`` voxels (None: no moving classes, no points, or the rule is off).
        seen: ``[V]`` bool, voxels holding a point of the keyframe's own views.
        n_points: points that voted.
    """

    counts: torch.Tensor
    evidence: torch.Tensor
    votes: torch.Tensor
    near_total: torch.Tensor
    near_moving: torch.Tensor
    consistent: torch.Tensor | None
    seen: torch.Tensor
    n_points: int


def accept_far_moving(
    consistent: torch.Tensor | None, moving: MovingClasses, flat: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """``[N]`` bool: far-frame observations (voxels ``flat`` ``[N]``, class ``labels`` ``[N]``) of a moving
    class that the near frames confirm at their voxel (``consistent`` of :class:`Votes`)."""
    if consistent is None:
        return torch.zeros_like(flat, dtype=torch.bool)
    pos = moving.pos[labels]
    return (pos >= 0) & consistent[pos.clamp(min=0), flat]


def vote(
    points: Points | None,
    grid: VoxelGrid,
    n_classes: int,
    moving: MovingClasses,
    opts: VoxelizeOptions,
) -> Votes:
    """Scatter the points' votes into the grid (see the module docstring).

    Args:
        points: the window's points in the grid's frame (None: no points; all votes zero).
        n_classes: NC, the class set's size (ids 0 .. NC-1).
        opts: resolved options (``moving_consistent``).
    """
    dev = moving.lut.device
    shape = grid.shape
    V = shape[0] * shape[1] * shape[2]
    NM = moving.count
    counts = torch.zeros(V, dtype=torch.long, device=dev)
    evidence = torch.zeros(V, dtype=torch.float32, device=dev)
    votes = torch.zeros(V * n_classes, dtype=torch.float32, device=dev)
    near_total = torch.zeros(V, dtype=torch.float32, device=dev)
    near_mov = torch.zeros(V * max(NM, 1), dtype=torch.float32, device=dev)
    seen = torch.zeros(V, dtype=torch.bool, device=dev)
    consistent = None
    n_points = 0
    if points is not None:
        p, lab, w, rw, near = points.xyz, points.labels, points.weights, points.range_w, points.near
        idx, valid = points_to_voxels(p, grid)
        flat = flat_index(idx, shape)
        is_mov = moving.lut[lab]
        nv = valid & near
        near_total.index_add_(0, flat[nv], w[nv] * rw[nv])
        nm = nv & is_mov
        if NM:
            near_mov.index_add_(0, flat[nm] * NM + moving.pos[lab[nm]], w[nm] * rw[nm])
        if NM and opts.moving_consistent >= 0:
            consistent = _dilate(near_mov.view(V, NM).T.reshape(NM, 1, *shape) > 0, opts.moving_consistent)
            consistent = consistent.reshape(NM, V)
        use = valid & (~is_mov | near)
        use |= valid & ~near & accept_far_moving(consistent, moving, flat, lab)
        n_points = int(use.sum())
        counts += torch.bincount(flat[use], minlength=V)
        evidence.index_add_(0, flat[use], w[use])
        votes.index_add_(0, flat[use] * n_classes + lab[use], w[use] * rw[use])
        seen[flat[valid & points.key]] = True
    return Votes(counts, evidence, votes.view(V, n_classes), near_total, near_mov, consistent, seen, n_points)


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    """``[NM x 1 x X x Y x Z]`` bool grown by ``r`` voxels (a (2r+1)³ max filter); r = 0: as it is."""
    if r > 0:
        return torch.nn.functional.max_pool3d(mask.float(), 2 * r + 1, stride=1, padding=r) > 0
    return mask


__all__ = ["MovingClasses", "Votes", "accept_far_moving", "vote"]
