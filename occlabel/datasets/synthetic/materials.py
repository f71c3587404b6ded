"""Procedural materials of the synthetic world: the albedo of surface samples, one function per material.

Colour is a function of the surface point in the frame of the object it belongs to (world frame for the
ground and static objects, object frame for moving ones), never of the viewpoint, so a static surface
point has the same colour in every frame. Every material draws from the band-limited noise bank and the
filtered patterns of noise.py; primitives and ground bands carry a material index (``MAT[name]``).
"""

from __future__ import annotations

import torch

from occlabel.datasets.synthetic.noise import BANK_B, band, fbm, hash01, mix, noise_bank, pulse, smoothstep

#: material names; primitives and ground bands carry the index (``MAT[name]``)
MATERIALS = (
    "asphalt", "paving", "kerb", "grass", "facade", "brick", "foliage", "bark", "metal",
    "sign", "car", "cabin", "tyre", "cone", "barrier", "cloth", "skin", "plain",
)  # fmt: skip
MAT = {name: i for i, name in enumerate(MATERIALS)}


def albedo(sf: dict[str, torch.Tensor], road) -> torch.Tensor:
    """Albedo ``[N x 3]`` in [0, 1] of surface samples.

    Args:
        sf: per-sample surface description, all ``[N]`` or ``[N x 3]``:
            ``p`` texture coordinates (local metres), ``n`` local normal, ``a``, ``b`` 2D surface coordinates
            (metres) with filter widths ``wa``, ``wb``, ``major`` ``[N x 3]`` / ``minor`` ``[N]`` pixel footprint
            axes (metres), ``fp`` ``[N]`` isotropic footprint, ``mat``, ``tex`` long, ``colour``, ``colour2``
            ``[N x 3]``, ``dims`` ``[N x 3]`` primitive dimensions, ``zrel`` ``[N]`` height above the
            primitive's bottom.
        road: the world's Road (markings).
    """
    N = sf["mat"].shape[0]
    order = torch.argsort(sf["mat"], stable=True)
    srt = {k: v[order] for k, v in sf.items()}
    srt["A"], srt["B"] = noise_bank(srt["p"], srt["major"], srt["minor"], srt["tex"])
    counts = torch.bincount(srt["mat"], minlength=len(MAT)).tolist()
    out = torch.zeros((N, 3), dtype=sf["p"].dtype, device=sf["p"].device)
    start = 0
    names = MATERIALS
    parts = []
    for mid, n in enumerate(counts):
        if n:
            sub = {
                k: (v[:, start : start + n] if k in ("A", "B") else v[start : start + n])
                for k, v in srt.items()
            }
            parts.append(_MATERIALS[names[mid]](sub, road))
        start += n
    if parts:
        out[order] = torch.cat(parts)
    return out.clamp(0, 1)


def _noise(sf, lo: int, hi: int, persistence: float = 0.7) -> torch.Tensor:
    """Fractal sum of bank A octaves lo..hi-1 (``BANK_A[lo]`` cycles/m and up), roughly in [-0.5, 0.5]."""
    amp = persistence ** torch.arange(hi - lo, dtype=sf["p"].dtype)
    return (amp[:, None] * sf["A"][lo:hi]).sum(0) / amp.sum() * 2.0


def _low(sf, persistence: float = 0.6) -> torch.Tensor:
    """Fractal sum of the isotropic low-frequency bank B (metres to tens of metres)."""
    amp = persistence ** torch.arange(len(BANK_B), dtype=sf["p"].dtype)
    return (amp[:, None] * sf["B"]).sum(0) / amp.sum() * 2.0


