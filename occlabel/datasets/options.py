"""Adapter options from the named dataset settings (``--version``, ``--split``) and the free ones."""

from __future__ import annotations

from typing import Any

from occlabel.errors import OccLabelError

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


__all__ = ["NAMED_OPTIONS", "adapter_options"]
