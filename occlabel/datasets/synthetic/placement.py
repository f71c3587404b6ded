"""Static object placement along a synthetic street: construction zone, parked vehicles, street furniture,
trees, bicycles and buildings.

:func:`place_static` runs the steps in a fixed order, each drawing from the world's generator, and returns
every static primitive in the world frame. Sides: 0 is the right side of the road (l < 0), 1 the left;
``sg`` is the sign of l on a side. ``busy`` holds per side the s-intervals of the parking strip that are
taken (crosswalks, the construction zone), which parked cars and trees avoid.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from occlabel.conventions import OCC3D_ID
from occlabel.datasets.synthetic.layout import Layout
from occlabel.datasets.synthetic.objects import BRICK, LEAF, PLASTER, Parts, jit, vehicle
from occlabel.datasets.synthetic.prims import FRUSTUM, SPHEROID, Prims

C = OCC3D_ID
Busy = dict[int, list[tuple[float, float]]]


def _sign(side: int) -> float:
    return 1.0 if side == 1 else -1.0


def place_static(rng: np.random.Generator, lay: Layout) -> Prims:
    """Every static primitive of the street (world frame)."""
    S = Parts(rng)
    urban = rng.random() < 0.6
    busy: Busy = {0: [], 1: []}  # occupied s-intervals in the parking strips (construction zones, crosswalks)
    for sc in lay.crosswalks:
        for side in (0, 1):
            busy[side].append((sc - 6.0, sc + 9.0))
    if rng.random() < 0.55:
        _construction_zone(S, rng, lay, busy)
    for side in (0, 1):
        _parked_vehicles(S, rng, lay, busy, side)
    poles: dict[int, list[float]] = {0: [], 1: []}
    lamp_col = jit(rng, (0.38, 0.40, 0.42) if rng.random() < 0.7 else (0.18, 0.26, 0.20))
    for side in (0, 1):
        if rng.random() < 0.85:
            _lamps(S, rng, lay, side, lamp_col, poles)
        _signs(S, rng, lay, side, poles)
        if rng.random() < 0.8:
            _trees(S, rng, lay, side, poles, busy)
        if rng.random() < 0.35:
            _bicycles(S, rng, lay, side)
    for side in (0, 1):
        _buildings(S, rng, lay, side, urban)
        _back_row(S, rng, lay, side, urban)
    return S.prims()


def _construction_zone(S: Parts, rng, lay: Layout, busy: Busy) -> None:
    """Cones along the lane edge and barriers in the parking strip."""
    side = int(rng.integers(2))
    sg = _sign(side)
    zs = lay.ego_s0 + float(rng.uniform(8.0, 60.0))
    zl = float(rng.uniform(10.0, 18.0))
    busy[side].append((zs - 3.0, zs + zl + 3.0))
    cone_col, white = (0.95, 0.38, 0.05), (0.92, 0.92, 0.9)
    for cs in np.arange(zs, zs + zl, float(rng.uniform(1.6, 2.4))):
        x, y, h = lay.place(cs, sg * (lay.lane_w + 0.35))
        S.add(FRUSTUM, (x, y, 0.04), (0.16, 0.03, 0.66), h, C["traffic_cone"], "cone", cone_col, white)
        S.box((x, y, 0.02), (0.19, 0.19, 0.02), h, C["traffic_cone"], "plain", (0.12, 0.12, 0.12))
    bar_col = jit(rng, (0.72, 0.71, 0.68))
    bar2 = (0.8, 0.1, 0.08) if rng.random() < 0.5 else (0.95, 0.95, 0.92)
    for bs in np.arange(zs + 1.0, zs + zl, 2.05):
        x, y, h = lay.place(bs + 1.0, sg * (lay.lane_w + 1.2))
        S.box((x, y, 0.4), (1.0, 0.25, 0.4), h, C["barrier"], "barrier", bar_col, bar2)


def _parked_vehicles(S: Parts, rng, lay: Layout, busy: Busy, side: int) -> None:
    """A row of parked vehicles in one side's parking strip (none with probability 0.12)."""
    if rng.random() < 0.12:
        return
    sg = _sign(side)
    s = lay.s_lo + float(rng.uniform(0, 6))
    while s < lay.s_hi:
        kinds = ("car", "van", "truck", "trailer", "motorcycle")
        kind = kinds[int(np.searchsorted([0.78, 0.86, 0.9, 0.94], rng.random()))]
        length = {"car": 4.8, "van": 5.4, "truck": 9.0, "trailer": 7.0, "motorcycle": 2.1}[kind]
        if rng.random() < 0.28 or any(a < s + length and s < b for a, b in busy[side]):
            s += float(rng.uniform(4.0, 12.0))
            continue
        lc = sg * (lay.lane_w + lay.parking_w / 2 + float(rng.uniform(-0.15, 0.1)))
        if kind == "motorcycle":
            lc = sg * (lay.road_half - 0.6)
        x, y, h = lay.place(s + length / 2, lc)
        yaw = h + (0.0 if side == 0 else math.pi) + float(rng.normal(0, 0.03))
        vehicle(S, rng, kind, x, y, 0.0, yaw)
        s += length + float(rng.uniform(0.6, 2.5))


