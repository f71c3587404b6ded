"""Ground-plane depth and robust line fits: the geometry of calibrate-depth's ground cue.

Pure torch, no I/O. Frames follow occlabel.conventions: OpenCV camera (x right, y down, z forward), ego
x forward / y left / z up, transforms ``T_a_from_b``.

The ground is the plane ``z_ego = g`` of the ego frame (``g`` = 0 when the ego origin lies on the road, as
in nuScenes and the synthetic world). A pixel p of a camera with intrinsics K and pose ``T_ego_from_cam =
[R | t]`` has the ray ``x(z) = z K^-1 p`` (z = depth along the optical axis); its height in the ego frame is
``t_z + z (R K^-1 p)_z``, so the ray meets the plane at the z-depth

    z = (g - t_z) / (R K^-1 p)_z,

defined when the ray points toward the plane (below the horizon for a camera above the ground). The
depth is exact for a flat ground and an exact pose; its error grows with range: a tilt dθ of the ground
(slope, pitch of the car body) changes it by about ``z^2 dθ / (t_z - g)`` metres, a height error dh by
``z dh / (t_z - g)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from occlabel.geometry.camera import pixel_grid


def plane_depth(
    K: torch.Tensor,
    T_ego_from_cam: torch.Tensor,
    height: int,
    width: int,
    plane_z: float | torch.Tensor = 0.0,
    max_depth_m: float = float("inf"),
    min_grazing: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """z-depth at which every pixel's ray meets the horizontal plane ``z_ego = plane_z``.

    Args:
        K: ``[B x 3 x 3]`` intrinsics of images ``height x width``.
        T_ego_from_cam: ``[B x 4 x 4]`` camera (OpenCV) to ego (z up) rigid transforms.
        plane_z: height of the plane in the ego frame, metres: a float, ``[B]``, or ``[B x H x W]`` per pixel
            (e.g. a raised sidewalk; NaN = no plane at that pixel).
        max_depth_m: intersections farther than this (z-depth) are invalid.
        min_grazing: rays whose vertical component per unit z-depth, ``|(R K^-1 p)_z|``, is below this are
            invalid (nearly parallel to the plane).
    Returns:
        depth ``[B x H x W]`` z-depth in metres (NaN where invalid) and valid ``[B x H x W]`` bool: the ray
        reaches the plane in front of the camera (camera above the plane and ray pointing down, or the
        mirror case) within ``max_depth_m``.
    """
    dtype = torch.promote_types(K.dtype, T_ego_from_cam.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    K, T = K.to(dtype), T_ego_from_cam.to(dtype)
    B = K.shape[0]
    pix = pixel_grid(height, width, K.device, dtype)  # H W 3
    rays = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(K), pix)  # camera frame, z = 1
    vert = torch.einsum("bj,bhwj->bhw", T[:, 2, :3], rays)  # ego z-component of the ray per unit depth
    pz = torch.as_tensor(plane_z, dtype=dtype, device=K.device)
    if pz.dim() == 1:
        pz = pz[:, None, None]
    drop = pz - T[:, 2, 3].reshape(B, 1, 1)  # plane height relative to the camera centre
    ok_ray = vert.abs() >= min_grazing
    z = drop / torch.where(ok_ray, vert, torch.ones_like(vert))
    valid = ok_ray & torch.isfinite(z) & (z > 0) & (z <= max_depth_m)
    return torch.where(valid, z, torch.full_like(z, float("nan"))), valid


class RobustFit(NamedTuple):
    """Result of :func:`robust_linear_fit` for a batch of problems.

    Attributes:
        coef: ``[B x P]`` coefficients (NaN where a problem had fewer than P + 1 samples).
        weight: ``[B x N]`` final weights (base weight x Tukey weight; 0 for rejected samples).
        residual: ``[B x N]`` residuals ``A coef - y`` (NaN where the base weight is 0).
        scale: ``[B]`` robust residual scale (1.4826 x median absolute residual), >= ``min_scale``.
    """

    coef: torch.Tensor
    weight: torch.Tensor
    residual: torch.Tensor
    scale: torch.Tensor


def _weighted_lstsq(A: torch.Tensor, y: torch.Tensor, w: torch.Tensor, ridge: float) -> torch.Tensor:
    """``[B x P]`` argmin sum w (A c - y)^2 via the normal equations (a relative ridge keeps them regular)."""
    Aw = A * w[..., None]
    N = Aw.transpose(-1, -2) @ A  # B P P
    rhs = (Aw * y[..., None]).sum(-2)  # B P
    diag = N.diagonal(dim1=-2, dim2=-1)
    reg = ridge * diag.mean(-1, keepdim=True).clamp(min=1e-30)
    N = N + torch.diag_embed(reg.expand_as(diag))
    return torch.linalg.solve(N, rhs[..., None])[..., 0]


def _masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` median of ``x`` ``[B x N]`` over ``mask`` (NaN where the mask is empty)."""
    return torch.nanmedian(torch.where(mask, x, torch.full_like(x, float("nan"))), dim=-1).values


