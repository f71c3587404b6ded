"""Small runtime helpers: device choice, logging, progress bars, deterministic seeds."""

from __future__ import annotations

import hashlib
import logging

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


def stable_seed(*parts: object) -> int:
    """A 63-bit seed derived deterministically from ``parts`` (independent of PYTHONHASHSEED)."""
    h = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def progress_bar(iterable=None, total=None, desc: str = "", enabled: bool = True, unit: str = "it"):
    """A tqdm bar with rate and ETA, or a silent pass-through when ``enabled`` is False."""
    return tqdm(
        iterable, total=total, desc=desc, disable=not enabled, unit=unit, dynamic_ncols=True, leave=False
    )
