"""Differentiable inverse warping of a source image into a target view through the target's depth.

Pure torch, no I/O. Conventions are occlabel.conventions': OpenCV camera frames, pixel centres at integer
coordinates, transforms ``T_a_from_b``. A target pixel p = (u, v, 1) with inverse depth rho = 1 / z goes to

    q = K_src (R z K_tgt^-1 p + t) / z = M p + rho e,   M = K_src R K_tgt^-1,  e = K_src t,

with (R, t) = T_src_from_tgt, and lands at pixel q[:2] / q[2] of the source, at source depth
z_src = q[2] / rho. Written in inverse depth the map is affine in rho, which makes it cheap to evaluate for
many depth hypotheses (``M p`` is shared), well defined for points at infinity (rho = 0), and lets a
calibration ``rho = a * d + b`` of a relative disparity d be differentiated without dividing by it.

Shapes: leading batch dimensions ``[*]`` broadcast between the inverse depth and the matrices, so one pose
per ``[B]`` can serve ``[B x N]`` depth hypotheses (see :func:`project_inverse_depth`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from occlabel.geometry.camera import invert_rigid, normalize_uv, pixel_grid


class Projection(NamedTuple):
    """Where the target pixels land in the source image.

    Attributes:
        uv: ``[* x H x W x 2]`` source pixel coordinates (u along columns, v along rows); meaningful where
            the point is in front of the source camera (elsewhere the coordinates of q / 1).
        grid: ``[* x H x W x 2]`` the valid ``uv`` in ``grid_sample(align_corners=True)`` units ([-1, 1]);
            invalid pixels point far outside the image.
        z_src: ``[* x H x W]`` depth of the point in the source camera frame (metres; 0 where undefined).
        valid: ``[* x H x W]`` bool: finite, positive target depth (inside the plausible range), in front of
            the source camera, and inside the source image (pixel centres 0..W-1, 0..H-1, shrunk by
            ``margin``).
    """

    uv: torch.Tensor
    grid: torch.Tensor
    z_src: torch.Tensor
    valid: torch.Tensor


def relative_pose(T_world_from_tgt: torch.Tensor, T_world_from_src: torch.Tensor) -> torch.Tensor:
    """``T_src_from_tgt = T_world_from_src^-1 @ T_world_from_tgt``, ``[* x 4 x 4]`` (rigid transforms)."""
    return invert_rigid(T_world_from_src) @ T_world_from_tgt


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics ``[* x 3 x 3]`` of an image resized by (sx, sy) = (new_w / w, new_h / h).

    Pixel centres at integer coordinates (u' = sx (u + 0.5) - 0.5), as occlabel.conventions.scale_intrinsics.
    """
    K = K.clone()
    K[..., 0, :] = K[..., 0, :] * sx
    K[..., 1, :] = K[..., 1, :] * sy
    K[..., 0, 2] = K[..., 0, 2] + 0.5 * sx - 0.5
    K[..., 1, 2] = K[..., 1, 2] + 0.5 * sy - 0.5
    return K


