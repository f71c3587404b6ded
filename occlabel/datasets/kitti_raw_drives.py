"""KITTI raw drive discovery and text files, for the ``kitti-raw`` adapter: where the base directory and
the drives are (``root`` may be the base, a date or a drive directory; the ``drives`` option), the checks of
its options, and the readers of ``oxts/timestamps.txt`` and of OXTS packets. occlabel.datasets.kitti_raw
builds the records; its docstring describes the layout.
"""

from __future__ import annotations

import calendar
import re
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.datasets.kitti_options import _list
from occlabel.errors import DatasetError

CALIB_FILES = ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt")
#: the 30 values of an OXTS packet (KITTI raw devkit dataformat.txt), in file order
OXTS_FIELDS = (
    "lat", "lon", "alt", "roll", "pitch", "yaw", "vn", "ve", "vf", "vl", "vu", "ax", "ay", "az", "af", "al",
    "au", "wx", "wy", "wz", "wf", "wl", "wu", "pos_accuracy", "vel_accuracy", "navstat", "numsats",
    "posmode", "velmode", "orimode",
)  # fmt: skip
_DATE = re.compile(r"^\d{4}_\d{2}_\d{2}$")
_DRIVE = re.compile(r"^(\d{4}_\d{2}_\d{2})_drive_(\d{4})(?:_sync)?$")
_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{9})$")


def parse_timestamp(text: str) -> float:
    """A KITTI raw timestamp ``"YYYY-MM-DD HH:MM:SS.nnnnnnnnn"`` as POSIX seconds (read as UTC), float64.

    Raises ValueError when ``text`` is not in that form (nine fractional digits, as pykitti expects).
    """
    m = _TIME.match(text.strip())
    if m is None:
        raise ValueError(f"expected YYYY-MM-DD HH:MM:SS.nnnnnnnnn, got {text.strip()!r}")
    y, mo, d, hh, mm, ss = (int(g) for g in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mm < 60 and ss < 61):
        raise ValueError(f"not a valid date and time: {text.strip()!r}")
    return calendar.timegm((y, mo, d, hh, mm, ss, 0, 0, 0)) + int(m.group(7)) * 1e-9


def read_timestamps(path: Path) -> np.ndarray:
    """``<np.float64: N>`` POSIX seconds of a KITTI raw ``timestamps.txt`` (one line a frame).

    Raises DatasetError naming the line of a malformed or non-increasing timestamp.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read timestamps ({e})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(parse_timestamp(line))
        except ValueError as e:
            raise DatasetError(f"{path}: line {n}: {e}") from None
        if len(out) > 1 and out[-1] <= out[-2]:
            raise DatasetError(f"{path}: line {n}: timestamps must increase")
    if not out:
        raise DatasetError(f"{path}: no frames")
    return np.asarray(out, np.float64)


def _dates(base: Path) -> list[str]:
    try:
        return sorted(p.name for p in base.iterdir() if p.is_dir() and _DATE.match(p.name))
    except OSError:
        return []


def _drive_name(value: Any, base: Path) -> str:
    """``<date>_drive_NNNN`` of an option value: a drive name, or a drive number found under one date."""
    s = str(value).strip().strip("/")
    m = re.match(r"^(\d{4}_\d{2}_\d{2})/(\d{4})$", s) or _DRIVE.match(s)  # also <date>/NNNN
    if m:
        return f"{m.group(1)}_drive_{m.group(2)}"
    if not s.isdigit():
        raise DatasetError(
            f"kitti-raw option 'drives': {value!r} is not a drive like 2011_09_26_drive_0005 or 0005"
        )
    num = f"{int(s):04d}"
    hits = [d for d in _dates(base) if (base / d / f"{d}_drive_{num}_sync").is_dir()]
    if len(hits) != 1:
        where = "no date has it" if not hits else f"dates {', '.join(hits)} have it; name the date"
        raise DatasetError(f"kitti-raw option 'drives': drive {num} under {base}: {where}")
    return f"{hits[0]}_drive_{num}"


def _bad_oxts(files: list[Path]) -> str | None:
    """The first OXTS file pykitti cannot read, with why (for the error message); None: all parse."""
    for p in files:
        try:
            lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
            if len(lines) != 1:
                return f"{p}: expected one line (an OXTS packet), got {len(lines)}"
            v = lines[0].split()
            if len(v) != len(OXTS_FIELDS):
                return (
                    f"{p}: expected {len(OXTS_FIELDS)} values (lat lon alt roll pitch yaw ...), got {len(v)}"
                )
            [float(x) for x in v]
        except (OSError, ValueError) as e:
            return f"{p}: not an OXTS packet ({e})"
    return None


def raw_base(root: Path) -> tuple[Path, re.Match | None]:
    """(the directory holding ``<date>/``, the drive-name match when ``root`` is a drive directory)."""
    if not root.is_dir():
        raise DatasetError(f"{root}: no such directory (expected the KITTI raw base holding <date>/)")
    if _DRIVE.match(root.name) and root.name.endswith("_sync"):
        return root.parent.parent, _DRIVE.match(root.name)
    if _DATE.match(root.name) and (root / CALIB_FILES[0]).is_file():
        return root.parent, None
    return root, None


def check_options(keyframe_every: Any, imu_height: Any) -> None:
    """One-line DatasetErrors for a ``keyframe_every`` or ``imu_height`` out of range."""
    if not isinstance(keyframe_every, int) or isinstance(keyframe_every, bool) or keyframe_every < 1:
        raise DatasetError(
            f"kitti-raw option 'keyframe_every': expected a positive integer, got {keyframe_every!r}"
        )
    if isinstance(imu_height, bool) or not isinstance(imu_height, int | float) or not imu_height >= 0:
        raise DatasetError(f"kitti-raw option 'imu_height': expected metres >= 0, got {imu_height!r}")


def select_drives(drives: Any, base: Path, here: re.Match | None) -> list[str]:
    """Drive names ``<date>_drive_NNNN`` to load: the ``drives`` option, else the drive ``root`` is, else
    every ``_sync`` drive under every date."""
    explicit = [_drive_name(d, base) for d in _list(drives) or []]
    if explicit:
        return list(dict.fromkeys(explicit))
    if here is not None:
        return [f"{here.group(1)}_drive_{here.group(2)}"]
    names = [
        p.name.removesuffix("_sync")
        for d in _dates(base)
        for p in sorted((base / d).iterdir())
        if p.is_dir() and _DRIVE.match(p.name) and p.name.endswith("_sync") and p.name.startswith(d)
    ]
    if not names:
        raise DatasetError(
            f"{base}: no KITTI raw drive (<date>/<date>_drive_NNNN_sync/, see docs/datasets.md)"
        )
    return names
