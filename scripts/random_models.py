"""Random-weight models with the *real* architectures of the default detector / segmenter checkpoints.

No pretrained weights can be fetched here; random weights of the released architectures cost the same compute,
so these stand in for throughput benchmarks of ``grounded-sam`` / ``owlv2-sam``. Each ``save_random_*(dir)``
writes ``save_pretrained`` model files plus a processor with the real preprocessing sizes and a tokenizer
with a synthetic vocabulary of the real size (real special-token ids, every vocabulary prompt word one token,
filler tokens for the rest), and returns ``dir``. Load them like the released ones::

    occlabel extract-2d ... --semantic-model grounded-sam --detector DIR/grounding-dino-tiny --segmenter DIR/sam-vit-base

Architectures and sources (config.json of the hub repos; transformers 5.23 config defaults where the repo's
config relies on them):

* IDEA-Research/grounding-dino-tiny (https://huggingface.co/IDEA-Research/grounding-dino-tiny/blob/main/config.json):
  Swin-T backbone (embed_dim 96, depths 2-2-6-2, heads 3-6-12-24, window 7, patch 4, stages 2-4 out), BERT-base
  text encoder (``text_config`` = BertConfig defaults = bert-base-uncased: vocab 30522, hidden 768, 12 layers,
  12 heads, 512 positions), d_model 256, 900 queries, 6 encoder + 6 decoder layers (ffn 2048, 8 heads, 4
  points, 4 feature levels), max_text_len 256 (these are GroundingDinoConfig's defaults). Processor:
  GroundingDinoImageProcessor, shortest_edge 800 / longest_edge 1333, ImageNet mean / std.
* facebook/sam-vit-base (config.json: only dropout / initializer overrides): SamConfig defaults are ViT-B,
  hidden 768, 12 layers, 12 heads, global attention at blocks 2, 5, 8, 11, window 14, 1024 px input, patch 16,
  256-channel neck; prompt encoder and mask decoder at width 256 (2 two-way layers, 3 multimask outputs).
  Processor: longest_edge 1024, padded to 1024 x 1024.
* google/owlv2-base-patch16-ensemble (config.json: ``vision_config.image_size`` 960, the rest defaults):
  CLIP B/16 towers, vision hidden 768 x 12 layers x 12 heads, 960 px (60 x 60 = 3600 boxes), text hidden
  512 x 12 layers x 8 heads, 16 positions, vocab 49408 ("!" = 0 pads, <|startoftext|> 49406,
  <|endoftext|> 49407), projection_dim 512. Processor: pad to square, 960 x 960, CLIP mean / std.
* facebook/sam2.1-hiera-tiny: Sam2Config defaults (the docstring checkpoint), Hiera-T trunk (embed 96, 1 head,
  stages 1-2-7-2, global blocks 5, 7, 9, window-position background 7 x 7, as sam2.1_hiera_t.yaml), FPN 256,
  1024 px; the hub repo is the ``sam2_video`` variant, whose image parts these are. Processor: 1024 x 1024.

Run ``python scripts/random_models.py OUT_DIR [--check]``: writes all four (``--only`` picks) and with
``--check`` runs one forward of each backend at real size on one 450 x 800 image (slow on CPU: minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: bert-base-uncased ids of Grounding DINO's phrase delimiters and BERT's special tokens
BERT_SPECIAL = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
BERT_VOCAB_SIZE = 30522
CLIP_VOCAB_SIZE = 49408
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def prompt_words() -> list[str]:
    """Lower-case words of every built-in vocabulary prompt, plus the OWL template words "a photo of"."""
    from occlabel.models.vocab import BUILTIN, load_vocabulary

    words: set[str] = {"a", "photo", "of"}
    for name in BUILTIN:
        for prompt, _ in load_vocabulary(name).prompts():
            words.update(re.findall(r"[a-z0-9]+", prompt.lower()))
    return sorted(words)


def bert_tokenizer(size: int = BERT_VOCAB_SIZE):
    """BertTokenizer of ``size`` tokens: bert-base-uncased's special ids, each prompt word one token."""
    from transformers import BertTokenizer

    tokens = [f"[unused{i}]" for i in range(size)]
    for tok, i in BERT_SPECIAL.items():
        tokens[i] = tok
    start = max(BERT_SPECIAL.values()) + 1
    for i, w in enumerate([*prompt_words(), ",", "-"]):
        tokens[start + i] = w
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)


