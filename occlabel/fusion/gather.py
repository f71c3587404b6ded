"""Gather: the observations of a keyframe's window, moved from each view's camera frame into the grid's frame.

Every prepared view (:class:`occlabel.fusion.views.View`) of the window gives, in the grid's frame,
``p_grid = T_grid_from_world @ T_world_from_cam @ p_cam``:

- its surface points (votes), tagged with whether the view lies in the moving window (``near``) or is a
  view of the keyframe itself (``key``);
- its free-space rays, grouped by the view's distance to the keyframe: "key" (0), "near" (within
  ``moving_window``), "far" (the rest of the window);
- its TSDF band rays (with ``opts.tsdf``), tagged ``near`` like the points;
- for the keyframe's own views, the mask_camera rays.

Pure torch, no I/O; the result is concatenated over the views in the order they come.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TypeVar

import numpy as np
import torch

from occlabel.fusion.options import VoxelizeOptions
from occlabel.fusion.views import View

#: the groups of free-space rays, by the view's frame distance to the keyframe (in this order)
RAY_GROUPS = ("key", "near", "far")


@dataclass
class Points:
    """Surface points, ``[N]`` each (``xyz``: ``[N x 3]``), grid frame."""

    xyz: torch.Tensor  # float32 metres
    labels: torch.Tensor  # long class ids
    weights: torch.Tensor  # float32 vote weight (confidence x point_stride^2)
    range_w: torch.Tensor  # float32 range weight
    near: torch.Tensor  # bool, from a view within moving_window frames of the keyframe
    key: torch.Tensor  # bool, from a view of the keyframe


@dataclass
class Rays:
    """Free-space rays, ``[M]`` each (``origins``, ``ends``: ``[M x 3]``), grid frame."""

    origins: torch.Tensor  # float32 camera centres, metres
    ends: torch.Tensor  # float32 surface points (sky rays: sky_range_m from the camera)
    sky: torch.Tensor  # bool, sky ray
    cos: torch.Tensor  # float32 |cos| between ray and surface normal at the end (1: sky, no normal)
    range_w: torch.Tensor  # float32 range weight of the ray's point (1: sky)


@dataclass
class Band:
    """TSDF rays, ``[B]`` each (``origins``, ``ends``: ``[B x 3]``), grid frame."""

    origins: torch.Tensor  # float32 camera centres, metres
    ends: torch.Tensor  # float32 measured surface points
    labels: torch.Tensor  # long class ids
    weights: torch.Tensor  # float32 confidence x range weight
    cos: torch.Tensor  # float32 |cos| between ray and surface normal
    near: torch.Tensor  # bool, from a view within moving_window frames of the keyframe


@dataclass
class MaskRays:
    """mask_camera rays of the keyframe's views, ``[L x 3]`` each, grid frame."""

    origins: torch.Tensor  # float32 camera centres, metres
    ends: torch.Tensor  # float32 surface points (sky: sky_range_m)


@dataclass
class Observations:
    """Everything a keyframe fuses, in the grid's frame (None / absent: nothing of that kind).

    Attributes:
        points: the window's surface points.
        rays: free-space rays by group (:data:`RAY_GROUPS`; only groups with views, in that order).
        band: TSDF rays (None without ``opts.tsdf`` or without any).
        mask: the keyframe's mask_camera rays (None: no view of the keyframe).
    """

    points: Points | None
    rays: dict[str, Rays]
    band: Band | None
    mask: MaskRays | None


_D = TypeVar("_D")


def _cat(parts: list[_D]) -> _D | None:
    """Concatenate dataclasses of tensors field by field (None for an empty list)."""
    if not parts:
        return None
    cls = type(parts[0])
    return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def gather(
    views: Iterable[View],
    key_frame: int,
    T_grid_from_world: np.ndarray,
    opts: VoxelizeOptions,
    device: torch.device | str = "cpu",
) -> Observations:
    """The observations of ``views`` in the grid's frame.

    Args:
        views: the window's views; ``|view.frame - key_frame|`` decides their group (key / near / far).
        key_frame: position of the keyframe in the scene.
        T_grid_from_world: <np.float64: 4, 4> the world in the grid's frame at the keyframe.
        opts: resolved options (``moving_window``, ``tsdf``).
    Raises:
        ValueError: a view of the keyframe was prepared without mask rays.
    """
    dev = torch.device(device)
    points: list[Points] = []
    rays: dict[str, list[Rays]] = {g: [] for g in RAY_GROUPS}
    band: list[Band] = []
    mask: list[MaskRays] = []
    for v in views:
        dt = abs(v.frame - key_frame)
        near = dt <= opts.moving_window
        T = torch.as_tensor(T_grid_from_world @ v.T_world_from_cam, dtype=torch.float32, device=dev)
        R, t = T[:3, :3], T[:3, 3]
        points.append(_view_points(v, R, t, near, dt == 0, dev))
        group = "key" if dt == 0 else ("near" if near else "far")
        ends = v.ray_ends_cam @ R.T + t
        rays[group].append(Rays(t.expand_as(ends), ends, v.ray_sky, v.ray_cos, v.ray_range_w))
        if opts.tsdf and v.band_ends_cam is not None and v.band_ends_cam.shape[0]:
            be = v.band_ends_cam @ R.T + t
            nb = be.shape[0]
            near_b = torch.full((nb,), near, dtype=torch.bool, device=dev)
            band.append(Band(t.expand_as(be), be, v.band_labels, v.band_weights, v.band_cos, near_b))
        if dt == 0:
            if v.mask_ends_cam is None:
                raise ValueError(f"view {v.camera}/{v.frame} of the keyframe was prepared without mask rays")
            me = v.mask_ends_cam @ R.T + t
            mask.append(MaskRays(t.expand_as(me), me))
    return Observations(
        points=_cat(points),
        rays={g: _cat(parts) for g, parts in rays.items() if parts},
        band=_cat(band),
        mask=_cat(mask),
    )


def _view_points(v: View, R: torch.Tensor, t: torch.Tensor, near: bool, key: bool, dev) -> Points:
    """A view's surface points moved by (R, t) (camera -> grid), tagged near / key (masks on ``dev``)."""
    n = v.points_cam.shape[0]
    return Points(
        xyz=v.points_cam @ R.T + t,
        labels=v.labels,
        weights=v.weights,
        range_w=v.point_range_w,
        near=torch.full((n,), near, dtype=torch.bool, device=dev),
        key=torch.full((n,), key, dtype=torch.bool, device=dev),
    )


__all__ = ["RAY_GROUPS", "Band", "MaskRays", "Observations", "Points", "Rays", "gather"]
