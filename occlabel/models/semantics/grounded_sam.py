"""Grounded-SAM: Grounding DINO boxes for the vocabulary's prompts, SAM / SAM2 masks, one label map per image.

Registered name: ``grounded-sam``. ``conf["detector"]`` picks the Grounding DINO checkpoint and
``conf["segmenter"]`` the SAM or SAM2 one (hub repo ids or local directories); the masks and their
combination are :mod:`occlabel.models.semantics.box_sam`'s.

**Texts.** Grounding DINO reads a caption of phrases separated by "." ("car . van . road . sky ."). The
backend builds the token ids itself, ``[CLS] p1 . p2 . ... [SEP]``, from each prompt's own (lower-cased)
tokens, and so knows exactly which tokens belong to which prompt (WordPiece splits on whitespace and
punctuation, so this equals tokenising the joined caption; a test checks it). "mode" picks the captions:

* ``per-class``: one caption per class (its prompts only; sky is a class). The detector compares each query
  with one class at a time, which gives better boxes; it costs one text-conditioned encoder/decoder pass per
  class and image. All images x captions go through the detector in batches of ``detector_batch`` rows, and
  the Swin backbone runs once per image for all of its captions (:func:`shared_backbone`).
* ``single-pass``: all prompts in one caption (split into as few captions as needed when longer than the
  text encoder's ``max_text_len`` tokens, 256 for the released checkpoints): about one pass per image.

**Scores** (:func:`grounding_scores`), from ``sigmoid(outputs.logits)`` ``[R x Q x T]`` and the ``[P x T]``
token map: a prompt's score is the max over its tokens; a query's box is kept when its best token score (over
all real tokens, [CLS] / "." / [SEP] included) is >= ``box_threshold`` and its best prompt's score is
>= ``text_threshold``; its class is that prompt's class and its score that prompt's score.
This is what ``GroundingDinoProcessor.post_process_grounded_object_detection(outputs, threshold=box_threshold,
text_threshold=text_threshold)`` computes, minus its fragile phrase strings: there, ``scores`` is the same
best token score (kept when > threshold), and the label is the decoded text of all tokens above
``text_threshold`` (several prompts' words run together, or "" when none passes, and the box is still kept);
here the label is the one best prompt, and a box without a prompt above ``text_threshold`` is dropped. The
defaults 0.20 / 0.20 are OccNeRF's values. ``outputs.pred_boxes`` are normalised cxcywh relative to the
unpadded detector input, i.e. to the image: x ``w``, y ``h`` gives working-resolution pixels.

**Detector input**: resized in torch (bilinear, antialiased when shrinking) so that the short side is
``detector_size`` (None: the processor's ``shortest_edge``, 800) unless the long side would exceed the
processor's cap (1333, scaled with ``detector_size``); small images are upsampled to it (Grounding DINO needs
inputs of at least ~128 px). Normalised with the processor's mean / std; no padding (one camera size per batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from occlabel.errors import OccLabelError
from occlabel.models.hub import load_pretrained, normalization
from occlabel.models.semantics.box_sam import (
    DEFAULT_SEGMENTER,
    BoxPromptedSAM,
    CheckedModel,
    DetectorFiles,
    check_int,
    check_number,
    cxcywh_to_xyxy,
    resize_image,
)

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
MODES = ("per-class", "single-pass")
#: GroundingDinoImageProcessor's default size (short side, long-side cap)
DEFAULT_SHORT, DEFAULT_LONG = 800, 1333


# ------------------------------------------------------------------------------------------------
# pure functions
# ------------------------------------------------------------------------------------------------


def grounding_scores(
    probs: torch.Tensor, token_map: torch.Tensor, box_threshold: float, text_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-query prompt and score from Grounding DINO's token-level probabilities (vectorised).

    Args:
        probs: ``[R x Q x T]`` float, ``sigmoid(outputs.logits)`` (R image x caption rows, Q queries, T token
            slots; padding slots are 0).
        token_map: ``[P x T]`` or ``[R x P x T]`` bool: token t belongs to prompt p (each token to at most one
            prompt; [CLS], "." and [SEP] to none).
        box_threshold: keep a query when its best token probability (any token) is >= this.
        text_threshold: ... and its best prompt's score is >= this.
    Returns:
        score ``[R x Q]`` float (the best prompt's score: max of its tokens' probabilities), prompt ``[R x Q]``
        long (index into P of the best prompt; ties to the lower index), keep ``[R x Q]`` bool.
    """
    if probs.dim() != 3:
        raise ValueError(f"probs must be [R x Q x T], got {tuple(probs.shape)}")
    R, Q, T = probs.shape
    if token_map.dim() == 2:
        token_map = token_map[None].expand(R, *token_map.shape)
    if token_map.shape[0] != R or token_map.shape[2] != T:
        raise ValueError(f"token_map {tuple(token_map.shape)} does not match probs {tuple(probs.shape)}")
    P = token_map.shape[1]
    if bool((token_map.sum(1) > 1).any()):
        raise ValueError("a token belongs to more than one prompt")
    probs = probs.float()
    token_map = token_map.to(probs.device)
    # token -> prompt index (P for tokens of no prompt), then a max-scatter over the token axis
    index = torch.where(
        token_map.any(1), token_map.float().argmax(1), torch.full((R, T), P, device=probs.device)
    )
    prompt_scores = probs.new_zeros(R, Q, P + 1).scatter_reduce(
        2, index[:, None, :].expand(R, Q, T), probs, "amax", include_self=True
    )[..., :P]
    score, prompt = prompt_scores.max(-1)
    best_token = probs.amax(-1)
    keep = (best_token >= box_threshold) & (score >= text_threshold)
    return score, prompt, keep


