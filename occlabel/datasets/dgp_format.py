"""The DGP scene-dataset format as plain data: timestamps, poses, intrinsics, the index and scene files.

Pure readers for :mod:`occlabel.datasets.dgp` (the adapter that turns them into occlabel records); the format
itself is described there. Every problem is a one-line :class:`~occlabel.errors.DatasetError`.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.datasets.base import rigid_transform, rotation_from_quaternion
from occlabel.errors import DatasetError

log = logging.getLogger("occlabel.datasets.dgp")

#: DGP's DatasetSplit enum (dgp/proto/dataset.proto)
SPLITS = {"train": 0, "val": 1, "test": 2, "train_overfit": 3}
#: DGP's AnnotationType ids used here (dgp/proto/annotations.proto)
BOUNDING_BOX_3D = 1
INDEX_PATTERNS = ("scene_dataset*.json", "ddad*.json", "*.json")
_DISTORTION = ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2", "s1", "s2", "s3", "s4", "xi", "alpha", "beta")
_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


def option_names(value: Any, what: str) -> list[str] | None:
    """None, "a,b" or [a, b] -> list of stripped strings (None when empty)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str | int):
        out = [v.strip() for v in str(value).split(",") if v.strip()]
    elif isinstance(value, list | tuple):
        out = [str(v).strip() for v in value if str(v).strip()]
    else:
        raise DatasetError(f"dgp option {what!r}: expected a name or a list of names, got {value!r}")
    return out or None


def parse_timestamp_us(value: Any) -> int:
    """Microseconds since the Unix epoch of a protobuf JSON Timestamp: an RFC 3339 string
    ("2464-11-12T01:04:10.027900Z", 0-9 fractional digits, Z or +HH:MM) or {"seconds", "nanos"}.

    Raises ValueError when ``value`` is neither.
    """
    if isinstance(value, dict):
        return int(value.get("seconds", 0)) * 1_000_000 + int(value.get("nanos", 0)) // 1000
    m = _TIME.match(str(value).strip())
    if m is None:
        raise ValueError(f"expected an RFC 3339 timestamp like 2019-06-27T12:00:00.123456Z, got {value!r}")
    y, mo, d, hh, mm, ss = (int(g) for g in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mm < 60 and ss < 61):
        raise ValueError(f"not a valid date and time: {value!r}")
    secs = calendar.timegm((y, mo, d, hh, mm, ss, 0, 0, 0))
    if m.group(8) != "Z":
        sign = 1 if m.group(8)[0] == "+" else -1
        secs -= sign * (int(m.group(8)[1:3]) * 3600 + int(m.group(8)[4:6]) * 60)
    frac = (m.group(7) or "").ljust(9, "0")
    return secs * 1_000_000 + int(frac) // 1000


def pose_matrix(pose: Any, where: str) -> np.ndarray:
    """<np.float64: 4, 4> of a DGP pose ``{"translation": {x, y, z}, "rotation": {qw, qx, qy, qz}}``.

    Fields left out are 0 (protobuf JSON omits zero values). Raises DatasetError (naming ``where``) when the
    pose is missing, malformed or its quaternion is not of unit norm (within 1e-3).
    """
    if not isinstance(pose, dict) or "rotation" not in pose:
        raise DatasetError(f"{where}: no pose (translation, rotation)")
    try:
        r, t = pose["rotation"], pose.get("translation", {})
        q = np.array([float(r.get(k, 0.0)) for k in ("qw", "qx", "qy", "qz")])
        xyz = np.array([float(t.get(k, 0.0)) for k in ("x", "y", "z")])
    except (AttributeError, TypeError, ValueError) as e:
        raise DatasetError(f"{where}: malformed pose ({e})") from None
    n = np.linalg.norm(q)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(xyz)) and abs(n - 1.0) < 1e-3):
        raise DatasetError(f"{where}: pose rotation is not a unit quaternion (qw qx qy qz = {q.tolist()})")
    return rigid_transform(rotation_from_quaternion(q), xyz)


