"""The calibration method of ``calibrate-depth``: metric scale and shift of relative depth from label-free cues.

A depth foundation model gives, per image, a relative disparity d with ``1/z = a * d + b`` for unknown
``a > 0`` and ``b`` that differ from image to image. With no depth ground truth, (a, b) of each frame is
the pair that best re-synthesises the frame from its temporal neighbours, warped through the candidate
depth with the known camera poses (Monodepth2-style photometric error, see occlabel.geometry.photometric),
in a parameterisation (s, r) independent of the relative map's unknown affine (:mod:`.params`).

Label-free cues (each switchable: ``photometric``, ``overlap``, ``ground``, ``sky``):

- photometric (temporal): the frame's own neighbours as sources (:mod:`.photometric`);
- overlap: the overlapping cameras of the rig (:func:`.inputs.overlapping_cameras`) at the same frame are
  further sources of the same objective, with the metric baseline of the extrinsics. Images this close in
  time (``overlap_max_dt_s``) see movable objects where they are, so for these sources movable-class
  pixels count too. It needs no ego motion;
- ground plane (:class:`.ground.GroundCue`): flat-class pixels have the depth at which their ray meets the
  ego ground plane; its robust per-frame fit is a start, a term of the objective, the cross-check and the
  fallback where there is no parallax;
- sky term (:func:`.ground.sky_cost`, disparity space): pulls the calibrated inverse depth of the frame's
  sky toward 0.

Algorithm, per scene and camera:

0. Sources (:mod:`.inputs`): baseline-adaptive temporal neighbours, then the overlapping cameras.
1. Ground: the ground cue's fit of every frame (:meth:`.ground.GroundCue.fit`).
2. Coarse grid search, 3. Adam over a pyramid, 4. pattern-search polish (:mod:`.fit`, :mod:`.search`).
5. Decision between the cues, degenerate frames and the scene-prior fallback (:mod:`.decide`).

Modules: :mod:`.config` (options, method version, cue codes), :mod:`.params` (the (s, r) parameterisation
and its search space), :mod:`.photometric` (the photometric cue), :mod:`.ground` (ground and sky cues),
:mod:`.search` (penalty terms and optimisers), :mod:`.fit` (:func:`fit_camera`), :mod:`.decide` (the
decision, fallbacks and the stored arrays), :mod:`.inputs` (sources, rig overlap, reading and loading a
camera). The stage that runs it over a cache is occlabel.stages.calibrate_depth.
"""

from occlabel.calibration.config import CUES, METHOD, METHOD_VERSION, CalibrationConfig, make_config
from occlabel.calibration.decide import CameraFit, Decision, decide_cues
from occlabel.calibration.fit import FitResult, fit_camera
from occlabel.calibration.ground import GroundCue, ground_heights, sky_cost, sky_values
from occlabel.calibration.inputs import CameraInputs, choose_sources, load_camera, overlapping_cameras
from occlabel.calibration.params import Reference, hypothesis_grid, inverse_depth
from occlabel.calibration.photometric import CameraFrames, CueResult, PhotometricCue

__all__ = [
    "CUES",
    "METHOD",
    "METHOD_VERSION",
    "CalibrationConfig",
    "CameraFit",
    "CameraFrames",
    "CameraInputs",
    "CueResult",
    "Decision",
    "FitResult",
    "GroundCue",
    "PhotometricCue",
    "Reference",
    "choose_sources",
    "decide_cues",
    "fit_camera",
    "ground_heights",
    "hypothesis_grid",
    "inverse_depth",
    "load_camera",
    "make_config",
    "overlapping_cameras",
    "sky_cost",
    "sky_values",
]
