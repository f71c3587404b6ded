"""One keyframe's labels: the fusion steps composed (gather → vote → carve → TSDF → decide), and the
pose of the grid at a keyframe (:func:`grid_pose`). See occlabel.fusion for the method.

Pure torch / numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from occlabel.conventions import VoxelGrid, invert_rigid
from occlabel.errors import OccLabelError
from occlabel.fusion.carve import carve, mask_camera
from occlabel.fusion.decide import decide, label_arrays
from occlabel.fusion.gather import gather
from occlabel.fusion.options import VoxelizeOptions
from occlabel.fusion.tsdf import fuse_tsdf
from occlabel.fusion.views import View
from occlabel.fusion.vote import MovingClasses, vote
from occlabel.store.labels import OCC3D, ClassSet


def grid_pose(
    opts: VoxelizeOptions, T_world_from_ego: np.ndarray, T_world_from_cam: np.ndarray | None
) -> np.ndarray:
    """``T_ego_from_grid`` <np.float64: 4, 4> of one keyframe (identity for grids in the ego frame).

    Args:
        T_world_from_ego: the keyframe's ego pose; T_world_from_cam: the pose of ``opts.grid_camera`` at
            the keyframe (needed only when the grid is placed relative to a camera).
    """
    if opts.grid_camera is not None:
        if T_world_from_cam is None:
            raise OccLabelError(f"voxelize: grid camera {opts.grid_camera!r} has no image at this keyframe")
        return (
            invert_rigid(T_world_from_ego) @ T_world_from_cam @ np.asarray(opts.T_cam_from_grid, np.float64)
        )
    if opts.T_ego_from_grid is not None:
        return np.asarray(opts.T_ego_from_grid, np.float64)
    return np.eye(4)


def fuse_keyframe(
    views: Iterable[View],
    key_frame: int,
    T_world_from_egokey: np.ndarray,
    grid: VoxelGrid,
    opts: VoxelizeOptions,
    device: torch.device | str = "cpu",
    classes: ClassSet = OCC3D,
    T_ego_from_grid: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fuse prepared views into the voxel labels of one keyframe (see occlabel.fusion).

    Args:
        views: the window's views (their ``frame`` relative to ``key_frame`` decides static/moving use).
        key_frame: position of the keyframe in the scene.
        T_world_from_egokey: <float64: 4, 4> the keyframe's ego pose.
        opts: resolved options (:meth:`VoxelizeOptions.resolve`).
        classes: the class set (vote ids, free id, default moving classes).
        T_ego_from_grid: <float64: 4, 4> the grid's frame in that ego frame (default:
            ``opts.T_ego_from_grid`` or identity).
    Returns:
        numpy arrays over the grid (X, Y, Z): semantics uint8, mask_camera bool, confidence uint8,
        hits uint16, passes uint16; "T_ego_from_grid" <4, 4>; and "stats" (points, rays, samples counted).
    """
    dev = torch.device(device)
    moving = MovingClasses.create(classes.moving if opts.moving_classes is None else opts.moving_classes, dev)
    if T_ego_from_grid is None:
        T_ego_from_grid = grid_pose(opts, T_world_from_egokey, None) if opts.grid_camera is None else None
        if T_ego_from_grid is None:
            raise ValueError("fuse_keyframe: a camera-placed grid needs T_ego_from_grid")
    T_ego_from_grid = np.asarray(T_ego_from_grid, np.float64)
    T_grid_from_world = invert_rigid(T_ego_from_grid) @ invert_rigid(T_world_from_egokey)

    obs = gather(views, key_frame, T_grid_from_world, opts, dev)
    votes = vote(obs.points, grid, classes.size, moving, opts)
    passes = carve(obs.rays, grid, opts, dev)
    tsdf = fuse_tsdf(obs.band, grid, classes.size, moving, votes.consistent, opts) if opts.tsdf else None
    mask_seen, n_mask_rays, n_mask_samples = mask_camera(obs.mask, grid, opts, dev)
    seen = votes.seen | mask_seen
    verdict = decide(votes, passes, tsdf, seen, moving, grid.voxel_size, opts)
    tsdf_rays, tsdf_samples = (tsdf.n_rays, tsdf.n_samples) if tsdf is not None else (0, 0)
    return {
        **label_arrays(verdict, votes, passes, seen, classes.free, grid.shape, opts),
        "T_ego_from_grid": T_ego_from_grid,
        "stats": {
            "points": votes.n_points,
            "rays": passes.n_rays + tsdf_rays + n_mask_rays,
            "samples": passes.n_samples + tsdf_samples + n_mask_samples,
            "occupied": int(verdict.occupied.sum()),
            "free": int(verdict.free.sum()),
            "mask_camera": int(seen.sum()),
        },
    }


__all__ = ["fuse_keyframe", "grid_pose"]
