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

Mapping: every source class (``config.id2label``) gets a target id — a vocabulary class id, SKY (254) or
UNLABELED (255):

* ``mapping: None``: a built-in table (``occlabel/models/semantics/mappings/*.yaml``: Cityscapes' 19
  train ids, ADE20K's 150 classes; to occ3d and semantickitti) when every checkpoint label is in it
  (names compared case- and separator-insensitively, "windowpane, window" also by its first name);
  otherwise labels are matched by name against the vocabulary's class names and prompts (and the sky
  prompts -> 254). Nothing matched at all is a one-line error.
* ``mapping`` a dict ``{source label name or id: target}`` or a YAML / JSON file holding one (targets: ids,
  or vocabulary class names, "sky", "unlabeled"); it replaces the built-in table, labels it does not name
  are unmapped. ``mapping`` may also name a built-in table ("cityscapes", "ade20k") to force it.
* source classes without a target (null in a table, no name match, not named by a user mapping) become
  ``unmapped`` (UNLABELED by default; e.g. 0 makes them Occ3D "others").

Labels: ``merge: "sum"`` (default) adds the probabilities of the source classes that map to the same target
and takes the argmax over targets; confidence is that summed probability. Source classes are exclusive
events, so the sum is the target class's probability under the model, and its argmax the most probable
target: an ADE pixel that is 0.3 tree and 0.25 + 0.25 + 0.2 building / wall / house is manmade (0.7), not
vegetation. ``merge: "max"`` is the plain LUT on the source argmax (confidence = the source class's
probability), which is what a per-pixel class map would give.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import yaml

from occlabel.conventions import SKY, UNLABELED
from occlabel.errors import OccLabelError
from occlabel.models.base import SemanticModel, network_input
from occlabel.models.hub import load_pretrained, normalization, parse_dtype
from occlabel.models.vocab import Vocabulary, load_vocabulary

DEFAULT_MODEL = "nvidia/segformer-b5-finetuned-cityscapes-1024-1024"
#: built-in mapping tables, files ``occlabel/models/semantics/mappings/<name>.yaml``
BUILTIN_MAPPINGS: tuple[str, ...] = ("cityscapes", "ade20k")
#: model_type -> transformers class of the universal (query-based) segmenters
UNIVERSAL_MODELS: dict[str, str] = {
    "mask2former": "Mask2FormerForUniversalSegmentation",
    "maskformer": "MaskFormerForInstanceSegmentation",
    "oneformer": "OneFormerForUniversalSegmentation",
}
#: network input sides are rounded to multiples of this (the coarsest feature stride of these models)
STRIDE = 32
#: network input short side when the processor gives none
FALLBACK_INPUT_SIZE = 512
#: the OneFormer task prompt for semantic segmentation (as OneFormerProcessor writes it)
ONEFORMER_TASK = "the task is semantic"
_UNLABELED_NAMES = ("unlabeled", "unlabelled", "ignore")

# --------------------------------------------------------------------------------------------------
# probabilities and the merge onto target classes (pure functions, vectorised)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# source label -> target id mapping
# --------------------------------------------------------------------------------------------------


def normalise_label(name: str) -> str:
    """Lower case, "_", "-", "/", "." and runs of blanks as one space ("Traffic_Sign" -> "traffic sign")."""
    return re.sub(r"[\s_\-/.]+", " ", str(name).lower()).strip()


def label_keys(name: str) -> tuple[str, ...]:
    """Normalised forms a label is known by: whole, and the first of comma-separated synonyms."""
    full = normalise_label(name)
    first = normalise_label(str(name).split(",")[0])
    return (full,) if first in ("", full) else (full, first)


@dataclass(frozen=True)
class MappingTable:
    """A built-in table: source label names and, per vocabulary name, their target ids (None: no counterpart)."""

    name: str
    labels: tuple[str, ...]
    targets: dict[str, dict[str, int | None]]  # vocab name -> normalised label -> target id / None
    #: network input short side that suits models of this label set (their training scale)
    input_size: int | None = None

    def applies_to(self, vocab: Vocabulary) -> bool:
        """Whether the table has a column for ``vocab`` whose ids all exist in it."""
        column = self.targets.get(vocab.name)
        allowed = set(vocab.ids()) | {SKY, UNLABELED}
        return column is not None and all(t is None or t in allowed for t in column.values())

    def covers(self, labels: list[str]) -> bool:
        """Whether every label is (by one of its normalised forms) a label of the table."""
        known = {normalise_label(n) for n in self.labels}
        return all(any(k in known for k in label_keys(n)) for n in labels)


def load_mapping_table(name: str) -> MappingTable:
    """The built-in table ``name`` (one of :data:`BUILTIN_MAPPINGS`)."""
    text = (
        resources.files("occlabel.models.semantics").joinpath("mappings", f"{name}.yaml").read_text("utf-8")
    )
    data = yaml.safe_load(text)
    labels, targets = [], {}
    for row in data["classes"]:
        labels.append(str(row["name"]))
        for vocab_name, target in row.items():
            if vocab_name != "name":
                targets.setdefault(vocab_name, {})[normalise_label(row["name"])] = target
    size = data.get("input_size")
    return MappingTable(str(data["name"]), tuple(labels), targets, int(size) if size else None)


def match_table(labels: list[str], vocab: Vocabulary | None = None) -> MappingTable | None:
    """The smallest built-in table holding every label (and, when ``vocab`` is given, a column for it)."""
    tables = sorted((load_mapping_table(n) for n in BUILTIN_MAPPINGS), key=lambda t: len(t.labels))
    return next((t for t in tables if t.covers(labels) and (vocab is None or t.applies_to(vocab))), None)


def _vocab_names(vocab: Vocabulary) -> dict[str, int]:
    """Normalised target names -> id: vocabulary class names, "sky", "unlabeled"."""
    out = {normalise_label(c.name): c.id for c in vocab.classes}
    out["sky"] = SKY
    out.update(dict.fromkeys(_UNLABELED_NAMES, UNLABELED))
    return out


def parse_target(value: Any, vocab: Vocabulary, what: str, name: str) -> int | None:
    """A target given as an id, a vocabulary class name, "sky" / "unlabeled", or None (= unmapped)."""
    if value is None:
        return None
    allowed = set(vocab.ids()) | {SKY, UNLABELED}
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        tid = _vocab_names(vocab).get(normalise_label(value))
        if tid is None:
            raise OccLabelError(
                f"{name}: {what} {value!r} is not a class of vocabulary {vocab.name!r} "
                f"({', '.join(c.name for c in vocab.classes)}, sky, unlabeled)"
            )
        return tid
    try:
        tid = int(value)
    except (TypeError, ValueError):
        raise OccLabelError(f"{name}: {what} {value!r} is not a target id or class name") from None
    value = int(value) if isinstance(value, str) else value
    if isinstance(value, bool) or tid != value or tid not in allowed:
        raise OccLabelError(
            f"{name}: {what} {value!r} is not an id of vocabulary {vocab.name!r} "
            f"({', '.join(map(str, sorted(allowed)))})"
        )
    return tid


def read_mapping_file(path: str | Path, name: str) -> Any:
    """The plain data of a YAML / JSON mapping file (one-line errors)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise OccLabelError(f"{name}: cannot read mapping file {path} ({e.strerror or e})") from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OccLabelError(f"{name}: cannot parse mapping file {path} ({first})") from None


def _source_index(key: Any, labels: list[str], name: str) -> int:
    """The source class id a user mapping key names: an id (int or digits) or a label name."""
    if (isinstance(key, int) and not isinstance(key, bool)) or (
        isinstance(key, str) and key.strip().isdigit()
    ):
        i = int(key)
        if not 0 <= i < len(labels):
            raise OccLabelError(f"{name}: mapping source id {i} is outside 0-{len(labels) - 1}")
        return i
    wanted = normalise_label(str(key))
    for i, label in enumerate(labels):
        if wanted in label_keys(label):
            return i
    shown = ", ".join(labels[:12]) + (", ..." if len(labels) > 12 else "")
    raise OccLabelError(f"{name}: mapping source {key!r} is not a label of the model ({shown})")


def resolve_mapping(
    labels: list[str], vocab: Vocabulary, mapping: Any, unmapped: int, name: str = "semseg"
) -> tuple[list[int], dict[str, Any]]:
    """Target id of every source class, and a provenance record of how they were chosen.

    Args:
        labels: the K source label names, in id order (``config.id2label``).
        vocab: the target vocabulary.
        mapping: None (built-in table matched by labels, else by names), a built-in table name, a dict
            ``{source name or id: target}`` or a YAML / JSON file path holding one.
        unmapped: target id of source classes without a target.
    Returns:
        ``([K] target ids, {"kind", "table", "labels", "targets", "unmapped"})``.
    Raises:
        OccLabelError: a bad mapping, or no source class mapping to anything (one line).
    """
    kind, table_name = "names", None
    per_source: list[int | None]
    if isinstance(mapping, str) and mapping in BUILTIN_MAPPINGS:
        table = load_mapping_table(mapping)
        if not table.applies_to(vocab):
            raise OccLabelError(
                f"{name}: built-in mapping {mapping!r} has no table for vocabulary {vocab.name!r} "
                f"(it has {', '.join(table.targets)})"
            )
        kind, table_name = "builtin", table.name
    elif mapping is None:
        table = match_table(labels, vocab)
        if table is not None:
            kind, table_name = "builtin", table.name
    else:
        table = None
        data = read_mapping_file(mapping, name) if isinstance(mapping, str | Path) else mapping
        if not isinstance(data, dict):
            raise OccLabelError(
                f"{name}: mapping must be a dict {{source label or id: target id}}, got {type(data).__name__}"
            )
        per_source = [None] * len(labels)
        for key, value in data.items():
            i = _source_index(key, labels, name)
            per_source[i] = parse_target(value, vocab, f"mapping target of {key!r}", name)
        kind = "user"

    if kind == "builtin":
        column = table.targets[vocab.name]
        per_source = [next((column[k] for k in label_keys(n) if k in column), None) for n in labels]
    elif kind == "names":
        by_name: dict[str, int] = {}
        for c in vocab.classes:
            for text in (c.name, *c.prompts):
                by_name.setdefault(normalise_label(text), c.id)
        for text in vocab.sky_prompts:
            by_name.setdefault(normalise_label(text), SKY)
        per_source = [next((by_name[k] for k in label_keys(n) if k in by_name), None) for n in labels]

    if all(t is None for t in per_source):
        shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
        how = {"user": "the mapping given", "builtin": f"built-in table {table_name!r}"}.get(
            kind, "name matching"
        )
        raise OccLabelError(
            f"{name}: none of the model's {len(labels)} labels ({shown}) maps to vocabulary {vocab.name!r} "
            f"by {how}; pass --semantic-option mapping=FILE (YAML {{source label: target id}})"
        )
    targets = [unmapped if t is None else t for t in per_source]
    info = {
        "kind": kind,
        "table": table_name,
        "labels": list(labels),
        "targets": targets,
        "unmapped": unmapped,
    }
    return targets, info


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

        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        if sorted(id2label) != list(range(len(id2label))) or not id2label:
            raise OccLabelError(f"{name}: the model's config.id2label must name classes 0..K-1")
        self.labels = [id2label[i] for i in range(len(id2label))]
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
            length = int(config.task_seq_len)
            tokens = processors.tokenizer(
                [ONEFORMER_TASK],
                padding="max_length",
                max_length=length,
                truncation=True,
                return_tensors="pt",
            )
            # as OneFormerProcessor: token ids with the padding zeroed
            self._task_inputs = (tokens["input_ids"] * tokens["attention_mask"]).to(self.device)

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