def _asphalt(sf, road):
    c = sf["colour"]
    patches = _noise(sf, 0, 3)
    grain = _noise(sf, 3, 8, 0.8)
    alb = c * ((1 + 0.45 * patches) * (1 + 0.7 * grain))[:, None]
    s, l, ws, wl = sf["a"], sf["b"], sf["wa"], sf["wb"]
    lw = road.lane_w
    paint = torch.zeros_like(s)
    if road.centre_dashed:
        paint = torch.maximum(paint, band(l, -0.06, 0.06, wl) * pulse(s, 9.0, 3.0, ws))
        yellow = torch.zeros_like(s)
    else:
        yellow = torch.maximum(band(l, 0.05, 0.17, wl), band(l, -0.17, -0.05, wl))
    edge = torch.maximum(band(l, lw - 0.08, lw + 0.08, wl), band(l, -lw - 0.08, -lw + 0.08, wl))
    paint = torch.maximum(paint, edge)
    park = (band(l.abs(), lw, road.road_half - 0.4, wl)) * pulse(s + 0.06, 6.0, 0.12, ws)
    paint = torch.maximum(paint, park)
    for sc in road.crosswalks:
        cw = band(s, sc, sc + 3.5, ws) * band(l, -lw + 0.3, lw - 0.3, wl) * pulse(l + 0.25, 1.0, 0.5, wl)
        paint = torch.maximum(paint, cw)
    wear = (0.8 + 0.4 * grain).clamp(0, 1)
    white = torch.tensor([0.86, 0.86, 0.82], dtype=c.dtype)
    yel = torch.tensor([0.85, 0.68, 0.18], dtype=c.dtype)
    alb = mix(alb, white.expand_as(alb) * (1 + 0.2 * grain)[:, None], paint * wear)
    alb = mix(alb, yel.expand_as(alb) * (1 + 0.2 * grain)[:, None], yellow * wear)
    return alb


def _paving(sf, road):
    s, l, ws, wl = sf["a"], sf["b"], sf["wa"], sf["wb"]
    ta, tb = 0.6, 0.4
    row = torch.floor(l / tb)
    s_off = s + 0.3 * torch.remainder(row, 2)  # running bond
    col = torch.floor(s_off / ta)
    grout = 1 - (1 - pulse(s_off, ta, 0.025, ws)) * (1 - pulse(l, tb, 0.025, wl))
    var = hash01(col.long(), row.long(), seed=3) - 0.5
    # the per-tile variation is itself averaged when tiles are smaller than a pixel
    tile_vis = (1 - (ws / ta).clamp(0, 1)) * (1 - (wl / tb).clamp(0, 1))
    fine = _noise(sf, 4, 8, 0.75)
    stains = _noise(sf, 1, 4)
    alb = sf["colour"] * ((1 + 0.28 * var * tile_vis) * (1 + 0.5 * fine) * (1 + 0.35 * stains))[:, None]
    return alb * (1 - 0.45 * grout)[:, None]


def _kerb(sf, road):
    joints = pulse(sf["a"], 1.0, 0.02, sf["wa"])
    fine = _noise(sf, 4, 8, 0.75)
    return sf["colour"] * ((1 + 0.45 * fine) * (1 - 0.4 * joints))[:, None]


def _grass(sf, road):
    dry = _low(sf)
    clumps = _noise(sf, 2, 6, 0.8)
    blades = _noise(sf, 6, 8, 0.9)
    t = smoothstep(-0.15, 0.25, dry + 0.3 * clumps)
    alb = mix(sf["colour"], sf["colour2"], t)
    return alb * (1 + 0.9 * clumps + 0.6 * blades).clamp(min=0.2)[:, None]


