"""Moving actors of a synthetic street: traffic in both lanes and pedestrians on the sidewalks.

:func:`place_actors` draws them from the world's generator in a fixed order. An actor's parts are built
in its own frame (origin on the ground under its centre, x forward); its trajectory is road coordinates
s(t) = s0 + v t, l = const, with a yaw relative to the road heading (0 with +s, pi against it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from occlabel.datasets.synthetic.layout import Layout
from occlabel.datasets.synthetic.objects import Parts, pedestrian, vehicle


@dataclass
class Actors:
    """Moving actors being placed: their parts and trajectories (one entry per actor)."""

    parts: Parts
    s0: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)
    l: list[float] = field(default_factory=list)
    yaw: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, s0: float, v: float, l: float, yaw: float, kind: str) -> None:
        self.s0.append(s0)
        self.v.append(v)
        self.l.append(l)
        self.yaw.append(yaw)
        self.kinds.append(kind)

    def add_vehicle(self, rng, s0: float, v: float, l: float, yaw_off: float) -> None:
        """A car (84 %), truck (8 %) or bus (8 %)."""
        r = rng.random()
        kind = "car" if r < 0.84 else "truck" if r < 0.92 else "bus"
        vehicle(self.parts, rng, kind, 0.0, 0.0, 0.0, 0.0, actor=len(self.s0))
        self.add(s0, v, l, yaw_off, kind)


def place_actors(rng: np.random.Generator, lay: Layout) -> Actors:
    """Traffic in the opposite lane, ahead of and behind the ego car, then pedestrians."""
    A = Actors(Parts(rng))
    _opposite_lane(A, rng, lay)
    _ego_lane(A, rng, lay)
    _pedestrians(A, rng, lay)
    return A


def _opposite_lane(A: Actors, rng, lay: Layout) -> None:
    """One to four vehicles towards -s: leaders (smaller s) are fastest, so gaps only grow."""
    n_opp = int(rng.integers(1, 5))
    starts = np.sort(lay.ego_s0 + rng.uniform(-30.0, 160.0 + lay.travel, n_opp))
    starts = starts + np.arange(n_opp) * 14.0
    speeds = -np.sort(rng.uniform(6.0, 12.0, n_opp))[::-1]
    for s0, v in zip(starts, speeds, strict=True):
        A.add_vehicle(rng, float(s0), float(v), lay.lane_w / 2, math.pi)


def _ego_lane(A: Actors, rng, lay: Layout) -> None:
    """Up to two leaders ahead (larger s, fastest; the nearest is faster than the ego car), sometimes one
    car behind, slower than the ego car."""
    v_ego, ego_s0 = lay.v_ego, lay.ego_s0
    n_ahead = int(rng.integers(0, 3))
    s0 = ego_s0 + float(rng.uniform(14.0, 35.0))
    v = v_ego + float(rng.uniform(0.5, 3.0))
    for _ in range(n_ahead):
        A.add_vehicle(rng, s0, v, -lay.lane_w / 2, 0.0)
        s0 += float(rng.uniform(16.0, 35.0))
        v += float(rng.uniform(0.0, 2.0))
    if v_ego > 2.0 and rng.random() < 0.5:
        A.add_vehicle(
            rng,
            ego_s0 - float(rng.uniform(14.0, 25.0)),
            max(v_ego - float(rng.uniform(0.5, 2.5)), 0.0),
            -lay.lane_w / 2,
            0.0,
        )


def _pedestrians(A: Actors, rng, lay: Layout) -> None:
    """Four to ten pedestrians on the sidewalks, walking either way or standing (20 %)."""
    for _ in range(int(rng.integers(4, 11))):
        side = int(rng.integers(2))
        sg = 1.0 if side == 1 else -1.0
        inner, outer = lay.walk[side]
        l = (
            sg * float(rng.uniform(inner + 0.4, outer - 0.4))
            if outer - inner > 0.8
            else sg * (inner + outer) / 2
        )
        v = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.9, 1.6)) * float(rng.choice([-1.0, 1.0]))
        yaw_off = (0.0 if v >= 0 else math.pi) if v != 0 else float(rng.uniform(-math.pi, math.pi))
        pedestrian(A.parts, rng, len(A.s0), lay.kh)
        s0 = float(rng.uniform(lay.ego_s0 - 30.0, lay.ego_s0 + lay.travel + 70.0))
        A.add(s0, v, l, yaw_off, "pedestrian")
