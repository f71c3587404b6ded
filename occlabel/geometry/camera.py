"""Pinhole camera geometry in torch (OpenCV camera frame, pixel centres at integer coordinates).

Shapes in docstrings: ``[B x H x W]`` etc.; all functions are differentiable and batch over a leading
dimension, on any device and floating dtype.
"""

from __future__ import annotations

import torch


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates ``[H x W x 3]`` = (u, v, 1), u along columns, v along rows."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u, v, torch.ones_like(u)], -1)


def unproject(depth_m: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Back-project every pixel to a 3D point in its camera frame.

    Args:
        depth_m: ``[B x H x W]`` metric z-depth.
        K: ``[B x 3 x 3]`` intrinsics.
    Returns:
        ``[B x H x W x 3]`` points (x, y, z) in the camera frame; z equals ``depth_m``.
    """
    B, H, W = depth_m.shape
    pix = pixel_grid(H, W, depth_m.device, depth_m.dtype)  # H W 3
    rays = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(K.to(depth_m.dtype)), pix)  # z = 1
    return rays * depth_m[..., None]


def project(
    points_cam: torch.Tensor, K: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-frame points to pixels.

    Args:
        points_cam: ``[B x ... x 3]`` points in the camera frame.
        K: ``[B x 3 x 3]`` intrinsics.
    Returns:
        uv ``[B x ... x 2]`` pixel coordinates, and z ``[B x ...]`` depth (points with z <= eps get
        uv computed with z clamped to eps; callers mask them with ``z > eps``).
    """
    B = points_cam.shape[0]
    flat = points_cam.reshape(B, -1, 3)
    p = torch.einsum("bij,bnj->bni", K.to(flat.dtype), flat)
    z = p[..., 2]
    uv = p[..., :2] / z.clamp(min=eps)[..., None]
    return uv.reshape(*points_cam.shape[:-1], 2), z.reshape(points_cam.shape[:-1])


def transform_points(T_a_from_b: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """Apply rigid transforms ``[B x 4 x 4]`` to points ``[B x ... x 3]``; returns ``[B x ... x 3]``."""
    B = points_b.shape[0]
    flat = points_b.reshape(B, -1, 3)
    T = T_a_from_b.to(flat.dtype)
    out = torch.einsum("bij,bnj->bni", T[:, :3, :3], flat) + T[:, None, :3, 3]
    return out.reshape(points_b.shape)


def invert_rigid(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms ``[... x 4 x 4]``."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1
    return out


def normalize_uv(uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates ``[... x 2]`` to the [-1, 1] range of ``grid_sample(align_corners=True)``."""
    scale = uv.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    return uv * scale - 1.0
