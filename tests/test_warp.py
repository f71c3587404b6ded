"""Known-answer and gradient tests of occlabel.geometry.warp (inverse warping through target depth)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occlabel.conventions import scale_intrinsics as scale_intrinsics_np
from occlabel.geometry.warp import (
    project_depth,
    project_inverse_depth,
    relative_pose,
    sample,
    scale_intrinsics,
    warp,
    warp_coefficients,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _K(W: int, H: int, f: float = 50.0, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]], dtype=dtype)


def _image(B: int, H: int, W: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Smooth random texture ``[B x 3 x H x W]`` (sinusoids, so bilinear sampling is accurate)."""
    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype), indexing="ij")
    out = torch.zeros(B, 3, H, W, dtype=dtype)
    for _ in range(6):
        fu, fv, ph = (
            torch.rand(3, generator=g, dtype=dtype) * torch.tensor([0.4, 0.4, 6.28], dtype=dtype)
        ).tolist()
        col = torch.rand(B, 3, 1, 1, generator=g, dtype=dtype)
        out += col * torch.sin(fu * u + fv * v + ph)
    return 0.5 + 0.1 * out


def _translation(tx: float = 0.0, ty: float = 0.0, tz: float = 0.0, dtype=torch.float64) -> torch.Tensor:
    T = torch.eye(4, dtype=dtype)
    T[:3, 3] = torch.tensor([tx, ty, tz], dtype=dtype)
    return T


@pytest.mark.parametrize("device", DEVICES)
def test_identity_pose_is_identity_warp(device):
    B, H, W = 2, 24, 32
    K = _K(W, H).to(device)[None].expand(B, -1, -1)
    img = _image(B, H, W).to(device)
    depth = torch.rand(B, H, W, dtype=torch.float64, device=device) * 10 + 1
    T = torch.eye(4, dtype=torch.float64, device=device)[None].expand(B, -1, -1)
    warped, valid = warp(img, depth, K, K, T)
    assert valid.all()
    torch.testing.assert_close(warped, img, atol=1e-9, rtol=0)
    proj = project_depth(depth, K, K, T)
    v, u = torch.meshgrid(torch.arange(H, device=device), torch.arange(W, device=device), indexing="ij")
    torch.testing.assert_close(proj.uv, torch.stack([u, v], -1).double().expand(B, -1, -1, -1))
    torch.testing.assert_close(proj.z_src, depth)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shift_px", [3, -2])
def test_plane_translation_gives_known_shift(device, shift_px):
    """A fronto-parallel plane at depth z, camera translated by tx: pixels move by fx * tx / z."""
    H, W, f, z = 20, 30, 40.0, 8.0
    tx = shift_px * z / f  # p_src = p_tgt + t, so u_src = u + fx * tx / z
    K = _K(W, H, f)[None].to(device)
    img = _image(1, H, W, seed=1).to(device)
    depth = torch.full((1, H, W), z, dtype=torch.float64, device=device)
    T = _translation(tx)[None].to(device)
    proj = project_depth(depth, K, K, T)
    du = proj.uv[..., 0] - torch.arange(W, device=device, dtype=torch.float64)
    torch.testing.assert_close(du, torch.full_like(du, float(shift_px)))
    torch.testing.assert_close(
        proj.uv[..., 1], torch.arange(H, device=device, dtype=torch.float64)[:, None].expand(1, H, W)
    )
    # validity: exactly the columns whose shifted position leaves the source are invalid
    cols = torch.arange(W, device=device)
    inside = (cols + shift_px >= 0) & (cols + shift_px <= W - 1)
    assert torch.equal(proj.valid[0], inside[None].expand(H, W))
    warped, valid = warp(img, depth, K, K, T)
    if shift_px > 0:
        torch.testing.assert_close(warped[..., : W - shift_px], img[..., shift_px:], atol=1e-9, rtol=0)
    else:
        torch.testing.assert_close(warped[..., -shift_px:], img[..., : W + shift_px], atol=1e-9, rtol=0)


