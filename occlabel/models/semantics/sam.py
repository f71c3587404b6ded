"""SAM / SAM2 prompted with boxes (:class:`BoxSegmenter`) and the checkpoint loading helpers of the
box-prompted backends (passed to :func:`~occlabel.models.hub.load_pretrained` as model / "processor" classes).

**Mask score** = detector box score x SAM's predicted IoU (both clamped to [0, 1]): the detector says how
sure it is that the class is there, SAM how good its mask of that box is (combined by
:func:`~occlabel.models.semantics.box_ops.combine_masks`).

**One mask per box** (``multimask_output=False``): a box is an unambiguous prompt, for which the SAM authors
recommend the single-mask output (the three multimask outputs exist to resolve the ambiguity of one point);
Grounded-SAM does the same. It also costs a third of the mask memory. SAM2's decoder then applies its own
fallback to the best multimask output when the single mask is unstable (``dynamic_multimask_via_stability``).
SAM2's object-score logits are ignored, as SAM2's image predictor ignores them.

**Geometry.** SAM resizes the longest side to the encoder size (1024) keeping the aspect, normalises and pads
bottom / right to a square; SAM2 resizes to the square input directly. Boxes are xyxy in SAM input pixels.
The 256 x 256 low-resolution mask logits cover the (padded) square input;
:func:`~occlabel.models.semantics.box_ops.resample_masks` samples the part that covers the image straight at
the working resolution (one bilinear resampling, where the processor's ``post_process_masks`` upsamples to
1024, crops, then resizes: the same up to sub-pixel interpolation, without the 1024 x 1024 intermediate).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from occlabel.conventions import UNLABELED
from occlabel.models.hub import load_pretrained, normalization
from occlabel.models.semantics.box_ops import (
    best_mask,
    finish_labels,
    merge_best,
    resample_masks,
    resize_image,
)

DEFAULT_SEGMENTER = "facebook/sam-vit-base"
#: ImageNet mean / std: what SamImageProcessor and Sam2ImageProcessor use (fallback when a checkpoint has
#: no image processor file, e.g. video-style SAM2 repos)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
