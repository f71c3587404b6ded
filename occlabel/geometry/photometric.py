"""Photometric reprojection error (the Monodepth2 recipe) and the masks that go with it.

Pure torch, no I/O. Images are float in [0, 1], ``[B x C x H x W]``; per-pixel maps are ``[B x H x W]``.

- :func:`pixel_error`: 0.85 * (1 - SSIM) / 2 + 0.15 * |I_a - I_b| per pixel, averaged over channels
  (SSIM with a 3x3 box window as Monodepth2, :func:`ssim_box`, or kornia's Gaussian-window SSIM).
- :func:`fit_gain`: per-pair exposure gain (least squares on a mask) so that exposure differences between
  frames do not bias the error.
- :func:`min_reprojection`: minimum over sources, with Monodepth2 auto-masking (the identity error of the
  unwarped source competes in the minimum, so pixels that look better without warping — static camera,
  objects moving with the camera, textureless areas — carry no gradient and a constant cost).
- :func:`static_mask`, :func:`border_mask`: what may enter the loss at all (no sky, no movable classes, no
  image borders, finite relative depth).
"""

from __future__ import annotations

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from occlabel.conventions import SKY, moving_mask_lut

#: weight of the SSIM term (Monodepth2)
SSIM_WEIGHT = 0.85