def clip_tokenizer(size: int = CLIP_VOCAB_SIZE):
    """CLIPTokenizer of ``size`` tokens (BPE trained on the prompt words, fillers up to ``size``), "!" = 0 and
    <|startoftext|> / <|endoftext|> the two highest ids as in CLIP."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(
        prompt_words(),
        trainers.BpeTrainer(vocab_size=100_000, end_of_word_suffix="</w>", show_progress=False),
    )
    model = json.loads(bpe.to_str())["model"]
    vocab = {"!": 0}
    for tok, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    i = 0
    while len(vocab) < size - 2:
        vocab.setdefault(f"zzfill{i}</w>", len(vocab))
        i += 1
    vocab["<|startoftext|>"] = size - 2
    vocab["<|endoftext|>"] = size - 1
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!")


def _quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def save_random_grounding_dino_tiny(path: str | Path) -> Path:
    """IDEA-Research/grounding-dino-tiny's architecture with random weights (+ processor, tokenizer)."""
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
    backbone = SwinConfig(
        image_size=224,
        patch_size=4,
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        out_features=["stage2", "stage3", "stage4"],
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=BertConfig(),  # bert-base-uncased
        d_model=256,
        num_queries=900,
        encoder_layers=6,
        decoder_layers=6,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_n_points=4,
        decoder_n_points=4,
        num_feature_levels=4,
        max_text_len=256,
    )
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(path)
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 800, "longest_edge": 1333})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=bert_tokenizer()).save_pretrained(path)
    return path


def save_random_sam_vit_base(path: str | Path) -> Path:
    """facebook/sam-vit-base's architecture (SamConfig defaults: ViT-B, 1024 px) with random weights."""
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    _quiet()
    path = Path(path)
    torch.manual_seed(0)
    SamModel(SamConfig()).eval().save_pretrained(path)
    image_processor = SamImageProcessorPil(
        size={"longest_edge": 1024}, pad_size={"height": 1024, "width": 1024}
    )
    SamProcessor(image_processor=image_processor).save_pretrained(path)
    return path


