"""Ray casting against the world: ray/primitive pair lists, nearest hits, the ground, shadows.

Rays are never tested against every primitive. Each caster first builds *ranges*: for every primitive
the runs of rays whose directions can reach it (pinhole cameras: the rows of the primitive's projected
bounding box; the LiDAR: the beams and azimuth bins of its bounding sphere; shadow rays: the cells of the
primitive's footprint on a plane perpendicular to the sun), expands them into (ray, primitive) pairs, and
intersects all pairs at once. Cost is proportional to the screen area the primitives cover.
"""

from __future__ import annotations

import math

import torch

from occlabel.datasets.synthetic.materials import MAT
from occlabel.datasets.synthetic.prims import Prims, intersect

INF = float("inf")
# the 12 edges of a box whose corners are numbered i = x + 2 y + 4 z (x, y, z in {0, 1})
_EDGES = torch.tensor(
    [[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]]
)


def expand_ranges(
    prim: torch.Tensor, start: torch.Tensor, count: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (primitive, position) for runs ``start .. start + count - 1`` (all ``[R]`` long).

    Returns pair_prim ``[M]``, pair_pos ``[M]`` long.
    """
    keep = count > 0
    prim, start, count = prim[keep], start[keep], count[keep]
    if prim.numel() == 0:
        e = torch.zeros(0, dtype=torch.long, device=prim.device)
        return e, e
    total = int(count.sum())
    first = torch.cumsum(count, 0) - count
    pair_prim = torch.repeat_interleave(prim, count, output_size=total)
    k = torch.arange(total, device=prim.device) - torch.repeat_interleave(first, count, output_size=total)
    return pair_prim, torch.repeat_interleave(start, count, output_size=total) + k


def _rows(prim, r0, r1, col0, col1, ncols, base):
    """Ranges for rows r0..r1 (inclusive) of each primitive, columns col0..col1, in a raster of ``ncols``."""
    nrow = (r1 - r0 + 1).clamp(min=0)
    keep = (nrow > 0) & (col1 >= col0)
    prim, r0, nrow, col0, col1, base = prim[keep], r0[keep], nrow[keep], col0[keep], col1[keep], base[keep]
    rp, rk = expand_ranges(torch.arange(prim.numel(), device=prim.device), torch.zeros_like(r0), nrow)
    row = r0[rp] + rk
    return prim[rp], base[rp] + row * ncols + col0[rp], (col1 - col0 + 1)[rp]


def pinhole_pairs(prims: Prims, cams: list[dict], near: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """(primitive, ray) pairs for pinhole cameras.

    Args:
        prims: primitives in the world frame.
        cams: dicts with ``K`` ``[3 x 3]``, ``T_cam_from_world`` ``[4 x 4]`` (torch), ``width``, ``height``;
            rays are numbered camera-major, then row-major (v * width + u).
    Returns:
        pair_prim ``[M]``, pair_ray ``[M]`` long.
    """
    corners = prims.corners()  # P 8 3
    out_p, out_s, out_c = [], [], []
    base = 0
    for cam in cams:
        K, T = cam["K"].to(corners.dtype), cam["T_cam_from_world"].to(corners.dtype)
        W, H = cam["width"], cam["height"]
        pc = corners @ T[:3, :3].T + T[:3, 3]  # P 8 3
        z = pc[..., 2]
        front = z > near
        anyf = front.any(1)
        # clip the bounding boxes at the near plane: the visible part's projection is bounded by the
        # corners in front and the points where the box edges cross the plane
        a, b = pc[:, _EDGES[:, 0]], pc[:, _EDGES[:, 1]]  # P 12 3
        za, zb = a[..., 2], b[..., 2]
        cross = (za > near) != (zb > near)
        f = ((near - za) / torch.where(cross, zb - za, torch.ones_like(za))).clamp(0, 1)
        xe = a + f[..., None] * (b - a)
        pts = torch.cat([pc, xe], 1)  # P 20 3
        ok = torch.cat([front, cross], 1)
        zc = pts[..., 2].clamp(min=near)
        u = (K[0, 0] * pts[..., 0] + K[0, 1] * pts[..., 1]) / zc + K[0, 2]
        v = K[1, 1] * pts[..., 1] / zc + K[1, 2]
        big = torch.tensor(1e9, dtype=u.dtype)
        umin, umax = torch.where(ok, u, big).amin(1), torch.where(ok, u, -big).amax(1)
        vmin, vmax = torch.where(ok, v, big).amin(1), torch.where(ok, v, -big).amax(1)
        u0 = torch.floor(umin).clamp(0, W - 1)
        u1 = torch.ceil(umax).clamp(-1, W - 1)
        v0 = torch.floor(vmin).clamp(0, H - 1)
        v1 = torch.ceil(vmax).clamp(-1, H - 1)
        inview = anyf & (umax >= 0) & (umin <= W - 1) & (vmax >= 0) & (vmin <= H - 1)
        idx = torch.nonzero(inview)[:, 0]
        p, s, c = _rows(
            idx,
            v0[idx].long(),
            v1[idx].long(),
            u0[idx].long(),
            u1[idx].long(),
            W,
            torch.full_like(idx, base),
        )
        out_p.append(p)
        out_s.append(s)
        out_c.append(c)
        base += W * H
    return expand_ranges(torch.cat(out_p), torch.cat(out_s), torch.cat(out_c))


def spherical_pairs(
    prims: Prims, origin: torch.Tensor, yaw: float, elev: torch.Tensor, ncols: int, max_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(primitive, ray) pairs for a spinning LiDAR.

    Rays are numbered beam-major: ray = beam * ncols + col, beam ``b`` at elevation ``elev[b]`` (sorted
    ascending, radians), column ``c`` at azimuth ``-pi + (c + 0.5) 2 pi / ncols`` from the sensor's x
    axis, the sensor's axes being the world's turned by ``yaw`` about z.
    """
    ctr, rad = prims.bounding_spheres()
    q = ctr - origin.to(ctr.dtype)
    cy, sy = math.cos(yaw), math.sin(yaw)
    qx, qy = cy * q[:, 0] + sy * q[:, 1], -sy * q[:, 0] + cy * q[:, 1]
    dxy = torch.sqrt(qx * qx + qy * qy)
    dist = torch.sqrt(dxy * dxy + q[:, 2] ** 2)
    keep = dist - rad < max_range
    inside = dist <= rad * 1.0001
    el_c = torch.atan2(q[:, 2], dxy)
    alpha = torch.asin((rad / dist.clamp(min=1e-6)).clamp(max=1.0))
    el_lo = torch.where(inside, torch.full_like(el_c, -10.0), el_c - alpha)
    el_hi = torch.where(inside, torch.full_like(el_c, 10.0), el_c + alpha)
    ev = elev.to(ctr.dtype)
    r0 = torch.searchsorted(ev, el_lo.contiguous(), right=False)
    r1 = torch.searchsorted(ev, el_hi.contiguous(), right=True) - 1
    full = dxy <= rad * 1.0001
    az_c = torch.atan2(qy, qx)
    beta = torch.asin((rad / dxy.clamp(min=1e-6)).clamp(max=1.0))
    step = 2 * math.pi / ncols
    c0 = torch.ceil((az_c - beta + math.pi) / step - 0.5).long()
    c1 = torch.floor((az_c + beta + math.pi) / step - 0.5).long()
    c0 = torch.where(full, torch.zeros_like(c0), c0)
    c1 = torch.where(full, torch.full_like(c1, ncols - 1), c1)
    idx = torch.nonzero(keep)[:, 0]
    ps, ss, cs = [], [], []
    # a wrapped column range becomes up to three runs inside [0, ncols); empty runs are dropped
    for lo, hi in (
        (c0.clamp(min=0), c1.clamp(max=ncols - 1)),
        (c0 + ncols, torch.full_like(c1, ncols - 1)),
        (torch.zeros_like(c0), c1 - ncols),
    ):
        p, s, c = _rows(idx, r0[idx], r1[idx], lo[idx], hi[idx], ncols, torch.zeros_like(idx))
        ps.append(p)
        ss.append(s)
        cs.append(c)
    return expand_ranges(torch.cat(ps), torch.cat(ss), torch.cat(cs))


def nearest_hit(
    prims: Prims, o: torch.Tensor, d: torch.Tensor, pair_prim: torch.Tensor, pair_ray: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest primitive hit per ray.

    Args:
        o, d: ``[N x 3]`` ray origins and directions; pair_prim, pair_ray: ``[M]`` candidate pairs.
    Returns:
        t ``[N]`` (inf: no hit), prim ``[N]`` long (-1: no hit).
    """
    N = d.shape[0]
    t_best = torch.full((N,), INF, dtype=d.dtype, device=d.device)
    prim = torch.full((N,), -1, dtype=torch.long, device=d.device)
    if pair_prim.numel() == 0:
        return t_best, prim
    t = intersect(prims, pair_prim, o[pair_ray], d[pair_ray])
    hit = torch.isfinite(t)
    pair_prim, pair_ray, t = pair_prim[hit], pair_ray[hit], t[hit]
    t_best.scatter_reduce_(0, pair_ray, t, reduce="amin")
    win = t == t_best[pair_ray]
    prim.scatter_reduce_(0, pair_ray[win], pair_prim[win], reduce="amax")
    return t_best, prim


def ground_hit(road, o: torch.Tensor, d: torch.Tensor) -> dict[str, torch.Tensor]:
    """First hit of rays with the ground (road at z = 0, everything else at z = kerb_h, kerb faces).

    Args:
        road: the world's Road.
        o, d: ``[N x 3]`` world rays (origins above ``kerb_h``).
    Returns:
        dict of ``[N]``: ``t`` (inf: no hit), ``cls`` long, ``mat`` long, ``s``, ``l`` road coordinates of
        the hit, ``kerb`` bool (hit a kerb face); and ``n`` ``[N x 3]`` world normal.
    """
    N = d.shape[0]
    dt = d.dtype
    t = torch.full((N,), INF, dtype=dt)
    cls = torch.zeros(N, dtype=torch.long)
    mat = torch.zeros(N, dtype=torch.long)
    s = torch.zeros(N, dtype=dt)
    l = torch.zeros(N, dtype=dt)
    kerb = torch.zeros(N, dtype=torch.bool)
    n = torch.zeros((N, 3), dtype=dt)
    n[:, 2] = 1
    down = torch.nonzero(d[:, 2] < -1e-7)[:, 0]
    if down.numel() == 0:
        return {"t": t, "cls": cls, "mat": mat, "s": s, "l": l, "kerb": kerb, "n": n}
    od, dd = o[down], d[down]
    t_top = (road.kerb_h - od[:, 2]) / dd[:, 2]
    t_bot = -od[:, 2] / dd[:, 2]
    pt = od + t_top[:, None] * dd
    g = road.ground(pt[:, 0], pt[:, 1])
    on_top = g["h"] > 0
    ti, ci, mi, si, li = t_top.clone(), g["cls"].clone(), g["mat"].clone(), g["s"].clone(), g["l"].clone()
    rest = torch.nonzero(~on_top)[:, 0]
    ki = torch.zeros(down.numel(), dtype=torch.bool)
    if rest.numel():
        pb = od[rest] + t_bot[rest, None] * dd[rest]
        gb = road.ground(pb[:, 0], pb[:, 1])
        on_road = gb["h"] == 0
        r = rest[on_road]
        ti[r], ci[r], mi[r], si[r], li[r] = (
            t_bot[r],
            gb["cls"][on_road],
            gb["mat"][on_road],
            gb["s"][on_road],
            gb["l"][on_road],
        )
        kb = rest[~on_road]
        if kb.numel():
            lo, hi = t_top[kb], t_bot[kb]
            for _ in range(14):  # bisection for |l| = road_half along the ray
                mid = (lo + hi) / 2
                pm = od[kb] + mid[:, None] * dd[kb]
                _, lm = road.project(pm[:, 0], pm[:, 1])
                outside = lm.abs() >= road.road_half
                hi = torch.where(outside, mid, hi)
                lo = torch.where(outside, lo, mid)
            pk = od[kb] + hi[:, None] * dd[kb]
            sk, lk = road.project(pk[:, 0], pk[:, 1])
            ti[kb] = hi
            ci[kb] = gb["cls"][~on_road]
            mi[kb] = MAT["kerb"]
            si[kb], li[kb] = sk, lk
            ki[kb] = True
    t[down], cls[down], mat[down], s[down], l[down], kerb[down] = ti, ci, mi, si, li, ki
    kidx = down[ki]
    if kidx.numel():
        _, _, hd = road.pose(s[kidx])
        sg = -torch.sign(l[kidx])  # towards the road
        n[kidx] = torch.stack([-torch.sin(hd) * sg, torch.cos(hd) * sg, torch.zeros_like(hd)], -1)
    return {"t": t, "cls": cls, "mat": mat, "s": s, "l": l, "kerb": kerb, "n": n}


def shadowed(prims: Prims, q: torch.Tensor, sun: torch.Tensor, cell: float = 0.5) -> torch.Tensor:
    """Whether points ``q [N x 3]`` (world, already offset off their surfaces) see the sun blocked by a
    primitive. The ground casts no shadows (flat, below everything). Returns ``[N]`` bool."""
    N = q.shape[0]
    out = torch.zeros(N, dtype=torch.bool)
    if N == 0 or len(prims) == 0:
        return out
    L = sun.to(q.dtype)
    e1 = torch.linalg.cross(L, torch.tensor([0.0, 0.0, 1.0], dtype=q.dtype))
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(L, e1)
    a, b = q @ e1, q @ e2
    amin, bmin = a.min(), b.min()
    ia = torch.floor((a - amin) / cell).long()
    ib = torch.floor((b - bmin) / cell).long()
    na, nb = int(ia.max()) + 1, int(ib.max()) + 1
    cid = ia * nb + ib
    cid_sorted, order = torch.sort(cid, stable=True)
    cor = prims.corners()  # P 8 3
    ca, cb = cor @ e1, cor @ e2
    a0 = torch.floor((ca.amin(1) - amin) / cell).long().clamp(min=0)
    a1 = torch.floor((ca.amax(1) - amin) / cell).long().clamp(max=na - 1)
    b0 = torch.floor((cb.amin(1) - bmin) / cell).long().clamp(min=0)
    b1 = torch.floor((cb.amax(1) - bmin) / cell).long().clamp(max=nb - 1)
    ok = (a1 >= a0) & (b1 >= b0)
    idx = torch.nonzero(ok)[:, 0]
    nrow = a1[idx] - a0[idx] + 1
    rp, rk = expand_ranges(torch.arange(idx.numel()), torch.zeros_like(nrow), nrow)
    row = a0[idx][rp] + rk
    lo = torch.searchsorted(cid_sorted, row * nb + b0[idx][rp], right=False)
    hi = torch.searchsorted(cid_sorted, row * nb + b1[idx][rp], right=True)
    pp, pos = expand_ranges(idx[rp], lo, hi - lo)
    if pp.numel() == 0:
        return out
    ray = order[pos]
    t = intersect(prims, pp, q[ray], L.expand(ray.numel(), 3))
    hit = torch.isfinite(t)
    out[ray[hit]] = True
    return out
