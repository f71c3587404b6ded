"""Shared machinery of the box-prompted SAM backends (``grounded-sam``, ``owlv2-sam``).

An open-vocabulary detector (Grounding DINO, OWLv2) finds boxes for the vocabulary's prompts; SAM or SAM2
turns every box into a mask; :func:`combine_masks` turns the scored masks into one label map per image.
This module holds everything but the detector:

* pure, vectorised functions: :func:`box_iou`, :func:`select_boxes` (score filter, class-aware NMS, top-k),
  :func:`best_mask` / :func:`combine_masks` (scored masks -> labels and confidence), :func:`resample_masks`
  (SAM's low-resolution logits -> the working resolution);
* :class:`BoxSegmenter`: SAM / SAM2 loading and prompting. The image embedding is computed once per image,
  then all of that image's boxes are decoded against it (in chunks of ``sam_batch`` image x box prompts);
* :class:`BoxPromptedSAM`: the :class:`~occlabel.models.base.SemanticModel` both backends derive from
  (common options, vocabulary, dtype handling, provenance, ``forward``).

**Mask score** = detector box score x SAM's predicted IoU (both clamped to [0, 1]): the detector says how
sure it is that the class is there, SAM how good its mask of that box is. Each pixel takes the class of the
best-scoring mask covering it (mask logit > 0, SAM's own threshold), its confidence is that score, and
pixels no mask covers are UNLABELED with confidence 0.

**One mask per box** (``multimask_output=False``): a box is an unambiguous prompt, for which the SAM authors
recommend the single-mask output (the three multimask outputs exist to resolve the ambiguity of one point);
Grounded-SAM does the same. It also costs a third of the mask memory. SAM2's decoder then applies its own
fallback to the best multimask output when the single mask is unstable (``dynamic_multimask_via_stability``).
SAM2's object-score logits are ignored, as SAM2's image predictor ignores them.

**Geometry.** SAM resizes the longest side to the encoder size (1024) keeping the aspect, normalises and pads
bottom / right to a square; SAM2 resizes to the square input directly. Boxes are xyxy in SAM input pixels.
The 256 x 256 low-resolution mask logits cover the (padded) square input; :func:`resample_masks` samples
the part that covers the image straight at the working resolution (one bilinear resampling, where the
processor's ``post_process_masks`` upsamples to 1024, crops, then resizes: the same up to sub-pixel
interpolation, without the 1024 x 1024 intermediate).

Everything runs in torch on the model's device; fp16 autocast on CUDA with ``dtype: auto``, fp32 on CPU.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from occlabel.conventions import UNLABELED
from occlabel.errors import OccLabelError
from occlabel.models.base import SemanticModel
from occlabel.models.hub import load_pretrained, normalization, parse_dtype
from occlabel.models.vocab import Vocabulary, load_vocabulary

DEFAULT_SEGMENTER = "facebook/sam-vit-base"
#: ImageNet mean / std: what SamImageProcessor and Sam2ImageProcessor use (fallback when a checkpoint has
#: no image processor file, e.g. video-style SAM2 repos)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: candidates kept per image before NMS, as a multiple of max_boxes (bounds the K x K IoU matrix)
PRE_NMS_FACTOR = 8


# ------------------------------------------------------------------------------------------------
# pure functions
# ------------------------------------------------------------------------------------------------


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[... x 4]`` (centre x, centre y, width, height) -> ``[... x 4]`` (x0, y0, x1, y1), same units."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: ``a [... x N x 4]``, ``b [... x M x 4]`` -> ``[... x N x M]`` float.

    Degenerate boxes (zero area) have IoU 0 with everything.
    """
    a, b = a.float(), b.float()
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def select_boxes(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    keep: torch.Tensor,
    max_boxes: int,
    nms_iou: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The boxes each image prompts SAM with: kept, class-aware NMS, best ``max_boxes`` (vectorised).

    Args:
        boxes: ``[B x N x 4]`` xyxy candidate boxes (any pixel frame).
        scores: ``[B x N]`` float detector scores.
        classes: ``[B x N]`` int class ids.
        keep: ``[B x N]`` bool, candidates that passed the detector's thresholds.
        max_boxes: at most this many boxes per image.
        nms_iou: a box is dropped when it overlaps a higher-scoring box *of the same class* with IoU above
            this (1.0 disables NMS). "Fast NMS" (YOLACT): every higher-scoring candidate suppresses, even one
            that is itself suppressed, which is slightly stricter than greedy NMS but one matrix operation.
            Only the best ``8 * max_boxes`` candidates per image enter NMS.
    Returns:
        boxes ``[B x K x 4]``, scores ``[B x K]``, classes ``[B x K]`` (long), valid ``[B x K]`` bool with
        ``K = min(N, max_boxes)``; per image sorted by decreasing score, valid ones first (invalid rows carry
        score 0 and must be ignored).
    """
    B, N = scores.shape
    if N == 0 or max_boxes <= 0:
        k = 0
        return boxes[:, :k], scores[:, :k], classes[:, :k].long(), keep[:, :k]
    neg = torch.tensor(float("-inf"), device=scores.device)
    s = torch.where(keep, scores.float(), neg)
    k0 = min(N, PRE_NMS_FACTOR * max_boxes)
    s0, idx = s.topk(k0, dim=1)  # sorted, descending
    b0 = boxes.float().gather(1, idx[..., None].expand(B, k0, 4))
    c0 = classes.long().gather(1, idx)
    v0 = torch.isfinite(s0)
    if nms_iou < 1.0 and k0 > 1:
        iou = box_iou(b0, b0)  # B x k0 x k0
        earlier = torch.ones(k0, k0, dtype=torch.bool, device=s.device).triu(1)  # [i, j]: i before j
        hits = (iou > nms_iou) & (c0[:, :, None] == c0[:, None, :]) & earlier & v0[:, :, None]
        v0 = v0 & ~hits.any(1)
    k = min(k0, max_boxes)
    s1, idx1 = torch.where(v0, s0, neg).topk(k, dim=1)
    valid = torch.isfinite(s1)
    out_boxes = b0.gather(1, idx1[..., None].expand(B, k, 4))
    out_classes = c0.gather(1, idx1)
    return out_boxes, torch.where(valid, s1, torch.zeros_like(s1)), out_classes, valid


def best_mask(
    masks: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the best-scoring mask covering it: ``(score, class)``.

    Args:
        masks: ``[B x N x h x w]`` bool masks, or float logits (covered where > 0).
        scores: ``[B x N]`` float mask scores.
        classes: ``[B x N]`` int class ids.
        valid: optional ``[B x N]`` bool; invalid masks cover nothing.
    Returns:
        best score ``[B x h x w]`` float32 (-inf where no mask covers the pixel) and its class
        ``[B x h x w]`` long (UNLABELED where none). Ties go to the lower mask index.
    """
    if masks.dim() != 4 or masks.shape[:2] != scores.shape or classes.shape != scores.shape:
        raise ValueError(
            f"masks {tuple(masks.shape)}, scores {tuple(scores.shape)}, classes "
            f"{tuple(classes.shape)} do not match"
        )
    B, N, h, w = masks.shape
    covered = masks if masks.dtype == torch.bool else masks > 0
    s = scores.float()
    if valid is not None:
        s = torch.where(valid, s, torch.full_like(s, float("-inf")))
    if N == 0:
        return (
            torch.full((B, h, w), float("-inf"), device=masks.device),
            torch.full((B, h, w), UNLABELED, dtype=torch.long, device=masks.device),
        )
    per = torch.where(covered, s[:, :, None, None], torch.tensor(float("-inf"), device=masks.device))
    score, index = per.max(1)
    cls = classes.long().gather(1, index.flatten(1)).view(B, h, w)
    cls = torch.where(torch.isfinite(score), cls, torch.full_like(cls, UNLABELED))
    return score, cls


def merge_best(
    a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two :func:`best_mask` results of disjoint mask sets (``a``'s masks come first: ties keep ``a``)."""
    better = b[0] > a[0]
    return torch.where(better, b[0], a[0]), torch.where(better, b[1], a[1])


def finish_labels(score: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`best_mask` output -> (labels ``[B x h x w]`` uint8, confidence ``[B x h x w]`` float32 in [0, 1],
    0 where unlabeled)."""
    covered = torch.isfinite(score)
    conf = torch.where(covered, score.clamp(0, 1), torch.zeros_like(score))
    labels = torch.where(covered, cls, torch.full_like(cls, UNLABELED))
    return labels.to(torch.uint8), conf.float()


def combine_masks(
    masks: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scored masks -> label map (pure, vectorised).

    Args:
        masks: ``[B x N x h x w]`` bool masks or float logits (covered where > 0), at the output resolution.
        scores: ``[B x N]`` mask scores (here: detector box score x SAM predicted IoU).
        classes: ``[B x N]`` class id of each mask (0-253, or SKY = 254).
        valid: optional ``[B x N]`` bool (padding rows False).
    Returns:
        labels ``[B x h x w]`` uint8: the class of the best-scoring valid mask covering the pixel, UNLABELED
        (255) where none does; confidence ``[B x h x w]`` float32: that mask's score clamped to [0, 1], 0 where
        unlabeled.
    """
    return finish_labels(*best_mask(masks, scores, classes, valid))


def resample_masks(logits: torch.Tensor, region: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """Low-resolution mask logits over the square SAM input -> logits over the image at ``size``.

    Args:
        logits: ``[B x N x m x m]`` float mask logits covering the whole (padded) square input.
        region: (fy, fx), the fraction of the input's height / width the image occupies (SAM: the unpadded
            part, e.g. (0.5625, 1.0) for a 16:9 image; SAM2: (1, 1)).
        size: (h, w) output size.
    Returns:
        ``[B x N x h x w]`` float32, bilinear (align_corners=False) samples at the output pixel centres.
    """
    B, N, m, _ = logits.shape
    h, w = size
    fy, fx = region
    dev = logits.device
    # output pixel centre (i + 0.5) / h of the image -> fy * that of the square -> [-1, 1] grid coordinates
    ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h * fy * 2 - 1
    xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w * fx * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # h x w x 2 (x, y)
    return F.grid_sample(
        logits.float(),
        grid[None].expand(B, h, w, 2),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )


def resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B x 3 x h x w]`` in [0, 1] -> ``[B x 3 x H x W]`` bilinear (antialiased when shrinking), in [0, 1]."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink).clamp(
        0, 1
    )


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
# loading helpers (passed to hub.load_pretrained as "processor classes")
# ------------------------------------------------------------------------------------------------


def _image_processor_dict(source: str, **kwargs) -> dict[str, Any]:
    from transformers.image_processing_utils import ImageProcessingMixin

    settings, _ = ImageProcessingMixin.get_image_processor_dict(source, **kwargs)
    return dict(settings)


class ImageSettings:
    """Reads a checkpoint's image-processor *settings* (size, mean, std) without building the processor.

    The backends preprocess in torch, so the (PIL or torchvision) processor object is not needed; this also
    works without torchvision, which Sam2ImageProcessor requires. Missing files fall back to ImageNet mean /
    std (SAM's and SAM2's). Returns a namespace with the settings as attributes.
    """

    @staticmethod
    def from_pretrained(source: str, **kwargs) -> SimpleNamespace:
        settings: dict[str, Any] = {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
        try:
            settings.update(_image_processor_dict(source, **kwargs))
        except OSError:
            settings["defaults"] = True
        return SimpleNamespace(**settings)


class DetectorFiles:
    """Reads a detector checkpoint's tokenizer (AutoTokenizer) and image-processor settings."""

    @staticmethod
    def from_pretrained(source: str, **kwargs) -> SimpleNamespace:
        from transformers import AutoTokenizer

        image = SimpleNamespace(**_image_processor_dict(source, **kwargs))
        return SimpleNamespace(image=image, tokenizer=AutoTokenizer.from_pretrained(source, **kwargs))


def _model_type(source: str, **kwargs) -> str:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(
        source, local_files_only=kwargs.get("local_files_only", False)
    ).model_type


class CheckedModel:
    """``from_pretrained`` of the transformers class ``class_name``, refused (ValueError, which
    :func:`~occlabel.models.hub.load_pretrained` turns into a one-line error) unless the checkpoint's
    ``config.model_type`` is one of ``model_types``: a wrong directory fails before any weights are read,
    instead of loading random weights with a page of missing-key warnings."""

    def __init__(self, class_name: str, model_types: tuple[str, ...], what: str):
        self.class_name, self.model_types, self.what = class_name, model_types, what

    def from_pretrained(self, source: str, **kwargs):
        import transformers

        model_type = _model_type(source, **kwargs)
        if model_type not in self.model_types:
            raise ValueError(f"not {self.what} checkpoint (config model_type {model_type!r})")
        return getattr(transformers, self.class_name).from_pretrained(source, **kwargs)


class SamAuto:
    """``from_pretrained`` that builds SamModel or Sam2Model from the checkpoint's ``config.model_type``
    ("sam"; "sam2", or "sam2_video" for the video repos such as facebook/sam2.1-hiera-tiny, whose image parts
    Sam2Model loads)."""

    @staticmethod
    def from_pretrained(source: str, **kwargs):
        model_type = _model_type(source, **kwargs)
        if model_type == "sam":
            from transformers import SamModel as cls
        elif model_type in ("sam2", "sam2_video"):
            try:
                from transformers import Sam2Model as cls
            except ImportError as e:  # transformers < 4.56
                raise ValueError("SAM2 checkpoints need transformers >= 4.56") from e
        else:
            raise ValueError(f"not a SAM or SAM2 checkpoint (config model_type {model_type!r})")
        return cls.from_pretrained(source, **kwargs)


# ------------------------------------------------------------------------------------------------
# SAM / SAM2
# ------------------------------------------------------------------------------------------------


class BoxSegmenter:
    """SAM or SAM2 prompted with boxes: one image embedding per image, all its boxes decoded against it.

    Attributes:
        kind: "sam" (longest side to ``input_size``, pad to a square) or "sam2" (resize to the square).
        input_size: side of the square encoder input (1024 for the released checkpoints).
        weights: provenance of the loaded checkpoint (from :func:`~occlabel.models.hub.load_pretrained`).
    """

    def __init__(self, name_or_path: str, device: torch.device, dtype: torch.dtype = torch.float32):
        self.device = device
        self.model, settings, self.weights = load_pretrained(
            SamAuto, ImageSettings, name_or_path, device, dtype
        )
        self.dtype = dtype
        self.kind = "sam2" if "Sam2" in type(self.model).__name__ else "sam"
        self.input_size = int(_side(self.model.config.prompt_encoder_config.image_size))
        self._mean, self._std = normalization(settings, device)
        self.weights = {**self.weights, "kind": self.kind, "input_size": self.input_size}

    def geometry(self, h: int, w: int) -> tuple[tuple[int, int], tuple[float, float]]:
        """For an (h, w) image: the resized size (nh, nw) in the square input and the fraction it covers."""
        S = self.input_size
        if self.kind == "sam2":
            return (S, S), (1.0, 1.0)
        s = S / max(h, w)
        nh, nw = int(h * s + 0.5), int(w * s + 0.5)  # as SamImageProcessor._get_preprocess_shape
        return (nh, nw), (nh / S, nw / S)

    def preprocess(self, image: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """``[B x 3 x H x W]`` RGB in [0, 1] -> normalised, padded square input ``[B x 3 x S x S]`` float32.

        ``hw``: the (h, w) whose :meth:`geometry` to use (the working resolution when ``image`` is the native
        image of the same aspect ratio); default the image's own size."""
        x = image.to(self.device, torch.float32)
        (nh, nw), _ = self.geometry(*(hw or x.shape[-2:]))
        x = (resize_image(x, (nh, nw)) - self._mean) / self._std
        S = self.input_size
        return F.pad(x, (0, S - nw, 0, S - nh))  # zeros after normalisation, as the processor pads

    def embed(self, image: torch.Tensor, hw: tuple[int, int] | None = None):
        """Image embeddings (SAM: ``[B x C x e x e]``; SAM2: list of three feature levels)."""
        return self.model.get_image_embeddings(self.preprocess(image, hw).to(self.dtype))

    def segment(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        classes: torch.Tensor,
        valid: torch.Tensor,
        sam_batch: int = 64,
        source: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and confidence at the image's resolution from scored, classed boxes.

        Args:
            image: ``[B x 3 x h x w]`` RGB in [0, 1] (the working resolution).
            boxes: ``[B x K x 4]`` xyxy in working-resolution pixels (valid ones first, as
                :func:`select_boxes` returns them).
            scores: ``[B x K]`` detector scores in [0, 1]; classes ``[B x K]``; valid ``[B x K]`` bool.
            sam_batch: at most this many image x box prompts per mask-decoder call (bounds memory).
            source: ``[B x 3 x H x W]`` the same images at native resolution (same aspect ratio): the encoder
                input is resized from it when given, so SAM sees the camera's detail.
        Returns:
            labels ``[B x h x w]`` uint8, confidence ``[B x h x w]`` float32 (see :func:`combine_masks`; mask
            score = detector score x predicted IoU).
        """
        B, _, h, w = image.shape
        best = (
            torch.full((B, h, w), float("-inf"), device=self.device),
            torch.full((B, h, w), UNLABELED, dtype=torch.long, device=self.device),
        )
        n = int(valid.sum(1).max()) if valid.numel() else 0
        if n == 0:  # nothing detected anywhere: skip SAM altogether
            return finish_labels(*best)
        boxes, scores, classes, valid = boxes[:, :n], scores[:, :n], classes[:, :n], valid[:, :n]
        (nh, nw), region = self.geometry(h, w)
        scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], device=self.device)
        boxes_in = boxes.to(self.device).float() * scale
        embeddings = self.embed(image if source is None else source, (h, w))
        chunk = max(1, sam_batch // B)
        for i in range(0, n, chunk):
            out = self.model(
                image_embeddings=embeddings,
                input_boxes=boxes_in[:, i : i + chunk].to(self.dtype),
                multimask_output=False,
            )
            logits = out.pred_masks[:, :, 0]  # B x k x m x m
            iou = out.iou_scores[:, :, 0].float().clamp(0, 1)
            mask_scores = scores[:, i : i + chunk].float().clamp(0, 1) * iou
            up = resample_masks(logits, region, (h, w))
            part = best_mask(up, mask_scores, classes[:, i : i + chunk], valid[:, i : i + chunk])
            best = merge_best(best, part)
        return finish_labels(*best)


def _side(size: Any) -> int:
    return int(size[0]) if isinstance(size, list | tuple) else int(size)


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
    "BoxPromptedSAM",
    "BoxSegmenter",
    "best_mask",
    "box_iou",
    "combine_masks",
    "cxcywh_to_xyxy",
    "merge_best",
    "resample_masks",
    "select_boxes",
]
