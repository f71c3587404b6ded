"""Analytic solids the world is built from, with ray intersection and exact voxel-overlap tests.

Three kinds, all upright (their local z axis is the world z axis) and turned about z by a yaw:

- ``BOX``: centre ``centre``, half extents ``dims`` (local x, y, z).
- ``FRUSTUM``: vertical truncated cone (cylinder when both radii agree); ``centre`` is the centre of its
  base disc, ``dims`` = (base radius, top radius, height).
- ``SPHEROID``: ellipsoid with a vertical axis; ``centre`` its centre, ``dims`` = (r_xy, r_xy, r_z).

Local frame of a primitive: p_local = R_z(-yaw) (p_world - centre). Because every solid is upright, the
test "does the solid intersect this axis-aligned voxel" is exact for all three kinds in any frame that
shares the world's z axis (ego frames are upright in this world).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

BOX, FRUSTUM, SPHEROID = 0, 1, 2
EPS_T = 1e-4


@dataclass
class Prims:
    """A set of P primitives (struct of arrays, torch, one device).

    Attributes:
        kind: ``[P]`` long, BOX / FRUSTUM / SPHEROID.
        centre: ``[P x 3]`` float32, world (or the frame the set was moved to).
        dims: ``[P x 3]`` float32, see the module docstring.
        yaw: ``[P]`` float32 radians about +z.
        cls: ``[P]`` long, Occ3D class id.
        mat: ``[P]`` long, material id (texture.MAT).
        colour: ``[P x 3]`` float32 base albedo in [0, 1]; colour2: ``[P x 3]`` secondary albedo.
        tex: ``[P]`` long, texture seed (decorrelates the noise of different objects).
        actor: ``[P]`` long, index of the moving actor it belongs to, -1 for static primitives.
    """

    kind: torch.Tensor
    centre: torch.Tensor
    dims: torch.Tensor
    yaw: torch.Tensor
    cls: torch.Tensor
    mat: torch.Tensor
    colour: torch.Tensor
    colour2: torch.Tensor
    tex: torch.Tensor
    actor: torch.Tensor

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def subset(self, idx: torch.Tensor) -> Prims:
        return Prims(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def cat(parts: list[Prims]) -> Prims:
        return Prims(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Prims)})

    def local_aabb(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Local bounding box (lo ``[P x 3]``, hi ``[P x 3]``) of each primitive in its local frame."""
        d = self.dims
        rmax = torch.maximum(d[:, 0], d[:, 1])
        lo = torch.where(
            (self.kind == FRUSTUM)[:, None],
            torch.stack([-rmax, -rmax, torch.zeros_like(rmax)], -1),
            -d,
        )
        hi = torch.where((self.kind == FRUSTUM)[:, None], torch.stack([rmax, rmax, d[:, 2]], -1), d)
        return lo, hi

    def corners(self) -> torch.Tensor:
        """The 8 corners of each local bounding box in the primitives' frame, ``[P x 8 x 3]``."""
        lo, hi = self.local_aabb()
        sel = torch.tensor(
            [[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=lo.dtype, device=lo.device
        )
        loc = lo[:, None] + sel[None] * (hi - lo)[:, None]
        return self.to_world(loc, torch.arange(len(self), device=lo.device)[:, None].expand(-1, 8))

    def bounding_spheres(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre ``[P x 3]`` and radius ``[P]`` of a sphere enclosing each primitive."""
        lo, hi = self.local_aabb()
        mid = (lo + hi) / 2
        idx = torch.arange(len(self), device=lo.device)
        return self.to_world(mid, idx), ((hi - lo) / 2).norm(dim=-1)

    def to_world(self, p_local: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Local points ``[... x 3]`` of primitives ``idx [...]`` to the primitives' frame."""
        c, s = torch.cos(self.yaw[idx]), torch.sin(self.yaw[idx])
        x, y, z = p_local.unbind(-1)
        return torch.stack([c * x - s * y, s * x + c * y, z], -1) + self.centre[idx]

    def transformed(self, R2: torch.Tensor, t: torch.Tensor, dyaw: float | torch.Tensor) -> Prims:
        """The same primitives after an upright rigid motion: p' = R2 p + t with R2 = R_z(dyaw) ``[3 x 3]``."""
        out = Prims(**{f.name: getattr(self, f.name) for f in fields(self)})
        out.centre = self.centre @ R2.T.to(self.centre.dtype) + t.to(self.centre.dtype)
        out.yaw = self.yaw + dyaw
        return out


# --------------------------------------------------------------------------------------------------
# Ray intersection (per ray/primitive pair)
# --------------------------------------------------------------------------------------------------


def _to_local(prims: Prims, idx: torch.Tensor, o: torch.Tensor, d: torch.Tensor):
    c, s = torch.cos(prims.yaw[idx]), torch.sin(prims.yaw[idx])
    q = o - prims.centre[idx]
    ol = torch.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1], q[:, 2]], -1)
    dl = torch.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], -1)
    return ol, dl


