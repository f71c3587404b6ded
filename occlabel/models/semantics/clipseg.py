"""CLIPSeg zero-shot semantics: one dense text-prompted map per vocabulary prompt, combined per class.

Registered name: ``clipseg`` (``conf["model"]`` picks the checkpoint: a hub repo id or a local directory).

* The text embeddings of every prompt of the vocabulary (:mod:`occlabel.models.vocab`, sky included) are
  computed once, when the backend is built.
* Per batch, everything runs in torch on the model's device: images are resized to ``input_size`` squared
  (CLIPSeg's decoder wants a square patch grid) and normalised with the processor's mean / std; the CLIP
  vision encoder runs once per image, and its activations are decoded against all prompts at once
  (images x prompts in one decoder batch).
* :func:`combine_prompt_logits` turns the per-prompt logits into labels: max over the prompts of each class
  (on logits, the same as on sigmoid probabilities), bilinear upsampling of the per-class logits to the
  working resolution, sigmoid, argmax over classes -> class id (SKY for sky prompts), confidence = the
  winning probability, UNLABELED where it is below ``threshold``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from occlabel.conventions import UNLABELED
from occlabel.errors import OccLabelError
from occlabel.models.base import SemanticModel, network_input
from occlabel.models.hub import load_pretrained, normalization, parse_dtype
from occlabel.models.vocab import Vocabulary, load_vocabulary

DEFAULT_MODEL = "CIDAS/clipseg-rd64-refined"


def class_logits(logits: torch.Tensor, prompt_class: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """Per-class logits: the max over the prompts of each class.

    Args:
        logits: ``[B x P x h x w]`` float, one map per prompt.
        prompt_class: ``[P]`` int, the class id of each prompt (each must be in ``class_ids``).
        class_ids: ``[C]`` int, the output class ids (distinct).
    Returns:
        ``[B x C x h x w]``: channel c is the max of the prompts whose class is ``class_ids[c]``
        (-inf for a class without prompts).
    """
    if logits.dim() != 4 or logits.shape[1] != prompt_class.numel():
        raise ValueError(f"logits {tuple(logits.shape)} do not match {prompt_class.numel()} prompts")
    prompt_class = prompt_class.to(logits.device).long()
    class_ids = class_ids.to(logits.device).long()
    match = prompt_class[:, None] == class_ids[None, :]  # P x C
    if not bool(match.any(1).all()):
        raise ValueError("every prompt's class must be one of class_ids")
    index = match.long().argmax(1)  # P: class index of each prompt
    B, P, h, w = logits.shape
    out = logits.new_full((B, class_ids.numel(), h, w), float("-inf"))
    return out.scatter_reduce(1, index.view(1, P, 1, 1).expand(B, P, h, w), logits, "amax", include_self=True)


def combine_prompt_logits(
    logits: torch.Tensor,
    prompt_class: torch.Tensor,
    class_ids: torch.Tensor,
    threshold: float,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and confidence from per-prompt logits (pure function, vectorised, no loops over pixels).

    Args:
        logits: ``[B x P x h' x w']`` per-prompt logits.
        prompt_class: ``[P]`` class id of each prompt (0-253, or SKY = 254).
        class_ids: ``[C]`` distinct output ids, every prompt's class among them.
        threshold: pixels whose best class probability (sigmoid) is below it become UNLABELED (255).
        size: (h, w) to upsample the per-class logits to (bilinear); None keeps h' x w'.
    Returns:
        labels ``[B x h x w]`` uint8 (ids of ``class_ids`` or 255), confidence ``[B x h x w]`` float32 in [0, 1]
        (the winning class probability, also where the label is UNLABELED).
    """
    per_class = class_logits(logits.float(), prompt_class, class_ids)
    if size is not None and tuple(per_class.shape[-2:]) != tuple(size):
        # classes without prompts are -inf: keep them finite for interpolation, they never win anyway
        per_class = per_class.clamp_min(torch.finfo(per_class.dtype).min / 4)
        per_class = F.interpolate(per_class, size=tuple(size), mode="bilinear", align_corners=False)
    prob = per_class.sigmoid()
    conf, best = prob.max(1)
    labels = class_ids.to(best.device).long()[best]
    labels = torch.where(conf < threshold, torch.full_like(labels, UNLABELED), labels)
    return labels.to(torch.uint8), conf.float().clamp(0, 1)


