"""Backend confs from named settings: which key of which backend's ``default_conf`` a setting goes to.

extract-2d's ``--detector``, ``--segmenter``, ``--vocab`` and ``--depth-kind`` are named settings that mean
different conf keys for different backends; :func:`backend_confs` routes them, checked against the chosen
backends' ``default_conf`` (a setting the backend does not take is a one-line error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from occlabel.errors import OccLabelError
from occlabel.models.base import depth_backend_class, semantic_backend_class
from occlabel.utils import key_values

#: named setting -> the ``default_conf`` key it sets in a semantic backend (--segmenter: see backend_confs)
_SEMANTIC_KEYS = {"--detector": "detector", "--vocab": "vocab"}


def _conf(options: Mapping[str, Any] | Iterable[str], flag: str) -> dict[str, Any]:
    """A conf given as a mapping, or as ``KEY=VALUE`` strings (VALUE read as YAML)."""
    return dict(options) if isinstance(options, Mapping) else key_values(options, flag)


def backend_confs(
    depth_model: str,
    semantic_model: str,
    detector: str | None = None,
    segmenter: str | None = None,
    vocab: str | None = None,
    depth_kind: str | None = None,
    depth_options: Mapping[str, Any] | Iterable[str] = (),
    semantic_options: Mapping[str, Any] | Iterable[str] = (),
) -> tuple[dict, dict]:
    """The backends' conf dicts (depth, semantics) from the extract-2d settings.

    ``segmenter`` sets a backend's "segmenter" (box-prompted SAM backends) or else its "model" (CLIPSeg,
    closed-set); ``detector`` its "detector"; ``vocab`` its "vocab"; ``depth_kind`` the files depth
    backend's "kind". ``depth_options`` / ``semantic_options``: any other conf keys, as a mapping or as
    ``KEY=VALUE`` strings. A setting the chosen backend does not take is a one-line OccLabelError; with
    ``semantic_model`` "none" (a depth-only run) the semantic conf is ``{}``.
    """
    dconf = _conf(depth_options, "--depth-option")
    sconf = _conf(semantic_options, "--semantic-option")
    dkeys = depth_backend_class(depth_model).default_conf
    if depth_kind is not None:
        if "kind" not in dkeys:
            raise OccLabelError(f"--depth-kind applies to --depth-model files:DIR, not {depth_model!r}")
        dconf["kind"] = depth_kind
    flags = {"--detector": detector, "--segmenter": segmenter, "--vocab": vocab}
    given = [f for f, v in flags.items() if v is not None]
    if semantic_model == "none":
        if given or sconf:
            what = ", ".join(given + (["--semantic-option"] if sconf else []))
            raise OccLabelError(f"{what}: not used with --semantic-model none (a depth-only run)")
        return dconf, {}
    skeys = semantic_backend_class(semantic_model).default_conf
    for flag, value in flags.items():
        if value is None:
            continue
        key = _SEMANTIC_KEYS.get(flag)
        if flag == "--segmenter":
            key = "segmenter" if "segmenter" in skeys else "model"
        if key not in skeys:
            raise OccLabelError(f"{flag} does not apply to --semantic-model {semantic_model}")
        sconf[key] = value
    return dconf, sconf


__all__ = ["backend_confs"]
