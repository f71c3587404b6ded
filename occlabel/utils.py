"""Small runtime helpers: device choice, worker counts, KEY=VALUE options, progress bars, deterministic seeds,
nearest resizing."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from occlabel.errors import OccLabelError

log = logging.getLogger("occlabel")


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" -> cuda when available else cpu; "cpu"; "cuda" / "cuda:N" (error when unavailable)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OccLabelError(f"--device {name}: no CUDA device is available (use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise OccLabelError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None


def default_workers() -> int:
    """Image decoding workers when not given: half the CPU cores (the rest feed the model), 1 to 4."""
    import os

    return max(1, min(4, (os.cpu_count() or 2) // 2))


def key_values(items, flag: str, keep_colons: bool = False) -> dict:
    """``KEY=VALUE`` strings (VALUE read as YAML: 0.2, true, [1, 2], text; empty: None) -> dict.

    ``keep_colons``: a value with ':' that is not a YAML list or mapping stays a string (YAML reads 10:50 as
    a base-60 integer). A string without '=' or with an empty key is an OccLabelError naming ``flag``.
    """
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OccLabelError(f"{flag}: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    for item in items if keep_colons else ():
        key, _, value = item.partition("=")
        if ":" in value and not value.strip().startswith(("[", "{")):
            out[key.strip()] = value.strip()
    return out


def stable_seed(*parts: object) -> int:
    """A 63-bit seed derived deterministically from ``parts`` (independent of PYTHONHASHSEED)."""
    h = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def progress_bar(iterable=None, total=None, desc: str = "", enabled: bool = True, unit: str = "it"):
    """A tqdm bar with rate and ETA, or a silent pass-through when ``enabled`` is False."""
    return tqdm(
        iterable, total=total, desc=desc, disable=not enabled, unit=unit, dynamic_ncols=True, leave=False
    )


def resize_nearest(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of a map <H, W> to <h, w> with pixel centres aligned.

    Output pixel i takes source pixel floor((i + 0.5) * H / h) — the same sampling as torch's
    ``interpolate(mode="nearest-exact")``, used for ground-truth maps everywhere.
    """
    H, W = a.shape
    if (H, W) == (h, w):
        return a
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return a[np.ix_(rows, cols)]
