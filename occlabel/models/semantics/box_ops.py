"""Pure, vectorised box and mask functions of the box-prompted SAM backends (``grounded-sam``, ``owlv2-sam``).

Boxes -> prompts: :func:`cxcywh_to_xyxy`, :func:`box_iou`, :func:`select_boxes` (score filter, class-aware
NMS, top-k). Scored masks -> labels: :func:`best_mask` / :func:`merge_best` / :func:`finish_labels`, composed
as :func:`combine_masks`: each pixel takes the class of the best-scoring mask covering it (mask logit > 0),
its confidence is that score, and pixels no mask covers are UNLABELED with confidence 0. Resampling:
:func:`resample_masks` (SAM's low-resolution logits -> the working resolution), :func:`resize_image`.
Everything is torch on the tensors' device; no model is involved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from occlabel.conventions import UNLABELED

#: candidates kept per image before NMS, as a multiple of max_boxes (bounds the K x K IoU matrix)
PRE_NMS_FACTOR = 8


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
