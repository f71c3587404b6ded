"""Overlap between the views of a camera rig: which cameras see the same points at the same instant.

Pure torch, no I/O (OpenCV camera frames, ``T_a_from_b`` transforms, pixel centres at integer coordinates).
"""

from __future__ import annotations

import torch

from occlabel.geometry.warp import project_inverse_depth, relative_pose


def view_overlap(
    K_tgt: torch.Tensor,
    K_src: torch.Tensor,
    T_ref_from_tgt: torch.Tensor,
    T_ref_from_src: torch.Tensor,
    tgt_size: tuple[int, int],
    src_size: tuple[int, int],
    depths_m: tuple[float, ...] = (5.0, 20.0, float("inf")),
) -> tuple[torch.Tensor, float]:
    """Fraction of a target camera's pixels that a source camera sees, for points at given depths.

    Args:
        K_tgt, K_src: ``[3 x 3]`` intrinsics of the two images.
        T_ref_from_tgt, T_ref_from_src: ``[4 x 4]`` poses of both cameras in one common frame (the ego frame
            of a rig, or the world at one instant).
        tgt_size, src_size: (height, width) of the images.
        depths_m: target z-depths at which every target pixel is placed (``inf``: the point at infinity).
    Returns:
        fractions ``[len(depths_m)]`` float64 of target pixels that land inside the source image in front of
        it, and the baseline (distance between the camera centres, metres).
    """
    dtype = torch.float64
    h, w = tgt_size
    T = relative_pose(T_ref_from_tgt.to(dtype)[None], T_ref_from_src.to(dtype)[None])  # 1 4 4 src<-tgt
    rho = torch.tensor([0.0 if d == float("inf") else 1.0 / d for d in depths_m], dtype=dtype)
    inv = rho[:, None, None].expand(len(depths_m), h, w)
    proj = project_inverse_depth(
        inv,
        K_tgt.to(dtype)[None],
        K_src.to(dtype)[None],
        T,
        src_size,
        min_inv_depth=-1.0,  # admit the points at infinity
    )
    frac = proj.valid.double().mean((-2, -1))
    baseline = float(torch.linalg.norm(T_ref_from_tgt[:3, 3].double() - T_ref_from_src[:3, 3].double()))
    return frac, baseline


__all__ = ["view_overlap"]
