"""Camera views prepared for fusion: per image, its camera-frame surface points, free-space ray ends,
mask_camera ray ends and TSDF band points (:func:`prepare_view`), after dropping the flying pixels of an
estimated depth map (:func:`flying_pixels`) and estimating surface normals (:func:`surface_cos`).

Pure torch on the fusion device, no I/O. Camera frames are OpenCV's (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from occlabel.conventions import SKY, UNLABELED
from occlabel.fusion.options import VoxelizeOptions
from occlabel.store.labels import OCC3D, ClassSet


@dataclass
class View:
    """One camera image prepared for fusion (camera frame, on the fusion device).

    Attributes:
        frame: position of the image's frame in the scene.
        camera: camera name.
        T_world_from_cam: <np.float64: 4, 4> camera pose.
        points_cam: ``[N x 3]`` float32 surface points (point_stride pixels with a depth and a class).
        labels: ``[N]`` long class ids.
        weights: ``[N]`` float32 vote weight = semantic confidence × point_stride².
        point_range_w: ``[N]`` float32 range weight of each point (1 without range weighting).
        ray_ends_cam: ``[M x 3]`` float32 ray end points (ray_stride pixels with a depth, or sky).
        ray_sky: ``[M]`` bool, the ray is a sky ray (ends at sky_range_m).
        ray_cos: ``[M]`` float32 |cos| of the angle between the ray and the surface normal at its end
            (1 where no normal could be estimated, and for sky rays).
        ray_range_w: ``[M]`` float32 range weight of each ray (1 for sky rays).
        mask_ends_cam: ``[L x 3]`` float32 ends of the mask_camera rays (mask_stride pixels with a depth,
            or sky), or None when the view was prepared without them (only keyframe views need them).
        band_ends_cam: ``[B x 3]`` float32 surface points of the TSDF rays (tsdf_stride pixels with a depth
            and a class; empty when opts.tsdf is off).
        band_labels: ``[B]`` long class ids of those pixels.
        band_weights: ``[B]`` float32 TSDF weight = semantic confidence × range weight.
        band_cos: ``[B]`` float32 |cos| between ray and surface normal there (as ray_cos).
    """

    frame: int
    camera: str
    T_world_from_cam: np.ndarray
    points_cam: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    point_range_w: torch.Tensor
    ray_ends_cam: torch.Tensor
    ray_sky: torch.Tensor
    ray_cos: torch.Tensor
    ray_range_w: torch.Tensor
    mask_ends_cam: torch.Tensor | None = None
    band_ends_cam: torch.Tensor | None = None
    band_labels: torch.Tensor | None = None
    band_weights: torch.Tensor | None = None
    band_cos: torch.Tensor | None = None


def prepare_view(
    depth_m: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    confidence: np.ndarray | torch.Tensor,
    K: np.ndarray,
    opts: VoxelizeOptions,
    device: torch.device | str = "cpu",
    frame: int = 0,
    camera: str = "",
    T_world_from_cam: np.ndarray | None = None,
    with_mask: bool = True,
    classes: ClassSet = OCC3D,
) -> View:
    """Camera-frame points and ray ends of one image.

    Args:
        depth_m: <float: h, w> metric z-depth, NaN / <= 0 where unknown (sky may be NaN or anything).
        labels: <uint8: h, w> class ids of ``classes``, SKY, UNLABELED (other ids: no point, ray only).
        confidence: <float: h, w> semantic confidence in [0, 1].
        K: <float: 3, 3> intrinsics of this (h, w) image.
        opts: resolved options (:meth:`VoxelizeOptions.resolve`).
        with_mask: also prepare the mask_camera rays (needed for views of a keyframe).
    """
    px = _pixels(depth_m, labels, confidence, K, opts, torch.device(device), classes)
    H, W = px.z.shape
    ps = opts.point_stride
    lp = px.labels[::ps, ::ps]
    sel = px.has_depth[::ps, ::ps] & px.is_class[lp]
    points = px.rays[::ps, ::ps][sel] * px.z[::ps, ::ps][sel][:, None]
    weights = px.conf[::ps, ::ps][sel].clamp(0, 1) * float(ps * ps)
    ends, ray_sky, ray_cos, ray_w = _ray_ends(px, opts.ray_stride, opts.sky_range_m)
    mask_ends = _ray_ends(px, opts.mask_stride, opts.sky_range_m)[0] if with_mask else None
    bs = opts.tsdf_stride if opts.tsdf else H * W + 1  # no TSDF rays when off
    lb = px.labels[::bs, ::bs]
    bsel = px.has_depth[::bs, ::bs] & px.is_class[lb]
    band_ends = px.rays[::bs, ::bs][bsel] * px.z[::bs, ::bs][bsel][:, None]
    return View(
        frame=frame,
        camera=camera,
        T_world_from_cam=np.eye(4) if T_world_from_cam is None else np.asarray(T_world_from_cam, np.float64),
        points_cam=points,
        labels=lp[sel],
        weights=weights,
        point_range_w=px.range_w[::ps, ::ps][sel],
        ray_ends_cam=ends,
        ray_sky=ray_sky,
        ray_cos=ray_cos,
        ray_range_w=ray_w,
        mask_ends_cam=mask_ends,
        band_ends_cam=band_ends,
        band_labels=lb[bsel],
        band_weights=px.conf[::bs, ::bs][bsel].clamp(0, 1) * px.range_w[::bs, ::bs][bsel],
        band_cos=px.cos[::bs, ::bs][bsel],
    )


@dataclass
class _Pixels:
    """Per-pixel maps of one image, ``[H x W]`` on the fusion device (``rays``: ``[H x W x 3]``)."""

    z: torch.Tensor  # float32 z-depth, metres (as given: NaN / <= 0 where unknown)
    labels: torch.Tensor  # long class ids (UNLABELED mapped to 0 with unlabeled="others")
    conf: torch.Tensor  # float32 semantic confidence
    rays: torch.Tensor  # float32 ray directions with z = 1 (camera frame)
    sky: torch.Tensor  # bool, labelled SKY
    has_depth: torch.Tensor  # bool, a usable depth (finite, in (0, max_depth_m], not sky, not flying)
    range_w: torch.Tensor  # float32 range weight 1 / (1 + (z / range_weight_m)^2), or 1
    cos: torch.Tensor  # float32 |cos| between ray and surface normal (surface_cos)
    is_class: torch.Tensor  # [256] bool lookup: the id is a class of the class set


def _pixels(depth_m, labels, confidence, K, opts: VoxelizeOptions, dev: torch.device, classes) -> _Pixels:
    """The per-pixel maps of :func:`prepare_view` (its arguments)."""
    z = torch.as_tensor(np.asarray(depth_m, np.float32), device=dev)
    lab = torch.as_tensor(np.asarray(labels, np.uint8), device=dev).long()
    conf = torch.as_tensor(np.asarray(confidence, np.float32), device=dev)
    H, W = z.shape
    Kinv = torch.as_tensor(np.linalg.inv(np.asarray(K, np.float64)), dtype=torch.float32, device=dev)
    v, u = torch.meshgrid(
        torch.arange(H, device=dev, dtype=torch.float32),
        torch.arange(W, device=dev, dtype=torch.float32),
        indexing="ij",
    )
    rays = torch.stack([u, v, torch.ones_like(u)], -1) @ Kinv.T  # H W 3, z = 1
    sky = lab == SKY
    has_depth = torch.isfinite(z) & (z > 0) & (z <= opts.max_depth_m) & ~sky
    nan = torch.full_like(z, float("nan"))
    if opts.edge_tol > 0:
        has_depth &= ~flying_pixels(torch.where(has_depth, z, nan), opts.edge_tol)
    if opts.range_weight_m > 0:
        range_w = 1.0 / (1.0 + (torch.nan_to_num(z, nan=0.0) / opts.range_weight_m) ** 2)
    else:
        range_w = torch.ones_like(z)
    if opts.unlabeled == "others" and 0 in classes.names:
        lab = torch.where(lab == UNLABELED, torch.zeros_like(lab), lab)
    is_class = torch.as_tensor(classes.is_class(), device=dev)
    cos = surface_cos(torch.where(has_depth, z, nan), rays, opts.normal_step)
    return _Pixels(z, lab, conf, rays, sky, has_depth, range_w, cos, is_class)


def _ray_ends(px: _Pixels, stride: int, sky_range_m: float) -> tuple[torch.Tensor, ...]:
    """Rays of every ``stride``-th pixel with a depth or sky: ends ``[M x 3]`` (camera frame; sky rays end
    at ``sky_range_m``), sky ``[M]`` bool, |cos| ``[M]`` and range weight ``[M]`` (both 1 for sky)."""
    zr, rr, skr = px.z[::stride, ::stride], px.rays[::stride, ::stride], px.sky[::stride, ::stride]
    cast = px.has_depth[::stride, ::stride] | skr
    dirs, sk = rr[cast], skr[cast]
    ends = torch.where(
        sk[:, None],
        dirs / dirs.norm(dim=-1, keepdim=True) * sky_range_m,
        dirs * torch.nan_to_num(zr[cast], nan=0.0)[:, None],
    )
    one = torch.ones_like(ends[:, 0])
    c = torch.where(sk, one, px.cos[::stride, ::stride][cast])
    w = torch.where(sk, one, px.range_w[::stride, ::stride][cast])
    return ends, sk, c, w


def flying_pixels(depth_m: torch.Tensor, tol: float, ramp_ratio: float = 1.3) -> torch.Tensor:
    """Pixels on blurred depth discontinuities ("flying pixels" between a foreground and its background).

    Inverse depth of a planar surface is affine in the pixel coordinates at any slant (the road at grazing
    angles included); a blurred occlusion boundary is a short steep ramp between two surfaces. Along rows
    and along columns, a pixel is flagged when (a) its inverse depth changes by more than ``tol`` of itself
    per pixel over ±1 px, ``ramp_ratio`` times faster than over ±3 px (the middle of a ramp), or (b) it lies
    strictly between its neighbours ±k px (k = 1, 2) and bends by more than ``3 tol`` of itself there (the
    ends of a ramp). Local extrema are kept: a pole or a trunk a few pixels wide is a bump, not a ramp.

    Args:
        depth_m: ``[H x W]`` float32 z-depth, NaN where unknown (NaN neighbours count as inverse depth 0,
            "infinitely far": the rim of an object against the sky is tested like any other boundary).
        tol: relative slope per pixel (0.1 keeps a few percent of per-pixel noise).
    Returns:
        ``[H x W]`` bool.
    """
    inv = torch.nan_to_num(1.0 / depth_m, nan=0.0, posinf=0.0)
    H, W = inv.shape
    pad = torch.nn.functional.pad(inv[None, None], (3, 3, 3, 3), mode="replicate")[0, 0]
    c = inv

    def nb(dv: int, du: int) -> torch.Tensor:
        return pad[3 + dv : 3 + dv + H, 3 + du : 3 + du + W]

    flag = torch.zeros_like(c, dtype=torch.bool)
    for av, au in ((0, 1), (1, 0)):
        s1 = (nb(av, au) - nb(-av, -au)).abs() / 2
        s3 = (nb(3 * av, 3 * au) - nb(-3 * av, -3 * au)).abs() / 6
        flag |= (s1 > tol * c) & (s1 > ramp_ratio * s3)
        for k in (1, 2):
            a, b = nb(k * av, k * au), nb(-k * av, -k * au)
            between = (torch.minimum(a, b) < c) & (c < torch.maximum(a, b))
            flag |= between & ((a + b - 2 * c).abs() > 3 * tol * c)
    return flag & (c > 0)


def surface_cos(depth_m: torch.Tensor, rays: torch.Tensor, step: int = 2) -> torch.Tensor:
    """|cos| of the angle between each pixel's viewing ray and the surface normal, from the depth map.

    The normal is the cross product of the differences of the back-projected points along rows and columns
    (central over ``step`` px each side; one-sided where a neighbour has no depth, at borders, edges and
    next to the sky).

    Args:
        depth_m: ``[H x W]`` float32 z-depth, NaN where unknown.
        rays: ``[H x W x 3]`` float32 ray directions with z = 1 (camera frame).
        step: pixel step of the central differences.
    Returns:
        ``[H x W]`` float32 in [0, 1]; 1 where no normal can be formed (treated as frontal).
    """
    P = rays * depth_m[..., None]

    def diff(dim: int) -> torch.Tensor:
        # central difference over ±step px; one-sided (forward, then backward) where a neighbour is missing
        n = P.shape[dim]
        out = torch.full_like(P, float("nan"))
        if n <= step:
            return out
        fwd = P.narrow(dim, step, n - step) - P.narrow(dim, 0, n - step)  # at 0 .. n-step-1
        f = torch.full_like(P, float("nan"))
        b = torch.full_like(P, float("nan"))
        f.narrow(dim, 0, n - step).copy_(fwd)
        b.narrow(dim, step, n - step).copy_(fwd)
        if n > 2 * step:
            out.narrow(dim, step, n - 2 * step).copy_(
                P.narrow(dim, 2 * step, n - 2 * step) - P.narrow(dim, 0, n - 2 * step)
            )
        out = torch.where(torch.isfinite(out), out, f)
        return torch.where(torch.isfinite(out), out, b)

    du, dv = diff(1), diff(0)
    n = torch.nn.functional.normalize(torch.cross(du, dv, dim=-1), dim=-1)
    c = (n * torch.nn.functional.normalize(rays, dim=-1)).sum(-1).abs()
    return torch.where(torch.isfinite(c), c, torch.ones_like(c))
