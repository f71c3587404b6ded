"""OWLv2 + SAM: OWLv2 boxes for the vocabulary's prompts, SAM / SAM2 masks, one label map per image.

Registered name: ``owlv2-sam``. ``conf["detector"]`` picks the OWLv2 checkpoint and ``conf["segmenter"]`` the
SAM or SAM2 one (hub repo ids or local directories); masks and their combination are
:mod:`occlabel.models.semantics.box_sam`'s.

* **Text queries** are embedded once, when the backend is built: every prompt, written into
  ``prompt_template`` ("a photo of a {}", the form of the OWL model cards' examples), goes through
  ``Owlv2Model.get_text_features`` (CLIP text tower + projection). Per batch only the image side runs:
  ``Owlv2ForObjectDetection.image_embedder`` -> ``class_predictor(image_feats, query_embeds)`` (cosine
  similarity with a learned per-box shift and scale) and ``box_predictor``, exactly as the model's forward
  combines them, without re-encoding the texts for every image.
* **Preprocessing** in torch, as Owlv2ImageProcessor does it: pad bottom / right to a square with 0 (black,
  in [0, 1] space), resize to the encoder's square input (960 for the released base checkpoints; bilinear,
  antialiased when shrinking), normalise with the processor's (CLIP) mean / std. Boxes come as normalised
  cxcywh relative to the *padded square*: x ``max(h, w)`` gives working-resolution pixels.
* **Scores** as ``Owlv2ImageProcessor.post_process_object_detection``: per box (one per patch, 3600 for 960 /
  16), the best prompt by logit; score = sigmoid of that logit; the class is that prompt's class; kept when
  score >= ``threshold``. The objectness head is not used.
* **Threshold 0.1**: the default of transformers' OWLv2 ``post_process_object_detection`` and the value of
  the model card's example. OWLv2's self-trained scores run low (true objects often score 0.2-0.5), so 0.2
  loses many of them, and a low threshold costs little here: overlapping masks are resolved per pixel by
  score, so a weak box only labels pixels that no stronger mask claims.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from occlabel.errors import OccLabelError
from occlabel.models.hub import load_pretrained, normalization
from occlabel.models.semantics.box_sam import (
    DEFAULT_SEGMENTER,
    BoxPromptedSAM,
    CheckedModel,
    DetectorFiles,
    check_number,
    cxcywh_to_xyxy,
    resize_image,
)

DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"


def owl_scores(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-box best prompt from OWLv2 class logits.

    Args:
        logits: ``[B x N x P]`` float, ``class_predictor`` logits (N boxes, P text queries).
        threshold: keep a box when its score is >= this.
    Returns:
        score ``[B x N]`` float = sigmoid(max logit), prompt ``[B x N]`` long (argmax), keep ``[B x N]`` bool.
    """
    best, prompt = logits.float().max(-1)
    score = best.sigmoid()
    return score, prompt, score >= threshold


class OWLv2SAM(BoxPromptedSAM):
    default_conf: ClassVar[dict[str, Any]] = {
        "detector": DEFAULT_DETECTOR,  # OWLv2: hub repo id or local directory (save_pretrained output)
        "segmenter": DEFAULT_SEGMENTER,  # SAM (facebook/sam-vit-*) or SAM2 (facebook/sam2.1-hiera-*): id or dir
        "vocab": "occ3d",  # vocabulary: "occ3d", "semantickitti" or a path to a vocabulary YAML file
        "threshold": 0.1,  # keep a box when sigmoid(best prompt logit) >= this (transformers' OWLv2 default)
        "prompt_template": "a photo of a {}",  # text query per prompt; "{}" is replaced by the prompt
        "max_boxes": 100,  # at most this many boxes per image go to SAM (best scores first, after NMS)
        "nms_iou": 0.5,  # drop a box overlapping a better one of the same class by IoU > this (1.0: no NMS)
        "sam_batch": 64,  # at most this many image x box prompts per SAM mask-decoder call
        "dtype": "auto",  # "auto" (fp16 autocast on CUDA, fp32 on CPU), "float32", "float16" or "bfloat16"
    }

    def check_conf(self) -> None:
        c, name = self.conf, self.name
        self.threshold = check_number(name, "threshold", c["threshold"], 0.0, 1.0)
        template = c["prompt_template"]
        if not isinstance(template, str) or template.count("{}") != 1:
            raise OccLabelError(f"{name}: prompt_template must be a string with one '{{}}', got {template!r}")

    def load_detector(self) -> None:
        detector = CheckedModel("Owlv2ForObjectDetection", ("owlv2",), "an OWLv2")
        self.model, files, self.detector_weights = load_pretrained(
            detector, DetectorFiles, self.conf["detector"], self.device, self._weights_dtype
        )
        self._mean, self._std = normalization(files.image, self.device)
        size = self.model.config.vision_config.image_size
        #: side of the square encoder input (the box head's patch grid is fixed by it)
        self.input_size = int(size[0] if isinstance(size, list | tuple) else size)
        self.queries = [self.conf["prompt_template"].format(p) for p in self.prompt_texts]
        self._query_embeds = self._embed_queries(files.tokenizer)  # P x D

    def _embed_queries(self, tokenizer) -> torch.Tensor:
        """Text embeddings ``[P x D]`` of the queries (padded to the text model's positions, as Owlv2Processor)."""
        max_len = int(self.model.config.text_config.max_position_embeddings)
        tokens = tokenizer(
            self.queries, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self.model.owlv2.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        emb = out if torch.is_tensor(out) else out.pooler_output  # transformers 4 returns the tensor
        return emb.detach().clone()

    def detector_provenance(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "prompt_template": self.conf["prompt_template"],
            "detector_size": self.input_size,
        }

    def detector_input(self, image: torch.Tensor) -> torch.Tensor:
        """``[B x 3 x h x w]`` RGB in [0, 1] -> padded, resized, normalised ``[B x 3 x S x S]`` float32."""
        x = image.to(self.device, torch.float32)
        h, w = x.shape[-2:]
        side = max(h, w)
        x = F.pad(x, (0, side - w, 0, side - h))  # black, before normalisation (as the processor)
        x = resize_image(x, (self.input_size, self.input_size))
        return (x - self._mean) / self._std

    def class_logits(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits ``[B x N x P]``, boxes ``[B x N x 4]`` cxcywh normalised to the padded square)."""
        model = self.model
        feature_map = model.image_embedder(pixel_values=pixel_values)[0]  # B x gh x gw x D
        B, gh, gw, D = feature_map.shape
        image_feats = feature_map.reshape(B, gh * gw, D)
        queries = self._query_embeds.to(image_feats.dtype)[None].expand(B, -1, -1)
        logits = model.class_predictor(image_feats, queries)[0]
        boxes = model.box_predictor(image_feats, feature_map)
        return logits, boxes

    def detect(
        self, image: torch.Tensor, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = image.shape[-2:]
        # the padded square is resized to the detector input: boxes are fractions of its side, whatever the
        # resolution it was padded at (native or working, same aspect ratio)
        x = self.detector_input(image if source is None else source)
        logits, boxes = self.class_logits(x.to(self._weights_dtype))
        score, prompt, keep = owl_scores(logits, self.threshold)
        boxes = cxcywh_to_xyxy(boxes.float()) * float(max(h, w))
        return boxes, score, self.prompt_class[prompt], keep