def _facade(sf, road, brick: bool = False):
    a, z, wa, wz = sf["a"], sf["b"], sf["wa"], sf["wb"]
    top = sf["n"][:, 2] > 0.5
    dims = sf["dims"]
    height = 2 * dims[:, 2]
    tex = sf["tex"]
    bay = 2.6 + 1.4 * hash01(tex, seed=11)
    fh = 3.0 + 0.6 * hash01(tex, seed=12)
    ww = bay * (0.35 + 0.25 * hash01(tex, seed=13))
    wh = 1.3 + 0.5 * hash01(tex, seed=14)
    sill = 0.9
    stains = _noise(sf, 0, 3, 0.6)
    fine = _noise(sf, 4, 8)
    wall = sf["colour"] * ((1 + 0.35 * stains) * (1 + 0.35 * fine))[:, None]
    if brick:
        bh, bl = 0.075, 0.24
        course = torch.floor(z / bh)
        ab = a + 0.5 * bl * torch.remainder(course, 2)
        mortar = 1 - (1 - pulse(z, bh, 0.012, wz)) * (1 - pulse(ab, bl, 0.012, wa))
        bvar = hash01(torch.floor(ab / bl).long(), course.long(), tex, seed=5) - 0.5
        vis = (1 - (wa / bl).clamp(0, 1)) * (1 - (wz / bh).clamp(0, 1))
        wall = wall * (1 + 0.35 * bvar * vis)[:, None]
        wall = mix(wall, torch.full_like(wall, 0.72), mortar * 0.8)
    # windows: a grid of bays and floors above the ground floor, shop windows on the ground floor
    x0 = a - (bay - ww) / 2
    in_x = pulse(x0, bay, ww, wa)
    frame_x = pulse(x0 + 0.12, bay, ww + 0.24, wa)
    zz = z - fh - sill
    in_z = pulse(zz, fh, wh, wz) * band(z, fh, height - 0.8, wz)
    frame_z = pulse(zz + 0.12, fh, wh + 0.24, wz) * band(z, fh, height - 0.8, wz)
    shop = hash01(tex, seed=15) < 0.6
    in_g = band(z, 0.4, fh - 0.6, wz) * pulse(a - 0.4, bay, bay - 0.8, wa) * shop.to(a.dtype)
    frame_g = band(z, 0.25, fh - 0.45, wz) * pulse(a - 0.25, bay, bay - 0.5, wa) * shop.to(a.dtype)
    win = torch.maximum(in_x * in_z, in_g)
    frm = (torch.maximum(frame_x * frame_z, frame_g) - win).clamp(0, 1)
    wid = hash01(torch.floor(x0 / bay).long(), torch.floor(zz / fh).long(), tex, seed=16)
    refl = _low(sf)
    glass = sf["colour2"] * (0.6 + 0.8 * wid + 1.5 * refl).clamp(min=0.2)[:, None]
    frame_col = torch.tensor([0.82, 0.82, 0.80], dtype=a.dtype).expand_as(wall) * (1 + 0.2 * fine)[:, None]
    alb = mix(mix(wall, frame_col, frm), glass, win)
    roof = torch.tensor([0.32, 0.31, 0.30], dtype=a.dtype) * (1 + 0.8 * fine + 0.4 * stains)[:, None]
    return torch.where(top[:, None], roof, alb)


def _brick(sf, road):
    return _facade(sf, road, brick=True)


def _foliage(sf, road):
    clusters = _noise(sf, 2, 5, 0.8)
    leaves = _noise(sf, 5, 8, 0.85)
    hue = _low(sf)
    alb = mix(sf["colour"], sf["colour2"], (0.5 + 1.5 * hue).clamp(0, 1))
    return alb * (1 + 1.1 * clusters + 0.9 * leaves).clamp(min=0.15)[:, None]


def _bark(sf, road):
    p = sf["p"] * torch.tensor([1.0, 1.0, 0.25], dtype=sf["p"].dtype)
    v = fbm(p, sf["fp"], 3.0, 5, sf["tex"], 0.7, 11)
    return sf["colour"] * (1 + 1.0 * v)[:, None]


def _metal(sf, road):
    v = _noise(sf, 3, 8, 0.6)
    return sf["colour"] * (1 + 0.4 * v)[:, None]


def _plain(sf, road):
    v = _noise(sf, 2, 8)
    return sf["colour"] * (1 + 0.5 * v)[:, None]


def _sign(sf, road):
    a, z, wa, wz = sf["a"], sf["b"], sf["wa"], sf["wb"]
    hx, hz = sf["dims"][:, 0], sf["dims"][:, 2]
    inner = band(a, -hx + 0.07, hx - 0.07, wa) * band(z, 0.07, 2 * hz - 0.07, wz)
    alb = mix(sf["colour2"], sf["colour"], inner)
    face = sf["n"][:, 1].abs() > 0.5
    v = _noise(sf, 3, 8, 0.6)
    back = torch.full_like(alb, 0.45)
    return torch.where(face[:, None], alb, back) * (1 + 0.2 * v)[:, None]


