"""Probabilities of the ``semseg`` backend's segmenters and their merge onto target classes (pure, vectorised).

Semantic models give class logits: :func:`semantic_probabilities` (upsample, then softmax). Universal
(mask-classification) models give per-query class and mask logits: :func:`universal_probabilities`.
:func:`merge_probabilities` maps source-class probabilities onto target ids.

Labels: ``merge: "sum"`` (default) adds the probabilities of the source classes that map to the same target
and takes the argmax over targets; confidence is that summed probability. Source classes are exclusive
events, so the sum is the target class's probability under the model, and its argmax the most probable
target: an ADE pixel that is 0.3 tree and 0.25 + 0.25 + 0.2 building / wall / house is manmade (0.7), not
vegetation. ``merge: "max"`` is the plain LUT on the source argmax (confidence = the source class's
probability), which is what a per-pixel class map would give.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: network input sides are rounded to multiples of this (the coarsest feature stride of these models)
STRIDE = 32


def network_size(h: int, w: int, input_size: int) -> tuple[int, int]:
    """(H, W) the network sees for an (h, w) image: aspect kept, short side ~ input_size, multiples of 32."""
    s = input_size / min(h, w)
    return (max(STRIDE, round(h * s / STRIDE) * STRIDE), max(STRIDE, round(w * s / STRIDE) * STRIDE))


def _resize(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def semantic_probabilities(logits: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-class probabilities of a semantic model.

    Args:
        logits: ``[B x K x h' x w']`` class logits.
        size: (h, w) the logits are upsampled to (bilinear, before the softmax); None keeps h' x w'.
    Returns:
        ``[B x K x h x w]`` float32, softmax over K (sums to 1 per pixel).
    """
    return _resize(logits.float(), size).softmax(1)


def universal_probabilities(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    size: tuple[int, int] | None = None,
    mask_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Per-class probabilities of a universal (mask-classification) model: Mask2Former / MaskFormer / OneFormer.

    ``score_c = sum_q softmax(class_logits_q)[c] * sigmoid(mask_logits_q)`` for the K real classes (the last
    class is "no object"), as ``post_process_semantic_segmentation`` computes it, divided per pixel by
    ``sum_q sigmoid(mask_logits_q)``: the probability of class c under the mixture of the queries' class
    distributions weighted by their masks. The division does not change the per-pixel argmax.

    Args:
        class_logits: ``[B x Q x K+1]`` class logits per query.
        mask_logits: ``[B x Q x h' x w']`` mask logits per query.
        size: (h, w) of the output; None keeps ``mask_size`` (or h' x w').
        mask_size: (h, w) the mask logits are upsampled to before the sigmoid (bilinear); None = ``size``
            (Mask2Former's own inference upsamples the mask logits to the image). The transformers
            processors combine at ``(384, 384)`` (Mask2Former) or at h' x w' (OneFormer, MaskFormer) and
            upsample the scores to ``size``; passing that ``mask_size`` reproduces their argmax exactly.
    Returns:
        ``[B x K x h x w]`` float32 in [0, 1] (sums to at most 1 per pixel).
    """
    if class_logits.dim() != 3 or mask_logits.dim() != 4 or class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            f"class logits {tuple(class_logits.shape)} and mask logits {tuple(mask_logits.shape)} do not match"
        )
    masks = _resize(mask_logits.float(), mask_size if mask_size is not None else size).sigmoid()
    classes = class_logits.float().softmax(-1)[..., :-1]
    scores = torch.einsum("bqc,bqhw->bchw", classes, masks)
    total = masks.sum(1, keepdim=True)
    # resize numerator and denominator apart: the argmax stays that of the (resized) scores
    scores, total = _resize(scores, size), _resize(total, size)
    return (scores / total.clamp_min(torch.finfo(torch.float32).tiny)).clamp(0, 1)


def merge_probabilities(
    probs: torch.Tensor, target_of_source: torch.Tensor, merge: str = "sum"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and confidence from per-source-class probabilities and a source -> target table.

    Args:
        probs: ``[B x K x h x w]`` float probabilities of the K source classes.
        target_of_source: ``[K]`` int target id (0-255: class ids, SKY, UNLABELED) of each source class.
        merge: "sum": a target's probability is the sum over its source classes; "max": their maximum
            (the same labels as mapping the source argmax through the table).
    Returns:
        labels ``[B x h x w]`` uint8 (target ids), confidence ``[B x h x w]`` float32 in [0, 1] (the winning
        target's merged probability).
    """
    if probs.dim() != 4 or probs.shape[1] != target_of_source.numel():
        raise ValueError(
            f"probabilities {tuple(probs.shape)} do not match {target_of_source.numel()} classes"
        )
    probs = probs.float()
    targets, index = torch.unique(target_of_source.to(probs.device).long(), return_inverse=True)
    if merge == "sum":
        # one-hot [T x K] matrix product: deterministic (index_add_ is not on CUDA)
        onehot = F.one_hot(index, targets.numel()).T.to(probs.dtype)
        merged = torch.einsum("tk,bkhw->bthw", onehot, probs)
    elif merge == "max":
        B, K, h, w = probs.shape
        merged = probs.new_zeros(B, targets.numel(), h, w).scatter_reduce(
            1, index.view(1, K, 1, 1).expand(B, K, h, w), probs, "amax", include_self=True
        )
    else:
        raise ValueError(f"merge must be 'sum' or 'max', got {merge!r}")
    conf, best = merged.max(1)
    return targets[best].to(torch.uint8), conf.clamp(0, 1).float()
