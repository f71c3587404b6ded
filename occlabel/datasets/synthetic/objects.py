"""Objects of the synthetic street built from primitives: vehicles, pedestrians, and their colour palettes.

:class:`Parts` accumulates primitive rows (numpy) and turns them into a :class:`~.prims.Prims`; the builders
(:func:`vehicle`, :func:`pedestrian`) append one object's parts, drawing its sizes and colours from the
generator they are given. Every draw happens in a fixed order, so a world is a deterministic function of
its seed (see :func:`occlabel.datasets.synthetic.world.build_world`).

Frames: a builder places parts around a ground point (x0, y0, z0) with a heading ``yaw`` (local +x); for a
moving actor that is its own frame (origin under its centre), for a parked vehicle the world frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from occlabel.conventions import OCC3D_ID
from occlabel.datasets.synthetic.materials import MAT
from occlabel.datasets.synthetic.prims import BOX, FRUSTUM, SPHEROID, Prims

C = OCC3D_ID

PLASTER = [
    (0.80, 0.76, 0.68),
    (0.72, 0.66, 0.58),
    (0.86, 0.84, 0.79),
    (0.62, 0.64, 0.66),
    (0.80, 0.70, 0.52),
    (0.68, 0.56, 0.48),
    (0.56, 0.61, 0.63),
    (0.75, 0.62, 0.60),
]
BRICK = [(0.55, 0.30, 0.22), (0.62, 0.38, 0.28), (0.50, 0.33, 0.27), (0.66, 0.48, 0.36)]
CAR = [
    (0.82, 0.82, 0.84),
    (0.10, 0.10, 0.11),
    (0.45, 0.46, 0.48),
    (0.60, 0.08, 0.07),
    (0.10, 0.22, 0.48),
    (0.90, 0.90, 0.88),
    (0.25, 0.32, 0.25),
    (0.70, 0.55, 0.20),
    (0.30, 0.30, 0.33),
]
CLOTH = [
    (0.15, 0.15, 0.18),
    (0.55, 0.12, 0.10),
    (0.12, 0.25, 0.50),
    (0.75, 0.72, 0.65),
    (0.25, 0.40, 0.25),
    (0.60, 0.50, 0.25),
    (0.85, 0.85, 0.85),
    (0.40, 0.28, 0.20),
]
LEAF = [(0.18, 0.32, 0.10), (0.25, 0.38, 0.12), (0.14, 0.27, 0.12), (0.22, 0.30, 0.08)]
SKIN = [(0.85, 0.65, 0.52), (0.62, 0.45, 0.33), (0.40, 0.28, 0.20), (0.92, 0.76, 0.64)]
HAIR = [(0.10, 0.08, 0.06), (0.35, 0.25, 0.15), (0.70, 0.60, 0.40), (0.50, 0.50, 0.50)]
TYRE = (0.07, 0.07, 0.07)
#: vehicle kinds whose Occ3D class has another name
VEHICLE_CLASS = {"van": "car"}


class Parts:
    """Accumulates primitive rows (numpy) before they become a Prims."""

    def __init__(self, rng: np.random.Generator):
        self.rows: list[tuple] = []
        self.rng = rng

    def add(self, kind, centre, dims, yaw, cls, mat, colour, colour2=None, actor=-1):
        colour = np.clip(np.asarray(colour, float), 0, 1)
        colour2 = colour if colour2 is None else np.clip(np.asarray(colour2, float), 0, 1)
        tex = int(self.rng.integers(0, 2**30))
        self.rows.append(
            (
                kind,
                tuple(centre),
                tuple(dims),
                float(yaw),
                cls,
                MAT[mat],
                tuple(colour),
                tuple(colour2),
                tex,
                actor,
            )
        )

    def box(self, centre, half, yaw, cls, mat, colour, colour2=None, actor=-1):
        self.add(BOX, centre, half, yaw, cls, mat, colour, colour2, actor)

    def prims(self) -> Prims:
        if not self.rows:
            z = torch.zeros(0)
            return Prims(
                z.long(), torch.zeros(0, 3), torch.zeros(0, 3), z, z.long(), z.long(), torch.zeros(0, 3),
                torch.zeros(0, 3), z.long(), z.long(),
            )  # fmt: skip
        cols = list(zip(*self.rows, strict=True))
        f32 = lambda v: torch.tensor(np.asarray(v, dtype=np.float64), dtype=torch.float32)  # noqa: E731
        i64 = lambda v: torch.tensor(np.asarray(v, dtype=np.int64))  # noqa: E731
        return Prims(
            kind=i64(cols[0]),
            centre=f32(cols[1]),
            dims=f32(cols[2]),
            yaw=f32(cols[3]),
            cls=i64(cols[4]),
            mat=i64(cols[5]),
            colour=f32(cols[6]),
            colour2=f32(cols[7]),
            tex=i64(cols[8]),
            actor=i64(cols[9]),
        )


def jit(rng, c, amount=0.08):
    """Colour ``c`` with each channel scaled by a random factor in [1 - amount, 1 + amount], clipped."""
    return np.clip(np.asarray(c) * (1 + rng.uniform(-amount, amount, 3)), 0, 1)


# ----------------------------------------------------------------------------------------------------
# Vehicles: one builder per kind; ``part(lx, ly, lz, half, mat, col, col2=None)`` adds a box in the
# vehicle's frame (lx forward, ly left, lz up from its ground point), ``col``/``glass`` are its colours.
# ----------------------------------------------------------------------------------------------------


def _car_or_van(part, rng, kind, col, glass):
    L = rng.uniform(3.9, 4.8) if kind == "car" else rng.uniform(4.8, 5.4)
    W = rng.uniform(1.72, 1.9)
    zt = rng.uniform(0.92, 1.05) if kind == "car" else rng.uniform(1.6, 1.9)
    part(0, 0, (0.3 + zt) / 2, (L / 2, W / 2, (zt - 0.3) / 2), "car", col)
    if kind == "car":
        ch, cl = rng.uniform(0.38, 0.52), L * rng.uniform(0.45, 0.55)
        part(-0.08 * L, 0, zt + ch / 2, (cl / 2, W / 2 - 0.07, ch / 2), "cabin", col, glass)
    for sx in (-1, 1):
        for sy in (-1, 1):
            part(sx * (L / 2 - 0.78), sy * (W / 2 - 0.1), 0.32, (0.32, 0.11, 0.32), "tyre", TYRE)
    return L


def _truck(part, rng, kind, col, glass):
    W, cab, cargo = 2.45, 2.2, rng.uniform(4.5, 6.5)
    L = cab + cargo + 0.2
    part(L / 2 - cab / 2, 0, 1.8, (cab / 2, W / 2 - 0.05, 1.25), "car", col)
    part(L / 2 - cab * 0.55, 0, 2.5, (cab * 0.42, W / 2 - 0.04, 0.5), "cabin", col, glass)
    part(-L / 2 + cargo / 2, 0, 2.2, (cargo / 2, W / 2, 1.35), "plain", jit(rng, (0.85, 0.85, 0.83), 0.1))
    for lx in (L / 2 - 1.2, -L / 2 + 1.3, -L / 2 + 2.5):
        for sy in (-1, 1):
            part(lx, sy * (W / 2 - 0.15), 0.48, (0.48, 0.15, 0.48), "tyre", TYRE)
    return L


def _bus(part, rng, kind, col, glass):
    L, W = rng.uniform(10.5, 12.0), 2.5
    part(0, 0, 0.35 + 0.9, (L / 2, W / 2, 0.9), "car", col)
    part(0, 0, 2.15 + 0.55, (L / 2, W / 2, 0.55), "cabin", col, glass)
    for lx in (L / 2 - 2.2, -L / 2 + 2.6):
        for sy in (-1, 1):
            part(lx, sy * (W / 2 - 0.15), 0.5, (0.5, 0.15, 0.5), "tyre", TYRE)
    return L


def _trailer(part, rng, kind, col, glass):
    L, W = rng.uniform(4.5, 7.0), 2.3
    part(0.4, 0, 0.9 + 1.2, (L / 2 - 0.4, W / 2, 1.2), "plain", jit(rng, (0.75, 0.76, 0.78)))
    part(-L / 2 + 0.3, 0, 0.6, (0.3, 0.06, 0.06), "metal", (0.3, 0.3, 0.3))
    for sy in (-1, 1):
        part(0.4, sy * (W / 2 - 0.2), 0.42, (0.42, 0.14, 0.42), "tyre", TYRE)
    return L


def _motorcycle(part, rng, kind, col, glass):
    part(0, 0, 0.65, (0.6, 0.18, 0.25), "car", col)
    part(-0.25, 0, 0.95, (0.35, 0.14, 0.06), "tyre", (0.1, 0.1, 0.1))
    for lx in (-0.72, 0.72):
        part(lx, 0, 0.31, (0.31, 0.06, 0.31), "tyre", TYRE)
    return 2.1


def _bicycle(part, rng, kind, col, glass):
    for lx in (-0.52, 0.52):
        part(lx, 0, 0.34, (0.33, 0.02, 0.33), "tyre", (0.08, 0.08, 0.08))
    part(0, 0, 0.62, (0.45, 0.025, 0.03), "metal", col)
    part(-0.2, 0, 0.9, (0.12, 0.05, 0.03), "metal", (0.1, 0.1, 0.1))
    part(0.42, 0, 0.98, (0.03, 0.25, 0.02), "metal", (0.2, 0.2, 0.2))
    return 1.75


#: vehicle kind -> builder (part, rng, kind, colour, glass colour) -> length (m)
VEHICLES = {
    "car": _car_or_van,
    "van": _car_or_van,
    "truck": _truck,
    "bus": _bus,
    "trailer": _trailer,
    "motorcycle": _motorcycle,
    "bicycle": _bicycle,
}


def vehicle(P: Parts, rng, kind: str, x0, y0, z0, yaw, actor=-1, colour=None):
    """Append a vehicle's boxes. (x0, y0, z0): ground point under its centre (actor frame for actors,
    world for parked ones); yaw: heading of its local +x. Returns its length."""
    c, s = math.cos(yaw), math.sin(yaw)
    cls = C[VEHICLE_CLASS.get(kind, kind)]

    def part(lx, ly, lz, half, mat, col, col2=None):
        centre = (x0 + c * lx - s * ly, y0 + s * lx + c * ly, z0 + lz)
        P.box(centre, half, yaw, cls, mat, col, col2, actor)

    col = jit(rng, colour if colour is not None else CAR[rng.integers(len(CAR))], 0.05)
    glass = jit(rng, (0.10, 0.12, 0.15), 0.2)
    if kind not in VEHICLES:
        raise ValueError(kind)
    return VEHICLES[kind](part, rng, kind, col, glass)


def pedestrian(P: Parts, rng, actor: int, z0: float):
    """Body (frustum: legs in colour2 below half height, torso above) and head (spheroid, hair on top)."""
    h, r0 = rng.uniform(1.32, 1.52), rng.uniform(0.15, 0.19)
    top, legs = CLOTH[rng.integers(len(CLOTH))], CLOTH[rng.integers(len(CLOTH))]
    ped = C["pedestrian"]
    P.add(FRUSTUM, (0, 0, z0), (r0, r0 + 0.04, h), 0.0, ped, "cloth", jit(rng, top), jit(rng, legs), actor)
    skin, hair = SKIN[rng.integers(len(SKIN))], HAIR[rng.integers(len(HAIR))]
    P.add(SPHEROID, (0.0, 0, z0 + h + 0.15), (0.1, 0.1, 0.125), 0.0, ped, "skin", skin, hair, actor)