def save_random_owlv2_base(path: str | Path) -> Path:
    """google/owlv2-base-patch16-ensemble's architecture (CLIP B/16 towers, 960 px) with random weights."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    _quiet()
    path = Path(path)
    config = Owlv2Config(
        text_config={"vocab_size": CLIP_VOCAB_SIZE},  # 512 x 12 layers x 8 heads, 16 positions (defaults)
        vision_config={"image_size": 960, "patch_size": 16},  # 768 x 12 layers x 12 heads (defaults)
        projection_dim=512,
    )
    torch.manual_seed(0)
    Owlv2ForObjectDetection(config).eval().save_pretrained(path)
    image_processor = Owlv2ImageProcessorPil(size={"height": 960, "width": 960})
    Owlv2Processor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(path)
    return path


def save_random_clipseg_rd64_refined(path: str | Path) -> Path:
    """CIDAS/clipseg-rd64-refined's architecture with random weights: CLIP ViT-B/16 vision tower (768 x 12
    layers, 224 px positions interpolated to the 352 px input) and text tower (512 x 12 layers x 8 heads, 77
    positions), projection 512, decoder with reduce_dim 64 reading layers 3, 6, 9, and the refined
    ("complex") transposed-convolution head. Processor: 352 x 352, CLIP mean / std."""
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        ViTImageProcessorPil,
    )

    _quiet()
    path = Path(path)
    config = CLIPSegConfig(
        text_config={
            "vocab_size": CLIP_VOCAB_SIZE,
            "bos_token_id": CLIP_VOCAB_SIZE - 2,
            "eos_token_id": CLIP_VOCAB_SIZE - 1,
        },
        vision_config={"patch_size": 16, "image_size": 224},
        projection_dim=512,
        reduce_dim=64,
        extract_layers=[3, 6, 9],
        use_complex_transposed_convolution=True,
    )
    torch.manual_seed(0)
    CLIPSegForImageSegmentation(config).eval().save_pretrained(path)
    image_processor = ViTImageProcessorPil(
        size={"height": 352, "width": 352},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    CLIPSegProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(path)
    return path


def save_random_depth_anything_v2_small(path: str | Path) -> Path:
    """depth-anything/Depth-Anything-V2-Small-hf's architecture (DINOv2-S/14 backbone, DPT head with neck
    48-96-192-384, fusion 64) with random weights; processor: short side 518, multiples of 14, ImageNet
    mean / std."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor
    from transformers.models.dinov2 import Dinov2Config

    _quiet()
    path = Path(path)
    backbone = Dinov2Config(
        image_size=518,
        hidden_size=384,
        num_attention_heads=6,
        out_indices=[3, 6, 9, 12],
        out_features=["stage3", "stage6", "stage9", "stage12"],
        reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(cfg).eval().save_pretrained(path)
    DPTImageProcessor(
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ).save_pretrained(path)
    return path


def save_random_sam2_hiera_tiny(path: str | Path) -> Path:
    """facebook/sam2.1-hiera-tiny's image architecture (Sam2Config defaults) with random weights; the image
    processor settings are written by hand (Sam2ImageProcessor needs torchvision)."""
    from transformers import Sam2Config, Sam2Model

    _quiet()
    path = Path(path)
    torch.manual_seed(0)
    Sam2Model(Sam2Config()).eval().save_pretrained(path)
    settings = {
        "image_processor_type": "Sam2ImageProcessor",
        "do_resize": True,
        "size": {"height": 1024, "width": 1024},
        "mask_size": {"height": 256, "width": 256},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "do_convert_rgb": True,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(settings, indent=2))
    return path


BUILDERS = {
    "grounding-dino-tiny": save_random_grounding_dino_tiny,
    "sam-vit-base": save_random_sam_vit_base,
    "owlv2-base-patch16-ensemble": save_random_owlv2_base,
    "sam2.1-hiera-tiny": save_random_sam2_hiera_tiny,
    "clipseg-rd64-refined": save_random_clipseg_rd64_refined,
    "depth-anything-v2-small": save_random_depth_anything_v2_small,
}


def n_params(path: Path) -> int:
    """Parameter count from a directory's safetensors files."""
    from safetensors import safe_open

    total = 0
    for f in path.glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return total


def check(out: Path, names: list[str], size: tuple[int, int] = (450, 800)) -> None:
    """One forward of each backend at real size (single-pass captions: one Grounding DINO pass per image)."""
    from occlabel.models.semantics.grounded_sam import GroundedSAM
    from occlabel.models.semantics.owlv2_sam import OWLv2SAM

    torch.manual_seed(0)
    image = torch.rand(1, 3, *size)
    runs = []
    if "grounding-dino-tiny" in names:
        for seg in ("sam-vit-base", "sam2.1-hiera-tiny"):
            if seg in names:
                conf = {"detector": str(out / "grounding-dino-tiny"), "segmenter": str(out / seg)}
                runs.append((f"grounded-sam + {seg}", GroundedSAM, {**conf, "mode": "single-pass"}))
    if "owlv2-base-patch16-ensemble" in names and "sam-vit-base" in names:
        conf = {"detector": str(out / "owlv2-base-patch16-ensemble"), "segmenter": str(out / "sam-vit-base")}
        runs.append(("owlv2-sam + sam-vit-base", OWLv2SAM, conf))
    for label, cls, conf in runs:
        t = time.time()
        model = cls(label.split()[0], conf, "cpu")
        loaded = time.time() - t
        t = time.time()
        labels, confidence = model({"image": image})
        prov = model.provenance()
        det = prov.get("detector_size")
        print(
            f"{label}: loaded {loaded:.1f} s, forward {time.time() - t:.1f} s on {tuple(image.shape)}, detector input "
            f"{det}, SAM input {prov['segmenter']['input_size']}, labels {sorted(labels.unique().tolist())[:8]}..., "
            f"confidence max {float(confidence.max()):.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="directory to write the models into (one sub-directory each)")
    parser.add_argument("--only", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--check", action="store_true", help="run one real-size forward of each backend")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in args.only:
        path = args.out / name
        if not (path / "config.json").exists():
            t = time.time()
            BUILDERS[name](path)
            print(f"{name}: written to {path} in {time.time() - t:.1f} s")
        print(f"{name}: {n_params(path) / 1e6:.1f} M parameters")
    if args.check:
        check(args.out, args.only)


if __name__ == "__main__":
    main()
