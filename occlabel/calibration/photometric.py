"""Photometric cue: the Monodepth2-style reprojection cost of (s, r) hypotheses of one camera's frames.

Each target frame is re-synthesised from its sources (temporal neighbours of the same camera, and the
overlapping cameras of the rig at the same instant) warped through the hypothesis' depth with the known
poses. Error: Monodepth2's 0.85 (1 - SSIM) / 2 + 0.15 L1, minimum over sources, auto-masking by the identity
error, per-pair exposure gain, masks for sky, movable classes (the vocabulary's, for temporal sources),
borders and implausible depth (occlabel.geometry.photometric, occlabel.geometry.warp).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from occlabel.calibration.config import CalibrationConfig
from occlabel.calibration.params import Reference, inverse_depth
from occlabel.geometry.photometric import border_mask, box_moments, fit_gain, min_reprojection, pixel_error
from occlabel.geometry.warp import (
    project_inverse_depth,
    relative_pose,
    sample,
    scale_intrinsics,
    warp_coefficients,
)


class CueResult(NamedTuple):
    """A cue's verdict on hypotheses.

    Attributes:
        loss: ``[F x N]`` cost per frame and hypothesis (lower is better; differentiable).
        valid_frac: ``[F x N]`` fraction of the frame's pixels that carried information.
    """

    loss: torch.Tensor
    valid_frac: torch.Tensor


@dataclass
class CameraFrames:
    """Everything the fit needs for one camera of one scene, at the working resolution, on the device.

    Source images live in one pool: the camera's own frames first (pool index = frame index, 0..T-1), then
    any images of other cameras of the rig (the overlap cue), resized to this camera's working resolution.

    Attributes:
        images: ``[P x 3 x h x w]`` float32 RGB in [0, 1] (zeros for images that were not loaded).
        K: ``[P x 3 x 3]`` float32 intrinsics at the working resolution.
        T_world_from_cam: ``[P x 4 x 4]`` float64 camera poses.
        values: ``[F x h x w]`` float32 relative values of the target frames (NaN = none).
        static: ``[F x h x w]`` bool, pixels of the target frames allowed in the loss (static, not sky,
            finite value).
        targets: ``[F]`` long, frame indices of the targets.
        sources: ``[F x S]`` long, pool index of each source (0 when missing).
        source_ok: ``[F x S]`` bool, source exists, is loaded and has a baseline.
        baseline_m: ``[F x S]`` float64 numpy, camera-centre distance to each source (NaN if missing).
        reference: the per-frame :class:`Reference`.
        solid: ``[F x h x w]`` bool or None: pixels with a depth (not sky, finite value) whatever their class;
            sources marked in ``movable_ok`` may use them (default: ``static``).
        movable_ok: ``[F x S]`` bool or None: the source shows the scene at the target's instant (another
            camera of the rig), so pixels of movable classes are rigid for it (default: none).
        sky: ``[F]`` float32 or None: normalised relative value d~ of each frame's sky (median over its sky
            pixels; NaN: too little sky), for the sky term (disparity space).
    """

    images: torch.Tensor
    K: torch.Tensor
    T_world_from_cam: torch.Tensor
    values: torch.Tensor
    static: torch.Tensor
    targets: torch.Tensor
    sources: torch.Tensor
    source_ok: torch.Tensor
    baseline_m: np.ndarray
    reference: Reference
    solid: torch.Tensor | None = None
    movable_ok: torch.Tensor | None = None
    sky: torch.Tensor | None = None
    dnorm: torch.Tensor = field(init=False)

    def __post_init__(self):
        lo = torch.as_tensor(self.reference.d_lo, dtype=self.values.dtype, device=self.values.device)
        hi = torch.as_tensor(self.reference.d_hi, dtype=self.values.dtype, device=self.values.device)
        self.dnorm = (self.values - lo[:, None, None]) / (hi - lo).clamp(min=1e-12)[:, None, None]


def _resize_masked(
    x: torch.Tensor, m: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-downsample ``x`` ``[B x h x w]`` over its mask ``m``; a pixel stays valid only if fully covered."""
    if tuple(x.shape[-2:]) == tuple(size):
        return torch.where(m, x, torch.zeros_like(x)), m
    w = m.to(x.dtype)[:, None]
    num = F.interpolate(torch.where(m, x, torch.zeros_like(x))[:, None] * w, size=size, mode="area")
    den = F.interpolate(w, size=size, mode="area")
    return (num / den.clamp(min=1e-6))[:, 0], den[:, 0] > 0.999