def _car(sf, road):
    n, dims = sf["n"], sf["dims"]
    hx, hy, hz = dims.unbind(-1)
    p, wa, wz = sf["p"], sf["wa"], sf["wb"]
    x, y, z = p.unbind(-1)
    zb = z + hz
    v = _noise(sf, 3, 8, 0.5)
    alb = sf["colour"] * (1 + 0.12 * v)[:, None]
    front = n[:, 0] > 0.5
    back = n[:, 0] < -0.5
    side = n[:, 1].abs() > 0.5
    lamp = band(y.abs(), hy - 0.45, hy - 0.1, wa) * band(zb, 2 * hz - 0.3, 2 * hz - 0.08, wz)
    plate = band(y, -0.26, 0.26, wa) * band(zb, 0.18, 0.32, wz)
    head = torch.tensor([0.95, 0.93, 0.82], dtype=p.dtype).expand_as(alb)
    tail = torch.tensor([0.75, 0.06, 0.05], dtype=p.dtype).expand_as(alb)
    white = torch.tensor([0.9, 0.9, 0.88], dtype=p.dtype).expand_as(alb)
    alb = torch.where(front[:, None], mix(alb, head, lamp), alb)
    alb = torch.where(back[:, None], mix(alb, tail, lamp), alb)
    alb = torch.where((front | back)[:, None], mix(alb, white, plate), alb)
    seams = torch.maximum(
        band(x, 0.25 * hx - 0.015, 0.25 * hx + 0.015, wa), band(x, -0.45 * hx - 0.015, -0.45 * hx + 0.015, wa)
    )
    skirt = band(zb, 0.0, 0.12, wz)
    dark = torch.maximum(seams, skirt) * side.to(p.dtype)
    return alb * (1 - 0.6 * dark)[:, None]


def _cabin(sf, road):
    n, dims = sf["n"], sf["dims"]
    hx = dims[:, 0]
    x = sf["p"][:, 0]
    wa = sf["wa"]
    top = n[:, 2] > 0.5
    side = n[:, 1].abs() > 0.5
    refl = _low(sf)
    fine = _noise(sf, 5, 8, 0.6)
    glass = sf["colour2"] * (0.8 + 2.0 * refl + 0.3 * fine).clamp(min=0.3)[:, None]
    pillar = torch.maximum(band(x.abs(), hx - 0.12, hx + 1.0, wa), band(x, -0.06, 0.06, wa)) * side.to(
        x.dtype
    )
    body = sf["colour"] * (1 + 0.1 * fine)[:, None]
    alb = mix(glass, body, pillar)
    return torch.where(top[:, None], body, alb)


def _tyre(sf, road):
    x, z = sf["p"][:, 0], sf["p"][:, 2]
    side = sf["n"][:, 1].abs() > 0.5
    r = torch.sqrt(x * x + z * z)
    rim = band(r, 0.0, 0.17, sf["fp"]) * side.to(x.dtype)
    v = _noise(sf, 4, 8, 0.6)
    alb = torch.full_like(sf["colour"], 0.07) * (1 + 0.5 * v)[:, None]
    return mix(alb, torch.full_like(alb, 0.55), rim)


def _cone(sf, road):
    H = sf["dims"][:, 2]
    z = sf["zrel"]
    stripe = band(z / H, 0.45, 0.65, sf["wb"] / H)
    v = _noise(sf, 4, 8, 0.6)
    alb = mix(sf["colour"], sf["colour2"], stripe)
    return alb * (1 + 0.3 * v)[:, None]


def _barrier(sf, road):
    a, z = sf["a"], sf["b"]
    striped = hash01(sf["tex"], seed=21) < 0.5
    st = pulse(a + z, 0.8, 0.4, torch.sqrt(sf["wa"] ** 2 + sf["wb"] ** 2)) * striped.to(a.dtype)
    v = _noise(sf, 3, 8)
    alb = mix(sf["colour"], sf["colour2"], st)
    return alb * (1 + 0.45 * v)[:, None]


def _cloth(sf, road):
    H = sf["dims"][:, 2]
    legs = band(sf["zrel"], -1.0, 0.52 * H, sf["wb"])
    v = _noise(sf, 4, 8)
    alb = mix(sf["colour"], sf["colour2"], legs)
    return alb * (1 + 0.4 * v)[:, None]


def _skin(sf, road):
    hair = smoothstep(0.1, 0.4, sf["n"][:, 2])
    v = _noise(sf, 5, 8, 0.6)
    return mix(sf["colour"], sf["colour2"], hair) * (1 + 0.3 * v)[:, None]


_MATERIALS = {
    "asphalt": _asphalt,
    "paving": _paving,
    "kerb": _kerb,
    "grass": _grass,
    "facade": _facade,
    "brick": _brick,
    "foliage": _foliage,
    "bark": _bark,
    "metal": _metal,
    "sign": _sign,
    "car": _car,
    "cabin": _cabin,
    "tyre": _tyre,
    "cone": _cone,
    "barrier": _barrier,
    "cloth": _cloth,
    "skin": _skin,
    "plain": _plain,
}
