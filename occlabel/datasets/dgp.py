"""The ``dgp`` dataset: DDAD and any scene dataset in TRI's DGP JSON format, read without the dgp package.

``load_dgp(root, split=None, scenes=None, cameras=None, ...)`` (or ``open_dataset("dgp", root, ...)``) emits
the records of occlabel.datasets.base. The format (TRI-ML/dgp ``dgp/proto/*.proto``, as JSON)::

    <base>/scene_dataset_v1.0.json   the index (DDAD: ddad.json): {"scene_splits": {"0": {"filenames":
                                     ["<scene_dir>/scene_<sha1>.json", ...]}, "1": ...}}; 0 train, 1 val,
                                     2 test, 3 train_overfit
    <base>/<scene_dir>/scene_<sha1>.json
                                     {"samples": [{"id": {"timestamp"}, "datum_keys", "calibration_key"}],
                                     "data": [{"key", "id": {"name", "timestamp"}, "datum": {"image" |
                                     "point_cloud": {"filename", "pose", "annotations", ...}}}],
                                     "ontologies"}
    <base>/<scene_dir>/calibration/<calibration_key>.json
                                     {"names", "intrinsics": [{fx, fy, cx, cy, skew}], "extrinsics":
                                     [pose]}: sensor -> body (vehicle) frame
    <base>/<scene_dir>/rgb/<CAMERA>/<us>.jpg
    <base>/<scene_dir>/point_cloud/<LIDAR>/<us>.npz
                                     key "data": N x len(point_format), X Y Z INTENSITY, sensor frame
    <base>/<scene_dir>/bounding_box_3d/<LIDAR>/<us>.json

``root`` is a directory holding the index (``scene_dataset*.json``, ``ddad*.json`` or another JSON with
``scene_splits``), the index file itself, a scene directory (holding one ``scene_*.json``) or a scene JSON.

Frames
    A pose (``{"translation": {x, y, z}, "rotation": {qw, qx, qy, qz}}``) maps its frame into the reference
    frame; a datum's ``pose`` is sensor -> world at the datum's time; calibration extrinsics are sensor ->
    body. The **ego frame is DGP's body frame**: x forward, y left, z up. On DDAD its origin is on the road
    (LiDAR returns of the road within 12 m of the car sit at z = -0.12 ... +0.10 m in the two test scenes;
    cameras ~1.55 m up; the LiDAR extrinsic is the identity, i.e. DDAD's point clouds are in the body frame),
    so nothing is moved. ``T_world_from_ego`` of an image = its datum pose @ inv(its extrinsic), at its own
    timestamp; a frame's = the sample's point cloud datum's (the sample time; DDAD: LIDAR), or the first
    selected camera's when the sample has no point cloud. ``T_ego_from_cam`` = the camera's extrinsic
    (DGP camera frames are OpenCV). The world is DGP's (a local frame fixed per log).

Records
    One scene per scene JSON, named after its directory (``scene_02``, DDAD ``000150``); one frame per
    sample, all keyframes, in increasing time order: ``token`` = ``<scene>_<sample time in us>``,
    ``timestamp`` = the sample's (seconds since the epoch of its ISO 8601 timestamp; DDAD's clock reads
    ~2464, so float64 keeps ~2 us). Images: ``path``, ``rel_path`` (relative to the directory holding the
    scene directories), ``K`` from the calibration (pinhole; distortion terms are logged and ignored, a
    fisheye or equirectangular camera is an error), ``T_ego_from_cam``, own ``T_world_from_ego`` and
    ``timestamp``, ``meta`` (datum key). ``lidar_path`` = the point cloud ``.npz`` with ``T_ego_from_lidar``
    = its extrinsic.

Ground truth
    ``depth_path`` = the sample's LiDAR projected into the image (occlabel.datasets.dgp_depth: nearest
    return per pixel, through the LiDAR's and the camera's own poses, as dgp's ``generate_depth_from_datum``),
    written once as a uint16 PNG (metres * 256) under ``depth_dir``; ``occlabel evaluate CACHE.zarr`` and the
    oracle depth read it. 3D boxes: ``frame.meta["boxes_3d"]`` names the LiDAR's bounding_box_3d JSON;
    :func:`occlabel.datasets.dgp_depth.read_boxes_3d` reads them into the ego frame.

Options (``--dataset-option KEY=VALUE``):
    split       train, val, test, train_overfit (or 0-3), one or a list; None: every scene the index lists.
    scenes      scene directory names (list or comma-separated); None: all (of the split).
    cameras     camera datum names (CAMERA_01 or 01 / 1), list or comma-separated; None: every camera.
    index       the index file name when ``root`` holds several.
    depth       "lidar" (default): LiDAR depth as each image's ground truth; "none".
    depth_dir   where the LiDAR depth PNGs go; None: ``$XDG_CACHE_HOME/occlabel/dgp_depth`` (~/.cache/...).
    check_files check that every image exists (default true).
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import is_rigid
from occlabel.datasets.base import (
    CameraImage,
    Dataset,
    Frame,
    Scene,
    rigid_transform,
    rotation_from_quaternion,
)
from occlabel.datasets.dgp_depth import default_depth_dir, depth_file, write_lidar_depth
from occlabel.errors import DatasetError

log = logging.getLogger(__name__)

#: DGP's DatasetSplit enum (dgp/proto/dataset.proto)
SPLITS = {"train": 0, "val": 1, "test": 2, "train_overfit": 3}
#: DGP's AnnotationType ids used here (dgp/proto/annotations.proto)
BOUNDING_BOX_3D = 1
INDEX_PATTERNS = ("scene_dataset*.json", "ddad*.json", "*.json")
_DISTORTION = ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2", "s1", "s2", "s3", "s4", "xi", "alpha", "beta")
_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")


# --------------------------------------------------------------------------------------------------
# Parsing helpers (pure)
# --------------------------------------------------------------------------------------------------


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


def _names(value: Any, what: str) -> list[str] | None:
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


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{what}: file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read {what} ({e})") from None


# --------------------------------------------------------------------------------------------------
# Index and scene selection
# --------------------------------------------------------------------------------------------------


def _find_index(base: Path, index: str | None) -> Path | None:
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


def _split_ids(split: Any) -> list[int] | None:
    names = _names(split, "split")
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


def _index_scene_files(path: Path, split: Any) -> list[Path]:
    """The scene JSONs an index lists for ``split`` (all splits when None), deduplicated, in index order."""
    doc = _read_json(path, "DGP index")
    splits = doc.get("scene_splits") if isinstance(doc, dict) else None
    if not isinstance(splits, dict):
        raise DatasetError(f"{path}: not a DGP scene dataset index (no scene_splits)")
    have = {int(k): v for k, v in splits.items() if str(k).isdigit()}
    names = {v: k for k, v in SPLITS.items()}
    wanted = _split_ids(split)
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


def _scene_json(scene_dir: Path) -> Path:
    hits = sorted(scene_dir.glob("scene_*.json"))
    if len(hits) != 1:
        what = "no scene_*.json" if not hits else f"{len(hits)} scene_*.json files"
        raise DatasetError(f"{scene_dir}: {what} (a DGP scene directory holds one)")
    return hits[0]


def _resolve_root(root: Path, index: str | None, split: Any) -> tuple[Path, list[Path], str | None]:
    """(base directory holding the scene directories, scene JSONs, index file name or None)."""
    if root.is_file():
        doc = _read_json(root, "DGP JSON")
        if isinstance(doc, dict) and "scene_splits" in doc:
            return root.parent, _index_scene_files(root, split), root.name
        if isinstance(doc, dict) and "samples" in doc and "data" in doc:
            if split is not None:
                raise DatasetError("dgp option 'split': root is a single scene, not an index")
            return root.parent.parent, [root], None
        raise DatasetError(f"{root}: neither a DGP index (scene_splits) nor a DGP scene (samples, data)")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such file or directory (expected a DGP scene dataset)")
    idx = _find_index(root, index)
    if idx is not None:
        return root, _index_scene_files(idx, split), idx.name
    if list(root.glob("scene_*.json")):
        if split is not None:
            raise DatasetError("dgp option 'split': root is a single scene directory, not an index")
        return root.parent, [_scene_json(root)], None
    raise DatasetError(
        f"{root}: no DGP index (scene_dataset*.json, ddad*.json) and no scene_*.json (see docs/datasets.md)"
    )


def _scene_names(value: Any, available: list[str]) -> list[str] | None:
    """Requested scene names; a number (YAML reads scenes=150 as one) names the zero-padded ``000150``."""
    raw = value if isinstance(value, list | tuple) else [value] if isinstance(value, int) else None
    names = _names(value, "scenes")
    if names is None:
        return None
    out = []
    for i, n in enumerate(names):
        if n not in available and raw is not None and isinstance(raw[i], int):
            n = next((a for a in available if a.isdigit() and int(a) == raw[i]), n)
        if n not in available:
            hint = ""
            if raw is not None and isinstance(raw[i], int):
                hint = " (an unquoted 000150 reads as a YAML number, octal when it starts with 0: quote it)"
            raise DatasetError(f"dgp option 'scenes': no scene {n!r}{hint}; known: {', '.join(available)}")
        out.append(n)
    return out


def _select_cameras(value: Any, available: list[str]) -> list[str] | None:
    """Requested camera names mapped onto ``available`` (CAMERA_01, 01, 1, camera_01 all name CAMERA_01)."""
    names = _names(value, "cameras")
    if names is None:
        return None
    out = []
    for n in names:
        hit = [a for a in available if a.lower() == n.lower()]
        if not hit and n.isdigit():
            hit = [a for a in available if re.sub(r"\D", "", a) and int(re.sub(r"\D", "", a)) == int(n)]
        if len(hit) != 1:
            raise DatasetError(
                f"dgp option 'cameras': no camera {n!r} in the selected scenes; known: {', '.join(available)}"
            )
        out.append(hit[0])
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------------------


def load_dgp(
    root: str | Path,
    split: str | list | None = None,
    scenes: str | list | None = None,
    cameras: str | list | None = None,
    index: str | None = None,
    depth: str = "lidar",
    depth_dir: str | Path | None = None,
    check_files: bool = True,
) -> Dataset:
    """Load a DGP scene dataset (DDAD) as occlabel records (see the module docstring).

    Returns:
        A Dataset (root as given); one Scene per scene JSON, one keyframe per sample with
        ``T_world_from_ego`` <np.float64: 4, 4>, images with ``K`` <np.float64: 3, 3>, ``T_ego_from_cam``
        <np.float64: 4, 4> (OpenCV camera to body frame), their own ego pose and timestamp, and LiDAR depth.
    Raises:
        DatasetError: one line naming the option, file, scene, sample or datum at fault.
    """
    root = Path(root).expanduser().resolve()
    if depth not in ("lidar", "none", None):
        raise DatasetError(f"dgp option 'depth': expected 'lidar' or 'none', got {depth!r}")
    base, files, index_name = _resolve_root(root, index, split)
    docs = [(f, _read_json(f, "DGP scene")) for f in files]
    names = {}
    for f, _ in docs:
        name = f.parent.name
        if name in names.values():
            name = f"{name}-{f.stem.removeprefix('scene_')[:8]}"
        names[f] = name
    wanted = _scene_names(scenes, list(names.values()))
    if wanted is not None:
        docs = [(f, d) for f, d in docs if names[f] in wanted]
    parsed = [_parse_scene(f, d, names[f], base) for f, d in docs]
    available = list(dict.fromkeys(c for p in parsed for c in p["cameras"]))
    cams = _select_cameras(cameras, available)
    ddir = None
    if depth == "lidar":
        ddir = Path(depth_dir).expanduser().resolve() if depth_dir else default_depth_dir(base)
    out = []
    for p in parsed:
        keep = [c for c in p["cameras"] if cams is None or c in cams]
        if not keep:
            raise DatasetError(
                f"scene {p['name']}: none of the cameras {', '.join(cams)} (has: {', '.join(p['cameras'])})"
            )
        out.append(_build_scene(p, keep, base, check_files, ddir))
    for s in out:
        write_lidar_depth(s)
    options = {
        "split": split,
        "scenes": [s.name for s in out],
        "cameras": cams,
        "index": index_name,
        "depth": depth or "none",
        "depth_dir": None if ddir is None else str(ddir),
        "check_files": check_files,
    }
    return Dataset(kind="dgp", root=root, scenes=out, options=options)


def _parse_scene(path: Path, doc: Any, name: str, base: Path) -> dict[str, Any]:
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
            calibs[ck] = _read_calibration(path.parent / "calibration" / f"{ck}.json")
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


def _read_calibration(path: Path) -> dict[str, dict]:
    """sensor name -> {"K" (cameras) <np.float64: 3, 3> or None, "T_body_from_sensor" <np.float64: 4, 4>}."""
    doc = _read_json(path, "DGP calibration")
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


def _build_scene(
    p: dict[str, Any], cams: list[str], base: Path, check: bool, depth_dir: Path | None
) -> Scene:
    scene_dir = p["path"].parent
    listing: dict[Path, set[str]] = {}
    frames = []
    for s in p["samples"]:
        where = f"scene {p['name']}, sample at {s['t_us']} us"
        lidar = next(((n, d) for n, (k, d) in s["datums"].items() if k == "point_cloud"), None)
        images = {}
        for c in cams:
            if c not in s["datums"]:
                continue
            kind, d = s["datums"][c]
            img = d["datum"]["image"]
            cal = s["calib"].get(c)
            if cal is None or cal["K"] is None:
                raise DatasetError(f"{where}: camera {c} has no intrinsics in calibration {s['calib_key']}")
            fn = img.get("filename")
            if not fn:
                raise DatasetError(f"{where}: camera {c} datum has no filename")
            path = scene_dir / fn
            if check:
                d_ = path.parent
                if d_ not in listing:
                    listing[d_] = {q.name for q in d_.iterdir()} if d_.is_dir() else set()
                if path.name not in listing[d_]:
                    raise DatasetError(f"{where}, camera {c}: file not found: {path}")
            T_wc = pose_matrix(img.get("pose"), f"{where}, camera {c} datum {d['key']}")
            T_ec = cal["T_body_from_sensor"]
            for T, what in ((T_wc, "pose"), (T_ec, "extrinsic")):
                if not is_rigid(T):
                    raise DatasetError(f"{where}, camera {c}: {what} is not a rigid transform")
            im = CameraImage(
                camera=c,
                path=path,
                rel_path=path.relative_to(base).as_posix() if path.is_relative_to(base) else fn,
                K=cal["K"],
                T_ego_from_cam=T_ec,
                T_world_from_ego=T_wc @ np.linalg.inv(T_ec),
                timestamp=parse_timestamp_us(d["id"]["timestamp"]) / 1e6,
                meta={"datum_key": d["key"], "calibration_key": s["calib_key"],
                      "image_size": [img.get("width"), img.get("height")]},
            )  # fmt: skip
            if depth_dir is not None and lidar is not None:
                im = replace(im, depth_path=depth_file(depth_dir, p["name"], im, lidar[1]["key"]))
            images[c] = im
        if not images:
            continue
        meta: dict[str, Any] = {"scene": p["name"], "sample_index": s["index"]}
        lidar_path, T_el = None, None
        if lidar is not None:
            n, d = lidar
            pc = d["datum"]["point_cloud"]
            cal = s["calib"].get(n)
            if cal is None:
                raise DatasetError(
                    f"{where}: point cloud {n} has no extrinsics in calibration {s['calib_key']}"
                )
            T_el = cal["T_body_from_sensor"]
            T_we = pose_matrix(pc.get("pose"), f"{where}, point cloud {n} datum {d['key']}") @ np.linalg.inv(
                T_el
            )
            if not pc.get("filename"):
                raise DatasetError(f"{where}: point cloud {n} datum has no filename")
            lidar_path = scene_dir / pc["filename"]
            t_l = parse_timestamp_us(d["id"]["timestamp"]) / 1e6
            meta.update({"lidar": n, "lidar_datum_key": d["key"], "lidar_timestamp": t_l,
                         "point_format": pc.get("point_format") or pc.get("point_fields") or []})  # fmt: skip
            boxes = pc.get("annotations", {}).get(str(BOUNDING_BOX_3D))
            if boxes:
                meta["boxes_3d"] = str(scene_dir / boxes)
                if p["ontology"] is not None:
                    meta["boxes_ontology"] = str(p["ontology"])
        else:
            first = next(iter(images.values()))
            T_we = first.T_world_from_ego
            meta["ego_pose_from"] = first.camera
        frames.append(
            Frame(
                token=f"{p['name']}_{s['t_us']}",
                timestamp=s["t_us"] / 1e6,
                keyframe=True,
                T_world_from_ego=T_we,
                images=images,
                lidar_path=lidar_path,
                T_ego_from_lidar=T_el,
                meta=meta,
            )
        )
    if not frames:
        raise DatasetError(f"scene {p['name']}: no sample has an image of the selected cameras")
    return Scene(name=p["name"], frames=frames, meta=p["meta"])
