"""Band-limited procedural noise and analytically filtered patterns (torch, vectorised over samples).

Anti-aliasing: every pattern is band-limited to the pixel footprint instead of supersampling. Noise is a
sum of octaves of smoothed value noise (a fixed random lattice sampled with ``grid_sample``); octaves whose
wavelength falls below 4 pixels fade out, reaching zero at the Nyquist limit. At grazing angles the
footprint is anisotropic: noise is averaged over up to 6 taps along the footprint's major axis, each
band-limited to max(minor axis, major axis / taps). Stripes, tiles, windows and markings are box-filtered
analytically (exact filtered pulse trains, :func:`pulse`, :func:`band`) with filter widths from the
screen-space derivatives of their coordinates. The materials (materials.py) draw from :func:`noise_bank`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LATTICE = 32  # period of the noise lattice (lattice units)
_VOLS = 12  # independent lattices: 8 for bank A, 3 for bank B, 1 spare
_VOLUMES: dict[tuple[str, torch.dtype], torch.Tensor] = {}
BANK_A = tuple(0.125 * 2.0**o for o in range(8))  # cycles per metre: 0.125 (8 m) .. 16 (6 cm)
BANK_B = (0.06, 0.13, 0.27)  # isotropic low-frequency octaves on their own lattices


def _volume(device, dtype) -> torch.Tensor:
    """Random lattice values, ``[V x 1 x S+1 x S+1 x S+1]``, wrapped (index S equals index 0)."""
    key = (str(device), dtype)
    if key not in _VOLUMES:
        g = torch.Generator().manual_seed(20250311)
        S = _LATTICE
        v = torch.rand((_VOLS, 1, S, S, S), generator=g, dtype=torch.float64)
        v = F.pad(v, (0, 1, 0, 1, 0, 1), mode="circular")
        _VOLUMES[key] = v.to(device=device, dtype=dtype)
    return _VOLUMES[key]


def _rotations(dtype, device) -> torch.Tensor:
    """Fixed per-lattice rotations ``[V x 3 x 3]`` that hide the lattice axes and its period."""
    g = torch.Generator().manual_seed(7)
    q = torch.randn((_VOLS, 4), generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(_VOLS, 3, 3)
    return R.to(device=device, dtype=dtype)


def hash01(*ints: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Deterministic hash of integer tensors (same shape) to floats in [0, 1)."""
    h = torch.full_like(ints[0], seed * 2654435761 % 2147483647, dtype=torch.long)
    for i, v in enumerate(ints):
        h = (h ^ ((v.long() + 1013 * (i + 1)) * (73856093, 19349663, 83492791, 4256249)[i % 4])) & 0x7FFFFFFF
        h = (h * 1103515245 + 12345) & 0x7FFFFFFF
        h = h ^ (h >> 13)
    h = (h * 1274126177) & 0x7FFFFFFF
    h = h ^ (h >> 16)
    return h.to(torch.float32) / 2147483648.0


def octaves(
    p: torch.Tensor, footprint: torch.Tensor, freqs, lattices, tex: torch.Tensor | None = None
) -> torch.Tensor:
    """Band-limited octaves of smoothed value noise, each zero-mean in [-0.5, 0.5].

    Args:
        p: ``[N x 3]`` texture coordinates (metres).
        footprint: ``[N]`` pixel footprint on the surface (metres); an octave fades out below 4 pixels
            per cycle and vanishes at 2 (Nyquist).
        freqs: O frequencies (cycles per metre); lattices: O lattice indices (< 12).
        tex: optional ``[N]`` long seeds that shift the noise per object.
    Returns:
        ``[O x N]``.
    """
    N, O = p.shape[0], len(freqs)
    out = p.new_zeros((O, N))
    if N == 0:
        return out
    vols = _volume(p.device, p.dtype)
    rots = _rotations(p.dtype, p.device)
    S = float(_LATTICE)
    # an octave is evaluated only where its weight is non-zero (footprint < 0.5 / f): a prefix of the
    # samples sorted by footprint
    fp, order = torch.sort(footprint)
    ps = p[order]
    off = (
        None
        if tex is None
        else torch.stack([hash01(tex[order], seed=k) for k in range(3)], -1).to(p.dtype) * S
    )
    for o, (f, lat) in enumerate(zip(freqs, lattices, strict=True)):
        n = int(torch.searchsorted(fp, torch.tensor(0.5 / f, dtype=fp.dtype)))
        if n == 0:
            continue
        q = (ps[:n] @ rots[lat].T) * f
        if off is not None:
            q = q + off[:n]
        q = torch.remainder(q, S)
        fl = torch.floor(q)
        fr = q - fl
        q = fl + fr * fr * (3 - 2 * fr)  # smoothstep inside cells: C1 value noise from trilinear sampling
        grid = (q * (2 / S) - 1).reshape(1, 1, 1, n, 3)
        v = F.grid_sample(
            vols[lat : lat + 1], grid, mode="bilinear", padding_mode="border", align_corners=True
        )
        w = (2.0 - 4.0 * f * fp[:n]).clamp(0.0, 1.0)
        out[o, order[:n]] = (v.reshape(n) - 0.5) * w
    return out


