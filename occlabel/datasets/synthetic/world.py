"""The procedural street world: layout generation, moving actors, ego trajectory, sun and exposure.

A world is generated from a seed and is a pure function of time afterwards:

- ``World.prims_at(t)``: every solid at time t (world frame), static ones followed by the actors' parts;
- ``World.ego_pose(t)``: ``T_world_from_ego`` <np.float64: 4, 4>; ego frame x forward, y left, z up,
  origin on the road under the rear axle (the ego car drives in the right-hand lane, +s direction);
- ``World.exposure(t, camera_index)``: the per-image exposure gain in [0.9, 1.1];
- rendering, LiDAR and ground-truth occupancy live in render.py and occupancy.py and take a World.

World frame: x, y horizontal, z up, the flat ground at z = 0 (road) / ``kerb_h`` (everything else).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from occlabel.conventions import OCC3D_ID
from occlabel.datasets.synthetic.prims import BOX, FRUSTUM, SPHEROID, Prims
from occlabel.datasets.synthetic.road import SIDEWALK, TERRAIN, Road
from occlabel.datasets.synthetic.texture import MAT

C = OCC3D_ID
LEAD = 300.0  # straight lead-in before the curvy part of the street (metres of arc length)


@dataclass
class World:
    """A generated street (see the module docstring).

    Attributes:
        seed: the seed it was generated from.
        road: centreline and cross-section.
        static: static primitives (world frame).
        parts: parts of moving actors, in their actor's frame (``parts.actor`` indexes the actor arrays).
        actor_s0, actor_v, actor_l, actor_yaw: ``[A]`` float64 actor trajectories: arc length at t = 0,
            signed speed along s (m/s), lateral offset, yaw relative to the road heading (0 or pi).
        actor_kind: names of the actors ("car", "truck", "bus", "pedestrian").
        ego_s0, ego_speed: ego arc length at t = 0 and speed (m/s, >= 0).
        ego_l, weave_amp, weave_len, weave_phase: ego lateral offset l(s) = ego_l + amp sin(2 pi s / len + phase).
        sun: <np.float64: 3> unit vector towards the sun (world); ambient, sun_k: lighting strengths.
        gain: exposure parameters (see ``exposure``).
        extent: (s_min, s_max) arc-length span where objects were placed.
    """

    seed: int
    road: Road
    static: Prims
    parts: Prims
    actor_s0: np.ndarray
    actor_v: np.ndarray
    actor_l: np.ndarray
    actor_yaw: np.ndarray
    actor_kind: list[str]
    ego_s0: float
    ego_speed: float
    ego_l: float
    weave_amp: float
    weave_len: float
    weave_phase: float
    sun: np.ndarray
    ambient: float
    sun_k: float
    gain: dict = field(default_factory=dict)
    extent: tuple[float, float] = (0.0, 0.0)
    asphalt: tuple[float, float, float] = (0.3, 0.3, 0.31)
    ground_colours: dict = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------
    def actor_poses(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (x, y, yaw) of every actor at time t, each <np.float64: A>."""
        if len(self.actor_s0) == 0:
            z = np.zeros(0)
            return z, z, z
        s = torch.as_tensor(self.actor_s0 + self.actor_v * t, dtype=torch.float64)
        x, y, h = self.road.pose(s, torch.as_tensor(self.actor_l, dtype=torch.float64))
        return x.numpy(), y.numpy(), h.numpy() + self.actor_yaw

    def prims_at(self, t: float) -> Prims:
        """All primitives at time t in the world frame (static first, then actor parts)."""
        if len(self.parts) == 0:
            return self.static
        x, y, yaw = self.actor_poses(t)
        a = self.parts.actor
        yaw_t = torch.as_tensor(yaw, dtype=torch.float32)[a]
        c, s = torch.cos(yaw_t), torch.sin(yaw_t)
        lc = self.parts.centre
        centre = torch.stack(
            [
                c * lc[:, 0] - s * lc[:, 1] + torch.as_tensor(x, dtype=torch.float32)[a],
                s * lc[:, 0] + c * lc[:, 1] + torch.as_tensor(y, dtype=torch.float32)[a],
                lc[:, 2],
            ],
            -1,
        )
        moved = Prims(**{k: getattr(self.parts, k) for k in self.parts.__dataclass_fields__})
        moved.centre = centre
        moved.yaw = self.parts.yaw + yaw_t
        return Prims.cat([self.static, moved])

    def ego_state(self, t: float) -> tuple[float, float, float]:
        """Ego (x, y, yaw) in the world at time t."""
        s = self.ego_s0 + self.ego_speed * t
        k = 2 * math.pi / self.weave_len
        l = self.ego_l + self.weave_amp * math.sin(k * s + self.weave_phase)
        dl = self.weave_amp * k * math.cos(k * s + self.weave_phase)
        x, y, h = self.road.pose(
            torch.tensor([s], dtype=torch.float64), torch.tensor([l], dtype=torch.float64)
        )
        return float(x[0]), float(y[0]), float(h[0]) + math.atan(dl)

    def ego_pose(self, t: float) -> np.ndarray:
        """``T_world_from_ego`` <np.float64: 4, 4> at time t (upright: yaw only, origin at z = 0)."""
        x, y, yaw = self.ego_state(t)
        T = np.eye(4)
        T[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
        T[0, 3], T[1, 3] = x, y
        return T

    def exposure(self, t: float, camera_index: int = 0) -> float:
        """Exposure gain of camera ``camera_index`` at time t: a smooth function of time in [0.9, 1.1]
        (two slow sinusoids, amplitudes 0.05 and 0.025, plus a per-camera offset within +-0.015)."""
        g = self.gain
        v = (
            1.0
            + 0.05 * math.sin(2 * math.pi * t / g["p1"] + g["f1"])
            + 0.025 * math.sin(2 * math.pi * t / g["p2"] + g["f2"])
            + g["cam"][camera_index % len(g["cam"])]
        )
        return float(min(max(v, 0.9), 1.1))

    # ------------------------------------------------------------------------------------------------
    # Ground truth queries (thin wrappers; see render.py and occupancy.py)
    # ------------------------------------------------------------------------------------------------
    def occupancy(self, T_world_from_ego: np.ndarray, grid=None, t: float = 0.0) -> np.ndarray:
        """Occupancy semantics <np.uint8: X, Y, Z> (Occ3D ids, 17 free) on ``grid`` (default
        ``GRIDS["occ3d"]``) in the ego frame ``T_world_from_ego``, at time t."""
        from occlabel.conventions import GRIDS
        from occlabel.datasets.synthetic.occupancy import occupancy

        return occupancy(self, T_world_from_ego, GRIDS["occ3d"] if grid is None else grid, t)

    def render(self, cams: list[dict], T_world_from_ego: np.ndarray, t: float, shadows: bool = True) -> dict:
        """Images and per-pixel ground truth of cameras (see ``render.render_cameras``)."""
        from occlabel.datasets.synthetic.render import render_cameras

        return render_cameras(self, cams, T_world_from_ego, t, shadows=shadows)

    def lidar(self, T_world_from_ego: np.ndarray, t: float) -> dict:
        """A LiDAR sweep from the ego car (see ``render.render_lidar``)."""
        from occlabel.datasets.synthetic.render import render_lidar

        return render_lidar(self, T_world_from_ego, t)

    def summary(self) -> dict:
        """JSON-friendly description (counts, ego speed, sun) for the dataset's synthetic.json."""
        counts: dict[str, int] = {}
        for k in self.actor_kind:
            counts[k] = counts.get(k, 0) + 1
        return {
            "seed": self.seed,
            "ego_speed_mps": self.ego_speed,
            "static_primitives": len(self.static),
            "moving_actors": counts,
            "sun_direction_world": [float(v) for v in self.sun],
            "curvature_per_m": [float(v) for v in self.road.seg_kappa],
            "segment_length_m": [float(v) for v in self.road.seg_len[:-1]],
        }


# ----------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------

_PLASTER = [
    (0.80, 0.76, 0.68),
    (0.72, 0.66, 0.58),
    (0.86, 0.84, 0.79),
    (0.62, 0.64, 0.66),
    (0.80, 0.70, 0.52),
    (0.68, 0.56, 0.48),
    (0.56, 0.61, 0.63),
    (0.75, 0.62, 0.60),
]
_BRICK = [(0.55, 0.30, 0.22), (0.62, 0.38, 0.28), (0.50, 0.33, 0.27), (0.66, 0.48, 0.36)]
_CAR = [
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
_CLOTH = [
    (0.15, 0.15, 0.18),
    (0.55, 0.12, 0.10),
    (0.12, 0.25, 0.50),
    (0.75, 0.72, 0.65),
    (0.25, 0.40, 0.25),
    (0.60, 0.50, 0.25),
    (0.85, 0.85, 0.85),
    (0.40, 0.28, 0.20),
]
_LEAF = [(0.18, 0.32, 0.10), (0.25, 0.38, 0.12), (0.14, 0.27, 0.12), (0.22, 0.30, 0.08)]
_SKIN = [(0.85, 0.65, 0.52), (0.62, 0.45, 0.33), (0.40, 0.28, 0.20), (0.92, 0.76, 0.64)]
_HAIR = [(0.10, 0.08, 0.06), (0.35, 0.25, 0.15), (0.70, 0.60, 0.40), (0.50, 0.50, 0.50)]


class _Parts:
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


def _jit(rng, c, amount=0.08):
    return np.clip(np.asarray(c) * (1 + rng.uniform(-amount, amount, 3)), 0, 1)


_TYRE = (0.07, 0.07, 0.07)
_VEHICLE_CLASS = {"van": "car"}


def _vehicle(P: _Parts, rng, kind: str, x0, y0, z0, yaw, actor=-1, colour=None):
    """Append a vehicle's boxes. (x0, y0, z0): ground point under its centre (actor frame for actors,
    world for parked ones); yaw: heading of its local +x. Returns its length."""
    c, s = math.cos(yaw), math.sin(yaw)
    cls = C[_VEHICLE_CLASS.get(kind, kind)]

    def part(lx, ly, lz, half, mat, col, col2=None):
        centre = (x0 + c * lx - s * ly, y0 + s * lx + c * ly, z0 + lz)
        P.box(centre, half, yaw, cls, mat, col, col2, actor)

    col = _jit(rng, colour if colour is not None else _CAR[rng.integers(len(_CAR))], 0.05)
    glass = _jit(rng, (0.10, 0.12, 0.15), 0.2)
    if kind in ("car", "van"):
        L = rng.uniform(3.9, 4.8) if kind == "car" else rng.uniform(4.8, 5.4)
        W = rng.uniform(1.72, 1.9)
        zt = rng.uniform(0.92, 1.05) if kind == "car" else rng.uniform(1.6, 1.9)
        part(0, 0, (0.3 + zt) / 2, (L / 2, W / 2, (zt - 0.3) / 2), "car", col)
        if kind == "car":
            ch, cl = rng.uniform(0.38, 0.52), L * rng.uniform(0.45, 0.55)
            part(-0.08 * L, 0, zt + ch / 2, (cl / 2, W / 2 - 0.07, ch / 2), "cabin", col, glass)
        for sx in (-1, 1):
            for sy in (-1, 1):
                part(sx * (L / 2 - 0.78), sy * (W / 2 - 0.1), 0.32, (0.32, 0.11, 0.32), "tyre", _TYRE)
        return L
    if kind == "truck":
        W, cab, cargo = 2.45, 2.2, rng.uniform(4.5, 6.5)
        L = cab + cargo + 0.2
        part(L / 2 - cab / 2, 0, 1.8, (cab / 2, W / 2 - 0.05, 1.25), "car", col)
        part(L / 2 - cab * 0.55, 0, 2.5, (cab * 0.42, W / 2 - 0.04, 0.5), "cabin", col, glass)
        part(
            -L / 2 + cargo / 2, 0, 2.2, (cargo / 2, W / 2, 1.35), "plain", _jit(rng, (0.85, 0.85, 0.83), 0.1)
        )
        for lx in (L / 2 - 1.2, -L / 2 + 1.3, -L / 2 + 2.5):
            for sy in (-1, 1):
                part(lx, sy * (W / 2 - 0.15), 0.48, (0.48, 0.15, 0.48), "tyre", _TYRE)
        return L
    if kind == "bus":
        L, W = rng.uniform(10.5, 12.0), 2.5
        part(0, 0, 0.35 + 0.9, (L / 2, W / 2, 0.9), "car", col)
        part(0, 0, 2.15 + 0.55, (L / 2, W / 2, 0.55), "cabin", col, glass)
        for lx in (L / 2 - 2.2, -L / 2 + 2.6):
            for sy in (-1, 1):
                part(lx, sy * (W / 2 - 0.15), 0.5, (0.5, 0.15, 0.5), "tyre", _TYRE)
        return L
    if kind == "trailer":
        L, W = rng.uniform(4.5, 7.0), 2.3
        part(0.4, 0, 0.9 + 1.2, (L / 2 - 0.4, W / 2, 1.2), "plain", _jit(rng, (0.75, 0.76, 0.78)))
        part(-L / 2 + 0.3, 0, 0.6, (0.3, 0.06, 0.06), "metal", (0.3, 0.3, 0.3))
        for sy in (-1, 1):
            part(0.4, sy * (W / 2 - 0.2), 0.42, (0.42, 0.14, 0.42), "tyre", _TYRE)
        return L
    if kind == "motorcycle":
        part(0, 0, 0.65, (0.6, 0.18, 0.25), "car", col)
        part(-0.25, 0, 0.95, (0.35, 0.14, 0.06), "tyre", (0.1, 0.1, 0.1))
        for lx in (-0.72, 0.72):
            part(lx, 0, 0.31, (0.31, 0.06, 0.31), "tyre", _TYRE)
        return 2.1
    if kind == "bicycle":
        for lx in (-0.52, 0.52):
            part(lx, 0, 0.34, (0.33, 0.02, 0.33), "tyre", (0.08, 0.08, 0.08))
        part(0, 0, 0.62, (0.45, 0.025, 0.03), "metal", col)
        part(-0.2, 0, 0.9, (0.12, 0.05, 0.03), "metal", (0.1, 0.1, 0.1))
        part(0.42, 0, 0.98, (0.03, 0.25, 0.02), "metal", (0.2, 0.2, 0.2))
        return 1.75
    raise ValueError(kind)


def _pedestrian(P: _Parts, rng, actor: int, z0: float):
    """Body (frustum: legs in colour2 below half height, torso above) and head (spheroid, hair on top)."""
    h, r0 = rng.uniform(1.32, 1.52), rng.uniform(0.15, 0.19)
    top, legs = _CLOTH[rng.integers(len(_CLOTH))], _CLOTH[rng.integers(len(_CLOTH))]
    ped = C["pedestrian"]
    P.add(FRUSTUM, (0, 0, z0), (r0, r0 + 0.04, h), 0.0, ped, "cloth", _jit(rng, top), _jit(rng, legs), actor)
    skin, hair = _SKIN[rng.integers(len(_SKIN))], _HAIR[rng.integers(len(_HAIR))]
    P.add(SPHEROID, (0.0, 0, z0 + h + 0.15), (0.1, 0.1, 0.125), 0.0, ped, "skin", skin, hair, actor)


def build_world(
    seed: int = 0, duration: float = 2.0, ego_speed: float | None = None, scene_index: int = 0
) -> World:
    """Generate a street.

    Args:
        seed: master seed; the world is a deterministic function of (seed, scene_index).
        duration: seconds the ego car drives (objects are placed to cover that stretch and a margin).
        ego_speed: m/s along the road; None draws it in [5, 10]; 0 keeps the ego car parked.
        scene_index: index of the scene within a dataset.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(scene_index), 20250311]))
    v_ego = float(rng.uniform(5.0, 10.0)) if ego_speed is None else float(ego_speed)
    if v_ego < 0:
        raise ValueError("ego_speed must be >= 0")
    travel = v_ego * duration
    ahead, behind = 130.0, 90.0
    ego_s0 = LEAD + float(rng.uniform(-20.0, 30.0))
    seg_len, seg_k = Road.random(rng, length=travel + ahead + 80.0, lead=LEAD)
    lane_w = float(rng.uniform(3.1, 3.6))
    parking_w = float(rng.uniform(2.0, 2.5))
    road_half = lane_w + parking_w
    bands: list[list[tuple[float, int, int]]] = []
    walk: list[tuple[float, float]] = []  # sidewalk (inner, outer) |l| per side
    tree_l: list[float] = []
    for _ in range(2):
        e = road_half + 0.25
        b = [(e, SIDEWALK, MAT["kerb"])]
        if rng.random() < 0.4:
            verge = float(rng.uniform(1.2, 2.2))
            b.append((e + verge, TERRAIN, MAT["grass"]))
            tree_l.append(e + verge / 2)
            e += verge
            w = float(rng.uniform(1.8, 3.0))
        else:
            w = float(rng.uniform(2.6, 4.5))
            tree_l.append(e + 0.8)
        b.append((e + w, SIDEWALK, MAT["paving"]))
        walk.append((e, e + w))
        b.append((math.inf, TERRAIN, MAT["grass"]))
        bands.append(b)
    s_lo, s_hi = ego_s0 - behind, ego_s0 + travel + ahead
    crosswalks = []
    if rng.random() < 0.6:
        crosswalks.append(ego_s0 + travel * 0.5 + float(rng.uniform(20.0, 50.0)))
    road = Road.from_segments(
        seg_len,
        seg_k,
        heading0=float(rng.uniform(-math.pi, math.pi)),
        lane_w=lane_w,
        road_half=road_half,
        kerb_h=0.15,
        bands=bands,
        centre_dashed=bool(rng.random() < 0.6),
        crosswalks=crosswalks,
    )
    kh = road.kerb_h

    def place(s, l):
        x, y, h = road.pose(
            torch.tensor([float(s)], dtype=torch.float64), torch.tensor([float(l)], dtype=torch.float64)
        )
        return float(x[0]), float(y[0]), float(h[0])

    S = _Parts(rng)
    urban = rng.random() < 0.6
    busy = {0: [], 1: []}  # occupied s-intervals in the parking strips (construction zones, crosswalks)
    for sc in crosswalks:
        for side in (0, 1):
            busy[side].append((sc - 6.0, sc + 9.0))

    # --- construction zone: cones along the lane edge and barriers in the parking strip ----------------
    if rng.random() < 0.55:
        side = int(rng.integers(2))
        sg = 1.0 if side == 1 else -1.0
        zs = ego_s0 + float(rng.uniform(8.0, 60.0))
        zl = float(rng.uniform(10.0, 18.0))
        busy[side].append((zs - 3.0, zs + zl + 3.0))
        cone_col, white = (0.95, 0.38, 0.05), (0.92, 0.92, 0.9)
        for cs in np.arange(zs, zs + zl, float(rng.uniform(1.6, 2.4))):
            x, y, h = place(cs, sg * (lane_w + 0.35))
            S.add(FRUSTUM, (x, y, 0.04), (0.16, 0.03, 0.66), h, C["traffic_cone"], "cone", cone_col, white)
            S.box((x, y, 0.02), (0.19, 0.19, 0.02), h, C["traffic_cone"], "plain", (0.12, 0.12, 0.12))
        bar_col = _jit(rng, (0.72, 0.71, 0.68))
        bar2 = (0.8, 0.1, 0.08) if rng.random() < 0.5 else (0.95, 0.95, 0.92)
        for bs in np.arange(zs + 1.0, zs + zl, 2.05):
            x, y, h = place(bs + 1.0, sg * (lane_w + 1.2))
            S.box((x, y, 0.4), (1.0, 0.25, 0.4), h, C["barrier"], "barrier", bar_col, bar2)

    # --- parked vehicles ---------------------------------------------------------------------------------
    for side in (0, 1):
        if rng.random() < 0.12:
            continue
        sg = 1.0 if side == 1 else -1.0
        s = s_lo + float(rng.uniform(0, 6))
        while s < s_hi:
            kinds = ("car", "van", "truck", "trailer", "motorcycle")
            kind = kinds[int(np.searchsorted([0.78, 0.86, 0.9, 0.94], rng.random()))]
            length = {"car": 4.8, "van": 5.4, "truck": 9.0, "trailer": 7.0, "motorcycle": 2.1}[kind]
            if rng.random() < 0.28 or any(a < s + length and s < b for a, b in busy[side]):
                s += float(rng.uniform(4.0, 12.0))
                continue
            lc = sg * (lane_w + parking_w / 2 + float(rng.uniform(-0.15, 0.1)))
            if kind == "motorcycle":
                lc = sg * (road_half - 0.6)
            x, y, h = place(s + length / 2, lc)
            yaw = h + (0.0 if side == 0 else math.pi) + float(rng.normal(0, 0.03))
            _vehicle(S, rng, kind, x, y, 0.0, yaw)
            s += length + float(rng.uniform(0.6, 2.5))

    # --- street lamps, signs, trees, bicycles ------------------------------------------------------------
    poles: dict[int, list[float]] = {0: [], 1: []}
    lamp_col = _jit(rng, (0.38, 0.40, 0.42) if rng.random() < 0.7 else (0.18, 0.26, 0.20))
    for side in (0, 1):
        sg = 1.0 if side == 1 else -1.0
        if rng.random() < 0.85:
            step = float(rng.uniform(22.0, 32.0))
            for s in np.arange(s_lo + float(rng.uniform(0, step)), s_hi, step):
                lp = road_half + 0.7
                x, y, h = place(s, sg * lp)
                H = float(rng.uniform(6.0, 8.0))
                S.add(FRUSTUM, (x, y, kh), (0.11, 0.07, H), h, C["manmade"], "metal", lamp_col)
                ax, ay, _ = place(s, sg * (lp - 0.8))
                S.box((ax, ay, kh + H - 0.05), (0.05, 0.8, 0.05), h, C["manmade"], "metal", lamp_col)
                hx, hy, _ = place(s, sg * (lp - 1.5))
                S.box((hx, hy, kh + H - 0.12), (0.22, 0.3, 0.08), h, C["manmade"], "metal", (0.2, 0.2, 0.2))
                poles[side].append(float(s))
        for _ in range(int(rng.integers(1, 4))):
            s = float(rng.uniform(s_lo, s_hi))
            x, y, h = place(s, sg * (road_half + 0.55))
            S.add(FRUSTUM, (x, y, kh), (0.035, 0.035, 2.3), h, C["manmade"], "metal", (0.55, 0.56, 0.58))
            inner, border = (
                ((0.1, 0.3, 0.7), (0.95, 0.95, 0.95))
                if rng.random() < 0.5
                else ((0.95, 0.95, 0.95), (0.8, 0.1, 0.08))
            )
            face_yaw = h + math.pi / 2 + (0 if side == 0 else math.pi)
            S.box((x, y, kh + 2.3 + 0.3), (0.32, 0.015, 0.3), face_yaw, C["manmade"], "sign", inner, border)
            poles[side].append(s)
        if rng.random() < 0.8:
            step = float(rng.uniform(8.0, 14.0))
            leaf = _LEAF[rng.integers(len(_LEAF))]
            for s in np.arange(s_lo + float(rng.uniform(0, step)), s_hi, step):
                s = float(s + rng.uniform(-1.0, 1.0))
                if any(abs(s - p) < 2.5 for p in poles[side]) or any(
                    a < s < b for a, b in busy[side] if b - a < 20
                ):
                    continue
                x, y, h = place(s, sg * tree_l[side])
                Ht = float(rng.uniform(2.6, 3.8))
                r0 = float(rng.uniform(0.13, 0.22))
                S.add(
                    FRUSTUM,
                    (x, y, kh),
                    (r0, 0.7 * r0, Ht + 0.8),
                    0.0,
                    C["vegetation"],
                    "bark",
                    _jit(rng, (0.34, 0.27, 0.2)),
                )
                rxy, rz = float(rng.uniform(1.3, 2.3)), float(rng.uniform(1.2, 2.0))
                lc, lc2 = _jit(rng, leaf, 0.15), _jit(rng, (0.36, 0.42, 0.14), 0.15)
                S.add(
                    SPHEROID,
                    (x, y, kh + Ht + 0.6 * rz),
                    (rxy, rxy, rz),
                    0.0,
                    C["vegetation"],
                    "foliage",
                    lc,
                    lc2,
                )
                for _ in range(int(rng.integers(0, 3))):
                    a = float(rng.uniform(0, 2 * math.pi))
                    d = float(rng.uniform(0.5, 0.9)) * rxy
                    r2 = rxy * float(rng.uniform(0.55, 0.75))
                    S.add(SPHEROID, (x + d * math.cos(a), y + d * math.sin(a), kh + Ht + 0.6 * rz + float(rng.uniform(-0.3, 0.5))),
                          (r2, r2, r2 * float(rng.uniform(0.8, 1.1))), 0.0, C["vegetation"], "foliage", lc, lc2)  # fmt: skip
        if rng.random() < 0.35:
            s = float(rng.uniform(ego_s0, s_hi - 20))
            for k in range(int(rng.integers(2, 5))):
                x, y, h = place(s + 0.7 * k, sg * (walk[side][1] - 0.5))
                _vehicle(S, rng, "bicycle", x, y, kh, h + math.pi / 2 + float(rng.normal(0, 0.05)))

    # --- buildings, hedges -------------------------------------------------------------------------------
    for side in (0, 1):
        sg = 1.0 if side == 1 else -1.0
        front = walk[side][1]
        s = s_lo - 20.0
        while s < s_hi + 20.0:
            gap = float(rng.uniform(0.0, 4.0)) if rng.random() < 0.75 else float(rng.uniform(6.0, 16.0))
            s += gap
            w = float(rng.uniform(8.0, 24.0))
            depth = float(rng.uniform(8.0, 16.0))
            height = float(rng.uniform(8.0, 20.0)) if urban else float(rng.uniform(4.5, 9.0))
            setback = float(rng.uniform(0.0, 1.0)) if urban else float(rng.uniform(2.0, 7.0))
            lf = front + setback
            _, _, h = place(s + w / 2, 0.0)
            centre_l = lf + depth / 2
            # shift outwards until the footprint's corners all clear the facade line (curved streets)
            for _ in range(3):
                x, y, _ = place(s + w / 2, sg * centre_l)
                cx = np.array([-w / 2, w / 2, -w / 2, w / 2])
                cy = np.array([-depth / 2, -depth / 2, depth / 2, depth / 2])
                px = x + math.cos(h) * cx - math.sin(h) * cy
                py = y + math.sin(h) * cx + math.cos(h) * cy
                _, lcor = road.project(torch.tensor(px), torch.tensor(py))
                deficit = lf - float(lcor.abs().min())
                if deficit <= 0.01:
                    break
                centre_l += deficit + 0.05
            brick = rng.random() < 0.3
            col = _jit(
                rng,
                _BRICK[rng.integers(len(_BRICK))] if brick else _PLASTER[rng.integers(len(_PLASTER))],
                0.06,
            )
            glass = _jit(rng, (0.16, 0.2, 0.26), 0.25)
            S.box(
                (x, y, height / 2),
                (w / 2, depth / 2, height / 2),
                h,
                C["manmade"],
                "brick" if brick else "facade",
                col,
                glass,
            )
            if urban and rng.random() < 0.25:
                h2 = float(rng.uniform(2.5, 6.0))
                x2, y2, _ = place(s + w / 2, sg * (centre_l + 1.5))
                S.box(
                    (x2, y2, height + h2 / 2),
                    (w / 2 - 1.0, depth / 2 - 1.5, h2 / 2),
                    h,
                    C["manmade"],
                    "facade",
                    _jit(rng, col, 0.05),
                    glass,
                )
            if setback > 2.5 and rng.random() < 0.6:
                xh, yh, _ = place(s + w / 2, sg * (front + 0.6))
                hh = float(rng.uniform(0.7, 1.3))
                S.box(
                    (xh, yh, kh + hh / 2),
                    (w / 2 - 0.5, 0.4, hh / 2),
                    h,
                    C["vegetation"],
                    "foliage",
                    _jit(rng, _LEAF[0], 0.2),
                    (0.3, 0.4, 0.12),
                )
            s += w
        # a second row further back, seen through the gaps of the first (no empty fields to the horizon)
        s = s_lo - 40.0
        while s < s_hi + 40.0:
            s += float(rng.uniform(0.0, 8.0))
            w = float(rng.uniform(12.0, 30.0))
            depth = float(rng.uniform(10.0, 18.0))
            height = float(rng.uniform(8.0, 26.0)) if urban else float(rng.uniform(5.0, 11.0))
            lf = front + (1.0 if urban else 7.0) + 16.0 + float(rng.uniform(6.0, 12.0))
            x, y, h = place(s + w / 2, sg * (lf + depth / 2))
            col = _jit(rng, _PLASTER[rng.integers(len(_PLASTER))], 0.06)
            glass = _jit(rng, (0.16, 0.2, 0.26), 0.25)
            S.box((x, y, height / 2), (w / 2, depth / 2, height / 2), h, C["manmade"], "facade", col, glass)
            s += w

    # --- moving actors -------------------------------------------------------------------------------------
    A = _Parts(rng)
    a_s0, a_v, a_l, a_yaw, kinds = [], [], [], [], []

    def add_vehicle(s0, v, l, yaw_off):
        r = rng.random()
        kind = "car" if r < 0.84 else "truck" if r < 0.92 else "bus"
        _vehicle(A, rng, kind, 0.0, 0.0, 0.0, 0.0, actor=len(a_s0))
        a_s0.append(s0)
        a_v.append(v)
        a_l.append(l)
        a_yaw.append(yaw_off)
        kinds.append(kind)

    # opposite lane (towards -s): leaders (smaller s) are fastest, so gaps only grow
    n_opp = int(rng.integers(1, 5))
    starts = np.sort(ego_s0 + rng.uniform(-30.0, 160.0 + travel, n_opp))
    starts = starts + np.arange(n_opp) * 14.0
    speeds = -np.sort(rng.uniform(6.0, 12.0, n_opp))[::-1]
    for s0, v in zip(starts, speeds, strict=True):
        add_vehicle(float(s0), float(v), lane_w / 2, math.pi)
    # ego lane ahead (leaders, larger s, fastest; the nearest is faster than the ego car)
    n_ahead = int(rng.integers(0, 3))
    s0 = ego_s0 + float(rng.uniform(14.0, 35.0))
    v = v_ego + float(rng.uniform(0.5, 3.0))
    for _ in range(n_ahead):
        add_vehicle(s0, v, -lane_w / 2, 0.0)
        s0 += float(rng.uniform(16.0, 35.0))
        v += float(rng.uniform(0.0, 2.0))
    if v_ego > 2.0 and rng.random() < 0.5:  # one car behind, slower than the ego car
        add_vehicle(
            ego_s0 - float(rng.uniform(14.0, 25.0)),
            max(v_ego - float(rng.uniform(0.5, 2.5)), 0.0),
            -lane_w / 2,
            0.0,
        )
    # pedestrians on the sidewalks
    for _ in range(int(rng.integers(4, 11))):
        side = int(rng.integers(2))
        sg = 1.0 if side == 1 else -1.0
        inner, outer = walk[side]
        l = (
            sg * float(rng.uniform(inner + 0.4, outer - 0.4))
            if outer - inner > 0.8
            else sg * (inner + outer) / 2
        )
        v = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.9, 1.6)) * float(rng.choice([-1.0, 1.0]))
        yaw_off = (0.0 if v >= 0 else math.pi) if v != 0 else float(rng.uniform(-math.pi, math.pi))
        _pedestrian(A, rng, len(a_s0), kh)
        a_s0.append(float(rng.uniform(ego_s0 - 30.0, ego_s0 + travel + 70.0)))
        a_v.append(v)
        a_l.append(l)
        a_yaw.append(yaw_off)
        kinds.append("pedestrian")

    el = math.radians(float(rng.uniform(30.0, 60.0)))
    az = float(rng.uniform(-math.pi, math.pi))
    sun = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    gain = {
        "p1": float(rng.uniform(3.0, 8.0)),
        "f1": float(rng.uniform(0, 2 * math.pi)),
        "p2": float(rng.uniform(0.7, 1.5)),
        "f2": float(rng.uniform(0, 2 * math.pi)),
        "cam": [float(v) for v in rng.uniform(-0.015, 0.015, 6)],
    }
    g = float(rng.uniform(0.26, 0.34))
    return World(
        seed=int(seed),
        road=road,
        static=S.prims(),
        parts=A.prims(),
        actor_s0=np.asarray(a_s0, float),
        actor_v=np.asarray(a_v, float),
        actor_l=np.asarray(a_l, float),
        actor_yaw=np.asarray(a_yaw, float),
        actor_kind=kinds,
        ego_s0=ego_s0,
        ego_speed=v_ego,
        ego_l=-lane_w / 2,
        weave_amp=float(rng.uniform(0.0, 0.2)),
        weave_len=float(rng.uniform(40.0, 90.0)),
        weave_phase=float(rng.uniform(0, 2 * math.pi)),
        sun=sun,
        ambient=float(rng.uniform(0.45, 0.58)),
        sun_k=float(rng.uniform(0.6, 0.8)),
        gain=gain,
        extent=(s_lo, s_hi),
        asphalt=(g, g, g * 1.04),
        ground_colours={
            "paving": tuple(_jit(rng, (0.62, 0.60, 0.57), 0.06)),
            "kerb": tuple(_jit(rng, (0.70, 0.69, 0.66), 0.04)),
            "grass": tuple(_jit(rng, (0.28, 0.42, 0.16), 0.1)),
            "grass2": tuple(_jit(rng, (0.46, 0.41, 0.26), 0.1)),
        },
    )