def _lamps(S: Parts, rng, lay: Layout, side: int, lamp_col, poles) -> None:
    """Street lamps at a regular step along one side."""
    sg, kh = _sign(side), lay.kh
    step = float(rng.uniform(22.0, 32.0))
    for s in np.arange(lay.s_lo + float(rng.uniform(0, step)), lay.s_hi, step):
        lp = lay.road_half + 0.7
        x, y, h = lay.place(s, sg * lp)
        H = float(rng.uniform(6.0, 8.0))
        S.add(FRUSTUM, (x, y, kh), (0.11, 0.07, H), h, C["manmade"], "metal", lamp_col)
        ax, ay, _ = lay.place(s, sg * (lp - 0.8))
        S.box((ax, ay, kh + H - 0.05), (0.05, 0.8, 0.05), h, C["manmade"], "metal", lamp_col)
        hx, hy, _ = lay.place(s, sg * (lp - 1.5))
        S.box((hx, hy, kh + H - 0.12), (0.22, 0.3, 0.08), h, C["manmade"], "metal", (0.2, 0.2, 0.2))
        poles[side].append(float(s))


def _signs(S: Parts, rng, lay: Layout, side: int, poles) -> None:
    """One to three traffic signs on poles at random places along one side."""
    sg, kh = _sign(side), lay.kh
    for _ in range(int(rng.integers(1, 4))):
        s = float(rng.uniform(lay.s_lo, lay.s_hi))
        x, y, h = lay.place(s, sg * (lay.road_half + 0.55))
        S.add(FRUSTUM, (x, y, kh), (0.035, 0.035, 2.3), h, C["manmade"], "metal", (0.55, 0.56, 0.58))
        inner, border = (
            ((0.1, 0.3, 0.7), (0.95, 0.95, 0.95))
            if rng.random() < 0.5
            else ((0.95, 0.95, 0.95), (0.8, 0.1, 0.08))
        )
        face_yaw = h + math.pi / 2 + (0 if side == 0 else math.pi)
        S.box((x, y, kh + 2.3 + 0.3), (0.32, 0.015, 0.3), face_yaw, C["manmade"], "sign", inner, border)
        poles[side].append(s)


def _trees(S: Parts, rng, lay: Layout, side: int, poles, busy: Busy) -> None:
    """A row of trees (trunk and one to three foliage spheroids) clear of poles and short busy zones."""
    sg, kh = _sign(side), lay.kh
    step = float(rng.uniform(8.0, 14.0))
    leaf = LEAF[rng.integers(len(LEAF))]
    for s in np.arange(lay.s_lo + float(rng.uniform(0, step)), lay.s_hi, step):
        s = float(s + rng.uniform(-1.0, 1.0))
        if any(abs(s - p) < 2.5 for p in poles[side]) or any(a < s < b for a, b in busy[side] if b - a < 20):
            continue
        x, y, h = lay.place(s, sg * lay.tree_l[side])
        Ht = float(rng.uniform(2.6, 3.8))
        r0 = float(rng.uniform(0.13, 0.22))
        S.add(
            FRUSTUM,
            (x, y, kh),
            (r0, 0.7 * r0, Ht + 0.8),
            0.0,
            C["vegetation"],
            "bark",
            jit(rng, (0.34, 0.27, 0.2)),
        )
        rxy, rz = float(rng.uniform(1.3, 2.3)), float(rng.uniform(1.2, 2.0))
        lc, lc2 = jit(rng, leaf, 0.15), jit(rng, (0.36, 0.42, 0.14), 0.15)
        S.add(SPHEROID, (x, y, kh + Ht + 0.6 * rz), (rxy, rxy, rz), 0.0, C["vegetation"], "foliage", lc, lc2)
        for _ in range(int(rng.integers(0, 3))):
            a = float(rng.uniform(0, 2 * math.pi))
            d = float(rng.uniform(0.5, 0.9)) * rxy
            r2 = rxy * float(rng.uniform(0.55, 0.75))
            S.add(SPHEROID, (x + d * math.cos(a), y + d * math.sin(a), kh + Ht + 0.6 * rz + float(rng.uniform(-0.3, 0.5))),
                  (r2, r2, r2 * float(rng.uniform(0.8, 1.1))), 0.0, C["vegetation"], "foliage", lc, lc2)  # fmt: skip


