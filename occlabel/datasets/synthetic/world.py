"""The procedural street world: a World (the street at any time) and its assembly from a seed.

A world is generated from a seed (:func:`build_world`: the scene layout of layout.py, the static objects
of placement.py and the moving actors of actors.py, built from the objects of objects.py, then sun and
exposure) and is a pure function of time afterwards:

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

from occlabel.datasets.synthetic.actors import Actors, place_actors
from occlabel.datasets.synthetic.layout import LEAD, Layout, street_layout
from occlabel.datasets.synthetic.objects import jit
from occlabel.datasets.synthetic.placement import place_static
from occlabel.datasets.synthetic.prims import Prims
from occlabel.datasets.synthetic.road import Road


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
    lay = street_layout(rng, v_ego, duration)
    static = place_static(rng, lay)
    actors = place_actors(rng, lay)
    return _assemble(rng, int(seed), lay, static, actors)


def _assemble(rng: np.random.Generator, seed: int, lay: Layout, static: Prims, actors: Actors) -> World:
    """The World of a layout and its objects, with the ego weave, sun, exposure and ground colours drawn
    last (in this order) from ``rng``."""
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
        seed=seed,
        road=lay.road,
        static=static,
        parts=actors.parts.prims(),
        actor_s0=np.asarray(actors.s0, float),
        actor_v=np.asarray(actors.v, float),
        actor_l=np.asarray(actors.l, float),
        actor_yaw=np.asarray(actors.yaw, float),
        actor_kind=actors.kinds,
        ego_s0=lay.ego_s0,
        ego_speed=lay.v_ego,
        ego_l=-lay.lane_w / 2,
        weave_amp=float(rng.uniform(0.0, 0.2)),
        weave_len=float(rng.uniform(40.0, 90.0)),
        weave_phase=float(rng.uniform(0, 2 * math.pi)),
        sun=sun,
        ambient=float(rng.uniform(0.45, 0.58)),
        sun_k=float(rng.uniform(0.6, 0.8)),
        gain=gain,
        extent=(lay.s_lo, lay.s_hi),
        asphalt=(g, g, g * 1.04),
        ground_colours={
            "paving": tuple(jit(rng, (0.62, 0.60, 0.57), 0.06)),
            "kerb": tuple(jit(rng, (0.70, 0.69, 0.66), 0.04)),
            "grass": tuple(jit(rng, (0.28, 0.42, 0.16), 0.1)),
            "grass2": tuple(jit(rng, (0.46, 0.41, 0.26), 0.1)),
        },
    )


__all__ = ["LEAD", "World", "build_world"]
