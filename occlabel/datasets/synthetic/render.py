"""Rendering of camera images with ground truth, and of LiDAR sweeps, from a World (torch, CPU/GPU).

``render_cameras`` casts one ray per pixel centre through the pinhole model of each camera (OpenCV
frame, pixel centres at integer coordinates), so the returned depth is exactly what
``occlabel.geometry.camera.unproject`` inverts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from occlabel.conventions import SKY
from occlabel.datasets.synthetic.prims import BOX, FRUSTUM, surface
from occlabel.datasets.synthetic.raycast import (
    ground_hit,
    nearest_hit,
    pinhole_pairs,
    shadowed,
    spherical_pairs,
)
from occlabel.datasets.synthetic.texture import MAT, albedo, shade, sky
from occlabel.datasets.synthetic.world import World

#: HDL-32E-like beam elevations (degrees), 32 beams from -30.67 to +10.67.
LIDAR_ELEV_DEG = np.linspace(-30.67, 10.67, 32)
#: LiDAR mount in the ego frame (metres), axes aligned with the ego frame.
LIDAR_MOUNT = (0.94, 0.0, 1.84)


def _cam_rays(
    cams: list[dict], T_world_from_ego: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """World ray origins/directions ``[N x 3]`` (camera-major, row-major; direction has unit camera z)."""
    os_, ds, prepared = [], [], []
    for cam in cams:
        T_wc = T_world_from_ego @ np.asarray(cam["T_ego_from_cam"], np.float64)
        K = np.asarray(cam["K"], np.float64)
        W, H = cam["width"], cam["height"]
        v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
        pix = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3)
        d_cam = pix @ np.linalg.inv(K).T
        d = d_cam @ T_wc[:3, :3].T
        ds.append(torch.from_numpy(d.astype(np.float32)))
        os_.append(torch.from_numpy(np.broadcast_to(T_wc[:3, 3], d.shape).astype(np.float32)))
        T_cw = np.linalg.inv(T_wc)
        prepared.append(
            {
                "K": torch.from_numpy(K.astype(np.float32)),
                "T_cam_from_world": torch.from_numpy(T_cw.astype(np.float32)),
                "width": W,
                "height": H,
                "R_wc": torch.from_numpy(T_wc[:3, :3].astype(np.float32)),
                "fx": float(K[0, 0]),
                "fy": float(K[1, 1]),
                "n": W * H,
            }
        )
    return torch.cat(os_), torch.cat(ds), prepared


def _surface_coords(kind, pl, nl, dims, dpu, dpv):
    """2D pattern coordinates (a, b) on primitive surfaces and their filter widths.

    Box faces: a horizontal along the face, b height above the box bottom (top faces: a = x, b = y).
    Frusta/spheroids: a = arc length around the axis, b = height above the bottom.
    """
    N = pl.shape[0]
    a = torch.zeros(N, dtype=pl.dtype)
    b = torch.zeros(N, dtype=pl.dtype)
    ta = torch.zeros((N, 3), dtype=pl.dtype)
    tb = torch.zeros((N, 3), dtype=pl.dtype)
    zrel = pl[:, 2] + torch.where(kind == FRUSTUM, torch.zeros_like(pl[:, 2]), dims[:, 2])
    m = kind == BOX
    nx, ny = nl[:, 0].abs() > 0.5, nl[:, 1].abs() > 0.5
    top = ~nx & ~ny
    sel = m & nx
    a[sel], ta[sel, 1] = pl[sel, 1], 1
    sel = m & ny
    a[sel], ta[sel, 0] = pl[sel, 0], 1
    sel = m & (nx | ny)
    b[sel], tb[sel, 2] = zrel[sel], 1
    sel = m & top
    a[sel], b[sel], ta[sel, 0], tb[sel, 1] = pl[sel, 0], pl[sel, 1], 1, 1
    sel = ~m
    if bool(sel.any()):
        phi = torch.atan2(pl[sel, 1], pl[sel, 0])
        r = torch.maximum(dims[sel, 0], dims[sel, 1])
        a[sel] = phi * r
        ta[sel] = torch.stack([-torch.sin(phi), torch.cos(phi), torch.zeros_like(phi)], -1)
        b[sel], tb[sel, 2] = zrel[sel], 1
    wa = torch.sqrt((dpu * ta).sum(-1) ** 2 + (dpv * ta).sum(-1) ** 2)
    wb = torch.sqrt((dpu * tb).sum(-1) ** 2 + (dpv * tb).sum(-1) ** 2)
    return a, b, wa, wb, zrel


@torch.no_grad()
def render_cameras(
    world: World,
    cams: list[dict],
    T_world_from_ego: np.ndarray,
    t: float,
    shadows: bool = True,
) -> dict[str, torch.Tensor]:
    """Render every camera of a rig at time t.

    Args:
        world: the world.
        cams: camera dicts with ``K`` <3, 3>, ``T_ego_from_cam`` <4, 4>, ``width``, ``height`` (all
            cameras of one call must share width and height).
        T_world_from_ego: <np.float64: 4, 4> ego pose at time t.
        t: seconds (poses of the moving actors).
        shadows: cast sun shadows.
    Returns:
        dict with ``rgb`` ``[C x H x W x 3]`` float32 in [0, 1] (before exposure gain), ``depth``
        ``[C x H x W]`` float32 metric z-depth (NaN for sky), ``semantics`` ``[C x H x W]`` uint8 (Occ3D ids,
        ``SKY`` for sky), ``prim`` ``[C x H x W]`` long primitive index (-1 ground or sky) into
        ``world.prims_at(t)``.
    """
    if len({(c["width"], c["height"]) for c in cams}) != 1:
        raise ValueError("render_cameras: all cameras of one call must have the same image size")
    prims = world.prims_at(t)
    o, d, pc = _cam_rays(cams, T_world_from_ego)
    C, H, W = len(cams), cams[0]["height"], cams[0]["width"]
    h = _first_hits(world, prims, o, d, pc)
    s = _surface_points(prims, h)
    dpu, dpv = _footprint(prims, h, s, d, pc)
    rgb = _radiance(world, prims, h, s, d, dpu, dpv, shadows)
    return {
        "rgb": rgb.clamp(0, 1).reshape(C, H, W, 3),
        "depth": h.depth.reshape(C, H, W),
        "semantics": h.sem.reshape(C, H, W),
        "prim": h.prim.reshape(C, H, W),
    }


@dataclass
class _Hits:
    """First hits of N camera rays (all ``[N]`` unless said otherwise)."""

    t: torch.Tensor  # ray parameter of the hit (inf: sky)
    hit: torch.Tensor  # bool, something was hit
    use_obj: torch.Tensor  # bool, a primitive is hit before the ground
    prim: torch.Tensor  # long primitive index, -1 for ground or sky
    p: torch.Tensor  # [N x 3] world point of the hit
    ground: dict  # ground_hit's result for all rays
    sem: torch.Tensor  # uint8 Occ3D id, SKY for sky
    depth: torch.Tensor  # float32 metric z-depth, NaN for sky


def _first_hits(world: World, prims, o: torch.Tensor, d: torch.Tensor, pc: list[dict]) -> _Hits:
    """Nearest of the primitive and ground hits of rays ``o + t d`` (``[N x 3]``; d has unit camera z)."""
    pp, pr = pinhole_pairs(prims, pc)
    t_obj, prim = nearest_hit(prims, o, d, pp, pr)
    g = ground_hit(world.road, o, d)
    use_obj = t_obj < g["t"]
    t_hit = torch.where(use_obj, t_obj, g["t"])
    hit = torch.isfinite(t_hit)
    prim = torch.where(use_obj, prim, torch.full_like(prim, -1))
    p = o + t_hit.clamp(max=1e6)[:, None] * d
    cls = torch.where(use_obj, prims.cls[prim.clamp(min=0)], g["cls"])
    sem = torch.where(hit, cls, torch.full_like(cls, SKY)).to(torch.uint8)
    depth = torch.where(hit, t_hit, torch.full_like(t_hit, float("nan")))
    return _Hits(t_hit, hit, use_obj, prim, p, g, sem, depth)


@dataclass
class _Surface:
    """The surface at the hits: indices of hit rays ``hi``, of primitive hits ``oi`` and ground hits ``gi``;
    ``[N x 3]`` world normal ``n_world``, point ``pl`` and normal ``nl`` in the primitive's local frame (the
    world frame for ground), primitive ``dims`` and ``kind`` ``[N]`` (-1: not a primitive)."""

    hi: torch.Tensor
    oi: torch.Tensor
    gi: torch.Tensor
    n_world: torch.Tensor
    pl: torch.Tensor
    nl: torch.Tensor
    dims: torch.Tensor
    kind: torch.Tensor


def _surface_points(prims, h: _Hits) -> _Surface:
    """Where each ray hit: the surface's point, normal and primitive shape."""
    N = h.t.shape[0]
    hi = torch.nonzero(h.hit)[:, 0]
    oi = hi[h.use_obj[hi]]
    gi = hi[~h.use_obj[hi]]
    n_world = torch.zeros((N, 3))
    n_world[gi] = h.ground["n"][gi]
    dims = torch.zeros((N, 3))
    kind = torch.full((N,), -1, dtype=torch.long)
    pl = torch.zeros((N, 3))
    nl = torch.zeros((N, 3))
    if oi.numel():
        pl[oi], nl[oi], n_world[oi] = surface(prims, h.prim[oi], h.p[oi])
        dims[oi] = prims.dims[h.prim[oi]]
        kind[oi] = prims.kind[h.prim[oi]]
    pl[gi] = h.p[gi]
    nl[gi] = n_world[gi]
    return _Surface(hi, oi, gi, n_world, pl, nl, dims, kind)


