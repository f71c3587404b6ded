"""Tiny random-weight transformers models for tests, written with save_pretrained (model + processor) so the
backends load them through the same code path users take. Detector/SAM builders: tiny_detectors.py;
closed-set segmenters: tiny_semseg.py."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_depth_anything(root: Path, **extra) -> Path:
    """A tiny random-weight Depth Anything (+ DPT processor) written by save_pretrained into ``root``."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    backbone = Dinov2Config(
        image_size=28,
        patch_size=14,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        out_indices=[1, 2],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        reassemble_factors=[4, 2],
        neck_hidden_sizes=[8, 16],
        fusion_hidden_size=16,
        head_hidden_size=8,
        **extra,
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(root)
    DPTImageProcessor(
        size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14
    ).save_pretrained(root)
    return root


def save_tiny_clipseg(root: Path) -> Path:
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizer,
        ViTImageProcessor,
    )

    words = ["road", "car", "tree", "sky", "person", "building", "grass"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in words:
        vocab[w + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 16,
    }
    config = CLIPSegConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=32,
        reduce_dim=16,
        extract_layers=[0, 1],
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        conditional_layer=0,
    )
    torch.manual_seed(0)
    model = CLIPSegForImageSegmentation(config).eval()
    image_processor = ViTImageProcessor(size={"height": 64, "width": 64})
    processor = CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)
    out = root / "tiny-clipseg"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