def intrinsics_matrix(intr: dict, where: str) -> np.ndarray:
    """<np.float64: 3, 3> pinhole K of DGP CameraIntrinsics; fisheye / equirectangular models are refused."""
    if intr.get("fisheye") or intr.get("equirectangular"):
        raise DatasetError(
            f"{where}: a fisheye or equirectangular camera (only pinhole cameras are supported)"
        )
    try:
        fx, fy, cx, cy, s = (float(intr.get(k, 0.0)) for k in ("fx", "fy", "cx", "cy", "skew"))
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: malformed intrinsics ({e})") from None
    if not (fx > 0 and fy > 0 and np.isfinite([cx, cy, s]).all()):
        raise DatasetError(f"{where}: intrinsics need fx > 0 and fy > 0 (got fx={fx}, fy={fy})")
    dist = {k: intr[k] for k in _DISTORTION if intr.get(k)}
    if dist:
        log.warning("%s: distortion %s ignored (images are treated as pinhole)", where, dist)
    return np.array([[fx, s, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{what}: file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read {what} ({e})") from None


# --------------------------------------------------------------------------------------------------
# Index and scene selection
# --------------------------------------------------------------------------------------------------


def find_index(base: Path, index: str | None) -> Path | None:
    """The index JSON in ``base`` (``index`` names it when given), or None when ``base`` holds none."""
    if index:
        p = base / index
        if not p.is_file():
            raise DatasetError(f"dgp option 'index': file not found: {p}")
        return p
    for pattern in INDEX_PATTERNS:
        hits = []
        for p in sorted(base.glob(pattern)):
            if pattern == "*.json" and p.stat().st_size > 50_000_000:
                continue
            try:
                doc = json.loads(p.read_text()) if p.is_file() else None
            except (OSError, ValueError):
                doc = None
            if isinstance(doc, dict) and "scene_splits" in doc:
                hits.append(p)
        if len(hits) > 1:
            raise DatasetError(
                f"{base}: several DGP indexes ({', '.join(p.name for p in hits)}); choose one with index=NAME"
            )
        if hits:
            return hits[0]
    return None


def split_ids(split: Any) -> list[int] | None:
    names = option_names(split, "split")
    if names is None:
        return None
    out = []
    for s in names:
        key = s.lower()
        if key.isdigit():
            out.append(int(key))
        elif key in SPLITS:
            out.append(SPLITS[key])
        else:
            raise DatasetError(
                f"dgp option 'split': unknown split {s!r}; known: {', '.join(SPLITS)} (or 0-3)"
            )
    return out


def index_scene_files(path: Path, split: Any) -> list[Path]:
    """The scene JSONs an index lists for ``split`` (all splits when None), deduplicated, in index order."""
    doc = read_json(path, "DGP index")
    splits = doc.get("scene_splits") if isinstance(doc, dict) else None
    if not isinstance(splits, dict):
        raise DatasetError(f"{path}: not a DGP scene dataset index (no scene_splits)")
    have = {int(k): v for k, v in splits.items() if str(k).isdigit()}
    names = {v: k for k, v in SPLITS.items()}
    wanted = split_ids(split)
    if wanted is not None:
        missing = [w for w in wanted if w not in have]
        if missing:
            known = ", ".join(f"{names.get(k, k)}" for k in sorted(have)) or "none"
            raise DatasetError(f"{path}: no split {names.get(missing[0], missing[0])!r} (has: {known})")
    out: dict[Path, None] = {}
    for k in wanted if wanted is not None else sorted(have):
        files = have[k].get("filenames", []) if isinstance(have[k], dict) else []
        for f in files:
            out.setdefault(Path(os.path.normpath(path.parent / f)), None)  # symlinks kept: names, rel_path
    if not out:
        raise DatasetError(f"{path}: the index lists no scene")
    return list(out)


def scene_json(scene_dir: Path) -> Path:
    hits = sorted(scene_dir.glob("scene_*.json"))
    if len(hits) != 1:
        what = "no scene_*.json" if not hits else f"{len(hits)} scene_*.json files"
        raise DatasetError(f"{scene_dir}: {what} (a DGP scene directory holds one)")
    return hits[0]


def resolve_root(root: Path, index: str | None, split: Any) -> tuple[Path, list[Path], str | None]:
    """(base directory holding the scene directories, scene JSONs, index file name or None)."""
    if root.is_file():
        doc = read_json(root, "DGP JSON")
        if isinstance(doc, dict) and "scene_splits" in doc:
            return root.parent, index_scene_files(root, split), root.name
        if isinstance(doc, dict) and "samples" in doc and "data" in doc:
            if split is not None:
                raise DatasetError("dgp option 'split': root is a single scene, not an index")
            return root.parent.parent, [root], None
        raise DatasetError(f"{root}: neither a DGP index (scene_splits) nor a DGP scene (samples, data)")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such file or directory (expected a DGP scene dataset)")
    idx = find_index(root, index)
    if idx is not None:
        return root, index_scene_files(idx, split), idx.name
    if list(root.glob("scene_*.json")):
        if split is not None:
            raise DatasetError("dgp option 'split': root is a single scene directory, not an index")
        return root.parent, [scene_json(root)], None
    raise DatasetError(
        f"{root}: no DGP index (scene_dataset*.json, ddad*.json) and no scene_*.json (see docs/datasets.md)"
    )


def parse_scene(path: Path, doc: Any, name: str, base: Path) -> dict[str, Any]:
    """Samples of a scene JSON: per sample its time and datums by name, calibrations read; no records yet."""
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("samples"), list)
        or not isinstance(doc.get("data"), list)
    ):
        raise DatasetError(f"{path}: not a DGP scene (samples, data)")
    data = {}
    for d in doc["data"]:
        if isinstance(d, dict) and "key" in d:
            data[d["key"]] = d
    calibs: dict[str, dict] = {}
    samples = []
    cameras: dict[str, None] = {}
    for i, s in enumerate(doc["samples"]):
        where = f"{path}: sample {i}"
        try:
            t_us = parse_timestamp_us(s["id"]["timestamp"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{where}: bad or missing id.timestamp ({e})") from None
        ck = s.get("calibration_key")
        if not ck:
            raise DatasetError(f"{where}: no calibration_key")
        if ck not in calibs:
            calibs[ck] = read_calibration(path.parent / "calibration" / f"{ck}.json")
        datums = {}
        for k in s.get("datum_keys", []):
            if k not in data:
                raise DatasetError(f"{where}: datum key {k} not in the scene's data")
            d = data[k]
            nm = d.get("id", {}).get("name")
            kind = next(iter(d.get("datum", {})), None)
            if not nm or kind is None:
                raise DatasetError(f"{where}: datum {k} has no id.name or no datum value")
            datums[nm] = (kind, d)
            if kind == "image":
                cameras.setdefault(nm, None)
        samples.append({"t_us": t_us, "calib": calibs[ck], "calib_key": ck, "datums": datums, "index": i})
    samples.sort(key=lambda s: s["t_us"])
    for a, b in zip(samples, samples[1:], strict=False):
        if a["t_us"] == b["t_us"]:
            raise DatasetError(f"{path}: samples {a['index']} and {b['index']} have the same timestamp")
    if not samples:
        raise DatasetError(f"{path}: no samples")
    ont = doc.get("ontologies", {}).get(str(BOUNDING_BOX_3D))
    ontology = path.parent / "ontology" / f"{ont}.json" if ont else None
    return {"name": name, "path": path, "samples": samples, "cameras": sorted(cameras), "ontology": ontology,
            "meta": {"scene_json": str(path.relative_to(base)) if path.is_relative_to(base) else str(path),
                     "log": doc.get("log", ""), "description": doc.get("description", "")}}  # fmt: skip


def read_calibration(path: Path) -> dict[str, dict]:
    """sensor name -> {"K" (cameras) <np.float64: 3, 3> or None, "T_body_from_sensor" <np.float64: 4, 4>}."""
    doc = read_json(path, "DGP calibration")
    try:
        names, intr, ext = doc["names"], doc["intrinsics"], doc["extrinsics"]
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{path}: missing field {e}") from None
    if not (len(names) == len(intr) == len(ext)):
        raise DatasetError(f"{path}: names, intrinsics and extrinsics differ in length")
    out = {}
    for n, k, e in zip(names, intr, ext, strict=True):
        T = pose_matrix(e, f"{path}: extrinsics of {n}")
        K = intrinsics_matrix(k, f"{path}: intrinsics of {n}") if float(k.get("fx", 0) or 0) > 0 else None
        out[n] = {"K": K, "T_body_from_sensor": T}
    return out
