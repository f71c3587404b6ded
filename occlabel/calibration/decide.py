"""The decision: which cue's (s, r) each frame keeps, the degenerate cases and the scene-prior fallback.

1. Per frame (:func:`decide_cues`): the photometric fit unless it disagrees with the ground fit by more
   than ``cue_tolerance`` (flag ``cue_disagreement``) and its own loss does not reject the ground estimate
   by more than ``photometric_margin`` (then the ground estimate); the ground fit where there is no
   photometric fit (flag ``fallback``).
2. Degenerate frames (:func:`frame_cases`): no temporal neighbour with a baseline >= ``min_baseline_m`` ->
   ``stationary`` (still fitted when overlapping cameras give a baseline: cue ``overlap``); fewer than
   ``min_valid_frac`` of the pixels informative -> ``low_valid``.
3. Frames that no cue decided fall back to the robust (median) scene prior of the camera's decided frames
   (or of the scene's other cameras) and get ``fallback`` (:func:`apply_scene_prior`). With no prior at all
   the values are NaN (depth unknown rather than wrong). ``calibration/cue`` records the deciding cue per
   frame (:data:`occlabel.calibration.config.CUES`).

A camera's outcome travels as a :class:`CameraFit` (its :class:`Decision` where frames were fitted) to the
fallback and to :func:`calibration_arrays`, which merges it with the earlier stored calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from occlabel.calibration.config import CUES, CalibrationConfig
from occlabel.calibration.fit import FitResult
from occlabel.calibration.ground import GroundCue
from occlabel.calibration.inputs import CameraInputs
from occlabel.calibration.params import Reference, reference_percentiles
from occlabel.geometry.photometric import static_mask
from occlabel.store.calibration import FLAGS, empty_calibration

#: the cues whose values are a frame's own (they may feed the scene prior)
OWN_CUES = (CUES["photometric"], CUES["overlap"], CUES["ground"])


def decide_cues(
    ph_params: np.ndarray,
    ph_ok: np.ndarray,
    ph_cue: np.ndarray,
    ph_loss: np.ndarray,
    ph_loss_at_ground: np.ndarray | None,
    ground_params: np.ndarray,
    ground_ratio: np.ndarray,
    cfg: CalibrationConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame, the (s, r) to keep and the cue that decided it (before the scene-prior fallback).

    Rules, per frame:

    1. A photometric fit (``ph_ok``) and a usable ground fit: they agree when ``|ground_ratio - 1|``
       (median over the ground inliers of depth(photometric) / depth(ground)) is within
       ``cue_tolerance``; the photometric fit stands. Otherwise the frame gets ``cue_disagreement`` and the
       photometric fit stands only if its own objective rejects the ground estimate, i.e. its loss there
       is higher by more than ``photometric_margin``; else the ground estimate is taken. Rationale: the
       ground estimate is a direct metric measurement whose conditioning does not depend on texture or
       parallax, so it wins wherever the photometric objective cannot tell the two apart (flat or
       ambiguous cost: one facade plane, repeated texture, little parallax); a photometric objective that
       clearly prefers its own answer means the ground's assumptions failed (slope, kerbs, labels).
    2. A photometric fit only: it stands.
    3. A ground fit only (no temporal parallax and no overlap, or too few valid pixels): the ground
       estimate, flagged ``fallback``.
    4. Neither: cue ``none``; the caller falls back to the scene prior.

    Args:
        ph_params: ``[F x 2]`` photometric (s, r) (NaN where not fitted).
        ph_ok: ``[F]`` bool, the photometric fit is usable.
        ph_cue: ``[F]`` uint8, the code of the photometric fit (photometric or overlap).
        ph_loss, ph_loss_at_ground: ``[F]`` photometric loss at its own and at the ground estimate.
        ground_params: ``[F x 2]`` ground-alone (s, r), NaN where the ground fit is not usable.
        ground_ratio: ``[F]`` the depth ratio (NaN where not both).
    Returns:
        params ``[F x 2]``, cue ``[F]`` uint8 (:data:`CUES`), flags to add ``[F]`` uint8.
    """
    Fn = len(ph_ok)
    g_ok = np.all(np.isfinite(ground_params), 1)
    params = np.full((Fn, 2), np.nan)
    cue = np.full(Fn, CUES["none"], np.uint8)
    add = np.zeros(Fn, np.uint8)
    params[ph_ok] = ph_params[ph_ok]
    cue[ph_ok] = ph_cue[ph_ok]
    with np.errstate(invalid="ignore"):
        disagree = ph_ok & g_ok & (np.abs(ground_ratio - 1) > cfg.cue_tolerance)
        at_g = ph_loss_at_ground if ph_loss_at_ground is not None else np.full(Fn, np.nan)
        decisive = np.isfinite(at_g) & (at_g > ph_loss * (1 + cfg.photometric_margin))
    add[disagree] |= FLAGS["cue_disagreement"]
    take_ground = (disagree & ~decisive) | (~ph_ok & g_ok)
    params[take_ground] = ground_params[take_ground]
    cue[take_ground] = CUES["ground"]
    add[~ph_ok & g_ok] |= FLAGS["fallback"]
    return params, cue, add