@dataclass(frozen=True)
class Caption:
    """One detector text: ``input_ids`` (``[CLS] p . q . [SEP]``), the global indices of its ``prompts``, and
    per token the global prompt index it belongs to (-1 for [CLS], "." and [SEP])."""

    input_ids: tuple[int, ...]
    prompts: tuple[int, ...]
    token_prompt: tuple[int, ...]


def build_captions(
    prompt_ids: Sequence[Sequence[int]],
    groups: Sequence[Sequence[int]],
    cls_id: int,
    sep_id: int,
    dot_id: int,
    max_len: int,
) -> list[Caption]:
    """Pack prompts into Grounding DINO captions of at most ``max_len`` tokens.

    Args:
        prompt_ids: per prompt, its token ids (no special tokens).
        groups: prompt indices that may share a caption (per-class: one group per class; single-pass: one
            group with every prompt); a group is split over several captions only when it does not fit.
        cls_id, sep_id, dot_id: ids of [CLS], [SEP] and ".".
        max_len: most tokens per caption, [CLS] and [SEP] included.
    Returns:
        captions in group order, prompts in their given order.
    Raises:
        ValueError: a prompt alone does not fit in ``max_len``.
    """
    captions: list[Caption] = []

    def flush(members: list[int]) -> None:
        ids, owner = [cls_id], [-1]
        for p in members:
            ids += [*prompt_ids[p], dot_id]
            owner += [p] * len(prompt_ids[p]) + [-1]
        captions.append(Caption(tuple([*ids, sep_id]), tuple(members), tuple([*owner, -1])))

    for group in groups:
        members: list[int] = []
        length = 2  # [CLS] ... [SEP]
        for p in group:
            need = len(prompt_ids[p]) + 1  # tokens + "."
            if 2 + need > max_len:
                raise ValueError(f"prompt {p} needs {need + 2} tokens, more than the {max_len} allowed")
            if members and length + need > max_len:
                flush(members)
                members, length = [], 2
            members.append(p)
            length += need
        if members:
            flush(members)
    return captions


def detector_size(h: int, w: int, short: int, long: int) -> tuple[int, int]:
    """(H, W) of the detector input for an (h, w) image: short side ``short`` unless the long side would
    exceed ``long`` (then long side ``long``); aspect kept, sides rounded."""
    s = min(short / min(h, w), long / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


class _SharedBackbone(torch.nn.Module):
    """Stands in for ``GroundingDinoModel.backbone`` for an image-major batch in which each image is repeated
    ``repeats`` times (once per caption): runs the wrapped backbone on every ``repeats``-th row only and
    repeats its outputs. The backbone does not see the text, so the result is the same."""

    def __init__(self, inner: torch.nn.Module, repeats: int):
        super().__init__()
        self.inner = inner
        self.position_embedding = inner.position_embedding  # used for the extra feature level
        self.repeats = repeats

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor):
        r = self.repeats
        features, positions = self.inner(pixel_values[::r], pixel_mask[::r])
        return (
            [(f.repeat_interleave(r, 0), m.repeat_interleave(r, 0)) for f, m in features],
            [p.repeat_interleave(r, 0) for p in positions],
        )


@contextmanager
def shared_backbone(model: torch.nn.Module, repeats: int) -> Iterator[bool]:
    """Within the block, ``model`` (GroundingDinoForObjectDetection) computes its backbone once per image of
    an image-major batch whose images repeat ``repeats`` times. Yields whether the swap was possible (the
    model has ``model.backbone.position_embedding``); otherwise the model runs unchanged."""
    core = getattr(model, "model", None)
    inner = getattr(core, "backbone", None)
    if repeats <= 1 or inner is None or not hasattr(inner, "position_embedding"):
        yield False
        return
    core.backbone = _SharedBackbone(inner, repeats)
    try:
        yield True
    finally:
        core.backbone = inner


