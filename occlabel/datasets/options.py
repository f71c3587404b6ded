"""Adapter options from the named dataset settings (``--version``, ``--split``) and the free ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from occlabel.errors import DatasetError, OccLabelError

#: named setting -> (adapter option it sets, the adapters that take it)
NAMED_OPTIONS = {
    "--version": ("version", ("nuscenes",)),
    "--split": ("split", ("nuscenes", "kitti", "dgp")),
}


def adapter_options(
    kind: str, options: dict[str, Any], version: str | None = None, split: str | None = None
) -> dict[str, Any]:
    """The options of adapter ``kind`` (``open_dataset(kind, root, **result)``): ``options`` (e.g. from
    ``--dataset-option KEY=VALUE``) with ``version`` and ``split`` added. A named setting that adapter
    ``kind`` does not take, or that contradicts the same key in ``options``, is a one-line OccLabelError."""
    opts = dict(options)
    for flag, value in (("--version", version), ("--split", split)):
        if value is None:
            continue
        key, kinds = NAMED_OPTIONS[flag]
        if kind not in kinds:
            raise OccLabelError(f"{flag} applies to --dataset {' or '.join(kinds)}, not {kind}")
        if key in opts and opts[key] != value:
            raise OccLabelError(f"{flag} {value} contradicts --dataset-option {key}={opts[key]}")
        opts[key] = value
    return opts


def gts_option(gts: Any, kind: str, *auto: Path) -> Path | None:
    """The Occ3D-layout ground-truth directory of an adapter's ``gts`` option, or None.

    "auto": the first of ``auto`` that is a directory (None when none is); None, False or "": None;
    else the directory named, which must exist (a one-line DatasetError naming ``kind``'s option).
    """
    if gts == "auto":
        return next((d for d in auto if d.is_dir()), None)
    if gts in (None, False, ""):
        return None
    gts_dir = Path(gts).expanduser().resolve()
    if not gts_dir.is_dir():
        raise DatasetError(f"{kind} option 'gts': no such directory: {gts_dir}")
    return gts_dir


__all__ = ["NAMED_OPTIONS", "adapter_options", "gts_option"]