def decided(cal: dict[str, np.ndarray]) -> np.ndarray:
    """``[T]`` bool: stored frames whose values come from their own cue (they may feed the scene prior)."""
    if "cue" in cal:
        own = np.isin(cal["cue"], list(OWN_CUES))
        return own & ((cal["flags"] & FLAGS["not_converged"]) == 0)
    return (cal["flags"] & (degenerate_bits() | FLAGS["not_converged"])) == 0


def degenerate_bits() -> int:
    """Flag bits of frames whose values come from a fallback rather than their own fit."""
    return FLAGS["stationary"] | FLAGS["low_valid"] | FLAGS["fallback"]


@dataclass
class FrameCases:
    """Which target frames the photometric fit can use, and why not (``[F]`` bool each)."""

    stationary: np.ndarray  # no temporal source with a baseline (photometric cue on)
    has_temporal: np.ndarray  # a temporal source is used
    has_overlap: np.ndarray  # an overlapping camera is a usable source
    enough: np.ndarray  # enough informative pixels for the sources it has
    fit: np.ndarray  # fitted photometrically (sources, a reference and enough pixels)


def frame_cases(
    temporal_ok: np.ndarray,
    moving_ok: np.ndarray,
    has_overlap: np.ndarray,
    has_ref: np.ndarray,
    n_static: np.ndarray,
    n_solid: np.ndarray,
    num_pixels: int,
    cfg: CalibrationConfig,
) -> FrameCases:
    """The :class:`FrameCases` of F frames.

    Args:
        temporal_ok, moving_ok: ``[F x S]`` temporal sources used / with a baseline (see TemporalSources).
        has_overlap: ``[F]``; has_ref: ``[F]`` the frame has reference percentiles.
        n_static, n_solid: ``[F]`` static pixels (temporal sources) and solid pixels (overlap sources).
        num_pixels: pixels of a frame (h * w).
    """
    stationary = ~moving_ok.any(1) if cfg.photometric else np.zeros(len(has_ref), bool)
    has_temporal = temporal_ok.any(1)
    min_px = max(16, cfg.min_valid_frac * num_pixels)
    enough = (has_temporal & (n_static >= min_px)) | (has_overlap & (n_solid >= min_px))
    fit = (has_temporal | has_overlap) & has_ref & enough
    return FrameCases(stationary, has_temporal, has_overlap, enough, fit)


@dataclass
class Decision:
    """The fitted target frames of one camera and what was decided for them (``[F]`` each)."""

    targets: np.ndarray  # frame indices
    reference: Reference  # the frames' reference percentiles
    has_ref: np.ndarray  # bool, the frame has a reference (else no value at all)
    result: FitResult  # the photometric fit
    params: np.ndarray  # [F x 2] decided (s, r), NaN where no cue decided (before the scene prior)
    cue: np.ndarray  # uint8 deciding cue (CUES)
    flags: np.ndarray  # uint8 FLAGS
    baseline_m: np.ndarray  # [n] baselines of the temporal sources used (all frames)
    ground_params: np.ndarray  # [F x 2] the ground cue's own (s, r) (NaN: none)
    ground_inliers: np.ndarray  # float32 inlier fraction of the ground pixels under that fit
    ground_ratio: np.ndarray  # median depth(photometric) / depth(ground) on ground pixels (NaN: none)


def decide_camera(
    inputs: CameraInputs,
    cases: FrameCases,
    res: FitResult,
    ground: GroundCue | None,
    cfg: CalibrationConfig,
) -> Decision:
    """Flags of the degenerate cases, then :func:`decide_cues` on the photometric fit ``res`` and the
    ground cue, for the target frames of ``inputs``."""
    has_ref = inputs.has_ref
    Fn = len(has_ref)
    flags = res.flags.copy()
    flags[cases.stationary] |= FLAGS["stationary"]
    low = (cfg.photometric | cases.has_overlap) & ~cases.stationary & ~(has_ref & cases.enough)
    flags[low] |= FLAGS["low_valid"]
    ph_ok = cases.fit & ((flags & FLAGS["low_valid"]) == 0)
    ph_cue = np.where(cases.has_temporal, CUES["photometric"], CUES["overlap"]).astype(np.uint8)
    g_params = ground.params if ground is not None else np.full((Fn, 2), np.nan)
    g_ratio = ground.depth_ratio(res.params) if ground is not None else np.full(Fn, np.nan)
    params, cue, add = decide_cues(
        res.params, ph_ok, ph_cue, res.loss, res.loss_at_ground, g_params, g_ratio, cfg
    )
    t = inputs.temporal
    return Decision(
        targets=inputs.targets,
        reference=inputs.frames.reference,
        has_ref=has_ref,
        result=res,
        params=params,
        cue=cue,
        flags=flags | add,
        baseline_m=t.baseline[t.ok] if t.ok.any() else np.zeros(0),
        ground_params=g_params,
        ground_inliers=ground.inlier_frac if ground is not None else np.zeros(Fn, np.float32),
        ground_ratio=g_ratio,
    )