def _box_t(o: torch.Tensor, d: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    dd = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    inv = 1.0 / dd
    t0 = (-h - o) * inv
    t1 = (h - o) * inv
    tn = torch.minimum(t0, t1).amax(-1)
    tf = torch.maximum(t0, t1).amin(-1)
    hit = (tn <= tf) & (tn > EPS_T)
    return torch.where(hit, tn, torch.full_like(tn, float("inf")))


def _frustum_t(o: torch.Tensor, d: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    r0, r1, H = dims.unbind(-1)
    k = (r1 - r0) / H
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    rz = r0 + k * oz
    A = dx * dx + dy * dy - k * k * dz * dz
    B = ox * dx + oy * dy - k * rz * dz
    C = ox * ox + oy * oy - rz * rz
    inf = torch.full_like(A, float("inf"))
    disc = B * B - A * C
    sq = torch.sqrt(disc.clamp(min=0))
    As = torch.where(A.abs() < 1e-12, torch.full_like(A, 1e-12), A)
    lin = A.abs() < 1e-12
    Bs = torch.where(B.abs() < 1e-12, torch.full_like(B, 1e-12), B)
    best = inf
    for t in (
        torch.where(lin, -C / (2 * Bs), (-B - sq) / As),
        torch.where(lin, inf, (-B + sq) / As),
    ):
        z = oz + t * dz
        ok = (disc >= 0) & (t > EPS_T) & (z >= 0) & (z <= H) & (r0 + k * z >= 0)
        best = torch.where(ok & (t < best), t, best)
    dzs = torch.where(dz.abs() < 1e-12, torch.full_like(dz, 1e-12), dz)
    for zc, rc in ((H, r1), (torch.zeros_like(H), r0)):
        t = (zc - oz) / dzs
        x, y = ox + t * dx, oy + t * dy
        ok = (t > EPS_T) & (x * x + y * y <= rc * rc)
        best = torch.where(ok & (t < best), t, best)
    return best


def _spheroid_t(o: torch.Tensor, d: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    os_ = o / dims
    ds = d / dims
    a = (ds * ds).sum(-1)
    b = (os_ * ds).sum(-1)
    c = (os_ * os_).sum(-1) - 1.0
    disc = b * b - a * c
    t = (-b - torch.sqrt(disc.clamp(min=0))) / a
    ok = (disc >= 0) & (t > EPS_T)
    return torch.where(ok, t, torch.full_like(t, float("inf")))


def intersect(prims: Prims, idx: torch.Tensor, o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Ray parameter of the first hit of rays ``o + t d`` with primitives ``idx``.

    Args:
        prims: the primitives (world frame).
        idx: ``[M]`` long primitive index per pair.
        o, d: ``[M x 3]`` ray origin and direction per pair (d need not be unit length).
    Returns:
        t ``[M]`` (inf where the ray misses or the solid lies behind the origin).
    """
    t = torch.full((idx.shape[0],), float("inf"), dtype=o.dtype, device=o.device)
    if idx.numel() == 0:
        return t
    ol, dl = _to_local(prims, idx, o, d)
    kind = prims.kind[idx]
    dims = prims.dims[idx]
    for kd, fn in ((BOX, _box_t), (FRUSTUM, _frustum_t), (SPHEROID, _spheroid_t)):
        m = kind == kd
        if bool(m.any()):
            t[m] = fn(ol[m], dl[m], dims[m])
    return t


def surface(
    prims: Prims, idx: torch.Tensor, p_world: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local point, local normal and world normal at surface points of primitives.

    Args:
        idx: ``[M]`` primitive index; p_world: ``[M x 3]`` points on their surfaces.
    Returns:
        p_local ``[M x 3]``, n_local ``[M x 3]`` (unit), n_world ``[M x 3]`` (unit).
    """
    c, s = torch.cos(prims.yaw[idx]), torch.sin(prims.yaw[idx])
    q = p_world - prims.centre[idx]
    pl = torch.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1], q[:, 2]], -1)
    dims = prims.dims[idx]
    kind = prims.kind[idx]
    n = torch.zeros_like(pl)
    # box: the face whose plane the point is closest to
    m = kind == BOX
    if bool(m.any()):
        r = pl[m].abs() / dims[m]
        ax = r.argmax(-1)
        nb = torch.zeros_like(r)
        nb.scatter_(1, ax[:, None], torch.sign(pl[m].gather(1, ax[:, None])))
        n[m] = nb
    m = kind == FRUSTUM
    if bool(m.any()):
        p, dm = pl[m], dims[m]
        r0, r1, H = dm.unbind(-1)
        k = (r1 - r0) / H
        rad = torch.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2)
        rz = r0 + k * p[:, 2]
        e_side = (rad - rz).abs()
        e_top = (p[:, 2] - H).abs()
        e_bot = p[:, 2].abs()
        side = torch.stack([p[:, 0], p[:, 1], -k * rz], -1)
        side = side / side.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        up = torch.zeros_like(p)
        up[:, 2] = 1.0
        nf = torch.where((e_top < e_side)[:, None] & (e_top <= e_bot)[:, None], up, side)
        nf = torch.where((e_bot < e_side)[:, None] & (e_bot < e_top)[:, None], -up, nf)
        n[m] = nf
    m = kind == SPHEROID
    if bool(m.any()):
        g = pl[m] / dims[m] ** 2
        n[m] = g / g.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    nw = torch.stack([c * n[:, 0] - s * n[:, 1], s * n[:, 0] + c * n[:, 1], n[:, 2]], -1)
    return pl, n, nw