def _box_filter(t: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over ``window x window`` neighbourhoods with reflection padding, ``[* x C x H x W]``."""
    p = window // 2
    t4 = t.reshape(-1, *t.shape[-3:])
    out = F.avg_pool2d(F.pad(t4, (p, p, p, p), mode="reflect"), window, 1)
    return out.reshape(t.shape)


def ssim_box(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 3,
    x_moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """SSIM map with a uniform ``window x window`` window and reflection padding (Monodepth2's SSIM).

    Args:
        x, y: ``[* x C x H x W]`` images in [0, 1]; leading dimensions broadcast, so one target ``x``
            (e.g. ``[F x 1 x 1 x C x H x W]``) serves many warped images ``y`` without being copied.
        window: window size (odd).
        x_moments: precomputed (mean, mean of squares) of ``x`` over the window (:func:`box_moments`).
    Returns:
        SSIM in [-1, 1] (c1 = 0.01^2, c2 = 0.03^2), shaped as the broadcast of x and y.

    Average pooling of the moments; on CPU several times faster than a Gaussian-window convolution
    (kornia.metrics.ssim) for the large batches of hypotheses calibrate-depth evaluates.
    """
    mx, xx = x_moments if x_moments is not None else box_moments(x, window)
    C = y.shape[-3]
    my, yy, xy = _box_filter(torch.cat(torch.broadcast_tensors(y, y * y, x * y), -3), window).split(C, -3)
    vx = xx - mx * mx
    vy = yy - my * my
    cov = xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def box_moments(x: torch.Tensor, window: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(local mean, local mean of squares) of ``x`` ``[* x C x H x W]`` over ``window x window``."""
    mx, xx = _box_filter(torch.cat([x, x * x], -3), window).split(x.shape[-3], -3)
    return mx, xx


def pixel_error(
    target: torch.Tensor,
    other: torch.Tensor,
    alpha: float = SSIM_WEIGHT,
    window: int = 3,
    ssim: str = "box",
    target_moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-pixel photometric error ``alpha * (1 - SSIM) / 2 + (1 - alpha) * L1``.

    Args:
        target, other: ``[* x C x H x W]`` images in [0, 1] (leading dimensions broadcast).
        alpha: SSIM weight.
        window: SSIM window size (odd).
        ssim: "box" (uniform window, :func:`ssim_box`, the Monodepth2 recipe) or "gaussian"
            (kornia.metrics.ssim: Gaussian window, sigma 1.5).
        target_moments: :func:`box_moments` of ``target`` (box SSIM only), to reuse across calls.
    Returns:
        ``[* x H x W]`` error averaged over channels, >= 0.
    """
    other = other.to(target.dtype)
    err = (1 - alpha) * (target - other).abs()
    if alpha > 0:
        if ssim == "box":
            sim = ssim_box(target, other, window, target_moments)
        elif ssim == "gaussian":
            a, b = torch.broadcast_tensors(target, other)
            shape = a.shape
            sim = kornia.metrics.ssim(
                a.reshape(-1, *shape[-3:]), b.reshape(-1, *shape[-3:]), window, 1.0, 0.0
            )
            sim = sim.reshape(shape)
        else:
            raise ValueError(f"ssim must be 'box' or 'gaussian', got {ssim!r}")
        err = err + alpha * ((1 - sim) / 2).clamp(0, 1)
    return err.mean(-3)


def fit_gain(
    target: torch.Tensor, other: torch.Tensor, mask: torch.Tensor, per_channel: bool = True, limits=(0.5, 2.0)
) -> torch.Tensor:
    """Exposure gain g so that ``g * other`` matches ``target`` on ``mask``: g = sum(m t) / sum(m o).

    The ratio of the masked means: exact for a multiplicative exposure change of the same content, and
    robust (no division by single pixels); pairs with an empty mask get 1.

    Args:
        target, other: ``[* x C x H x W]`` images.
        mask: ``[* x H x W]`` bool or float weights.
        per_channel: one gain per channel (white balance) or one for all.
    Returns:
        ``[* x C x 1 x 1]`` (or ``[* x 1 x 1 x 1]``) gains, clamped to ``limits``.
    """
    m = mask.to(target.dtype)[..., None, :, :]
    dims = (-2, -1) if per_channel else (-3, -2, -1)
    num = (target * m).sum(dims, keepdim=True)
    den = (other * m).sum(dims, keepdim=True)
    g = num / den.clamp(min=1e-6)
    g = torch.where(den > 1e-6, g, torch.ones_like(g))
    return g.clamp(*limits)


def min_reprojection(
    errors: torch.Tensor,
    valid: torch.Tensor,
    identity: torch.Tensor | None = None,
    source_dim: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimum reprojection error over sources, with optional auto-masking.

    Args:
        errors: ``[B x S x ... x H x W]`` warped errors per source (``source_dim`` is S).
        valid: same shape, bool: the warp of that source is usable at that pixel.
        identity: errors of the *unwarped* sources, broadcastable to ``errors`` (e.g. ``[B x S x 1 x H x W]``)
            or None for no auto-masking.
    Returns:
        loss ``[B x ... x H x W]``: min over valid warped errors and, with auto-masking, over the identity
        errors (so it is bounded by the identity error and constant where the identity wins); pixels with
        no valid source and no identity get 0.
        used ``[B x ... x H x W]`` bool: a warped error is the minimum (the pixel carries information).
        has_warp ``[B x ... x H x W]`` bool: at least one source is valid.
    """
    big = torch.finfo(errors.dtype).max / 4
    e = torch.where(valid, errors, torch.full_like(errors, big))
    warped_min = e.amin(source_dim)
    has_warp = valid.any(source_dim)
    if identity is None:
        loss = torch.where(has_warp, warped_min, torch.zeros_like(warped_min))
        return loss, has_warp, has_warp
    ident = torch.broadcast_to(identity, errors.shape).amin(source_dim)
    used = has_warp & (warped_min < ident)
    loss = torch.where(used, warped_min, ident)
    return loss, used, has_warp


def static_mask(
    labels: torch.Tensor, moving: tuple[int, ...] | None = None, ignore_sky: bool = True
) -> torch.Tensor:
    """Pixels whose class may enter a rigid-scene photometric loss.

    Args:
        labels: ``[* x H x W]`` uint8 2D semantics (conventions: class ids, SKY, UNLABELED).
        moving: class ids that can move (default: occlabel.conventions.OCC3D_MOVING).
        ignore_sky: also exclude SKY (no depth, no parallax).
    Returns:
        ``[* x H x W]`` bool, True where the pixel is static and not sky.
    """
    lut = moving_mask_lut() if moving is None else moving_mask_lut(moving)
    lut = lut.copy()
    if ignore_sky:
        lut[SKY] = True
    bad = torch.from_numpy(np.asarray(lut)).to(labels.device)[labels.long()]
    return ~bad


def border_mask(height: int, width: int, px: int, device=None) -> torch.Tensor:
    """``[H x W]`` bool, False within ``px`` pixels of the image border (SSIM windows there are padded)."""
    m = torch.zeros(height, width, dtype=torch.bool, device=device)
    if 2 * px < height and 2 * px < width:
        m[px : height - px, px : width - px] = True
    return m


__all__ = [
    "SSIM_WEIGHT",
    "ssim_box",
    "box_moments",
    "pixel_error",
    "fit_gain",
    "min_reprojection",
    "static_mask",
    "border_mask",
]
