"""Known-answer tests of the camera and voxel geometry."""

import numpy as np
import pytest
import torch

from occlabel.conventions import GRIDS, VoxelGrid, invert_rigid, is_rigid, scale_intrinsics
from occlabel.geometry.camera import invert_rigid as invert_rigid_t
from occlabel.geometry.camera import normalize_uv, pixel_grid, project, transform_points, unproject
from occlabel.geometry.voxel import clip_rays_to_box, flat_index, points_to_voxels, ray_free_samples

K = torch.tensor([[[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_round_trip(dtype):
    depth = torch.rand(1, 48, 64, dtype=dtype) * 50 + 1
    pts = unproject(depth, K.to(dtype))
    uv, z = project(pts, K.to(dtype))
    grid = pixel_grid(48, 64, dtype=dtype)[..., :2]
    assert torch.allclose(z, depth, rtol=1e-5)
    assert torch.allclose(uv[0], grid, atol=1e-3)


def test_principal_point_pixel_is_on_axis():
    depth = torch.full((1, 48, 64), 7.0)
    pts = unproject(depth, torch.tensor([[[100.0, 0, 10.0], [0, 100.0, 20.0], [0, 0, 1]]]))
    assert torch.allclose(pts[0, 20, 10], torch.tensor([0.0, 0.0, 7.0]))


def test_known_relative_pose_gives_known_shift():
    """A fronto-parallel plane at z = 10 m seen after the camera moves 0.5 m right shifts by -fx*0.5/10 px."""
    depth = torch.full((1, 48, 64), 10.0)
    pts = unproject(depth, K)
    T_cam1_from_cam0 = torch.eye(4)[None]
    T_cam1_from_cam0[0, 0, 3] = -0.5  # camera 1 centre is at x = +0.5 in camera 0
    uv1, z1 = project(transform_points(T_cam1_from_cam0, pts), K)
    shift = uv1[0] - pixel_grid(48, 64)[..., :2]
    assert torch.allclose(shift[..., 0], torch.full((48, 64), -5.0), atol=1e-4)
    assert torch.allclose(shift[..., 1], torch.zeros(48, 64), atol=1e-4)
    # forward motion: points move away from the principal point, by factor z0 / z1
    T_fwd = torch.eye(4)[None]
    T_fwd[0, 2, 3] = -2.0
    uv2, z2 = project(transform_points(T_fwd, pts), K)
    assert torch.allclose(z2, torch.full_like(z2, 8.0))
    c = torch.tensor([31.5, 23.5])
    assert torch.allclose(uv2[0] - c, (pixel_grid(48, 64)[..., :2] - c) * 10 / 8, atol=1e-3)


def test_rigid_inverse_matches_numpy():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = q, rng.normal(size=3)
    assert is_rigid(T) and not is_rigid(T * 1.1)
    assert np.allclose(invert_rigid(T) @ T, np.eye(4))
    assert np.allclose(invert_rigid_t(torch.from_numpy(T)).numpy(), np.linalg.inv(T))


def test_scale_intrinsics_keeps_pixel_centres():
    Kn = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])  # centre of a 64 x 48 image
    K2 = scale_intrinsics(Kn, 0.5, 0.5)
    assert np.allclose(K2, [[50, 0, 15.5], [0, 50, 11.5], [0, 0, 1]])  # centre of a 32 x 24 image


def test_normalize_uv_corners():
    uv = torch.tensor([[0.0, 0.0], [63.0, 47.0]])
    assert torch.allclose(normalize_uv(uv, 48, 64), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_grid_shapes_and_centres():
    assert GRIDS["occ3d"].shape == (200, 200, 16)
    assert GRIDS["semantickitti"].shape == (256, 256, 32)
    c = GRIDS["occ3d"].centres()
    assert np.allclose(c[0, 0, 0], [-39.8, -39.8, -0.8]) and np.allclose(c[-1, -1, -1], [39.8, 39.8, 5.2])


def test_points_to_voxels_and_flat_index():
    g = VoxelGrid("t", (0, 0, 0), (4, 3, 2), 1.0)
    pts = torch.tensor([[0.5, 0.5, 0.5], [3.99, 2.5, 1.5], [4.0, 0, 0], [-0.01, 0, 0]])
    idx, valid = points_to_voxels(pts, g)
    assert valid.tolist() == [True, True, False, False]
    assert idx[1].tolist() == [3, 2, 1]
    assert flat_index(idx[:2], g.shape).tolist() == [0, (3 * 3 + 2) * 2 + 1]


def test_ray_clip_and_free_samples():
    g = VoxelGrid("t", (0, -0.5, -0.5), (10, 0.5, 0.5), 1.0)
    o = torch.tensor([[-5.0, 0, 0]])
    d = torch.tensor([[1.0, 0, 0]])
    tn, tf = clip_rays_to_box(o, d, torch.tensor(g.lower), torch.tensor(g.upper))
    assert torch.allclose(tn, torch.tensor([5.0])) and torch.allclose(tf, torch.tensor([15.0]))
    # a ray ending at x = 6.5 (inside voxel 6) frees voxels 0..5 but not 6
    free = torch.cat(list(ray_free_samples(o, torch.tensor([[6.5, 0, 0]]), g)))
    assert sorted(set(free.tolist())) == [0, 1, 2, 3, 4, 5]
    # chunking does not change the result
    free_small = torch.cat(
        list(ray_free_samples(o.repeat(5, 1), torch.tensor([[6.5, 0, 0]]).repeat(5, 1), g, chunk=7))
    )
    assert torch.equal(torch.bincount(free_small, minlength=10), 5 * torch.bincount(free, minlength=10))


def test_resize_nearest_matches_torch_nearest_exact():
    import torch.nn.functional as F

    from occlabel.utils import resize_nearest

    a = np.random.default_rng(1).random((37, 53)).astype(np.float32)
    for h, w in [(12, 20), (80, 100), (37, 26)]:
        t = F.interpolate(torch.from_numpy(a)[None, None], size=(h, w), mode="nearest-exact")[0, 0].numpy()
        assert np.array_equal(t, resize_nearest(a, h, w))
    assert resize_nearest(a, 37, 53) is a


def test_scale_intrinsics_numpy_and_torch_twins_agree():
    from occlabel.geometry.warp import scale_intrinsics as scale_intrinsics_t

    K = np.array([[500.0, 3.0, 320.0], [0, 480.0, 240.0], [0, 0, 1]])  # with skew
    out = scale_intrinsics(K, 0.37, 0.5)
    assert np.allclose(out, scale_intrinsics_t(torch.from_numpy(K), 0.37, 0.5).numpy())
    assert np.isclose(out[0, 1], 3.0 * 0.37)