class CLIPSeg(SemanticModel):
    default_conf: ClassVar[dict[str, Any]] = {
        "model": DEFAULT_MODEL,  # hub repo id or local directory (save_pretrained output) of a CLIPSeg model
        "vocab": "occ3d",  # vocabulary: "occ3d", "semantickitti" or a path to a vocabulary YAML file
        "threshold": 0.3,  # background threshold on the sigmoid probability: below it a pixel is UNLABELED
        "input_size": 352,  # side (pixels) of the square network input (352 as trained)
        "dtype": "auto",  # "auto" (fp16 autocast on CUDA, fp32 on CPU), "float32", "float16" or "bfloat16"
    }

    def __init__(self, name: str, conf: dict[str, Any] | None = None, device: torch.device | str = "cpu"):
        super().__init__(name, conf, device)
        size = self.conf["input_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise OccLabelError(f"{name}: input_size must be a positive integer, got {size!r}")
        thr = self.conf["threshold"]
        if not isinstance(thr, int | float) or isinstance(thr, bool) or not 0.0 <= float(thr) <= 1.0:
            raise OccLabelError(f"{name}: threshold must be a number in [0, 1], got {thr!r}")
        self._weights_dtype, self._autocast = parse_dtype(name, self.conf["dtype"], self.device)
        self.vocab: Vocabulary = load_vocabulary(self.conf["vocab"])
        prompts = self.vocab.prompts()
        if not prompts:
            raise OccLabelError(f"{name}: vocabulary {self.vocab.name!r} has no prompts")

        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        self.model, processor, self.weights = load_pretrained(
            CLIPSegForImageSegmentation,
            CLIPSegProcessor,
            self.conf["model"],
            self.device,
            self._weights_dtype,
        )
        patch = int(self.model.config.vision_config.patch_size)
        if size % patch:
            raise OccLabelError(
                f"{name}: input_size must be a multiple of the patch size {patch}, got {size}"
            )
        image_processor = getattr(processor, "image_processor", processor)
        self._mean, self._std = normalization(image_processor, self.device)

        # prompt -> class bookkeeping, and the text embeddings of all prompts, computed once
        self.prompt_texts = [p for p, _ in prompts]
        self._prompt_class = torch.tensor([c for _, c in prompts], dtype=torch.long, device=self.device)
        self._class_ids = torch.unique(self._prompt_class)  # sorted; classes with prompts (and SKY)
        tokenizer = getattr(processor, "tokenizer", processor)
        max_len = int(self.model.config.text_config.max_position_embeddings)
        tokens = tokenizer(
            self.prompt_texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        with torch.inference_mode():
            emb = self.model.get_conditional_embeddings(
                batch_size=len(self.prompt_texts),
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
        self._text_emb = emb.detach().float().clone()  # P x projection_dim

    def provenance(self) -> dict[str, Any]:
        return {
            **super().provenance(),
            "weights": self.weights,
            "vocab": self.vocab.name,
            "vocab_hash": self.vocab.content_hash(),
            "n_prompts": len(self.prompt_texts),
        }

    def preprocess(self, batch: dict[str, Any] | torch.Tensor) -> torch.Tensor:
        """Normalised square network input ``[B x 3 x S x S]`` from a batch (resized from its native image when
        present) or from an image tensor ``[B x 3 x h x w]`` RGB in [0, 1]."""
        if isinstance(batch, torch.Tensor):
            batch = {"image": batch}
        s = self.conf["input_size"]
        x = network_input(batch, (s, s)).to(self.device, torch.float32)
        return (x - self._mean) / self._std

    def prompt_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-prompt logits ``[B x P x S' x S']``: vision encoder once per image, decoder on images x prompts."""
        model = self.model
        B, P = pixel_values.shape[0], self._text_emb.shape[0]
        vision = model.clip.get_image_features(pixel_values=pixel_values, output_hidden_states=True)
        hidden = vision.hidden_states  # embeddings output first, then one per layer
        # the decoder batch is image-major: row b * P + p is image b with prompt p
        activations = [hidden[i + 1].repeat_interleave(P, dim=0) for i in model.extract_layers]
        cond = self._text_emb.to(activations[0].dtype).repeat(B, 1)
        logits = model.decoder(activations, cond).logits
        return logits.reshape(B, P, *logits.shape[-2:])

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        image = batch["image"]
        h, w = image.shape[-2:]
        with (
            torch.inference_mode(),
            torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self._autocast),
        ):
            logits = self.prompt_logits(self.preprocess(batch).to(self._weights_dtype))
            return combine_prompt_logits(
                logits, self._prompt_class, self._class_ids, float(self.conf["threshold"]), size=(h, w)
            )