def test_validity_behind_camera_and_depth_range():
    H, W = 10, 12
    K = _K(W, H)[None]
    depth = torch.full((1, H, W), 5.0, dtype=torch.float64)
    # the source camera 6 m ahead: the plane at 5 m is behind it
    proj = project_depth(depth, K, K, _translation(tz=-6.0)[None])
    assert not proj.valid.any()
    # in front but beyond max_depth -> invalid; non-positive / NaN depth -> invalid
    assert not project_depth(depth, K, K, torch.eye(4, dtype=torch.float64)[None], max_depth=4.0).valid.any()
    bad = depth.clone()
    bad[0, 0, 0], bad[0, 0, 1], bad[0, 0, 2] = 0.0, -1.0, float("nan")
    v = project_depth(bad, K, K, torch.eye(4, dtype=torch.float64)[None]).valid
    assert not v[0, 0, :3].any() and v[0, 0, 3:].all() and v[0, 1:].all()
    # margin shrinks the source image
    v = project_depth(depth, K, K, torch.eye(4, dtype=torch.float64)[None], margin=2).valid[0]
    assert not v[:2].any() and not v[:, -2:].any() and v[2:-2, 2:-2].all()


def test_inverse_depth_matches_depth_and_infinity_is_rotation_only():
    H, W = 12, 16
    g = torch.Generator().manual_seed(0)
    K = _K(W, H)[None]
    a = 0.1
    R = torch.tensor(
        [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64
    )
    T = _translation(0.3, -0.1, 0.5)
    T[:3, :3] = R
    depth = torch.rand(1, H, W, generator=g, dtype=torch.float64) * 20 + 2
    p1 = project_depth(depth, K, K, T[None])
    p2 = project_inverse_depth(1 / depth, K, K, T[None])
    torch.testing.assert_close(p1.uv, p2.uv)
    torch.testing.assert_close(p1.z_src, p2.z_src)
    # rho -> 0: the image of the point at infinity, the homography K R K^-1
    p_inf = project_inverse_depth(
        torch.full((1, H, W), 1e-12, dtype=torch.float64), K, K, T[None], min_inv_depth=-1
    )
    mp, _ = warp_coefficients(K, K, T[None], H, W)
    torch.testing.assert_close(p_inf.uv, mp[..., :2] / mp[..., 2:], atol=1e-6, rtol=0)
    assert p_inf.valid.any() and not p_inf.valid.all()  # the rotation moves part of the image out of view


def test_hypothesis_broadcasting_and_sampling_match_loops():
    """Hypotheses ``[B x N x H x W]`` sharing one pose per batch element equal a loop over them."""
    B, N, H, W = 2, 3, 9, 11
    K = _K(W, H, 20.0)[None].expand(B, -1, -1)
    T = torch.stack([_translation(0.2, 0.0, 0.1), _translation(-0.1, 0.05, 0.3)])
    rho = torch.rand(B, N, H, W, dtype=torch.float64) * 0.3 + 0.05
    img = _image(B, H, W, seed=3)
    coef = warp_coefficients(K, K, T, H, W)
    proj = project_inverse_depth(
        rho, None, None, None, (H, W), coefficients=(coef[0][:, None], coef[1][:, None])
    )
    out = sample(img, proj.grid)  # B C N H W
    for n in range(N):
        p = project_inverse_depth(rho[:, n], K, K, T)
        torch.testing.assert_close(proj.uv[:, n], p.uv)
        assert torch.equal(proj.valid[:, n], p.valid)
        torch.testing.assert_close(out[:, :, n], sample(img, p.grid))


def test_scale_intrinsics_and_relative_pose():
    K = np.array([[100.0, 0, 63.5], [0, 90.0, 47.5], [0, 0, 1]])
    got = scale_intrinsics(torch.from_numpy(K), 0.5, 0.25).numpy()
    np.testing.assert_allclose(got, scale_intrinsics_np(K, 0.5, 0.25))
    T_wa = _translation(1.0, 2.0, 3.0)
    T_wb = _translation(1.5, 2.0, 2.0)
    T_ba = relative_pose(T_wa, T_wb)
    p_a = torch.tensor([0.1, 0.2, 0.3, 1.0], dtype=torch.float64)
    torch.testing.assert_close(T_wb @ (T_ba @ p_a), T_wa @ p_a)


def test_warp_gradcheck_wrt_depth_and_pose():
    H, W = 6, 7
    K = _K(W, H, 8.0)[None]
    img = _image(1, H, W, seed=2)
    depth = (torch.rand(1, H, W, dtype=torch.float64) + 4).requires_grad_(True)
    t = torch.tensor([0.15, -0.05, 0.1], dtype=torch.float64, requires_grad=True)

    def f(depth, t):
        T = torch.eye(4, dtype=torch.float64).clone()
        T = torch.cat([torch.cat([T[:3, :3], t[:, None]], 1), T[3:]], 0)[None]
        warped, valid = warp(img, depth, K, K, T)
        return (warped * valid[:, None]).sum()

    assert torch.autograd.gradcheck(f, (depth, t), eps=1e-6, atol=1e-5)