# --------------------------------------------------------------------------------------------------
# Exact overlap with axis-aligned cells (for ground-truth occupancy)
# --------------------------------------------------------------------------------------------------


def overlaps_cells(prims: Prims, idx: torch.Tensor, cell_centre: torch.Tensor, half: float) -> torch.Tensor:
    """Whether the solids ``idx [M]`` intersect the axis-aligned cubes ``cell_centre [M x 3]`` ± ``half``.

    Exact for upright primitives in a frame sharing their z axis (strict inequalities: a solid that only
    touches a cell's face does not occupy it).
    Returns ``[M]`` bool.
    """
    out = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    if idx.numel() == 0:
        return out
    kind = prims.kind[idx]
    ctr = prims.centre[idx]
    dims = prims.dims[idx]
    d = cell_centre - ctr
    m = kind == BOX
    if bool(m.any()):
        yaw = prims.yaw[idx[m]]
        c, s = torch.cos(yaw).abs(), torch.sin(yaw).abs()
        hx, hy, hz = dims[m].unbind(-1)
        dx, dy, dz = d[m].unbind(-1)
        cy, sy = torch.cos(yaw), torch.sin(yaw)
        u = cy * dx + sy * dy  # centre offset along the box axes
        v = -sy * dx + cy * dy
        out[m] = (
            (dz.abs() < hz + half)
            & (dx.abs() < half + hx * c + hy * s)
            & (dy.abs() < half + hx * s + hy * c)
            & (u.abs() < hx + half * (c + s))
            & (v.abs() < hy + half * (s + c))
        )
    m = kind == FRUSTUM
    if bool(m.any()):
        r0, r1, H = dims[m].unbind(-1)
        z_lo = (cell_centre[m, 2] - half - ctr[m, 2]).clamp(min=0)
        z_hi = torch.minimum(cell_centre[m, 2] + half - ctr[m, 2], H)
        zok = (cell_centre[m, 2] + half - ctr[m, 2] > 0) & (cell_centre[m, 2] - half - ctr[m, 2] < H)
        k = (r1 - r0) / H
        rmax = torch.maximum(r0 + k * z_lo, r0 + k * z_hi)
        ex = (d[m, 0].abs() - half).clamp(min=0)
        ey = (d[m, 1].abs() - half).clamp(min=0)
        out[m] = zok & (ex * ex + ey * ey < rmax * rmax)
    m = kind == SPHEROID
    if bool(m.any()):
        e = (d[m].abs() - half).clamp(min=0) / dims[m]
        out[m] = (e * e).sum(-1) < 1.0
    return out


def inside(prims: Prims, idx: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Whether points ``p [M x 3]`` lie inside the solids ``idx [M]`` (``[M]`` bool)."""
    return overlaps_cells(prims, idx, p, 0.0)
