"""Procedural materials, shading and sky (torch, vectorised over pixels).

Colour is a function of the surface point in the frame of the object it belongs to (world frame for the
ground and static objects, object frame for moving ones), never of the viewpoint, so a static surface
point has the same colour in every frame; lighting is Lambertian (sun + sky ambient) with cast shadows,
which is view-independent too. Images differ between frames only by the per-image exposure gain (applied
by the caller), by moving objects and their shadows, and by texture band-limiting.

Where things live: the band-limited noise and filtered patterns in noise.py (anti-aliasing is described
there), the per-material albedo in materials.py (``MATERIALS``, ``MAT``, :func:`albedo`), lighting and sky
here. The names of noise.py and materials.py stay importable from this module.
"""

from __future__ import annotations

import math

import torch

from occlabel.datasets.synthetic.materials import MAT, MATERIALS, albedo
from occlabel.datasets.synthetic.noise import (
    ANISO_TAPS,
    BANK_A,
    BANK_B,
    TAPS_MAX,
    band,
    fbm,
    hash01,
    noise_bank,
    octaves,
    pulse,
    smoothstep,
)

# --------------------------------------------------------------------------------------------------
# Lighting and sky
# --------------------------------------------------------------------------------------------------


def shade(
    alb: torch.Tensor,
    n_world: torch.Tensor,
    lit: torch.Tensor,
    sun: torch.Tensor,
    ambient: float,
    sun_k: float,
):
    """Lambertian shading ``[N x 3]``: albedo x (sky ambient (brighter facing up) + sun x cos x lit)."""
    amb = ambient * (0.78 + 0.22 * n_world[:, 2])
    direct = sun_k * (n_world @ sun.to(n_world.dtype)).clamp(min=0) * lit
    return alb * (amb + direct)[:, None]


def sky(d_world: torch.Tensor, sun: torch.Tensor, seed: int) -> torch.Tensor:
    """Sky colour ``[N x 3]`` for unit view directions ``d_world [N x 3]`` (gradient, sun glow, clouds).

    Clouds are a function of the direction only (at infinity), so they are consistent across frames.
    """
    dz = d_world[:, 2]
    el = dz.clamp(-1, 1).asin()
    t = (el / (math.pi / 2)).clamp(0, 1) ** 0.6
    horizon = torch.tensor([0.80, 0.86, 0.93], dtype=d_world.dtype)
    zenith = torch.tensor([0.30, 0.50, 0.85], dtype=d_world.dtype)
    col = horizon + (zenith - horizon) * t[:, None]
    h = dz.clamp(min=0.02)
    cp = torch.stack([d_world[:, 0] / h, d_world[:, 1] / h, torch.full_like(h, float(seed % 97))], -1)
    cov = fbm(cp, torch.zeros_like(h), 0.35, 5, None, 0.55, 2)
    cloud = smoothstep(-0.02, 0.25, cov) * smoothstep(0.02, 0.2, dz)
    col = col + (torch.tensor([0.95, 0.95, 0.96], dtype=col.dtype) - col) * (0.85 * cloud)[:, None]
    glow = torch.exp(-(1 - (d_world @ sun.to(d_world.dtype))).clamp(min=0) * 60.0)
    return (col + 0.35 * glow[:, None]).clamp(0, 1)


__all__ = [
    "ANISO_TAPS",
    "BANK_A",
    "BANK_B",
    "MAT",
    "MATERIALS",
    "TAPS_MAX",
    "albedo",
    "band",
    "fbm",
    "hash01",
    "noise_bank",
    "octaves",
    "pulse",
    "shade",
    "sky",
]