class PhotometricCue:
    """Photometric reprojection cost of (s, r) hypotheses for the target frames at one pyramid level.

    Precomputes the level's images, masks, warp coefficients and the identity (unwarped) errors, so that
    evaluating hypotheses costs one batched warp and one SSIM per (frame, source, hypothesis).
    """

    def __init__(
        self,
        cam: CameraFrames,
        width: int,
        cfg: CalibrationConfig,
        space: str,
        max_chunk_elems: int,
        grey: bool = False,
    ):
        self.cfg, self.space, self.max_chunk_elems = cfg, space, max_chunk_elems
        h0, w0 = cam.images.shape[-2:]
        w = min(int(width), w0)
        h = max(8, int(round(h0 * w / w0)))
        self.size = (h, w)
        dev = cam.images.device
        images = cam.images
        if (h, w) != (h0, w0):
            images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        if grey:
            images = (images * images.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
        self.images = images
        self.channels = images.shape[1]
        self.target = images[cam.targets]  # F C h w
        self.target_moments = box_moments(self.target, cfg.ssim_window)
        K = scale_intrinsics(cam.K, w / w0, h / h0)
        finite = torch.isfinite(cam.dnorm)
        dnorm, ok = _resize_masked(cam.dnorm, cam.static & finite, (h, w))
        border = border_mask(h, w, max(1, round(cfg.border_frac * w)), dev)
        self.sources = cam.sources
        self.source_ok = cam.source_ok
        T_wc = cam.T_world_from_cam
        T_src_from_tgt = relative_pose(T_wc[cam.targets][:, None], T_wc[cam.sources])  # F S 4 4
        Kt = K[cam.targets][:, None].expand(-1, cam.sources.shape[1], -1, -1)
        mp, e = warp_coefficients(Kt.double(), K[cam.sources].double(), T_src_from_tgt.double(), h, w)
        self.mp, self.e = mp.to(images.dtype), e.to(images.dtype)  # F S h w 3, F S 3
        self.min_inv = 1.0 / cfg.max_depth_m
        self.max_inv = 1.0 / cfg.min_depth_m
        # sources that see the target's instant (other cameras of the rig) may use movable-class pixels too
        self.pix_ok: torch.Tensor | None = None  # F S h w, pixels each source may use (None: the mask)
        movable_ok = cam.movable_ok
        if movable_ok is not None and bool((movable_ok & cam.source_ok).any()) and cam.solid is not None:
            movable_ok = movable_ok & cam.source_ok
            # values over all solid pixels; a static pixel of the level averages the same values as before
            dnorm, solid = _resize_masked(cam.dnorm, cam.solid & finite, (h, w))
            solid = solid & self._reachable(movable_ok)
            self.pix_ok = torch.where(movable_ok[..., None, None], solid[:, None], ok[:, None])
            ok = ok | solid
        self.dnorm = dnorm
        self.mask = ok & border  # F h w
        # identity errors: each source as it is, against the target (exposure-corrected on the mask)
        src = images[cam.sources]  # F S 3 h w
        tgt = self.target[:, None].expand_as(src)
        if cfg.exposure == "gain":
            src = src * fit_gain(tgt, src, self.mask[:, None].expand(-1, src.shape[1], -1, -1))
        ident = pixel_error(tgt, src, cfg.ssim_weight, cfg.ssim_window, cfg.ssim)  # F S h w
        big = torch.finfo(ident.dtype).max / 4
        self.identity = torch.where(self.source_ok[..., None, None], ident, torch.full_like(ident, big))
        self.region: torch.Tensor | None = None  # F S h w, see freeze_region

    def _reachable(self, sources: torch.Tensor, depths_m=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0)) -> torch.Tensor:
        """``[F x h x w]`` bool: pixels that land inside one of the ``sources`` (``[F x S]`` bool) for some
        depth among ``depths_m`` or at infinity (where an overlapping camera can see them at all)."""
        Fn, S, h, w = self.mp.shape[:4]
        out = torch.zeros(Fn, h, w, dtype=torch.bool, device=self.mp.device)
        cols = [j for j in range(S) if bool(sources[:, j].any())]
        for rho in [0.0] + [1.0 / d for d in depths_m]:
            for j in cols:
                proj = project_inverse_depth(
                    torch.full((Fn, h, w), rho, dtype=self.mp.dtype, device=self.mp.device),
                    None,
                    None,
                    None,
                    (h, w),
                    min_inv_depth=-1.0,
                    coefficients=(self.mp[:, j], self.e[:, j]),
                )
                out |= proj.valid & sources[:, j, None, None]
        return out

    def freeze_region(self, params: torch.Tensor | None, margin_px: float = 2.0) -> None:
        """Fix, per frame and source, the pixels whose warp may count (None: unfreeze).

        Which pixels leave the source image depends on the hypothesis; scoring them differently (e.g. by
        their identity error) biases the fit toward hypotheses that keep pixels in view, i.e. toward less
        parallax. Near an estimate, the set of pixels that project at least ``margin_px`` inside the source
        under ``params`` ``[F x 2]`` is fixed instead; leaving the image then costs the clamped sample.
        """
        self.region = None
        if params is None:
            return
        h, w = self.size
        rho = inverse_depth(params[:, None].to(self.dnorm.dtype), self.dnorm, self.space)  # F 1 h w
        proj = project_inverse_depth(
            rho[:, None],
            None,
            None,
            None,
            (h, w),
            min_inv_depth=self.min_inv,
            max_inv_depth=self.max_inv,
            margin=margin_px,
            coefficients=(self.mp[:, :, None], self.e[:, :, None]),
        )
        self.region = proj.valid[:, :, 0] & self.source_ok[..., None, None]  # F S h w

    def frames_per_chunk(self, hypotheses: int = 1) -> int:
        """Frames whose ``hypotheses`` fit in one batched evaluation of ``max_chunk_elems`` elements."""
        h, w = self.size
        per_pair = self.sources.shape[1] * self.channels * h * w * hypotheses
        return max(1, self.max_chunk_elems // per_pair)

    @property
    def num_frames(self) -> int:
        return self.target.shape[0]

    def evaluate(self, params: torch.Tensor, frames: torch.Tensor | None = None) -> CueResult:
        """Photometric cost of hypotheses.

        Args:
            params: ``[F' x N x 2]`` (s, r) per frame and hypothesis (float32; differentiable).
            frames: ``[F']`` long indices into this level's target frames (default: all).
        Returns:
            :class:`CueResult` with ``[F' x N]`` loss (mean over the frame's static mask of the per-pixel
            minimum reprojection error) and valid fraction (pixels where a warp wins, over all pixels).
        """
        if frames is None:
            frames = torch.arange(self.num_frames, device=params.device)
        Fn, N = params.shape[:2]
        limit = self.frames_per_chunk()  # (frame, hypothesis) pairs per chunk
        losses, fracs = [], []
        if N <= limit:
            fc = max(1, limit // N)
            for i in range(0, Fn, fc):
                res = self._evaluate(params[i : i + fc], frames[i : i + fc])
                losses.append(res.loss)
                fracs.append(res.valid_frac)
            return CueResult(torch.cat(losses), torch.cat(fracs))
        for i in range(Fn):
            row_l, row_f = [], []
            for j in range(0, N, limit):
                res = self._evaluate(params[i : i + 1, j : j + limit], frames[i : i + 1])
                row_l.append(res.loss)
                row_f.append(res.valid_frac)
            losses.append(torch.cat(row_l, 1))
            fracs.append(torch.cat(row_f, 1))
        return CueResult(torch.cat(losses), torch.cat(fracs))

    def _evaluate(self, params: torch.Tensor, frames: torch.Tensor) -> CueResult:
        cfg = self.cfg
        Fn, N = params.shape[:2]
        S = self.sources.shape[1]
        h, w = self.size
        rho = inverse_depth(params, self.dnorm[frames], self.space)  # F N h w
        mask = self.mask[frames]  # F h w
        frozen = self.region is not None
        proj = project_inverse_depth(
            rho[:, None],
            None,
            None,
            None,
            (h, w),
            min_inv_depth=self.min_inv,
            max_inv_depth=self.max_inv,
            # with a frozen region, leaving the image does not invalidate (the sample is clamped)
            margin=-1e9 if frozen else 0.0,
            coefficients=(self.mp[frames][:, :, None], self.e[frames][:, :, None]),
        )  # F S N h w
        valid = proj.valid & self.source_ok[frames][:, :, None, None, None]
        if self.pix_ok is not None:
            valid = valid & self.pix_ok[frames][:, :, None]
        if frozen:
            valid = valid & self.region[frames][:, :, None]
        C = self.channels
        src = self.images[self.sources[frames]].reshape(Fn * S, C, h, w)
        warped = sample(src, proj.grid.reshape(Fn * S, N, h, w, 2))  # (F S) C N h w
        warped = warped.reshape(Fn, S, C, N, h, w).permute(0, 1, 3, 2, 4, 5)  # F S N C h w
        tgt = self.target[frames][:, None, None]  # F 1 1 C h w (broadcast, not copied)
        if cfg.exposure == "gain":
            warped = warped * fit_gain(tgt, warped, valid & mask[:, None, None])
        moments = None
        if cfg.ssim == "box":
            moments = tuple(m[frames][:, None, None] for m in self.target_moments)
        err = pixel_error(tgt, warped, cfg.ssim_weight, cfg.ssim_window, cfg.ssim, moments)  # F S N h w
        ident = self.identity[frames][:, :, None] if cfg.automask else None
        loss_map, used, has_warp = min_reprojection(err, valid, ident)  # F N h w
        m = mask[:, None]
        denom_mask = m if cfg.automask else (m & has_warp)
        loss = (loss_map * m).sum((-2, -1)) / denom_mask.sum((-2, -1)).clamp(min=1)
        frac = (used & m).sum((-2, -1)).float() / float(h * w)
        return CueResult(loss, frac)


def subset_frames(cam: CameraFrames, idx: torch.Tensor) -> CameraFrames:
    """The target frames ``idx`` ``[F']`` of ``cam`` (the source pool is shared)."""
    i = idx.cpu().numpy()
    return CameraFrames(
        images=cam.images,
        K=cam.K,
        T_world_from_cam=cam.T_world_from_cam,
        values=cam.values[idx],
        static=cam.static[idx],
        targets=cam.targets[idx],
        sources=cam.sources[idx],
        source_ok=cam.source_ok[idx],
        baseline_m=cam.baseline_m[i],
        reference=Reference(cam.reference.d_lo[i], cam.reference.d_hi[i], cam.reference.space),
        solid=cam.solid[idx] if cam.solid is not None else None,
        movable_ok=cam.movable_ok[idx] if cam.movable_ok is not None else None,
        sky=cam.sky[idx] if cam.sky is not None else None,
    )


__all__ = ["CameraFrames", "CueResult", "PhotometricCue", "subset_frames"]
