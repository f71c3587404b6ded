"""The calibration part of the cache: the one schema of ``depth/<key>/calibration/`` and its reader/writer.

Per camera and depth result, calibrate-depth stores per frame (each array ``(T,)``)::

    calibration/                attrs["occlabel"]: method, options
      scale, shift (T,)   float32  1/depth_m = scale*disparity + shift (or depth_m = scale*d + shift)
      loss         (T,)   float32  final photometric loss (NaN: no photometric fit)
      valid_frac   (T,)   float32  fraction of pixels that entered the loss
      flags        (T,)   uint8    bit flags, see FLAGS
      cue          (T,)   uint8    which cue decided, see CALIBRATION_CUES
      ground_scale, ground_shift (T,) float32  the ground-plane cue's own fit (NaN: none)
      ground_inliers (T,) float32  inlier fraction of the ground pixels under that fit
      ground_ratio (T,)   float32  median over ground pixels of depth(photometric) / depth(ground)
      done         (T,)   bool

and, with ``calibrate-depth --write-depth``, beside the relative map: ``metric_depth`` (T,h,w) float16
metres and ``metric_depth_done`` (T,) bool.

:class:`CalibrationStore` is a part of :class:`occlabel.store.cache.Cache` (it uses the cache's group
lookup ``_maps``, ``resolve_key``, ``scene_meta``, ``_frame_array``, ``read_depth``, ``depth_attrs`` and
``read_semantics``); :func:`depth_from_relative` is the one place the affine becomes metres.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from occlabel.conventions import SKY
from occlabel.errors import StoreError
from occlabel.store.common import create_or_open_array, read_meta, write_meta

#: calibration flag bits
FLAGS = {
    "stationary": 1,  # no baseline to neighbours: scale from a fallback
    "low_valid": 2,  # too few valid pixels entered the loss
    "not_converged": 4,  # optimisation did not settle
    "fallback": 8,  # values come from the scene prior / another cue, not this frame's own fit
    "cue_disagreement": 16,  # label-free cues disagree beyond tolerance
}

#: per-frame cue codes of ``calibration/cue`` (occlabel.calibration.CUES): which cue decided
CALIBRATION_CUES = {"none": 0, "photometric": 1, "overlap": 2, "ground": 3, "prior": 4}

#: per-frame calibration arrays: name -> (dtype, fill value). The fill is the value of a frame without a
#: calibration (what calibrate-depth writes there) and the stored array's fill value. ``done`` is written
#: last (:meth:`CalibrationStore.write_calibration`).
CALIBRATION_ARRAYS: dict[str, tuple[str, Any]] = {
    "scale": ("float32", float("nan")),
    "shift": ("float32", float("nan")),
    "loss": ("float32", float("nan")),  # NaN: no photometric fit
    "valid_frac": ("float32", 0.0),
    "flags": ("uint8", 0),
    "cue": ("uint8", CALIBRATION_CUES["none"]),  # CALIBRATION_CUES
    "ground_scale": ("float32", float("nan")),  # the ground cue's own fit (NaN: none)
    "ground_shift": ("float32", float("nan")),
    "ground_inliers": ("float32", 0.0),  # inlier fraction of the ground pixels under that fit
    "ground_ratio": ("float32", float("nan")),  # median depth(photometric) / depth(ground) on ground pixels
    "done": ("bool", False),
}

#: the arrays every calibration has (stores written before calibrate-depth's method_version 2 have only these)
REQUIRED_CALIBRATION = ("scale", "shift", "loss", "valid_frac", "flags")


def empty_calibration(T: int) -> dict[str, np.ndarray]:
    """Every array of :data:`CALIBRATION_ARRAYS` for ``T`` frames, filled with its fill value."""
    return {k: np.full(T, fill, dt) for k, (dt, fill) in CALIBRATION_ARRAYS.items()}


class CalibrationStore:
    """Cache methods of the ``calibration/`` group and the stored metric depth (mixed into Cache)."""

    def write_calibration(
        self, scene: str, camera: str, arrays: dict[str, np.ndarray], attrs: dict, key: str | None = None
    ) -> None:
        """Write per-frame calibration arrays (each (T,)), then done.

        Required: scale, shift, loss, valid_frac, flags; optional (written when given): cue and the ground
        cue's ground_scale, ground_shift, ground_inliers, ground_ratio (see :data:`CALIBRATION_ARRAYS`).
        """
        g = self._maps(scene, camera, "depth", self.resolve_key("depth", key))
        T = len(self.scene_meta(scene)["tokens"])
        cal = g.require_group("calibration")
        write_meta(cal, attrs)
        missing = [k for k in REQUIRED_CALIBRATION if k not in arrays]
        if missing:
            raise StoreError(f"{self.path}: write_calibration needs {', '.join(missing)}")
        for name, (dt, fill) in CALIBRATION_ARRAYS.items():
            if name in arrays and name != "done":
                a = create_or_open_array(cal, name, (T,), dt, chunks=(T,), fill_value=fill)
                a[:] = np.asarray(arrays[name], dt)
        done = create_or_open_array(cal, "done", (T,), "bool", chunks=(T,), fill_value=False)
        # frames count as calibrated where the caller says so, else wherever the depth map is done
        done[:] = np.asarray(arrays["done"] if "done" in arrays else g["done"][:], bool)

    def has_calibration(self, scene: str, camera: str, key: str | None = None) -> bool:
        g = self._maps(scene, camera, "depth", self.resolve_key("depth", key))
        return "calibration/done" in g and bool(g["calibration/done"][:].any())

    def read_calibration(self, scene: str, camera: str, key: str | None = None) -> dict[str, np.ndarray]:
        """The per-frame calibration arrays, plus "attrs". Optional arrays (cue, ground_*) are present only
        in stores that have them (calibrate-depth before method_version 2 wrote none)."""
        g = self._maps(scene, camera, "depth", self.resolve_key("depth", key))
        if "calibration" not in g:
            raise StoreError(f"{self.path}: {scene}/{camera} is not calibrated; run calibrate-depth first")
        cal = g["calibration"]
        out = {k: cal[k][:] for k in (*REQUIRED_CALIBRATION, "done")}
        for k in CALIBRATION_ARRAYS:
            if k not in out and k in cal:
                out[k] = cal[k][:]
        out["attrs"] = read_meta(cal)
        return out

    def write_metric_depth(self, scene: str, camera: str, key: str, t: int, depth_m: np.ndarray) -> None:
        """Store frame ``t``'s calibrated metric depth <float: h, w> (metres, NaN = unknown) as float16 in
        ``metric_depth`` (written by ``calibrate-depth --write-depth``), then mark it done."""
        g = self._maps(scene, camera, "depth", key)
        self._frame_array(g, "metric_depth", "float16", np.nan, scene, camera)[t] = np.asarray(
            depth_m, np.float16
        )
        T = len(self.scene_meta(scene)["tokens"])
        create_or_open_array(g, "metric_depth_done", (T,), "bool", chunks=(T,), fill_value=False)[t] = True

    def metric_depth_done(self, scene: str, camera: str, key: str | None = None) -> np.ndarray:
        """<bool: T> frames whose metric depth is stored (all False without ``--write-depth``)."""
        g = self._maps(scene, camera, "depth", self.resolve_key("depth", key))
        if "metric_depth_done" in g:
            return g["metric_depth_done"][:].astype(bool)
        return np.zeros(len(self.scene_meta(scene)["tokens"]), bool)

    def read_metric_depth(self, scene: str, camera: str, t: int, key: str | None = None) -> np.ndarray:
        """The stored metric depth <np.float32: h, w> of frame ``t`` (``--write-depth``); StoreError if none."""
        key = self.resolve_key("depth", key)
        if not self.metric_depth_done(scene, camera, key)[t]:
            raise StoreError(
                f"{self.path}: {scene}/{camera} frame {t} has no stored metric depth "
                "(calibrate-depth --write-depth; or use metric_depth(), which computes it)"
            )
        return self._maps(scene, camera, "depth", key)["metric_depth"][t].astype(np.float32)

    def metric_depth(
        self,
        scene: str,
        camera: str,
        t: int,
        key: str | None = None,
        semantics_key: str | None = None,
        max_depth_m: float = 200.0,
    ) -> np.ndarray:
        """Calibrated metric depth <np.float32: h, w> of frame ``t``: NaN where unknown, invalid or sky.

        Uses ``1/depth_m = scale*disparity + shift`` (or ``depth_m = scale*d + shift`` for metric models).
        """
        key = self.resolve_key("depth", key)
        space = self.depth_attrs(scene, camera, key).get("space", "disparity")
        d = self.read_depth(scene, camera, key, t)
        cal = self.read_calibration(scene, camera, key)
        if not cal["done"][t]:
            raise StoreError(f"{self.path}: {scene}/{camera} frame {t} is not calibrated")
        depth = depth_from_relative(d, float(cal["scale"][t]), float(cal["shift"][t]), space, max_depth_m)
        try:
            labels, _ = self.read_semantics(scene, camera, semantics_key, t)
            depth[labels == SKY] = np.nan
        except StoreError:
            pass
        return depth


def depth_from_relative(
    values: np.ndarray, scale: float, shift: float, space: str, max_depth_m: float = 200.0
) -> np.ndarray:
    """Metric depth from a relative map and its calibration; NaN where non-positive or beyond ``max_depth_m``.

    Args:
        values: <float: ...> disparity (space "disparity") or depth (space "depth_m").
        space: "disparity": 1/depth = scale*values + shift; "depth_m": depth = scale*values + shift.
    """
    values = np.asarray(values, np.float32)
    if space == "disparity":
        inv = scale * values + shift
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(inv > 1.0 / max_depth_m, 1.0 / inv, np.nan)
    else:
        depth = scale * values + shift
        depth = np.where((depth > 0) & (depth <= max_depth_m), depth, np.nan)
    return depth.astype(np.float32)


__all__ = [
    "CALIBRATION_ARRAYS",
    "CALIBRATION_CUES",
    "FLAGS",
    "REQUIRED_CALIBRATION",
    "CalibrationStore",
    "depth_from_relative",
    "empty_calibration",
]
