"""Closed-set semantic segmentation (SegFormer, Mask2Former, MaskFormer, OneFormer ...) mapped to a vocabulary.

Registered name: ``semseg`` (``conf["model"]``, the CLI's ``--segmenter``, picks the checkpoint: a hub repo id
or a local directory). A baseline for the open-vocabulary backends: a segmenter trained on a fixed label set
(Cityscapes, ADE20K, ...) whose classes are mapped onto the target vocabulary.

Model: the class is picked from the checkpoint's ``config.model_type`` / ``architectures``:

* semantic models (``AutoModelForSemanticSegmentation``: SegFormer, UperNet, BEiT, DPT, MobileViT ...) give
  ``logits [B x K x h' x w']`` (SegFormer: 1/4 of the input). Per-class probabilities: the logits are
  upsampled bilinearly to the working resolution, then softmax (the processor's
  ``post_process_semantic_segmentation`` upsamples the same way before its argmax).
* universal models (``Mask2FormerForUniversalSegmentation``, ``MaskFormerForInstanceSegmentation``,
  ``OneFormerForUniversalSegmentation``; OneFormer gets the task token input of "the task is semantic"
  through the checkpoint's tokenizer) give ``class_queries_logits [B x Q x K+1]`` and
  ``masks_queries_logits [B x Q x h' x w']``. As in Mask2Former's semantic inference, the mask logits are
  upsampled to the working resolution, then ``score_c = sum_q softmax(class_q)[c] * sigmoid(mask_q)`` over
  the K real classes (the processors' combination, their argmax). Scores are divided per pixel by
  ``sum_q sigmoid(mask_q)``: the result is the probability of class c under the mixture of the queries'
  class distributions weighted by their masks — in [0, 1], summing to 1 minus the "no object" mass — and
  has the same argmax. See :func:`universal_probabilities`.

Preprocessing runs in torch on the device: the working-resolution image is resized so that its short side
is ``input_size`` (sides rounded to multiples of 32) and normalised with the processor's mean / std; fp16
autocast on CUDA with ``dtype: "auto"``. ``input_size: None`` takes the training scale of the checkpoint's
label set when it is a built-in one (Cityscapes 1024: models are trained on crops of 1024 x 2048 images;
ADE20K 512), else the processor's size. Processors are not trusted first because the transformers
Mask2Former checkpoints all carry a 384 x 384 conversion default far below their training scale. Working
images (at most 640 px wide by default) are thus upsampled for Cityscapes models: those expect objects at
the scale of 2048 px wide images.

Mapping (semseg_mapping.py): every source class (``config.id2label``) gets a target id — a vocabulary
class id, SKY (254) or UNLABELED (255) — from a built-in table, a user mapping or name matching.

Labels (semseg_probs.py): ``merge: "sum"`` (default) adds the probabilities of the source classes that map
to the same target and takes the argmax over targets; ``merge: "max"`` is the plain LUT on the source
argmax. The names of semseg_mapping.py and semseg_probs.py stay importable from this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from occlabel.conventions import UNLABELED
from occlabel.errors import OccLabelError
from occlabel.models.base import SemanticModel, network_input
from occlabel.models.hub import load_pretrained, normalization, parse_dtype
from occlabel.models.semantics.semseg_mapping import (
    BUILTIN_MAPPINGS,
    MappingTable,
    label_keys,
    load_mapping_table,
    match_table,
    normalise_label,
    parse_target,
    read_mapping_file,
    resolve_mapping,
)
from occlabel.models.semantics.semseg_probs import (
    STRIDE,
    merge_probabilities,
    network_size,
    semantic_probabilities,
    universal_probabilities,
)
from occlabel.models.vocab import Vocabulary, load_vocabulary

DEFAULT_MODEL = "nvidia/segformer-b5-finetuned-cityscapes-1024-1024"
#: model_type -> transformers class of the universal (query-based) segmenters
UNIVERSAL_MODELS: dict[str, str] = {
    "mask2former": "Mask2FormerForUniversalSegmentation",
    "maskformer": "MaskFormerForInstanceSegmentation",
    "oneformer": "OneFormerForUniversalSegmentation",
}
#: network input short side when the processor gives none
FALLBACK_INPUT_SIZE = 512
#: the OneFormer task prompt for semantic segmentation (as OneFormerProcessor writes it)
ONEFORMER_TASK = "the task is semantic"

# --------------------------------------------------------------------------------------------------
# loading: pick the model class from the config
# --------------------------------------------------------------------------------------------------


def _config(source: str, **kwargs):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source, local_files_only=kwargs.get("local_files_only", False))


def segmenter_class(config: Any, source: str = "the") -> type:
    """The transformers class for a segmentation checkpoint's config (universal or semantic)."""
    import transformers
    from transformers import AutoModelForSemanticSegmentation

    cls_name = UNIVERSAL_MODELS.get(config.model_type)
    if cls_name is None:
        archs = [a for a in (getattr(config, "architectures", None) or []) if isinstance(a, str)]
        cls_name = next((a for a in archs if a.endswith("ForUniversalSegmentation")), None)
    if cls_name is not None and hasattr(transformers, cls_name):
        return getattr(transformers, cls_name)
    try:
        return AutoModelForSemanticSegmentation._model_mapping[type(config)]
    except KeyError:
        raise OccLabelError(
            f"{source} checkpoint ({config.model_type}) is not a semantic segmentation model (supported: "
            "AutoModelForSemanticSegmentation models such as SegFormer, and Mask2Former, MaskFormer, OneFormer)"
        ) from None