def _lmeds_start(
    A: torch.Tensor, y: torch.Tensor, present: torch.Tensor, samples: int, score_rows: int, seed: int
) -> torch.Tensor:
    """``[B x P]`` least-median-of-squares start: of ``samples`` random minimal subsets (P rows) per problem,
    the exact solution whose median absolute residual over ``score_rows`` random rows is smallest."""
    B, N, P = A.shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    prob = present.double().cpu() + (~present.any(-1, keepdim=True)).double().cpu()  # empty rows: any
    pick = torch.multinomial(prob, samples * P, replacement=True, generator=g).to(A.device)  # B (K P)
    rows = torch.arange(B, device=A.device)[:, None]
    As = A[rows, pick].reshape(B, samples, P, P)
    ys = y[rows, pick].reshape(B, samples, P)
    sol, info = torch.linalg.solve_ex(As, ys[..., None])
    coef = sol[..., 0]  # B K P
    score_idx = torch.multinomial(prob, min(score_rows, N), replacement=True, generator=g).to(A.device)
    Ar, yr = A[rows, score_idx], y[rows, score_idx]  # B M P, B M
    res = (torch.einsum("bmp,bkp->bkm", Ar, coef) - yr[:, None]).abs()
    med = res.median(-1).values
    med = torch.where((info == 0) & torch.isfinite(med), med, torch.full_like(med, float("inf")))
    return coef[rows[:, 0], med.argmin(-1)]


def robust_linear_fit(
    A: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    tukey_iters: int = 8,
    tukey_c: float = 4.685,
    samples: int = 256,
    score_rows: int = 512,
    min_scale: float = 1e-3,
    ridge: float = 1e-9,
    seed: int = 0,
) -> RobustFit:
    """Batched robust linear regression ``y ~ A coef`` (least median of squares, then Tukey IRLS).

    The start is a least-median-of-squares estimate from random minimal subsets (robust to up to half the
    samples being outliers, high-leverage ones included: an L1 start is not); then iteratively reweighted
    least squares with Tukey's biweight, the scale re-estimated each round as 1.4826 x the median absolute
    residual, which gives samples beyond ``tukey_c`` scales zero weight. Deterministic (``seed``).

    Args:
        A: ``[B x N x P]`` design matrices.
        y: ``[B x N]`` observations.
        weight: ``[B x N]`` base weights >= 0 (0: sample absent, e.g. padding).
        tukey_iters: IRLS rounds.
        tukey_c: Tukey's constant, in robust scales (4.685: 95 % efficiency under Gaussian noise).
        samples, score_rows: minimal subsets tried, and rows their median residual is taken over.
        min_scale: floor of the residual scale (in the units of y), so that exact data do not divide by 0.
        ridge: relative Tikhonov term of the normal equations.
    Returns:
        :class:`RobustFit`. Computed in float64.
    """
    A64, y64, w0 = A.double(), y.double(), weight.double().clamp(min=0)
    P = A64.shape[-1]
    present = w0 > 0
    enough = present.sum(-1) > P
    w0 = torch.where(enough[:, None], w0, torch.zeros_like(w0))
    coef = _lmeds_start(A64, y64, present, samples, score_rows, seed)
    coef = torch.where(torch.isfinite(coef), coef, torch.zeros_like(coef))
    scale = torch.ones(A64.shape[0], dtype=torch.float64, device=A64.device)
    w = w0
    for it in range(max(1, tukey_iters) + 1):
        r = (A64 @ coef[..., None])[..., 0] - y64
        scale = (1.4826 * _masked_median(r.abs(), present)).nan_to_num(1.0).clamp(min=min_scale)
        u = r / (tukey_c * scale[:, None])
        w = w0 * torch.where(u.abs() < 1, (1 - u * u) ** 2, torch.zeros_like(u))
        if it == max(1, tukey_iters):  # residuals and weights of the final coefficients
            break
        coef = _weighted_lstsq(A64, y64, w, ridge)
    coef = torch.where(enough[:, None], coef, torch.full_like(coef, float("nan")))
    r = torch.where(present, r, torch.full_like(r, float("nan")))
    return RobustFit(coef, w, r, scale)


__all__ = ["RobustFit", "plane_depth", "robust_linear_fit"]
