"""Target vocabularies for open-vocabulary semantic backends: class ids, names, text prompts, colours.

A vocabulary is a YAML file::

    name: occ3d
    version: 1
    sky: {id: 254, prompts: ["sky"]}
    classes:
      - {id: 11, name: driveable_surface, prompts: ["road", "street"], moving: false, colour: [255, 0, 255]}
      ...

Built-in vocabularies ("occ3d", "semantickitti") ship in ``occlabel/models/vocab/*.yaml``; any other name is
read as a path to a user YAML file. Class ids are 0-253 (254 = SKY and 255 = UNLABELED are reserved, see
:mod:`occlabel.conventions`). A class with an empty prompt list is never predicted by prompt-based models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from occlabel.conventions import SKY
from occlabel.errors import OccLabelError

#: vocabularies shipped with occlabel (files ``occlabel/models/vocab/<name>.yaml``)
BUILTIN: tuple[str, ...] = ("occ3d", "semantickitti")
DEFAULT_COLOUR = (128, 128, 128)


@dataclass(frozen=True)
class VocabClass:
    """One class: ``id`` (0-253, the 2D label value), ``name``, text ``prompts``, ``moving``, RGB ``colour``."""

    id: int
    name: str
    prompts: tuple[str, ...] = ()
    moving: bool = False
    colour: tuple[int, int, int] = DEFAULT_COLOUR


@dataclass(frozen=True)
class Vocabulary:
    """A target vocabulary; ``sky_prompts`` map to :data:`occlabel.conventions.SKY` (254)."""

    name: str
    classes: tuple[VocabClass, ...]
    sky_prompts: tuple[str, ...] = ()
    version: str = "1"
    #: where it was read from (not part of the content hash)
    source: str = field(default="", compare=False)

    def ids(self) -> tuple[int, ...]:
        return tuple(c.id for c in self.classes)

    def names(self) -> dict[int, str]:
        return {c.id: c.name for c in self.classes}

    def moving_ids(self) -> tuple[int, ...]:
        """Ids of classes that can move (dynamic objects)."""
        return tuple(c.id for c in self.classes if c.moving)

    def prompts(self) -> list[tuple[str, int]]:
        """Flat list of (prompt, class id) over all classes in order, then the sky prompts (-> 254)."""
        out = [(p, c.id) for c in self.classes for p in c.prompts]
        out += [(p, SKY) for p in self.sky_prompts]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-data form (what the content hash is taken of)."""
        return {
            "name": self.name,
            "version": self.version,
            "sky": {"id": SKY, "prompts": list(self.sky_prompts)},
            "classes": [
                {
                    "id": c.id,
                    "name": c.name,
                    "prompts": list(c.prompts),
                    "moving": c.moving,
                    "colour": list(c.colour),
                }
                for c in sorted(self.classes, key=lambda c: c.id)
            ],
        }

    def content_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_dict`, for provenance."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _prompts(v: Any, where: str, src: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(p, str) and p.strip() for p in v):
        raise OccLabelError(
            f"vocabulary {src}: {where}.prompts must be a list of non-empty strings, got {v!r}"
        )
    return tuple(p.strip() for p in v)


def _parse_class(i: int, d: Any, src: str) -> VocabClass:
    where = f"classes[{i}]"
    if not isinstance(d, dict):
        raise OccLabelError(f"vocabulary {src}: {where} must be a mapping, got {d!r}")
    unknown = set(d) - {"id", "name", "prompts", "moving", "colour"}
    if unknown:
        raise OccLabelError(
            f"vocabulary {src}: {where} has unknown field(s) {', '.join(sorted(map(str, unknown)))}"
        )
    cid = d.get("id")
    if not _is_int(cid) or not 0 <= cid <= 253:
        raise OccLabelError(f"vocabulary {src}: {where}.id must be an integer in 0-253, got {cid!r}")
    name = d.get("name")
    if not isinstance(name, str) or not name.strip():
        raise OccLabelError(f"vocabulary {src}: {where}.name is missing or empty (id {cid})")
    moving = d.get("moving", False)
    if not isinstance(moving, bool):
        raise OccLabelError(f"vocabulary {src}: {where}.moving must be true or false, got {moving!r}")
    colour = d.get("colour", list(DEFAULT_COLOUR))
    if (
        not isinstance(colour, list | tuple)
        or len(colour) != 3
        or not all(_is_int(v) and 0 <= v <= 255 for v in colour)
    ):
        raise OccLabelError(
            f"vocabulary {src}: {where}.colour must be [r, g, b] with ints 0-255, got {colour!r}"
        )
    return VocabClass(cid, name.strip(), _prompts(d.get("prompts"), where, src), moving, tuple(colour))


def parse_vocabulary(data: Any, src: str = "<dict>") -> Vocabulary:
    """Validate the plain data of a vocabulary file; errors are one-line OccLabelErrors naming src and field."""
    if not isinstance(data, dict):
        raise OccLabelError(f"vocabulary {src}: top level must be a mapping with name, classes, sky")
    unknown = set(data) - {"name", "version", "sky", "classes"}
    if unknown:
        raise OccLabelError(
            f"vocabulary {src}: unknown top-level field(s) {', '.join(sorted(map(str, unknown)))}"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise OccLabelError(f"vocabulary {src}: name is missing or empty")
    version = data.get("version", 1)
    if not isinstance(version, str | int) or isinstance(version, bool):
        raise OccLabelError(f"vocabulary {src}: version must be a string or integer, got {version!r}")
    raw = data.get("classes")
    if not isinstance(raw, list) or not raw:
        raise OccLabelError(f"vocabulary {src}: classes must be a non-empty list")
    classes = tuple(_parse_class(i, d, src) for i, d in enumerate(raw))
    seen_ids: dict[int, int] = {}
    seen_names: dict[str, int] = {}
    for i, c in enumerate(classes):
        if c.id in seen_ids:
            raise OccLabelError(
                f"vocabulary {src}: classes[{i}].id {c.id} duplicates classes[{seen_ids[c.id]}].id"
            )
        if c.name in seen_names:
            raise OccLabelError(
                f"vocabulary {src}: classes[{i}].name {c.name!r} duplicates classes[{seen_names[c.name]}].name"
            )
        seen_ids[c.id], seen_names[c.name] = i, i
    sky = data.get("sky")
    sky_prompts: tuple[str, ...] = ()
    if sky is not None:
        if not isinstance(sky, dict):
            raise OccLabelError(f"vocabulary {src}: sky must be a mapping {{id: {SKY}, prompts: [...]}}")
        if sky.get("id", SKY) != SKY:
            raise OccLabelError(f"vocabulary {src}: sky.id must be {SKY}, got {sky.get('id')!r}")
        sky_prompts = _prompts(sky.get("prompts"), "sky", src)
    return Vocabulary(name.strip(), classes, sky_prompts, str(version), src)


def vocabulary_of_provenance(model: dict[str, Any] | None) -> Vocabulary:
    """The vocabulary a semantics group of a cache was made with, from its stored attributes.

    The one rule every reader of a cache's semantics follows (calibrate-depth's ground and movable classes,
    voxelize's class set, show's palette): the full vocabulary recorded by extract-2d (``vocabulary``, a
    :meth:`Vocabulary.to_dict`); for caches written before it was recorded, the vocabulary the backend
    names (``model.conf.vocab``, a built-in name or a YAML path, then ``model.vocab``); semantics that
    record none (the oracle, imported files) are in Occ3D ids.

    Args:
        model: the semantics group's attributes ({"model": provenance, "vocabulary": {...}}) or None.

    Raises:
        OccLabelError: a recorded vocabulary that cannot be read (one line naming it).
    """
    meta = model or {}
    data = meta.get("vocabulary")
    if isinstance(data, dict):
        return parse_vocabulary(data, "<recorded in the cache>")
    prov = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    conf = prov.get("conf") if isinstance(prov.get("conf"), dict) else {}
    names = [n for n in (conf.get("vocab"), prov.get("vocab")) if n]
    if not names:
        return load_vocabulary("occ3d")
    for name in names[:-1]:
        try:
            return load_vocabulary(name)
        except OccLabelError:
            continue
    return load_vocabulary(names[-1])


def load_vocabulary(name_or_path: str | Path) -> Vocabulary:
    """A built-in vocabulary ("occ3d", "semantickitti") or a user YAML file.

    Raises:
        OccLabelError: unknown name / missing file / invalid YAML or fields (one line naming file and field).
    """
    key = str(name_or_path)
    if key in BUILTIN:
        res = resources.files("occlabel.models").joinpath("vocab", f"{key}.yaml")
        text, src = res.read_text(encoding="utf-8"), key
    else:
        path = Path(key).expanduser()
        if not path.is_file():
            raise OccLabelError(
                f"vocabulary {key!r} is neither a built-in ({', '.join(BUILTIN)}) nor an existing YAML file"
            )
        text, src = path.read_text(encoding="utf-8"), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OccLabelError(f"vocabulary {src}: not valid YAML ({first})") from None
    return parse_vocabulary(data, src)