class _AutoSegmenter:
    """``from_pretrained`` that reads the config first and loads the matching model class."""

    @staticmethod
    def from_pretrained(source: str, **kwargs):
        config = _config(source, **kwargs)
        return segmenter_class(config, repr(str(source))).from_pretrained(source, config=config, **kwargs)


@dataclass
class _Processors:
    """The checkpoint's image processor, and its tokenizer (OneFormer only)."""

    image_processor: Any
    tokenizer: Any = None

    @classmethod
    def from_pretrained(cls, source: str, **kwargs):
        from transformers import AutoImageProcessor, AutoTokenizer

        if _config(source, **kwargs).model_type == "oneformer":
            # class_info_file=None: the class metadata (not needed here) would be fetched from the hub
            image_processor = AutoImageProcessor.from_pretrained(source, class_info_file=None, **kwargs)
            return cls(image_processor, AutoTokenizer.from_pretrained(source, **kwargs))
        return cls(AutoImageProcessor.from_pretrained(source, **kwargs))


def processor_input_size(image_processor: Any) -> int:
    """The short side the processor resizes images to: its size's shortest_edge, or min(height, width)."""
    size = getattr(image_processor, "size", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    get = getattr(size, "get", None)  # a dict, or transformers' SizeDict
    if callable(get):
        if get("shortest_edge"):
            return int(get("shortest_edge"))
        if get("height") and get("width"):
            return int(min(get("height"), get("width")))
    return FALLBACK_INPUT_SIZE


def source_labels(config: Any, name: str) -> list[str]:
    """The K source label names of a checkpoint, in id order (``config.id2label`` must name 0..K-1)."""
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise OccLabelError(f"{name}: the model's config.id2label must name classes 0..K-1")
    return [id2label[i] for i in range(len(id2label))]


def oneformer_task_inputs(tokenizer: Any, config: Any) -> torch.Tensor:
    """OneFormer's task token input ``[1 x task_seq_len]`` long for :data:`ONEFORMER_TASK`: as
    OneFormerProcessor, the token ids with the padding zeroed."""
    tokens = tokenizer(
        [ONEFORMER_TASK],
        padding="max_length",
        max_length=int(config.task_seq_len),
        truncation=True,
        return_tensors="pt",
    )
    return tokens["input_ids"] * tokens["attention_mask"]


# --------------------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------------------


class SemSeg(SemanticModel):
    default_conf: ClassVar[dict[str, Any]] = {
        "model": DEFAULT_MODEL,  # hub repo id or local directory of a semantic / universal segmentation model
        "vocab": "occ3d",  # target vocabulary: "occ3d", "semantickitti" or a path to a vocabulary YAML file
        "mapping": None,  # None (built-in table, else name matching), a table name, a dict or YAML/JSON file
        "unmapped": UNLABELED,  # target of source classes without one: an id or class name (255 = UNLABELED)
        "merge": "sum",  # "sum" the probabilities of source classes with the same target, or take the "max"
        "input_size": None,  # network input short side (multiples of 32); None: label set's, else processor's
        "dtype": "auto",  # "auto" (fp16 autocast on CUDA, fp32 on CPU), "float32", "float16" or "bfloat16"
    }

    def __init__(self, name: str, conf: dict[str, Any] | None = None, device: torch.device | str = "cpu"):
        super().__init__(name, conf, device)
        model = self.conf["model"]
        if not isinstance(model, str | Path) or not str(model).strip():
            raise OccLabelError(f"{name}: model must be a hub repo id or a directory, got {model!r}")
        size = self.conf["input_size"]
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < STRIDE):
            raise OccLabelError(f"{name}: input_size must be an integer >= {STRIDE} or None, got {size!r}")
        if self.conf["merge"] not in ("sum", "max"):
            raise OccLabelError(f"{name}: merge must be 'sum' or 'max', got {self.conf['merge']!r}")
        # "auto": fp32 weights, fp16 autocast on CUDA; explicit dtypes: weights and inputs in that dtype
        self._weights_dtype, self._autocast = parse_dtype(name, self.conf["dtype"], self.device)
        self.vocab: Vocabulary = load_vocabulary(self.conf["vocab"])
        unmapped = parse_target(self.conf["unmapped"], self.vocab, "unmapped", name)
        self._unmapped = UNLABELED if unmapped is None else unmapped

        self.model, processors, self.weights = load_pretrained(
            _AutoSegmenter, _Processors, str(model), self.device, self._weights_dtype
        )
        config = self.model.config
        self.universal = config.model_type in UNIVERSAL_MODELS or "Universal" in type(self.model).__name__
        self.weights["architecture"] = "universal" if self.universal else "semantic"
        self._mean, self._std = normalization(processors.image_processor, self.device)

        self.labels = source_labels(config, name)
        if size is None:
            # the training scale of the label set (Cityscapes 1024, ADE20K 512), else the processor's size
            table = match_table(self.labels)
            size = table.input_size if table is not None and table.input_size else None
            self.conf["input_size"] = size or processor_input_size(processors.image_processor)
        targets, self.mapping_info = resolve_mapping(
            self.labels, self.vocab, self.conf["mapping"], self._unmapped, name
        )
        self._targets = torch.tensor(targets, dtype=torch.long, device=self.device)

        self._task_inputs = None
        if config.model_type == "oneformer":
            if processors.tokenizer is None:
                raise OccLabelError(f"{name}: OneFormer checkpoint {model!r} has no tokenizer")
            self._task_inputs = oneformer_task_inputs(processors.tokenizer, config).to(self.device)

    def provenance(self) -> dict[str, Any]:
        return {
            **super().provenance(),
            "weights": self.weights,
            "vocab": self.vocab.name,
            "vocab_hash": self.vocab.content_hash(),
            "mapping": self.mapping_info,
        }

    def preprocess(self, batch: dict[str, Any] | torch.Tensor) -> torch.Tensor:
        """Normalised network input ``[B x 3 x H x W]`` float32 from a batch (resized from its native image when
        present, see :func:`~occlabel.models.base.network_input`) or an image ``[B x 3 x h x w]`` in [0, 1]."""
        if isinstance(batch, torch.Tensor):
            batch = {"image": batch}
        h, w = batch["image"].shape[-2:]
        size = network_size(h, w, int(self.conf["input_size"]))
        x = network_input(batch, size).to(self.device, torch.float32)
        return (x - self._mean) / self._std

    def class_probabilities(self, batch: dict[str, Any] | torch.Tensor) -> torch.Tensor:
        """Per-source-class probabilities ``[B x K x h x w]`` float32 at the working resolution (h, w) of the
        batch's ``image`` (or of the image tensor given)."""
        image = batch if isinstance(batch, torch.Tensor) else batch["image"]
        h, w = image.shape[-2:]
        x = self.preprocess(batch).to(self._weights_dtype)
        kwargs = {}
        if self._task_inputs is not None:
            kwargs["task_inputs"] = self._task_inputs.expand(x.shape[0], -1)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self._autocast):
            out = self.model(pixel_values=x, **kwargs)
        if self.universal:
            probs = universal_probabilities(out.class_queries_logits, out.masks_queries_logits, (h, w))
        else:
            probs = semantic_probabilities(out.logits, (h, w))
        if probs.shape[1] != len(self.labels):
            raise OccLabelError(
                f"{self.name}: the model gives {probs.shape[1]} classes but config.id2label names {len(self.labels)}"
            )
        return probs

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            probs = self.class_probabilities(batch)
            return merge_probabilities(probs, self._targets, self.conf["merge"])


__all__ = [
    "BUILTIN_MAPPINGS",
    "DEFAULT_MODEL",
    "FALLBACK_INPUT_SIZE",
    "ONEFORMER_TASK",
    "STRIDE",
    "UNIVERSAL_MODELS",
    "MappingTable",
    "SemSeg",
    "label_keys",
    "load_mapping_table",
    "match_table",
    "merge_probabilities",
    "network_size",
    "normalise_label",
    "oneformer_task_inputs",
    "parse_target",
    "processor_input_size",
    "read_mapping_file",
    "resolve_mapping",
    "segmenter_class",
    "semantic_probabilities",
    "source_labels",
    "universal_probabilities",
]