def warp_coefficients(
    K_tgt: torch.Tensor, K_src: torch.Tensor, T_src_from_tgt: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The depth-independent parts of the warp, ``(M p, e)``.

    Args:
        K_tgt: ``[* x 3 x 3]`` target intrinsics (pixels of the target image, size ``height x width``).
        K_src: ``[* x 3 x 3]`` source intrinsics.
        T_src_from_tgt: ``[* x 4 x 4]`` target camera frame to source camera frame.
    Returns:
        mp ``[* x H x W x 3]`` = K_src R K_tgt^-1 p (the image of the pixel's point at infinity), and
        e ``[* x 3]`` = K_src t.
    """
    dtype = torch.promote_types(K_tgt.dtype, T_src_from_tgt.dtype)
    K_tgt, K_src, T = K_tgt.to(dtype), K_src.to(dtype), T_src_from_tgt.to(dtype)
    M = K_src @ T[..., :3, :3] @ torch.linalg.inv(K_tgt)
    e = (K_src @ T[..., :3, 3:4])[..., 0]
    pix = pixel_grid(height, width, M.device, dtype)  # H W 3
    mp = torch.einsum("...ij,hwj->...hwi", M, pix)
    return mp, e


def project_inverse_depth(
    inv_depth: torch.Tensor,
    K_tgt: torch.Tensor,
    K_src: torch.Tensor,
    T_src_from_tgt: torch.Tensor,
    src_size: tuple[int, int] | None = None,
    min_inv_depth: float = 0.0,
    max_inv_depth: float = float("inf"),
    margin: float = 0.0,
    coefficients: tuple[torch.Tensor, torch.Tensor] | None = None,
    eps: float = 1e-6,
) -> Projection:
    """Project every target pixel, at its inverse depth, into the source image.

    Args:
        inv_depth: ``[* x H x W]`` target inverse depth 1/z (1/metres); rho = 0 is a point at infinity.
        K_tgt, K_src: ``[* x 3 x 3]`` intrinsics (broadcast against ``inv_depth``'s leading dims).
        T_src_from_tgt: ``[* x 4 x 4]`` rigid transform from the target to the source camera frame.
        src_size: (height, width) of the source image (default: the target's H, W).
        min_inv_depth, max_inv_depth: plausible range of rho: points with rho outside
            (min_inv_depth, max_inv_depth] (e.g. beyond the maximum depth, behind the camera) are invalid;
            a negative ``min_inv_depth`` admits points at infinity (rho = 0).
        margin: pixels by which the source image is shrunk for the inside test.
        coefficients: precomputed :func:`warp_coefficients` (mp, e), e.g. shared by many hypotheses; mp
            must broadcast to ``[* x H x W x 3]`` and e to ``[* x 3]``.
    Returns:
        :class:`Projection`. Differentiable w.r.t. ``inv_depth`` and the matrices.
    """
    H, W = inv_depth.shape[-2:]
    Hs, Ws = src_size if src_size is not None else (H, W)
    if coefficients is None:
        coefficients = warp_coefficients(K_tgt, K_src, T_src_from_tgt, H, W)
    mp, e = coefficients
    rho = inv_depth.to(mp.dtype)
    q = mp + rho[..., None] * e[..., None, None, :]
    qz = q[..., 2]
    in_front = qz > eps
    uv = q[..., :2] / torch.where(in_front, qz, torch.ones_like(qz))[..., None]
    plausible = torch.isfinite(rho) & (rho > min_inv_depth) & (rho <= max_inv_depth)
    lo = margin - 1e-4  # tolerance for rounding on the border pixels' centres
    inside = (
        (uv[..., 0] >= lo) & (uv[..., 0] <= Ws - 1 - lo) & (uv[..., 1] >= lo) & (uv[..., 1] <= Hs - 1 - lo)
    )
    valid = in_front & plausible & inside & torch.isfinite(uv).all(-1)
    # the grid sends invalid pixels far outside, so that sampling them is finite and harmless
    far = torch.full_like(uv, -2.0 * max(Hs, Ws))
    grid = normalize_uv(torch.where(valid[..., None], uv, far), Hs, Ws)
    z_src = torch.where(
        valid & (rho > 0), qz / torch.where(rho > 0, rho, torch.ones_like(rho)), torch.zeros_like(qz)
    )
    return Projection(uv, grid, z_src, valid)


def project_depth(
    depth: torch.Tensor,
    K_tgt: torch.Tensor,
    K_src: torch.Tensor,
    T_src_from_tgt: torch.Tensor,
    src_size: tuple[int, int] | None = None,
    max_depth: float = float("inf"),
    margin: float = 0.0,
) -> Projection:
    """:func:`project_inverse_depth` for a metric z-depth ``[* x H x W]`` (metres).

    Pixels with z <= 0, z > ``max_depth`` or non-finite z are invalid.
    """
    depth_ok = torch.isfinite(depth) & (depth > 0)
    inv = torch.where(
        depth_ok, 1.0 / torch.where(depth_ok, depth, torch.ones_like(depth)), torch.full_like(depth, -1.0)
    )
    min_inv = 1.0 / max_depth if max_depth < float("inf") else 0.0
    return project_inverse_depth(
        inv, K_tgt, K_src, T_src_from_tgt, src_size, min_inv_depth=min_inv, margin=margin
    )


def sample(image: torch.Tensor, grid: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinearly sample ``image`` ``[B x C x Hs x Ws]`` at ``grid`` ``[B x N... x H x W x 2]``.

    Extra dimensions of the grid between B and (H, W) are hypotheses sharing one source image: they are
    folded into the rows, so the image is not copied. Returns ``[B x C x N... x H x W]``.
    """
    B, C = image.shape[:2]
    lead = grid.shape[1:-3]
    H, W = grid.shape[-3:-1]
    g = grid.reshape(B, -1, W, 2).to(image.dtype)
    out = F.grid_sample(image, g, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.reshape(B, C, *lead, H, W)


def warp(
    image_src: torch.Tensor,
    depth_tgt: torch.Tensor,
    K_tgt: torch.Tensor,
    K_src: torch.Tensor,
    T_src_from_tgt: torch.Tensor,
    max_depth: float = float("inf"),
    margin: float = 0.0,
    padding_mode: str = "border",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp a source image into the target view using the target depth.

    Args:
        image_src: ``[B x C x Hs x Ws]`` source image.
        depth_tgt: ``[B x H x W]`` metric z-depth of the target (metres).
        K_tgt, K_src: ``[B x 3 x 3]`` intrinsics of the target and source images.
        T_src_from_tgt: ``[B x 4 x 4]`` target camera frame to source camera frame.
    Returns:
        warped ``[B x C x H x W]`` (the source resampled on the target pixel grid) and valid ``[B x H x W]``
        bool (see :class:`Projection`).
    """
    proj = project_depth(depth_tgt, K_tgt, K_src, T_src_from_tgt, image_src.shape[-2:], max_depth, margin)
    return sample(image_src, proj.grid, padding_mode), proj.valid


__all__ = [
    "Projection",
    "relative_pose",
    "scale_intrinsics",
    "warp_coefficients",
    "project_inverse_depth",
    "project_depth",
    "sample",
    "warp",
]
