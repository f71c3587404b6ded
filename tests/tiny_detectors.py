"""Tiny random-weight detectors and segmenters, saved like released checkpoints (model + processor files).

Each ``save_tiny_*(dir)`` builds a tiny transformers config, instantiates the model with fixed random weights
(``torch.manual_seed(0)``), writes it with ``save_pretrained`` together with a matching processor/tokenizer,
and returns ``dir``. The directories load through :func:`occlabel.models.hub.load_pretrained` exactly like
downloaded checkpoints (no hub access), so tests exercise the code path users take. Build time: well under a
second each on CPU; the weights are a few hundred kB.

Tokenizers know every word of the built-in vocabularies' prompts (occ3d, semantickitti) plus "a photo of",
so different prompts give different token sequences:

* Grounding DINO: a ``BertTokenizer`` whose special tokens sit at the ids of bert-base-uncased ([PAD] 0,
  [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, "." 1012, "?" 1029), because GroundingDinoModel hard-codes
  those ids as its phrase delimiters; the prompt words follow after id 1029, one WordPiece token each.
* OWLv2: a ``CLIPTokenizer`` with a BPE vocabulary trained (tokenizers' BpeTrainer) on the prompt words, so
  each word is one token; "!" is id 0 (OWL pads with it), and <|endoftext|> has the highest id, as in CLIP
  (the text model pools at the argmax token id).
* SAM / SAM2 have no text; their processor files carry the image size, mean and std.

Random logits of tiny widths saturate the sigmoid; the detectors' last layers are scaled down so that scores
spread over (0, 1) and thresholds can be tested (Grounding DINO: decoder output norm x 0.2; OWLv2: logit scale
1 and a small shift).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

#: bert-base-uncased ids of the tokens Grounding DINO treats specially (GroundingDinoModel.special_tokens)
_BERT_SPECIAL = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}


def _quiet() -> None:
    """No progress bars from save_pretrained."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def prompt_words() -> list[str]:
    """Every lower-case word of the built-in vocabularies' prompts, plus the OWL template words."""
    from occlabel.models.vocab import BUILTIN, load_vocabulary

    words: set[str] = {"a", "photo", "of"}
    for name in BUILTIN:
        for prompt, _ in load_vocabulary(name).prompts():
            words.update(re.findall(r"[a-z0-9]+", prompt.lower()))
    return sorted(words)


def tiny_bert_tokenizer():
    """A BertTokenizer with bert-base-uncased's special-token ids and one token per prompt word."""
    from transformers import BertTokenizer

    words = prompt_words()
    n = max(_BERT_SPECIAL.values()) + 1 + len(words) + 2
    tokens = [f"[unused{i}]" for i in range(n)]
    for tok, i in _BERT_SPECIAL.items():
        tokens[i] = tok
    start = max(_BERT_SPECIAL.values()) + 1
    for i, w in enumerate([*words, ",", "-"]):
        tokens[start + i] = w
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)