# ------------------------------------------------------------------------------------------------
# backend
# ------------------------------------------------------------------------------------------------


class GroundedSAM(BoxPromptedSAM):
    default_conf: ClassVar[dict[str, Any]] = {
        "detector": DEFAULT_DETECTOR,  # Grounding DINO: hub repo id or local directory (save_pretrained output)
        "segmenter": DEFAULT_SEGMENTER,  # SAM (facebook/sam-vit-*) or SAM2 (facebook/sam2.1-hiera-*): id or dir
        "vocab": "occ3d",  # vocabulary: "occ3d", "semantickitti" or a path to a vocabulary YAML file
        "mode": "per-class",  # "per-class" (one caption per class, better boxes) or "single-pass" (faster)
        "box_threshold": 0.20,  # keep a box when its best token probability is >= this (OccNeRF: 0.20)
        "text_threshold": 0.20,  # ... and its best prompt's probability is >= this (OccNeRF: 0.20)
        "max_boxes": 100,  # at most this many boxes per image go to SAM (best scores first, after NMS)
        "nms_iou": 0.5,  # drop a box overlapping a better one of the same class by IoU > this (1.0: no NMS)
        "detector_size": None,  # short side (px) of the detector input; None: the processor's (800, long <= 1333)
        "detector_batch": 16,  # at most this many image x caption rows per Grounding DINO forward
        "sam_batch": 64,  # at most this many image x box prompts per SAM mask-decoder call
        "dtype": "auto",  # "auto" (fp16 autocast on CUDA, fp32 on CPU), "float32", "float16" or "bfloat16"
    }

    def check_conf(self) -> None:
        c, name = self.conf, self.name
        if c["mode"] not in MODES:
            raise OccLabelError(f"{name}: mode must be one of {', '.join(MODES)}, got {c['mode']!r}")
        self.box_threshold = check_number(name, "box_threshold", c["box_threshold"], 0.0, 1.0)
        self.text_threshold = check_number(name, "text_threshold", c["text_threshold"], 0.0, 1.0)
        self._size = check_int(name, "detector_size", c["detector_size"], 32, allow_none=True)
        self.detector_batch = check_int(name, "detector_batch", c["detector_batch"], 1)

    def load_detector(self) -> None:
        detector = CheckedModel("GroundingDinoForObjectDetection", ("grounding-dino",), "a Grounding DINO")
        self.model, files, self.detector_weights = load_pretrained(
            detector, DetectorFiles, self.conf["detector"], self.device, self._weights_dtype
        )
        self._mean, self._std = normalization(files.image, self.device)
        proc_size = getattr(files.image, "size", None) or {}
        short = int(proc_size.get("shortest_edge") or DEFAULT_SHORT)
        long = int(proc_size.get("longest_edge") or DEFAULT_LONG)
        #: detector input: short side, and the cap of the long side (the processor's ratio 1333 / 800)
        self.short_side = self._size if self._size is not None else short
        self.long_side = round(self.short_side * long / short)
        self.captions = self._build_captions(files.tokenizer)
        self._set_caption_tensors(files.tokenizer)

    # -- captions -------------------------------------------------------------------------------
    def _build_captions(self, tokenizer) -> list[Caption]:
        ids = {
            k: tokenizer.convert_tokens_to_ids(t)
            for k, t in (("cls", tokenizer.cls_token), ("sep", tokenizer.sep_token), ("dot", "."))
        }
        if None in ids.values() or ids["dot"] == tokenizer.unk_token_id:
            raise OccLabelError(f"{self.name}: the detector's tokenizer has no [CLS] / [SEP] / '.' token")
        special = getattr(self.model.model, "special_tokens", None)
        if special is not None and not set(ids.values()) <= set(special.tolist()):
            raise OccLabelError(
                f"{self.name}: the detector's tokenizer ids for [CLS] [SEP] '.' ({ids['cls']}, {ids['sep']}, "
                f"{ids['dot']}) are not the model's phrase delimiters {special.tolist()}"
            )
        prompt_ids = []
        for p in self.prompt_texts:
            if "." in p:
                raise OccLabelError(
                    f"{self.name}: prompt {p!r} contains '.', which separates Grounding DINO phrases"
                )
            tok = tokenizer(p.lower(), add_special_tokens=False)["input_ids"]
            if not tok:
                raise OccLabelError(f"{self.name}: prompt {p!r} has no tokens")
            prompt_ids.append(list(tok))
        config = self.model.config
        max_len = int(config.max_text_len)
        max_len = min(max_len, int(getattr(config.text_config, "max_position_embeddings", max_len)))
        classes = self.prompt_class.tolist()
        if self.conf["mode"] == "per-class":
            order = list(dict.fromkeys(classes))  # classes in vocabulary order, sky last
            groups = [[i for i, c in enumerate(classes) if c == cid] for cid in order]
        else:
            groups = [list(range(len(classes)))]
        try:
            return build_captions(prompt_ids, groups, ids["cls"], ids["sep"], ids["dot"], max_len)
        except ValueError as e:
            raise OccLabelError(f"{self.name}: {e} (detector max_text_len)") from None

    def _set_caption_tensors(self, tokenizer) -> None:
        """``[T x L]`` input ids (padded), attention mask and the ``[T x P x L]`` token map of the captions."""
        T, P = len(self.captions), len(self.prompt_texts)
        L = max(len(c.input_ids) for c in self.captions)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.full((T, L), pad, dtype=torch.long)
        owner = torch.full((T, L), -1, dtype=torch.long)
        for t, cap in enumerate(self.captions):
            ids[t, : len(cap.input_ids)] = torch.tensor(cap.input_ids)
            owner[t, : len(cap.token_prompt)] = torch.tensor(cap.token_prompt)
        self._ids = ids.to(self.device)
        self._attention = (
            torch.arange(L)[None] < torch.tensor([len(c.input_ids) for c in self.captions])[:, None]
        )
        self._attention = self._attention.long().to(self.device)
        self._token_map = (owner[:, None, :] == torch.arange(P)[None, :, None]).to(self.device)  # T x P x L

    def detector_provenance(self) -> dict[str, Any]:
        return {
            "mode": self.conf["mode"],
            "box_threshold": self.box_threshold,
            "text_threshold": self.text_threshold,
            "n_captions": len(self.captions),
            "detector_size": [self.short_side, self.long_side],
        }

    # -- detection ------------------------------------------------------------------------------
    def detector_input(self, image: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        """``[B x 3 x H x W]`` RGB in [0, 1] -> normalised detector input float32, sized for an image of
        ``hw`` = (h, w) (default: the image's own size; the working size when ``image`` is native)."""
        x = image.to(self.device, torch.float32)
        size = detector_size(*(hw or x.shape[-2:]), self.short_side, self.long_side)
        return (resize_image(x, size) - self._mean) / self._std

    def run_detector(self, pixel_values: torch.Tensor, t0: int, t1: int, share: bool = True):
        """Grounding DINO on every image of ``pixel_values`` with captions ``t0:t1`` (image-major rows).

        Returns the model output (``logits [R x Q x max_text_len]``, ``pred_boxes [R x Q x 4]``) for
        R = images x captions rows.
        """
        nb, nt = pixel_values.shape[0], t1 - t0
        ids = self._ids[t0:t1].repeat(nb, 1)
        attention = self._attention[t0:t1].repeat(nb, 1)
        pixels = pixel_values.repeat_interleave(nt, 0)
        with shared_backbone(self.model, nt if share else 1):
            return self.model(
                pixel_values=pixels,
                input_ids=ids,
                attention_mask=attention,
                token_type_ids=torch.zeros_like(ids),
            )

    def detect(
        self, image: torch.Tensor, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        B, _, h, w = image.shape
        x = self.detector_input(image if source is None else source, (h, w)).to(self._weights_dtype)
        T = len(self.captions)
        # captions per call: as few calls as detector_batch allows, of equal size (17 -> 9 + 8, not 16 + 1)
        nt = -(-T // -(-T // self.detector_batch))
        nb = max(1, self.detector_batch // nt)  # images per call
        scale = torch.tensor([w, h, w, h], device=self.device, dtype=torch.float32)
        blocks = []  # per image block: (boxes, scores, classes, keep), candidates of all its captions
        for b0 in range(0, B, nb):
            xb = x[b0 : b0 + nb]
            n = xb.shape[0]
            chunks = []
            for t0 in range(0, T, nt):
                t1 = min(T, t0 + nt)
                out = self.run_detector(xb, t0, t1)
                probs = out.logits.float().sigmoid()  # (n * r) x Q x max_text_len, image-major rows
                token_map = self._token_map[t0:t1]
                token_map = torch.nn.functional.pad(token_map, (0, probs.shape[-1] - token_map.shape[-1]))
                score, prompt, keep = grounding_scores(
                    probs, token_map.repeat(n, 1, 1), self.box_threshold, self.text_threshold
                )
                boxes = cxcywh_to_xyxy(out.pred_boxes.float()) * scale
                chunks.append(
                    (
                        boxes.reshape(n, -1, 4),
                        score.reshape(n, -1),
                        self.prompt_class[prompt].reshape(n, -1),
                        keep.reshape(n, -1),
                    )
                )
            blocks.append(tuple(torch.cat(col, 1) for col in zip(*chunks, strict=True)))
        boxes, scores, classes, keep = (torch.cat(col, 0) for col in zip(*blocks, strict=True))
        return boxes, scores, classes, keep
