"""The scene layout of a synthetic street: ego drive, road centreline, cross-section and crosswalks.

:func:`street_layout` draws, in a fixed order from the world's generator, what every later placement step
reads: where the ego car starts and how far it drives, the lane / parking / sidewalk widths, the
:class:`~.road.Road` and the arc-length span objects are placed over. Road coordinates (s, l) as in road.py:
s arc length along the centreline, l signed lateral offset (positive left of +s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from occlabel.datasets.synthetic.materials import MAT
from occlabel.datasets.synthetic.road import SIDEWALK, TERRAIN, Road

LEAD = 300.0  # straight lead-in before the curvy part of the street (metres of arc length)
AHEAD, BEHIND = 130.0, 90.0  # metres of street placed ahead of the ego drive's end / behind its start


@dataclass
class Layout:
    """The street's layout (see the module docstring).

    Attributes:
        v_ego: ego speed (m/s, >= 0); travel: metres it drives; ego_s0: its arc length at t = 0.
        lane_w, parking_w, road_half: lane and parking strip widths and the road's half width (metres).
        walk: per side (0: right, l < 0; 1: left) the sidewalk's (inner, outer) |l|.
        tree_l: per side the |l| of the tree row.
        s_lo, s_hi: arc-length span where objects are placed.
        crosswalks: arc lengths where crosswalks start.
        road: centreline and cross-section.
    """

    v_ego: float
    travel: float
    ego_s0: float
    lane_w: float
    parking_w: float
    road_half: float
    walk: list[tuple[float, float]]
    tree_l: list[float]
    s_lo: float
    s_hi: float
    crosswalks: list[float]
    road: Road

    @property
    def kh(self) -> float:
        """Height of everything outside the road (the kerb), metres."""
        return self.road.kerb_h

    def place(self, s, l) -> tuple[float, float, float]:
        """World (x, y, heading) of road coordinates (s, l)."""
        x, y, h = self.road.pose(
            torch.tensor([float(s)], dtype=torch.float64), torch.tensor([float(l)], dtype=torch.float64)
        )
        return float(x[0]), float(y[0]), float(h[0])


def _cross_section(rng: np.random.Generator, road_half: float):
    """Per side: the ground bands (outer |l|, class, material), the sidewalk (inner, outer) |l| and the
    tree row's |l| (a grass verge between kerb and sidewalk with probability 0.4)."""
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
    return bands, walk, tree_l


def street_layout(rng: np.random.Generator, v_ego: float, duration: float) -> Layout:
    """Draw the street's layout for an ego car driving ``duration`` seconds at ``v_ego`` m/s."""
    travel = v_ego * duration
    ego_s0 = LEAD + float(rng.uniform(-20.0, 30.0))
    seg_len, seg_k = Road.random(rng, length=travel + AHEAD + 80.0, lead=LEAD)
    lane_w = float(rng.uniform(3.1, 3.6))
    parking_w = float(rng.uniform(2.0, 2.5))
    road_half = lane_w + parking_w
    bands, walk, tree_l = _cross_section(rng, road_half)
    s_lo, s_hi = ego_s0 - BEHIND, ego_s0 + travel + AHEAD
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
    return Layout(
        v_ego, travel, ego_s0, lane_w, parking_w, road_half, walk, tree_l, s_lo, s_hi, crosswalks, road
    )