def _footprint(
    prims, h: _Hits, s: _Surface, d: torch.Tensor, pc: list[dict]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen-space derivatives dp/du, dp/dv ``[N x 3]`` of the surface point (metres per pixel), in the
    primitive's local frame for primitive hits, the world frame otherwise."""
    # world: dp/du = t (d_u - d (n.d_u)/(n.d))
    C = len(pc)
    cam_id = torch.repeat_interleave(torch.arange(C), torch.tensor([c["n"] for c in pc]))
    R = torch.stack([c["R_wc"] for c in pc])[cam_id]  # N 3 3
    fx = torch.tensor([c["fx"] for c in pc])[cam_id]
    fy = torch.tensor([c["fy"] for c in pc])[cam_id]
    du, dv = R[:, :, 0] / fx[:, None], R[:, :, 1] / fy[:, None]
    n_world = s.n_world
    nd = (n_world * d).sum(-1)
    nd = torch.where(nd.abs() < 0.02 * d.norm(dim=-1), -0.02 * d.norm(dim=-1), nd)
    tt = h.t.clamp(max=1e6)[:, None]
    dpu = tt * (du - d * ((n_world * du).sum(-1) / nd)[:, None])
    dpv = tt * (dv - d * ((n_world * dv).sum(-1) / nd)[:, None])
    oi = s.oi
    if oi.numel():  # primitive hits: into the local frame
        yaw = prims.yaw[h.prim[oi]]
        c_, s_ = torch.cos(yaw), torch.sin(yaw)
        for v in (dpu, dpv):
            x, y = v[oi, 0].clone(), v[oi, 1].clone()
            v[oi, 0], v[oi, 1] = c_ * x + s_ * y, -s_ * x + c_ * y
    return dpu, dpv


def _pattern_coords(world: World, h: _Hits, s: _Surface, dpu: torch.Tensor, dpv: torch.Tensor):
    """Texture coordinates ``a``, ``b`` ``[N]`` of every hit with their filter widths ``wa``, ``wb`` and the
    height above the primitive's bottom ``zrel`` (primitives: _surface_coords; ground: road coordinates s, l,
    kerb faces: height)."""
    N, oi, gi, g, p = h.t.shape[0], s.oi, s.gi, h.ground, h.p
    a, b, wa, wb, zrel = (torch.zeros(N) for _ in range(5))
    if oi.numel():
        a[oi], b[oi], wa[oi], wb[oi], zrel[oi] = _surface_coords(
            s.kind[oi], s.pl[oi], s.nl[oi], s.dims[oi], dpu[oi], dpv[oi]
        )
    if gi.numel():
        _, _, hd = world.road.pose(g["s"][gi])
        T = torch.stack([torch.cos(hd), torch.sin(hd), torch.zeros_like(hd)], -1)
        Nn = torch.stack([-torch.sin(hd), torch.cos(hd), torch.zeros_like(hd)], -1)
        a[gi], b[gi] = g["s"][gi], g["l"][gi]
        wa[gi] = torch.sqrt((dpu[gi] * T).sum(-1) ** 2 + (dpv[gi] * T).sum(-1) ** 2)
        wb[gi] = torch.sqrt((dpu[gi] * Nn).sum(-1) ** 2 + (dpv[gi] * Nn).sum(-1) ** 2)
        kb = gi[g["kerb"][gi]]
        b[kb] = p[kb, 2]
        wb[kb] = torch.sqrt(dpu[kb, 2] ** 2 + dpv[kb, 2] ** 2)
    return a, b, wa, wb, zrel


def _materials(world: World, prims, h: _Hits, s: _Surface):
    """Material id, base colours ``colour``, ``colour2`` ``[N x 3]`` and texture id of every hit (ground:
    the world's ground colours, texture 1000 + material)."""
    N, oi, gi, prim = h.t.shape[0], s.oi, s.gi, h.prim
    mat = torch.where(h.use_obj, prims.mat[prim.clamp(min=0)], h.ground["mat"])
    colour = torch.zeros((N, 3))
    colour2 = torch.zeros((N, 3))
    tex = torch.zeros(N, dtype=torch.long)
    if oi.numel():
        colour[oi], colour2[oi], tex[oi] = (
            prims.colour[prim[oi]],
            prims.colour2[prim[oi]],
            prims.tex[prim[oi]],
        )
    if gi.numel():
        gc = world.ground_colours
        table = {
            MAT["asphalt"]: (world.asphalt, world.asphalt),
            MAT["paving"]: (gc["paving"], gc["paving"]),
            MAT["kerb"]: (gc["kerb"], gc["kerb"]),
            MAT["grass"]: (gc["grass"], gc["grass2"]),
        }
        for mid, (c1, c2) in table.items():
            sel = gi[mat[gi] == mid]
            colour[sel] = torch.tensor(c1, dtype=torch.float32)
            colour2[sel] = torch.tensor(c2, dtype=torch.float32)
            tex[sel] = 1000 + mid
    return mat, colour, colour2, tex


def _radiance(world: World, prims, h: _Hits, s: _Surface, d, dpu, dpv, shadows: bool) -> torch.Tensor:
    """Radiance ``[N x 3]`` (unclamped) of every ray: band-limited albedo, sun (and shadow) shading; sky."""
    N, hi = h.t.shape[0], s.hi
    lu, lv = dpu.norm(dim=-1), dpv.norm(dim=-1)
    major = torch.where((lu >= lv)[:, None], dpu, dpv)
    minor = torch.minimum(lu, lv)
    fp = torch.maximum(lu, lv)
    a, b, wa, wb, zrel = _pattern_coords(world, h, s, dpu, dpv)
    mat, colour, colour2, tex = _materials(world, prims, h, s)
    sf = {"p": s.pl[hi], "n": s.nl[hi], "a": a[hi], "b": b[hi], "wa": wa[hi], "wb": wb[hi], "major": major[hi],
          "minor": minor[hi], "fp": fp[hi], "mat": mat[hi], "tex": tex[hi], "colour": colour[hi],
          "colour2": colour2[hi], "dims": s.dims[hi], "zrel": zrel[hi]}  # fmt: skip
    alb = albedo(sf, world.road)
    sun = torch.as_tensor(world.sun, dtype=torch.float32)
    lit = torch.ones(hi.numel())
    if shadows:
        q = h.p[hi] + 0.03 * s.n_world[hi]
        lit = (~shadowed(prims, q, sun)).float()
    rgb = torch.zeros((N, 3))
    rgb[hi] = shade(alb, s.n_world[hi], lit, sun, world.ambient, world.sun_k)
    si = torch.nonzero(~h.hit)[:, 0]
    if si.numel():
        dn = d[si] / d[si].norm(dim=-1, keepdim=True)
        rgb[si] = sky(dn, sun, world.seed)
    return rgb


@torch.no_grad()
def render_lidar(
    world: World,
    T_world_from_ego: np.ndarray,
    t: float,
    ncols: int = 512,
    max_range: float = 70.0,
) -> dict[str, torch.Tensor]:
    """A spinning LiDAR sweep (instantaneous; no motion distortion), HDL-32E-like beams.

    Returns:
        dict with ``points_ego`` ``[M x 3]`` float32 returns in the ego frame (range <= ``max_range``),
        ``semantics`` ``[M]`` uint8 class per return, ``origin_ego`` ``[3]`` the sensor centre.
    """
    prims = world.prims_at(t)
    yaw = math.atan2(T_world_from_ego[1, 0], T_world_from_ego[0, 0])
    mount = np.asarray(LIDAR_MOUNT, np.float64)
    origin = T_world_from_ego[:3, :3] @ mount + T_world_from_ego[:3, 3]
    el = np.radians(LIDAR_ELEV_DEG)
    az = -math.pi + (np.arange(ncols) + 0.5) * 2 * math.pi / ncols + yaw
    ee, aa = np.meshgrid(el, az, indexing="ij")
    d = np.stack([np.cos(ee) * np.cos(aa), np.cos(ee) * np.sin(aa), np.sin(ee)], -1).reshape(-1, 3)
    d = torch.from_numpy(d.astype(np.float32))
    o = torch.from_numpy(np.broadcast_to(origin, d.shape).astype(np.float32))
    pp, pr = spherical_pairs(
        prims,
        torch.from_numpy(origin.astype(np.float32)),
        yaw,
        torch.from_numpy(el.astype(np.float32)),
        ncols,
        max_range,
    )
    t_obj, prim = nearest_hit(prims, o, d, pp, pr)
    g = ground_hit(world.road, o, d)
    use_obj = t_obj < g["t"]
    rng = torch.where(use_obj, t_obj, g["t"])
    keep = rng <= max_range
    cls = torch.where(use_obj, prims.cls[prim.clamp(min=0)], g["cls"])[keep]
    pts_w = (o + rng.clamp(max=1e6)[:, None] * d)[keep].double().numpy()
    T_ew = np.linalg.inv(T_world_from_ego)
    pts_e = pts_w @ T_ew[:3, :3].T + T_ew[:3, 3]
    return {
        "points_ego": torch.from_numpy(pts_e.astype(np.float32)),
        "semantics": cls.to(torch.uint8),
        "origin_ego": torch.from_numpy(mount.astype(np.float32)),
    }