def _bicycles(S: Parts, rng, lay: Layout, side: int) -> None:
    """Two to four bicycles parked side by side at the outer edge of one side's sidewalk."""
    sg = _sign(side)
    s = float(rng.uniform(lay.ego_s0, lay.s_hi - 20))
    for k in range(int(rng.integers(2, 5))):
        x, y, h = lay.place(s + 0.7 * k, sg * (lay.walk[side][1] - 0.5))
        vehicle(S, rng, "bicycle", x, y, lay.kh, h + math.pi / 2 + float(rng.normal(0, 0.05)))


def _footprint_clear(lay: Layout, s: float, w: float, depth: float, h: float, sg: float, lf: float):
    """A building's (x, y) and centre |l|, shifted outwards until the footprint's corners all clear the
    facade line |l| = lf (curved streets)."""
    centre_l = lf + depth / 2
    for _ in range(3):
        x, y, _ = lay.place(s + w / 2, sg * centre_l)
        cx = np.array([-w / 2, w / 2, -w / 2, w / 2])
        cy = np.array([-depth / 2, -depth / 2, depth / 2, depth / 2])
        px = x + math.cos(h) * cx - math.sin(h) * cy
        py = y + math.sin(h) * cx + math.cos(h) * cy
        _, lcor = lay.road.project(torch.tensor(px), torch.tensor(py))
        deficit = lf - float(lcor.abs().min())
        if deficit <= 0.01:
            break
        centre_l += deficit + 0.05
    return x, y, centre_l


def _buildings(S: Parts, rng, lay: Layout, side: int, urban: bool) -> None:
    """The front row of buildings along one side (with roof storeys and hedges)."""
    sg, kh = _sign(side), lay.kh
    front = lay.walk[side][1]
    s = lay.s_lo - 20.0
    while s < lay.s_hi + 20.0:
        gap = float(rng.uniform(0.0, 4.0)) if rng.random() < 0.75 else float(rng.uniform(6.0, 16.0))
        s += gap
        w = float(rng.uniform(8.0, 24.0))
        depth = float(rng.uniform(8.0, 16.0))
        height = float(rng.uniform(8.0, 20.0)) if urban else float(rng.uniform(4.5, 9.0))
        setback = float(rng.uniform(0.0, 1.0)) if urban else float(rng.uniform(2.0, 7.0))
        lf = front + setback
        _, _, h = lay.place(s + w / 2, 0.0)
        x, y, centre_l = _footprint_clear(lay, s, w, depth, h, sg, lf)
        brick = rng.random() < 0.3
        col = jit(
            rng, BRICK[rng.integers(len(BRICK))] if brick else PLASTER[rng.integers(len(PLASTER))], 0.06
        )
        glass = jit(rng, (0.16, 0.2, 0.26), 0.25)
        wall = "brick" if brick else "facade"
        S.box((x, y, height / 2), (w / 2, depth / 2, height / 2), h, C["manmade"], wall, col, glass)
        if urban and rng.random() < 0.25:
            h2 = float(rng.uniform(2.5, 6.0))
            x2, y2, _ = lay.place(s + w / 2, sg * (centre_l + 1.5))
            half = (w / 2 - 1.0, depth / 2 - 1.5, h2 / 2)
            S.box((x2, y2, height + h2 / 2), half, h, C["manmade"], "facade", jit(rng, col, 0.05), glass)
        if setback > 2.5 and rng.random() < 0.6:
            xh, yh, _ = lay.place(s + w / 2, sg * (front + 0.6))
            hh = float(rng.uniform(0.7, 1.3))
            half = (w / 2 - 0.5, 0.4, hh / 2)
            S.box(
                (xh, yh, kh + hh / 2),
                half,
                h,
                C["vegetation"],
                "foliage",
                jit(rng, LEAF[0], 0.2),
                (0.3, 0.4, 0.12),
            )
        s += w


def _back_row(S: Parts, rng, lay: Layout, side: int, urban: bool) -> None:
    """A second row of buildings further back, seen through the gaps of the first (no empty fields to the
    horizon)."""
    sg = _sign(side)
    front = lay.walk[side][1]
    s = lay.s_lo - 40.0
    while s < lay.s_hi + 40.0:
        s += float(rng.uniform(0.0, 8.0))
        w = float(rng.uniform(12.0, 30.0))
        depth = float(rng.uniform(10.0, 18.0))
        height = float(rng.uniform(8.0, 26.0)) if urban else float(rng.uniform(5.0, 11.0))
        lf = front + (1.0 if urban else 7.0) + 16.0 + float(rng.uniform(6.0, 12.0))
        x, y, h = lay.place(s + w / 2, sg * (lf + depth / 2))
        col = jit(rng, PLASTER[rng.integers(len(PLASTER))], 0.06)
        glass = jit(rng, (0.16, 0.2, 0.26), 0.25)
        S.box((x, y, height / 2), (w / 2, depth / 2, height / 2), h, C["manmade"], "facade", col, glass)
        s += w
