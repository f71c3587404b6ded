"""Tiny random-weight closed-set segmenters (SegFormer, Mask2Former, OneFormer) saved like real checkpoints.

Each ``save_tiny_*(dir, labels=...)`` builds a model from a tiny transformers config with random weights
(seeded), writes it with ``save_pretrained`` together with a matching processor, and returns ``dir``; the
``semseg`` backend then loads it through the project's real loading code (``occlabel.models.hub``).
``labels`` become ``config.id2label`` (default: the 19 Cityscapes train-id names, so that the built-in
Cityscapes mapping is selected). Building and saving takes about a second each on 2 CPU cores.

Gotchas (transformers 5.23): Mask2Former / OneFormer GroupNorm layers use 32 groups, so ``feature_size`` /
``conv_dim`` / ``mask_dim`` / hidden sizes must be multiples of 32; OneFormer's task encoder is an MLP over
the ``task_seq_len`` token ids of "the task is semantic", so the processor's ``task_seq_length`` must equal
``config.task_seq_len`` and the tokenizer must know those words; its image processor reads ``class_info``
from ``repo_path/class_info_file`` when it is built (written next to the model here, so nothing is
downloaded).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

#: the 19 Cityscapes train-id classes, in train-id order (as in nvidia/segformer-*-cityscapes configs)
CITYSCAPES_LABELS: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

#: network input side used by the tiny processors (small: the tests run on 2 shared CPU cores)
TINY_SIZE = 64


def _labels(labels: Sequence[str] | None) -> tuple[dict[int, str], dict[str, int]]:
    names = list(CITYSCAPES_LABELS if labels is None else labels)
    id2label = dict(enumerate(names))
    return id2label, {n: i for i, n in id2label.items()}


def _tiny_swin():
    from transformers import SwinConfig

    return SwinConfig(
        image_size=TINY_SIZE,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=2,
        mlp_ratio=2.0,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


def tiny_clip_tokenizer(words: Sequence[str], max_length: int):
    """A CLIPTokenizer with every lower-case letter and BPE merges that join the letters of ``words`` (each
    becomes one token unless merges of an earlier word cut it; other words are spelled out)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges: list[tuple[str, str]] = []
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for w in words:
        for i in range(1, len(w)):
            left, right = w[:i], w[i] + ("</w>" if i == len(w) - 1 else "")
            if (left, right) not in merges:
                merges.append((left, right))
            vocab.setdefault(left + right, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def save_tiny_segformer(root: str | Path, labels: Sequence[str] | None = None, seed: int = 0) -> Path:
    """A SegFormer (MiT encoder, 4 stages of 1 block, all-MLP decoder) with random weights in ``root``."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    id2label, label2id = _labels(labels)
    config = SegformerConfig(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 2, 2],
        sr_ratios=[4, 2, 1, 1],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=16,
        id2label=id2label,
        label2id=label2id,
    )
    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(config).eval()
    root = Path(root)
    model.save_pretrained(root)
    SegformerImageProcessor(size={"height": TINY_SIZE, "width": TINY_SIZE}).save_pretrained(root)
    return root


def save_tiny_mask2former(root: str | Path, labels: Sequence[str] | None = None, seed: int = 0) -> Path:
    """A Mask2Former (tiny Swin backbone, 8 queries) with random weights in ``root``."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

    id2label, label2id = _labels(labels)
    config = Mask2FormerConfig(
        backbone_config=_tiny_swin(),
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        dim_feedforward=32,
        num_queries=8,
        id2label=id2label,
        label2id=label2id,
    )
    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    root = Path(root)
    model.save_pretrained(root)
    Mask2FormerImageProcessor(
        size={"shortest_edge": TINY_SIZE, "longest_edge": 4 * TINY_SIZE}, size_divisor=32
    ).save_pretrained(root)
    return root


def save_tiny_oneformer(root: str | Path, labels: Sequence[str] | None = None, seed: int = 0) -> Path:
    """A OneFormer (tiny Swin backbone, 8 queries, task token length 8) with random weights in ``root``,
    its processor (image processor + a CLIP tokenizer giving "the task is semantic" 4 tokens) and
    the class_info JSON its image processor reads."""
    from transformers import (
        OneFormerConfig,
        OneFormerForUniversalSegmentation,
        OneFormerImageProcessor,
        OneFormerProcessor,
    )

    id2label, label2id = _labels(labels)
    task_len = 8
    tokenizer = tiny_clip_tokenizer(["the", "task", "is", "semantic"], task_len)
    vocab = tokenizer.get_vocab()
    config = OneFormerConfig(
        backbone_config=_tiny_swin(),
        num_queries=8,
        task_seq_len=task_len,
        text_encoder_width=32,
        text_encoder_context_length=task_len,
        text_encoder_num_layers=1,
        text_encoder_vocab_size=len(vocab),
        text_encoder_proj_layers=1,
        text_encoder_n_ctx=2,
        conv_dim=32,
        mask_dim=32,
        hidden_dim=32,
        encoder_feedforward_dim=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        dim_feedforward=32,
        query_dec_layers=1,
        id2label=id2label,
        label2id=label2id,
    )
    torch.manual_seed(seed)
    model = OneFormerForUniversalSegmentation(config).eval()
    root = Path(root)
    model.save_pretrained(root)
    class_info = {str(i): {"name": n, "isthing": 0} for i, n in id2label.items()}
    (root / "class_info.json").write_text(json.dumps(class_info))
    image_processor = OneFormerImageProcessor(
        size={"shortest_edge": TINY_SIZE, "longest_edge": 4 * TINY_SIZE},
        repo_path=str(root),
        class_info_file="class_info.json",
        num_text=config.num_queries - config.text_encoder_n_ctx,
        num_labels=len(id2label),
    )
    processor = OneFormerProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        max_seq_length=task_len,
        task_seq_length=task_len,
    )
    processor.save_pretrained(root)
    return root
