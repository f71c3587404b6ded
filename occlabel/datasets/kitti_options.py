"""KITTI option parsing and sequence selection, shared by the ``kitti`` and ``kitti-raw`` adapters (list,
camera and frame options, directory listings, pykitti import) and the ``kitti`` adapter's own (split,
keyframes, camera height, poses, sequences). occlabel.datasets.kitti builds the records.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from occlabel.errors import DatasetError

log = logging.getLogger("occlabel.datasets.kitti")

SPLITS = {
    "train": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"],
    "val": ["08"],
    "test": [f"{i:02d}" for i in range(11, 22)],
}


def _pykitti():
    try:
        import pykitti
    except ImportError as e:
        raise DatasetError(f"the kitti dataset needs pykitti: pip install 'occlabel[kitti]' ({e})") from None
    return pykitti


def _seq_id(value: Any) -> str:
    s = str(value).strip()
    if not s.isdigit():
        raise DatasetError(f"kitti option 'sequences': {value!r} is not a sequence number like 08")
    return f"{int(s):02d}"


def _list(value: Any) -> list | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _camera_index(value: Any) -> int:
    s = str(value).strip().lower().removeprefix("image_").removeprefix("cam")
    if s not in ("0", "1", "2", "3"):
        raise DatasetError(f"kitti option 'cameras': {value!r} is not cam0, cam1, cam2 or cam3")
    return int(s)


def _frames(value: Any, n: int, where: str) -> list[int]:
    if value is None:
        return list(range(n))
    if isinstance(value, str) and ":" in value:
        parts = value.split(":")
        try:
            sl = slice(*(int(p) if p.strip() else None for p in parts))
        except (TypeError, ValueError):
            raise DatasetError(f"kitti option 'frames': expected START:STOP, got {value!r}") from None
        ids = list(range(n))[sl]
    else:
        try:
            ids = sorted({int(v) for v in _list(value) or []})
        except (TypeError, ValueError):
            raise DatasetError(
                f"kitti option 'frames': expected START:STOP or frame ids, got {value!r}"
            ) from None
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise DatasetError(f"{where}: frame {bad[0]} out of range (the sequence has {n} frames)")
    if not ids:
        raise DatasetError(
            f"{where}: option 'frames' {value!r} selects no frame (the sequence has {n} frames)"
        )
    return ids


def _listing(d: Path) -> set[str]:
    try:
        return set(os.listdir(d))
    except OSError:
        return set()


def kitti_base(root: Path) -> Path:
    """The directory holding ``sequences/``: ``root`` or ``root/dataset``."""
    base = root if (root / "sequences").is_dir() else root / "dataset"
    if not (base / "sequences").is_dir():
        raise DatasetError(
            f"{root}: no sequences/ directory (expected the KITTI odometry layout, see docs/datasets.md)"
        )
    return base


def check_options(split: Any, keyframes: Any, keyframe_every: Any, camera_height: Any) -> None:
    """One-line DatasetErrors for a ``split``, ``keyframes``, ``keyframe_every`` or ``camera_height`` out
    of range."""
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown KITTI split {split!r}; expected one of {', '.join(SPLITS)}")
    if keyframes not in ("auto", "every"):
        raise DatasetError(f"kitti option 'keyframes': expected auto or every, got {keyframes!r}")
    if not isinstance(keyframe_every, int) or keyframe_every < 1:
        raise DatasetError(
            f"kitti option 'keyframe_every': expected a positive integer, got {keyframe_every!r}"
        )
    if not isinstance(camera_height, int | float) or not camera_height >= 0:
        raise DatasetError(f"kitti option 'camera_height': expected metres >= 0, got {camera_height!r}")


def pose_file(base: Path, poses: str | Path, seq: str) -> Path | None:
    """The poses file of sequence ``seq`` ("auto": ``poses/XX.txt``, else ``sequences/XX/poses.txt``;
    else ``<poses>/XX.txt``), or None when there is none."""
    if poses != "auto":
        p = Path(poses).expanduser() / f"{seq}.txt"
        return p if p.is_file() else None
    for p in (base / "poses" / f"{seq}.txt", base / "sequences" / seq / "poses.txt"):
        if p.is_file():
            return p
    return None


def select_sequences(base: Path, sequences: Any, split: str | None, poses: str | Path) -> list[str]:
    """Sequence ids to load: the ``sequences`` option (within ``split``), else the split's present ones,
    else every sequence that has poses (the others are logged)."""
    explicit = [_seq_id(s) for s in _list(sequences) or []]
    if explicit:
        if split is not None:
            outside = [s for s in explicit if s not in SPLITS[split]]
            if outside:
                raise DatasetError(f"kitti: sequence {outside[0]} is not in split {split!r}")
        return explicit
    if split is not None:
        seqs = [s for s in SPLITS[split] if (base / "sequences" / s).is_dir()]
        if not seqs:
            raise DatasetError(
                f"{base / 'sequences'}: no sequence of split {split!r} ({', '.join(SPLITS[split])})"
            )
        return seqs
    found = sorted(p.name for p in (base / "sequences").iterdir() if p.is_dir() and p.name.isdigit())
    seqs = [s for s in found if pose_file(base, poses, s) is not None]
    skipped = sorted(set(found) - set(seqs))
    if skipped:
        log.info("kitti: sequences without poses left out: %s", ", ".join(skipped))
    if not seqs:
        raise DatasetError(
            f"{base / 'sequences'}: no sequence with poses (poses/XX.txt or sequences/XX/poses.txt)"
        )
    return seqs
