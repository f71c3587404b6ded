"""Shared machinery of the box-prompted SAM backends (``grounded-sam``, ``owlv2-sam``): the backend base.

An open-vocabulary detector (Grounding DINO, OWLv2) finds boxes for the vocabulary's prompts; SAM or SAM2
turns every box into a mask; :func:`~occlabel.models.semantics.box_ops.combine_masks` turns the scored masks
into one label map per image. Everything but the detector is shared, in three modules:

* box_ops.py: pure, vectorised functions: :func:`box_iou`, :func:`select_boxes` (score filter, class-aware
  NMS, top-k), :func:`best_mask` / :func:`combine_masks` (scored masks -> labels and confidence),
  :func:`resample_masks` (SAM's low-resolution logits -> the working resolution);
* sam.py: :class:`BoxSegmenter`, SAM / SAM2 loading and prompting (the image embedding is computed once per
  image, then all of that image's boxes are decoded against it, in chunks of ``sam_batch`` image x box
  prompts; mask score = detector score x SAM's predicted IoU), and the checkpoint loading helpers;
* this module: the option checks and :class:`BoxPromptedSAM`, the
  :class:`~occlabel.models.base.SemanticModel` both backends derive from (common options, vocabulary, dtype
  handling, provenance, ``forward``). The names of box_ops.py and sam.py stay importable from here.

Everything runs in torch on the model's device; fp16 autocast on CUDA with ``dtype: auto``, fp32 on CPU.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any, ClassVar

import torch

from occlabel.errors import OccLabelError
from occlabel.models.base import SemanticModel
from occlabel.models.hub import parse_dtype
from occlabel.models.semantics.box_ops import (
    PRE_NMS_FACTOR,
    best_mask,
    box_iou,
    combine_masks,
    cxcywh_to_xyxy,
    finish_labels,
    merge_best,
    resample_masks,
    resize_image,
    select_boxes,
)
from occlabel.models.semantics.sam import (
    DEFAULT_SEGMENTER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BoxSegmenter,
    CheckedModel,
    DetectorFiles,
    ImageSettings,
    SamAuto,
)
from occlabel.models.vocab import Vocabulary, load_vocabulary

# ------------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------------


def check_number(name: str, key: str, value: Any, lo: float, hi: float) -> float:
    """``value`` as a float in [lo, hi], or a one-line OccLabelError naming the option."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= float(value) <= hi:
        raise OccLabelError(f"{name}: {key} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def check_int(name: str, key: str, value: Any, lo: int, allow_none: bool = False) -> int | None:
    """``value`` as an int >= lo (or None when allowed), or a one-line OccLabelError naming the option."""
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        extra = " or null" if allow_none else ""
        raise OccLabelError(f"{name}: {key} must be an integer >= {lo}{extra}, got {value!r}")
    return int(value)


def check_model_name(name: str, key: str, value: Any) -> str:
    """A hub repo id or directory given as a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise OccLabelError(f"{name}: {key} must be a hub repo id or a model directory, got {value!r}")
    return value.strip()


# ------------------------------------------------------------------------------------------------
# the shared backend
# ------------------------------------------------------------------------------------------------


class BoxPromptedSAM(SemanticModel):
    """Base of the detector + SAM backends. Subclasses load their detector and implement :meth:`detect`.

    Common conf keys (subclasses list them in their ``default_conf``): "detector", "segmenter", "vocab",
    "max_boxes", "nms_iou", "sam_batch", "dtype".
    """

    default_conf: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, conf: dict[str, Any] | None = None, device: torch.device | str = "cpu"):
        super().__init__(name, conf, device)
        c = self.conf
        c["detector"] = check_model_name(name, "detector", c["detector"])
        c["segmenter"] = check_model_name(name, "segmenter", c["segmenter"])
        self.max_boxes = check_int(name, "max_boxes", c["max_boxes"], 1)
        self.nms_iou = check_number(name, "nms_iou", c["nms_iou"], 0.0, 1.0)
        self.sam_batch = check_int(name, "sam_batch", c["sam_batch"], 1)
        self._weights_dtype, self._autocast = parse_dtype(name, c["dtype"], self.device)
        if isinstance(c["vocab"], os.PathLike):
            c["vocab"] = os.fspath(c["vocab"])
        if not isinstance(c["vocab"], str) or not c["vocab"].strip():
            raise OccLabelError(f"{name}: vocab must be a built-in name or a YAML path, got {c['vocab']!r}")
        self.vocab: Vocabulary = load_vocabulary(c["vocab"])
        prompts = self.vocab.prompts()
        if not prompts:
            raise OccLabelError(f"{name}: vocabulary {self.vocab.name!r} has no prompts")
        self.prompt_texts = [p for p, _ in prompts]
        #: [P] class id of each prompt (SKY for sky prompts)
        self.prompt_class = torch.tensor([cid for _, cid in prompts], dtype=torch.long, device=self.device)
        self.check_conf()  # every option is checked before any model is loaded
        self.segmenter = BoxSegmenter(c["segmenter"], self.device, self._weights_dtype)
        #: provenance of the detector's weights (set by load_detector)
        self.detector_weights: dict[str, Any] = {}
        self.load_detector()

    # -- to implement ---------------------------------------------------------------------------
    def check_conf(self) -> None:
        """Validate the detector's options in ``self.conf`` (one-line OccLabelErrors); load nothing."""
        raise NotImplementedError  # pragma: no cover

    def load_detector(self) -> None:
        """Load the detector (through :func:`~occlabel.models.hub.load_pretrained`), set
        ``self.detector_weights`` and whatever :meth:`detect` needs."""
        raise NotImplementedError  # pragma: no cover

    def detect(
        self, image: torch.Tensor, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate boxes of a batch (called under inference mode and autocast).

        Args:
            image: ``[B x 3 x h x w]`` float32 RGB in [0, 1] on the device (working resolution).
            source: the same images at native resolution (same aspect ratio), or None: the detector input
                is resized from it when given.
        Returns:
            boxes ``[B x N x 4]`` xyxy in working-resolution pixels, scores ``[B x N]`` in [0, 1], classes
            ``[B x N]`` long (vocabulary ids / SKY), keep ``[B x N]`` bool (passed the thresholds).
        """
        raise NotImplementedError  # pragma: no cover

    def detector_provenance(self) -> dict[str, Any]:
        """Thresholds, mode, sizes ... of the detector (merged into :meth:`provenance`)."""
        return {}  # pragma: no cover

    # -- shared ---------------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        return {
            **super().provenance(),
            "detector": self.detector_weights,
            "segmenter": self.segmenter.weights,
            "vocab": self.vocab.name,
            "vocab_hash": self.vocab.content_hash(),
            "n_prompts": len(self.prompt_texts),
            "max_boxes": self.max_boxes,
            "nms_iou": self.nms_iou,
            "mask_score": "detector score x SAM predicted IoU",
            **self.detector_provenance(),
        }

    def autocast(self):
        """fp16 autocast on CUDA with dtype "auto", else nothing."""
        if self._autocast:
            return torch.autocast(device_type=self.device.type, dtype=torch.float16)
        return nullcontext()

    def candidates(
        self, image: torch.Tensor, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`detect`, boxes clipped to the image, then :func:`select_boxes`: boxes ``[B x K x 4]`` (xyxy,
        working-resolution pixels), scores ``[B x K]``, classes ``[B x K]``, valid ``[B x K]``."""
        boxes, scores, classes, keep = self.detect(image, source)
        h, w = image.shape[-2:]
        limit = torch.tensor([w, h, w, h], device=boxes.device, dtype=torch.float32)
        boxes = torch.minimum(boxes.float().clamp_min(0), limit)
        # boxes left without area by the clipping (e.g. OWLv2 boxes in the padding) prompt nothing
        keep = keep & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        return select_boxes(boxes, scores.float(), classes, keep, self.max_boxes, self.nms_iou)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels at the working resolution of ``batch["image"]``; the detector and SAM inputs are resized
        from ``batch["image_native"]`` when the batch has it (see :func:`~occlabel.models.base.network_input`)."""
        image = batch["image"].to(self.device, torch.float32)
        source = batch.get("image_native")
        with torch.inference_mode(), self.autocast():
            boxes, scores, classes, valid = self.candidates(image, source)
            labels, conf = self.segmenter.segment(
                image, boxes, scores, classes, valid, self.sam_batch, source=source
            )
        return labels, conf


__all__ = [
    "DEFAULT_SEGMENTER",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRE_NMS_FACTOR",
    "BoxPromptedSAM",
    "BoxSegmenter",
    "CheckedModel",
    "DetectorFiles",
    "ImageSettings",
    "SamAuto",
    "best_mask",
    "box_iou",
    "check_int",
    "check_model_name",
    "check_number",
    "combine_masks",
    "cxcywh_to_xyxy",
    "finish_labels",
    "merge_best",
    "resample_masks",
    "resize_image",
    "select_boxes",
]