@dataclass
class CameraFit:
    """One camera's calibration in this run, for the scene-prior fallback and the writer."""

    space: str  # the relative map's space ("disparity" or "depth_m")
    T: int  # frames of the scene
    todo: np.ndarray  # [T] bool, the frames this run calibrates
    previous: dict[str, np.ndarray] | None  # the stored calibration before this run (read_calibration)
    decision: Decision | None = None  # None: no frame to fit
    #: [n x 2] (s, r) of earlier decided frames of this camera (a resumed run's scene prior)
    prior_params: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def own_params(self) -> np.ndarray:
        """``[n x 2]`` the camera's (s, r) that may feed the scene prior: frames decided by their own cue
        and converged, then the earlier ones (:attr:`prior_params`)."""
        if self.decision is None:
            return self.prior_params
        d = self.decision
        ok = np.isin(d.cue, list(OWN_CUES)) & ((d.flags & FLAGS["not_converged"]) == 0)
        p = d.params[ok]
        return np.concatenate([p[np.all(np.isfinite(p), 1)], self.prior_params])


def stored_prior_params(
    values: np.ndarray,
    labels: np.ndarray | None,
    previous: dict[str, np.ndarray],
    todo: np.ndarray,
    moving: tuple[int, ...],
    cfg: CalibrationConfig,
    space: str,
    dev: torch.device,
) -> np.ndarray:
    """``[n x 2]`` (s, r) of the stored decided frames that this run leaves as they are, under their own
    reference percentiles (``values`` <float32: T, h, w>, ``labels`` <uint8: T, h, w> or None)."""
    old = np.flatnonzero(previous["done"].astype(bool) & ~todo & decided(previous))
    if not len(old):
        return np.zeros((0, 2))
    v = torch.from_numpy(values[old]).to(dev)
    fin = torch.isfinite(v)
    st = fin
    if labels is not None:
        st = static_mask(torch.from_numpy(np.ascontiguousarray(labels[old])).to(dev), moving) & fin
    lo, hi, _ = reference_percentiles(v, st, fin, cfg.percentiles, space)
    p_old = Reference(lo, hi, space).from_scale_shift(previous["scale"][old], previous["shift"][old])
    return p_old[np.all(np.isfinite(p_old), 1)]


def apply_scene_prior(d: Decision, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(params ``[F x 2]``, cue, flags) with the median of ``prior`` ``[n x 2]`` where no cue decided and the
    frame has a reference (flag ``fallback``; NaN when ``prior`` is empty); no values without a reference."""
    params, cue, flags = d.params.copy(), d.cue.copy(), d.flags.copy()
    need = (cue == CUES["none"]) & d.has_ref
    if need.any():
        if len(prior):
            params[need] = np.median(prior, 0)
            cue[need] = CUES["prior"]
        flags[need] |= FLAGS["fallback"]
    params[~d.has_ref] = np.nan
    cue[~d.has_ref] = CUES["none"]
    return params, cue, flags


def _scale_shift(ref: Reference, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) ``[F]`` of params ``[F x 2]``; NaN where the params are not finite."""
    a, b = ref.to_scale_shift(np.nan_to_num(params, nan=0.0))
    bad = ~np.all(np.isfinite(params), 1)
    a[bad], b[bad] = np.nan, np.nan
    return a, b


def calibration_arrays(fit: CameraFit, prior: np.ndarray) -> dict[str, np.ndarray]:
    """The camera's ``calibration/`` arrays (occlabel.store.calibration.CALIBRATION_ARRAYS) after this run:
    the stored frames this run left, then the fitted frames with the scene ``prior`` (``[n x 2]``) as the
    fallback (:func:`apply_scene_prior`)."""
    arrays = empty_calibration(fit.T)
    prev = fit.previous
    if prev is not None:
        keep = prev["done"].astype(bool) & ~fit.todo
        for k in arrays:
            if k in prev:
                arrays[k][keep] = prev[k][keep]
            elif k == "cue":  # stores written before the cue array: photometric or prior
                fb = (prev["flags"] & degenerate_bits()) != 0
                arrays[k][keep] = np.where(fb, CUES["prior"], CUES["photometric"])[keep]
    d = fit.decision
    if d is None:
        return arrays
    params, cue, flags = apply_scene_prior(d, prior)
    a, b = _scale_shift(d.reference, params)
    ga, gb = _scale_shift(d.reference, d.ground_params)
    new = {
        "scale": a,
        "shift": b,
        "loss": d.result.loss,
        "valid_frac": d.result.valid_frac,
        "flags": flags,
        "cue": cue,
        "ground_scale": ga,
        "ground_shift": gb,
        "ground_inliers": d.ground_inliers,
        "ground_ratio": d.ground_ratio,
        "done": True,
    }
    for k, v in new.items():
        arrays[k][d.targets] = v
    return arrays


__all__ = [
    "OWN_CUES",
    "CameraFit",
    "Decision",
    "FrameCases",
    "apply_scene_prior",
    "calibration_arrays",
    "decide_camera",
    "decide_cues",
    "decided",
    "degenerate_bits",
    "frame_cases",
    "stored_prior_params",
]
