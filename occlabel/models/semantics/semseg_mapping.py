"""The label mapping of the ``semseg`` backend: a closed-set segmenter's source classes -> vocabulary ids.

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
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from occlabel.conventions import SKY, UNLABELED
from occlabel.errors import OccLabelError
from occlabel.models.vocab import Vocabulary

#: built-in mapping tables, files ``occlabel/models/semantics/mappings/<name>.yaml``
BUILTIN_MAPPINGS: tuple[str, ...] = ("cityscapes", "ade20k")
_UNLABELED_NAMES = ("unlabeled", "unlabelled", "ignore")


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
    kind, table = _pick_mapping(labels, vocab, mapping, name)
    per_source: list[int | None]
    if kind == "user":
        per_source = _user_targets(labels, vocab, mapping, name)
    elif kind == "builtin":
        column = table.targets[vocab.name]
        per_source = [next((column[k] for k in label_keys(n) if k in column), None) for n in labels]
    else:
        per_source = _name_targets(labels, vocab)
    table_name = None if table is None else table.name
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


def _pick_mapping(
    labels: list[str], vocab: Vocabulary, mapping: Any, name: str
) -> tuple[str, MappingTable | None]:
    """How the targets are chosen: ("builtin", table) for a built-in table named or matched by the labels,
    ("user", None) for a user mapping (dict or file), ("names", None) for name matching."""
    if isinstance(mapping, str) and mapping in BUILTIN_MAPPINGS:
        table = load_mapping_table(mapping)
        if not table.applies_to(vocab):
            raise OccLabelError(
                f"{name}: built-in mapping {mapping!r} has no table for vocabulary {vocab.name!r} "
                f"(it has {', '.join(table.targets)})"
            )
        return "builtin", table
    if mapping is None:
        table = match_table(labels, vocab)
        return ("names", None) if table is None else ("builtin", table)
    return "user", None


def _user_targets(labels: list[str], vocab: Vocabulary, mapping: Any, name: str) -> list[int | None]:
    """Per source class, the target a user mapping (a dict, or a YAML / JSON file holding one) gives it."""
    data = read_mapping_file(mapping, name) if isinstance(mapping, str | Path) else mapping
    if not isinstance(data, dict):
        raise OccLabelError(
            f"{name}: mapping must be a dict {{source label or id: target id}}, got {type(data).__name__}"
        )
    per_source: list[int | None] = [None] * len(labels)
    for key, value in data.items():
        i = _source_index(key, labels, name)
        per_source[i] = parse_target(value, vocab, f"mapping target of {key!r}", name)
    return per_source


def _name_targets(labels: list[str], vocab: Vocabulary) -> list[int | None]:
    """Per source class, the vocabulary class whose name or prompt it matches (sky prompts -> SKY)."""
    by_name: dict[str, int] = {}
    for c in vocab.classes:
        for text in (c.name, *c.prompts):
            by_name.setdefault(normalise_label(text), c.id)
    for text in vocab.sky_prompts:
        by_name.setdefault(normalise_label(text), SKY)
    return [next((by_name[k] for k in label_keys(n) if k in by_name), None) for n in labels]