def tiny_clip_tokenizer():
    """A CLIPTokenizer (byte-level BPE, "</w>" word ends) in which every prompt word is a single token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    words = prompt_words()
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=100_000, end_of_word_suffix="</w>", show_progress=False)
    bpe.train_from_iterator(words, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = {"!": 0}
    for tok, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # highest id: CLIP text models pool at the argmax id
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!")
    bad = [w for w in words if tokenizer.tokenize(w) != [w + "</w>"]]
    if bad:  # pragma: no cover - guards the construction above
        raise RuntimeError(f"tiny CLIP tokenizer splits {bad}")
    return tokenizer


def save_tiny_grounding_dino(path: str | Path, max_text_len: int = 64, num_queries: int = 30) -> Path:
    """A tiny GroundingDinoForObjectDetection (+ GroundingDinoProcessor) in ``path``.

    Swin backbone (embed_dim 8, one block per stage, stages 2-4 out), BERT text encoder (hidden 32, one
    layer), d_model 32, 1 encoder + 2 decoder layers, ``num_queries`` queries, ``max_text_len`` tokens per text
    (64 by default: the occ3d vocabulary in one text needs ~130, so single-pass mode must split it). Processor
    size: short side 128, long side at most 224 (Grounding DINO needs inputs of at least ~128 px).
    """
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        SwinConfig,
    )

    _quiet()
    path = Path(path)
    tokenizer = tiny_bert_tokenizer()
    backbone = SwinConfig(
        image_size=128,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_text_len,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        num_queries=num_queries,
        max_text_len=max_text_len,
    )
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    # tame the random query-token logits (std ~5 -> ~1), so that probabilities spread over (0, 1)
    with torch.no_grad():
        model.model.decoder.layer_norm.weight.mul_(0.2)
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 128, "longest_edge": 224})
    model.save_pretrained(path)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def save_tiny_owlv2(path: str | Path) -> Path:
    """A tiny Owlv2ForObjectDetection (+ Owlv2Processor) in ``path``: 64 px input, 16 px patches (16 boxes),
    hidden 32 everywhere (OWLv2 needs projection_dim == text hidden == vision hidden), 16 text positions."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    _quiet()
    path = Path(path)
    tokenizer = tiny_clip_tokenizer()
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 16,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 16,
    }
    config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(config).eval()
    # tame the random class logits (logit scale 1, small shift), so that scores spread over (0, 1)
    with torch.no_grad():
        model.class_head.logit_scale.weight.zero_()
        model.class_head.logit_scale.bias.zero_()
        model.class_head.logit_shift.weight.mul_(0.1)
    image_processor = Owlv2ImageProcessorPil(size={"height": 64, "width": 64})
    model.save_pretrained(path)
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def save_tiny_sam(path: str | Path) -> Path:
    """A tiny SamModel (+ SamProcessor) in ``path``: 64 px input, 16 px patches (4x4 embedding, 16x16 low-res
    masks), hidden 32, two ViT layers (one windowed, one global), prompt / mask decoder width 16."""
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    _quiet()
    path = Path(path)
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 16,
        "output_channels": 16,
        "global_attn_indexes": [1],
        "window_size": 2,
        "num_pos_feats": 8,  # 2 * num_pos_feats == prompt encoder hidden size
        "mlp_dim": 64,
    }
    prompt = {"hidden_size": 16, "image_size": 64, "patch_size": 16, "mask_input_channels": 4}
    decoder = {
        "hidden_size": 16,
        "mlp_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "iou_head_hidden_dim": 16,
    }
    config = SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    torch.manual_seed(0)
    model = SamModel(config).eval()
    image_processor = SamImageProcessorPil(
        size={"longest_edge": 64},
        pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16},
        mask_pad_size={"height": 16, "width": 16},
    )
    model.save_pretrained(path)
    SamProcessor(image_processor=image_processor).save_pretrained(path)
    return path


def save_tiny_sam2(path: str | Path) -> Path:
    """A tiny Sam2Model in ``path`` (Hiera backbone of 1, 1, 2, 1 blocks, the 4th global, 64 px input, FPN width 16, 16x16
    low-res masks) with a ``preprocessor_config.json`` as a Sam2ImageProcessor writes it (resize to 64 x 64,
    ImageNet mean / std). The processor is written by hand: Sam2ImageProcessor needs torchvision."""
    from transformers import Sam2Config, Sam2Model

    _quiet()
    path = Path(path)
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 8,
        "num_attention_heads": 1,
        "image_size": [64, 64],
        "blocks_per_stage": [1, 1, 2, 1],
        "embed_dim_per_stage": [8, 16, 32, 64],
        "num_attention_heads_per_stage": [1, 1, 1, 1],
        "window_size_per_stage": [4, 4, 4, 4],
        "global_attention_blocks": [3],
        "window_positional_embedding_background_size": [4, 4],
    }
    vision = {
        "backbone_config": backbone,
        "backbone_channel_list": [64, 32, 16, 8],
        "backbone_feature_sizes": [[16, 16], [8, 8], [4, 4]],
        "fpn_hidden_size": 16,
    }
    prompt = {"hidden_size": 16, "image_size": 64, "patch_size": 16, "mask_input_channels": 4}
    decoder = {
        "hidden_size": 16,
        "mlp_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "iou_head_hidden_dim": 16,
    }
    config = Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    torch.manual_seed(0)
    model = Sam2Model(config).eval()
    model.save_pretrained(path)
    processor = {
        "image_processor_type": "Sam2ImageProcessor",
        "processor_class": "Sam2Processor",
        "do_resize": True,
        "size": {"height": 64, "width": 64},
        "mask_size": {"height": 16, "width": 16},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "do_convert_rgb": True,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    return path
