"""The street: a road centreline (G1 arc spline in the world xy plane) and its cross-section.

The centreline is a chain of straight segments and circular arcs joined with a continuous heading. Every
ground point has road coordinates (s, l): s is the arc length of its closest centreline point and l its
signed distance from the centreline, positive to the left of the driving direction (+s). The ground's
class and height are functions of l only (bands parallel to the centreline), so the renderer and the
ground-truth occupancy share one definition.

Heights: the road (|l| < ``road_half``) lies at z = 0; everything else (kerb stones, verge, sidewalk,
terrain) is raised to z = ``kerb_h`` (0.15 m). The step at |l| = ``road_half`` is the kerb face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from occlabel.conventions import OCC3D_ID
from occlabel.datasets.synthetic.materials import MAT

ROAD = OCC3D_ID["driveable_surface"]
SIDEWALK = OCC3D_ID["sidewalk"]
TERRAIN = OCC3D_ID["terrain"]


@dataclass
class Road:
    """Arc-spline centreline plus cross-section bands.

    Attributes:
        seg_xy: <np.float64: S, 2> start point of each segment (world metres).
        seg_heading: <np.float64: S> heading at the start of each segment (radians, from world +x).
        seg_len: <np.float64: S> segment lengths (metres).
        seg_kappa: <np.float64: S> signed curvature (1/m, positive turns left); 0 for straights.
        lane_w: width of a travel lane (two lanes, one per direction, split at l = 0).
        road_half: half width of the driveable surface (lanes plus parking strips), metres.
        kerb_h: height of everything outside the road, metres.
        bands: per side (0: right, l < 0; 1: left, l > 0) a list of (outer |l| edge, class id, material
            id) for the bands beyond the road, from the kerb outwards; the last band extends to infinity.
    """

    seg_xy: np.ndarray
    seg_heading: np.ndarray
    seg_len: np.ndarray
    seg_kappa: np.ndarray
    lane_w: float
    road_half: float
    kerb_h: float
    bands: list[list[tuple[float, int, int]]]
    centre_dashed: bool = True
    crosswalks: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seg_s0 = np.concatenate([[0.0], np.cumsum(self.seg_len)[:-1]])
        self.length = float(np.sum(self.seg_len))
        self._t: dict = {}  # cached tensors per dtype

    # ------------------------------------------------------------------------------------------------
    @staticmethod
    def random(rng: np.random.Generator, length: float, lead: float) -> tuple[np.ndarray, np.ndarray]:
        """Random (seg_len, seg_kappa) of a centreline: a straight lead-in of ``lead`` metres, curvy middle
        covering ``length`` metres, and a long straight lead-out."""
        lens, kap = [lead], [0.0]
        total = 0.0
        curvy = rng.uniform(0.2, 1.0)  # how curvy this street is
        sign = rng.choice([-1.0, 1.0])
        while total < length:
            if rng.random() < 0.45 * curvy + 0.15:
                radius = rng.uniform(70.0, 220.0) / curvy
                seg = rng.uniform(25.0, 70.0)
                seg = min(seg, 0.8 * math.pi * radius / 2)
                lens.append(seg)
                kap.append(sign / radius)
                sign = -sign if rng.random() < 0.7 else sign
            else:
                lens.append(rng.uniform(20.0, 60.0))
                kap.append(0.0)
            total += lens[-1]
        lens.append(2000.0)
        kap.append(0.0)
        return np.asarray(lens), np.asarray(kap)

    @classmethod
    def from_segments(cls, seg_len: np.ndarray, seg_kappa: np.ndarray, heading0: float = 0.0, **kw) -> Road:
        """Chain segments starting at the world origin with heading ``heading0``."""
        xy = [np.zeros(2)]
        hd = [heading0]
        for L, k in zip(seg_len[:-1], seg_kappa[:-1], strict=True):
            p, h = _advance(xy[-1], hd[-1], L, k)
            xy.append(p)
            hd.append(h)
        return cls(
            np.asarray(xy), np.asarray(hd), np.asarray(seg_len, float), np.asarray(seg_kappa, float), **kw
        )

    # ------------------------------------------------------------------------------------------------
    def _tensors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if dtype not in self._t:
            f = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
            self._t[dtype] = {
                "x0": f(self.seg_xy[:, 0]),
                "y0": f(self.seg_xy[:, 1]),
                "h0": f(self.seg_heading),
                "L": f(self.seg_len),
                "k": f(self.seg_kappa),
                "s0": f(self.seg_s0),
            }
            d = self._t[dtype]
            k = self.seg_kappa
            arc = np.abs(k) >= 1e-9
            ks = np.where(arc, k, 1.0)
            cx = self.seg_xy[:, 0] - np.sin(self.seg_heading) / ks
            cy = self.seg_xy[:, 1] + np.cos(self.seg_heading) / ks
            ends = np.array(
                [
                    _advance(p, h, L, kk)[0]
                    for p, h, L, kk in zip(self.seg_xy, self.seg_heading, self.seg_len, k, strict=True)
                ]
            )
            joints = np.concatenate([self.seg_xy, ends[-1:]])
            lo = np.zeros_like(k)
            hi = self.seg_len.copy()
            lo[0], hi[-1] = -1e9, 1e9  # the first and last segments extend forever
            d.update(
                line_idx=torch.as_tensor(np.nonzero(~arc)[0]),
                arc_idx=torch.as_tensor(np.nonzero(arc)[0]),
                c0=f(np.cos(self.seg_heading)),
                s0_=f(np.sin(self.seg_heading)),
                cx=f(cx),
                cy=f(cy),
                bx=f(self.seg_xy[:, 0] - cx),
                by=f(self.seg_xy[:, 1] - cy),
                sg=f(np.sign(ks)),
                rho=f(1.0 / np.abs(ks)),
                lo=f(lo),
                hi=f(hi),
                jx=f(joints[:, 0]),
                jy=f(joints[:, 1]),
            )

        return self._t[dtype]

    def pose(
        self, s: torch.Tensor, l: torch.Tensor | float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """World position of road coordinates (s, l) and the centreline heading there.

        Args:
            s: ``[N]`` arc length (metres; clamped to the centreline's extent).
            l: ``[N]`` or scalar lateral offset, positive left.
        Returns:
            x ``[N]``, y ``[N]`` world metres, heading ``[N]`` radians (same dtype as ``s``).
        """
        T = self._tensors(s.dtype)
        s = s.clamp(0.0, self.length)
        i = (torch.searchsorted(T["s0"], s, right=True) - 1).clamp(0, len(self.seg_len) - 1)
        u = s - T["s0"][i]
        k, h0, x0, y0 = T["k"][i], T["h0"][i], T["x0"][i], T["y0"][i]
        h = h0 + k * u
        small = k.abs() < 1e-9
        ks = torch.where(small, torch.ones_like(k), k)
        dx = torch.where(small, u * torch.cos(h0), (torch.sin(h) - torch.sin(h0)) / ks)
        dy = torch.where(small, u * torch.sin(h0), (torch.cos(h0) - torch.cos(h)) / ks)
        l = torch.as_tensor(l, dtype=s.dtype)
        return x0 + dx - l * torch.sin(h), y0 + dy + l * torch.cos(h), h

    def project(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Road coordinates of world points.

        Args:
            x, y: ``[...]`` world metres (any float dtype).
        Returns:
            s ``[...]`` arc length of the closest centreline point, l ``[...]`` signed lateral distance
            (positive left of the driving direction).
        """
        T = self._tensors(x.dtype)
        shp = x.shape
        px, py = x.reshape(-1, 1), y.reshape(-1, 1)
        n = px.shape[0]
        S = len(self.seg_len)
        u = torch.empty((n, S), dtype=x.dtype, device=x.device)
        w = torch.empty_like(u)
        li, ai = T["line_idx"], T["arc_idx"]
        if li.numel():
            qx, qy = px - T["x0"][li], py - T["y0"][li]
            c0, s0_ = T["c0"][li], T["s0_"][li]
            u[:, li] = qx * c0 + qy * s0_
            w[:, li] = qy * c0 - qx * s0_
        if ai.numel():
            ax, ay = px - T["cx"][ai], py - T["cy"][ai]
            bx, by, sg, rho = T["bx"][ai], T["by"][ai], T["sg"][ai], T["rho"][ai]
            u[:, ai] = torch.atan2(bx * ay - by * ax, bx * ax + by * ay) * sg * rho
            w[:, ai] = sg * (rho - torch.sqrt(ax * ax + ay * ay))
        lo, hi = T["lo"], T["hi"]
        inside = (u >= lo) & (u <= hi)
        # outside a segment's span: distance to the nearer of its end points
        dj = torch.sqrt((px - T["jx"]) ** 2 + (py - T["jy"]) ** 2)  # N S+1
        dend = torch.minimum(dj[:, :-1], dj[:, 1:])
        dist = torch.where(inside, w.abs(), dend)
        j = dist.argmin(1, keepdim=True)
        s = (T["s0"] + torch.minimum(torch.maximum(u, lo), hi)).gather(1, j)[:, 0]
        l = torch.where(inside, w, torch.sign(w) * dend).gather(1, j)[:, 0]
        return s.reshape(shp), l.reshape(shp)

    # ------------------------------------------------------------------------------------------------
    def band_tables(self, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Band edges ``[2 x B]`` (|l|, inf-padded), classes ``[2 x B+1]`` and materials ``[2 x B+1]``
        per side, band 0 being the road."""
        key = ("bands", dtype)
        if key in self._t:
            return self._t[key]
        nb = max(len(b) for b in self.bands)
        edges = torch.full((2, nb), float("inf"), dtype=dtype)
        cls = torch.zeros((2, nb + 1), dtype=torch.long)
        mat = torch.zeros((2, nb + 1), dtype=torch.long)
        for side in (0, 1):
            cls[side, 0], mat[side, 0] = ROAD, MAT["asphalt"]
            last_edge = self.road_half
            prev = None
            for b, (edge, c, m) in enumerate(self.bands[side]):
                edges[side, b] = last_edge
                cls[side, b + 1], mat[side, b + 1] = c, m
                last_edge, prev = edge, (c, m)
            for b in range(len(self.bands[side]) + 1, nb + 1):  # pad with the last band
                cls[side, b], mat[side, b] = prev
        self._t[key] = (edges, cls, mat)
        return edges, cls, mat

    def ground(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Ground at world points (x, y) ``[N]``: class ``[N]`` long, material ``[N]`` long, height ``[N]``
        (0 on the road, ``kerb_h`` elsewhere), road coordinates s, l ``[N]``."""
        s, l = self.project(x, y)
        edges, cls, mat = self.band_tables(x.dtype)
        side = (l > 0).long()
        al = l.abs()
        band = torch.where(
            side == 1,
            torch.bucketize(al, edges[1], right=True),
            torch.bucketize(al, edges[0], right=True),
        )
        c = cls[side, band]
        m = mat[side, band]
        h = torch.where(band == 0, torch.zeros_like(al), torch.full_like(al, self.kerb_h))
        return {"cls": c, "mat": m, "h": h, "s": s, "l": l}

    def outer_edge(self, side: int, cls: int | None = None) -> float:
        """|l| of the outer edge of the last band of class ``cls`` on ``side`` (default: the last finite
        band, i.e. where terrain starts)."""
        edges = [e for e, c, _ in self.bands[side] if cls is None or c == cls]
        finite = [e for e in edges if math.isfinite(e)]
        return max(finite) if finite else self.road_half


def _advance(p: np.ndarray, h: float, L: float, k: float) -> tuple[np.ndarray, float]:
    if abs(k) < 1e-9:
        return p + L * np.array([math.cos(h), math.sin(h)]), h
    h1 = h + k * L
    return p + np.array([(math.sin(h1) - math.sin(h)) / k, (math.cos(h) - math.cos(h1)) / k]), h1