def fbm(p, footprint, freq, n, tex=None, persistence=0.6, first=0) -> torch.Tensor:
    """Fractal sum of ``n`` octaves from ``freq`` (doubling), normalised to roughly [-0.5, 0.5], ``[N]``."""
    fr = [freq * 2.0**o for o in range(n)]
    v = octaves(p, footprint, fr, [(first + o) % _VOLS for o in range(n)], tex)
    amp = persistence ** torch.arange(n, dtype=p.dtype)
    return (amp[:, None] * v).sum(0) / amp.sum() * 2.0


#: anisotropic filtering tiers: (max elongation major / minor, taps along the major axis)
ANISO_TAPS = ((1.5, 1), (4.0, 3), (math.inf, TAPS_MAX := 6))


def noise_bank(p, major, minor, tex) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise every material draws from.

    Bank A: the 8 octaves ``BANK_A``, anisotropically filtered: a pixel whose footprint is elongated by
    r = major / minor is averaged over k taps spread along the major axis (k = 1, 3 or 6 for r up to
    1.5, 4 and beyond), each tap band-limited to max(minor, major / k).
    Bank B: the octaves ``BANK_B`` on other lattices, isotropic. Returns (``[8 x N]``, ``[3 x N]``).
    """
    lu = major.norm(dim=-1)
    r = lu / minor.clamp(min=1e-9)
    A = p.new_zeros((len(BANK_A), p.shape[0]))
    lo = 0.0
    for hi, k in ANISO_TAPS:
        idx = torch.nonzero((r > lo) & (r <= hi) if lo > 0 else (r <= hi))[:, 0]
        lo = hi
        if idx.numel() == 0:
            continue
        fp = torch.maximum(minor[idx], lu[idx] / k) if k > 1 else lu[idx]
        off = ((torch.arange(k, dtype=p.dtype) + 0.5) / k - 0.5)[:, None, None] * major[idx][None]  # k n 3
        taps = (p[idx][None] + off).reshape(-1, 3)
        v = octaves(taps, fp.repeat(k), BANK_A, range(8), tex[idx].repeat(k))
        A[:, idx] = v.reshape(len(BANK_A), k, -1).mean(1)
    B = octaves(p, lu, BANK_B, range(8, 11), tex)
    return A, B


def pulse(x: torch.Tensor, period: float | torch.Tensor, width: float | torch.Tensor, fw: torch.Tensor):
    """Box-filtered pulse train: fraction of [x - fw/2, x + fw/2] covered by [k P, k P + width]."""
    w = torch.as_tensor(width, dtype=x.dtype)

    def integ(t):
        k = torch.floor(t / period)
        return k * w + torch.minimum(t - k * period, w)

    fw = fw.clamp(min=1e-5)
    return ((integ(x + fw / 2) - integ(x - fw / 2)) / fw).clamp(0, 1)


def band(x: torch.Tensor, lo, hi, fw: torch.Tensor) -> torch.Tensor:
    """Box-filtered indicator of lo <= x < hi (a single band)."""
    fw = fw.clamp(min=1e-5)
    lo = torch.as_tensor(lo, dtype=x.dtype)
    hi = torch.as_tensor(hi, dtype=x.dtype)
    a = torch.minimum(torch.maximum(x - fw / 2, lo), hi)
    b = torch.minimum(torch.maximum(x + fw / 2, lo), hi)
    return ((b - a) / fw).clamp(0, 1)


def mix(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * t[:, None]


def smoothstep(e0: float, e1: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)
