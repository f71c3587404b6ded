"""The ``nuscenes`` dataset: nuScenes v1.0 (mini, trainval, test) read through nuscenes-devkit.

``load_nuscenes(dataroot, version="v1.0-mini", ...)`` (or ``open_dataset("nuscenes", dataroot, ...)``) emits
the records of occlabel.datasets.base; the devkit (extra ``occlabel[nuscenes]``) is imported only here.

Records
    scene       a nuScenes scene, named as in the tables ("scene-0061"); ``meta``: scene token, log
                token, location, description.
    keyframes   one frame per sample (2 Hz): ``token`` = the sample token (what Occ3D's
                ``gts/<scene>/<sample_token>/labels.npz`` and trainers' info files use),
                ``timestamp`` = the sample's timestamp (the LIDAR_TOP sweep time) in seconds,
                ``T_world_from_ego`` = the ego pose of the sample's LIDAR_TOP sample_data (Occ3D's voxels
                live in the ego frame at that instant); ``lidar_path`` = the LIDAR_TOP ``.pcd.bin`` with
                ``T_ego_from_lidar`` from its calibrated_sensor; ``occupancy_path`` = the Occ3D labels when
                ``gts/<scene>/<sample_token>/labels.npz`` exists (under the dataroot, or ``gts=DIR``).
    sweeps      the camera sweeps (sample_data with ``is_key_frame`` false, ~12 Hz) between keyframes,
                grouped into frames that serve as temporal neighbours (``keyframe`` false). Grouping: the
                reference camera (the first selected camera, CAM_FRONT by default) defines one frame per
                image; every other camera's sweep joins the frame nearest in time after removing that
                camera's firing phase (the median over keyframes of its offset from the reference camera:
                nuScenes cameras fire one after another as the LiDAR turns, up to ~40 ms apart). An image
                farther than half a camera period from every frame, or a second image for the same
                frame, is left out. ``token`` = the reference camera's sample_data token, ``timestamp`` and
                ``T_world_from_ego`` = that image's. A sweep frame that would not fall strictly between
                its neighbouring keyframes' timestamps is left out.
    images      per camera (CAM_FRONT, CAM_FRONT_RIGHT, CAM_FRONT_LEFT, CAM_BACK, CAM_BACK_LEFT,
                CAM_BACK_RIGHT): ``path`` = dataroot / sample_data ``filename``; ``K`` =
                calibrated_sensor ``camera_intrinsic``; ``T_ego_from_cam`` from its ``translation`` and
                ``rotation`` (nuScenes camera frames are OpenCV: x right, y down, z forward);
                ``T_world_from_ego`` = the image's own ego_pose (each camera fires at its own instant) and
                ``timestamp`` = its own, in seconds. ``meta["sample_data_token"]`` ties it back.

Time base: nuScenes timestamps are microseconds since the Unix epoch; records hold ``timestamp_us / 1e6``
seconds (float64 keeps ~0.2 us at that magnitude).

Ground truth for the oracle backends (an occlabel extension, written by ``occlabel synth --layout
nuscenes``): a camera sample_data record may carry ``"occlabel_depth"`` (a ``.npy`` float32 metres or
``.png`` uint16 metres*256 file) and ``"occlabel_semantics"`` (a uint8 ``.png``), paths relative to the
dataroot; the devkit keeps unknown fields, and the adapter attaches them as the image's ground truth.

Options (``--version``, ``--split``, ``--dataset-option KEY=VALUE`` on the command line):
    version     v1.0-mini (default), v1.0-trainval or v1.0-test: the table directory under the dataroot.
    split       an official split of nuscenes.utils.splits (train, val, test, mini_train, mini_val,
                train_detect, train_track); None: every scene of the version.
    scenes      scene names (list or comma-separated) to load; None: all (of the split).
    cameras     camera channels (list or comma-separated); None: the six cameras.
    sweeps      true: keyframes and camera sweeps; false: keyframes only; "auto" (default): sweeps when the
                dataroot has a ``sweeps/`` directory for the cameras.
    gts         directory of Occ3D ``<scene>/<sample_token>/labels.npz``; "auto" (default):
                ``<dataroot>/gts`` when it exists; None: none.
    check_files check that every image (and ground-truth file) exists (default true).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from bisect import bisect_left
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.datasets.base import (
    CameraImage,
    Dataset,
    Frame,
    Scene,
    rigid_transform,
    rotation_from_quaternion,
)
from occlabel.errors import DatasetError

log = logging.getLogger(__name__)

VERSIONS = ("v1.0-mini", "v1.0-trainval", "v1.0-test")
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
LIDAR = "LIDAR_TOP"
DEPTH_FIELD = "occlabel_depth"
SEMANTICS_FIELD = "occlabel_semantics"
CAMERA_HZ = 12.0  # nominal camera rate; the measured period of the reference camera is used when known


def _devkit():
    """The devkit's database class and split table, imported on first use."""
    try:
        from nuscenes.nuscenes import NuScenes
        from nuscenes.utils.splits import create_splits_scenes
    except ImportError as e:
        raise DatasetError(
            f"the nuscenes dataset needs nuscenes-devkit: pip install 'occlabel[nuscenes]' ({e})"
        ) from None
    return NuScenes, create_splits_scenes


def _names(value: Any, what: str) -> list[str] | None:
    """None, "a,b" or [a, b] -> list of stripped strings (None when empty)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        out = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple):
        out = [str(v).strip() for v in value]
    else:
        raise DatasetError(f"nuscenes option {what!r}: expected a name or a list of names, got {value!r}")
    return out or None


def _pose(rec: dict, table: str, where: str, tables: Path) -> np.ndarray:
    """<np.float64: 4, 4> from a record's ``translation`` (3) and ``rotation`` (unit quaternion w x y z)."""
    at = f"{tables / (table + '.json')}: {table} {rec.get('token')!r} ({where})"
    try:
        t = np.asarray(rec["translation"], np.float64)
        q = np.asarray(rec["rotation"], np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{at}: missing or malformed field {e}") from None
    if t.shape != (3,) or q.shape != (4,):
        raise DatasetError(f"{at}: translation must have 3 numbers and rotation 4 (w, x, y, z)")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise DatasetError(f"{at}: contains NaN or infinity")
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > 1e-3:
        raise DatasetError(
            f"{at}: field 'rotation' is not a unit quaternion (norm {n:.6g}): not a rigid transform"
        )
    return rigid_transform(rotation_from_quaternion(q), t)


def _intrinsics(rec: dict, where: str, tables: Path) -> np.ndarray:
    at = f"{tables / 'calibrated_sensor.json'}: calibrated_sensor {rec.get('token')!r} ({where})"
    try:
        K = np.asarray(rec["camera_intrinsic"], np.float64)
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{at}: field 'camera_intrinsic' missing or not numeric") from None
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise DatasetError(f"{at}: field 'camera_intrinsic' must be a finite 3x3 matrix")
    if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1]) and K[1, 0] == 0):
        raise DatasetError(
            f"{at}: field 'camera_intrinsic' is not a pinhole matrix [[fx,s,cx],[0,fy,cy],[0,0,1]]"
        )
    return K


class _Files:
    """Existence checks by one directory listing per directory (fast on 10^5-file nuScenes folders)."""

    def __init__(self, root: Path, enabled: bool):
        self.root = root
        self.enabled = enabled
        self._dirs: dict[str, set[str]] = {}

    def exists(self, rel: str) -> bool:
        d, _, name = rel.rpartition("/")
        if d not in self._dirs:
            try:
                self._dirs[d] = set(os.listdir(self.root / d))
            except OSError:
                self._dirs[d] = set()
        return name in self._dirs[d]

    def require(self, rel: str, where: str) -> Path:
        if self.enabled and not self.exists(rel):
            raise DatasetError(f"{where}: file not found: {self.root / rel}")
        return self.root / rel


def load_nuscenes(
    root: str | Path,
    version: str = "v1.0-mini",
    split: str | None = None,
    scenes: str | list[str] | None = None,
    cameras: str | list[str] | None = None,
    sweeps: bool | str = "auto",
    gts: str | Path | None = "auto",
    check_files: bool = True,
) -> Dataset:
    """Load nuScenes scenes as occlabel records (see the module docstring for every field and option).

    Args:
        root: the nuScenes dataroot (holds ``<version>/*.json``, ``samples/``, ``sweeps/``, ``maps/``).
    Raises:
        DatasetError: one line naming the table, record, scene or file at fault.
    """
    root = Path(root).expanduser().resolve()
    if not isinstance(version, str) or version not in VERSIONS:
        raise DatasetError(f"unknown nuScenes version {version!r}; expected one of {', '.join(VERSIONS)}")
    tables = root / version
    if not tables.is_dir():
        found = sorted(p.name for p in root.glob("v1.0-*") if p.is_dir()) if root.is_dir() else []
        raise DatasetError(
            f"{root}: no nuScenes tables for {version} (no {tables.name}/ directory; "
            f"found: {', '.join(found) or 'none'}"
            + (")" if root.is_dir() else "; the dataroot does not exist)")
        )
    NuScenes, create_splits_scenes = _devkit()
    scene_filter = _names(scenes, "scenes")
    cams = _names(cameras, "cameras") or list(CAMERAS)
    unknown = [c for c in cams if not c.startswith("CAM_")]
    if unknown:
        raise DatasetError(f"nuscenes option 'cameras': {', '.join(unknown)} not a camera channel (CAM_*)")
    if split is not None:
        splits = create_splits_scenes()
        if split not in splits:
            raise DatasetError(f"unknown nuScenes split {split!r}; expected one of {', '.join(splits)}")
    if not isinstance(check_files, bool):
        raise DatasetError(f"nuscenes option 'check_files': expected true or false, got {check_files!r}")

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, OSError, KeyError, ValueError, IndexError, TypeError) as e:
        raise DatasetError(f"{tables}: cannot load the nuScenes tables ({type(e).__name__}: {e})") from None

    # ---------------------------------------------------------------- scene selection
    by_name = {s["name"]: s for s in nusc.scene}
    names = [s["name"] for s in nusc.scene]
    if split is not None:
        in_split = set(create_splits_scenes()[split])
        names = [n for n in names if n in in_split]
        if not names:
            family = {"v1.0-mini": ("mini_train", "mini_val"), "v1.0-test": ("test",)}.get(
                version, ("train", "val", "train_detect", "train_track")
            )
            hint = "" if split in family else f" ({version} has the splits {', '.join(family)})"
            raise DatasetError(f"{tables}: split {split!r} has no scene in {version}{hint}")
    if scene_filter is not None:
        missing = [n for n in scene_filter if n not in by_name]
        if missing:
            raise DatasetError(
                f"{tables}: scene {missing[0]!r} not in {version} (has {len(by_name)} scenes, e.g. "
                f"{', '.join(list(by_name)[:3])})"
            )
        outside = [n for n in scene_filter if n not in names]
        if outside:
            raise DatasetError(f"{tables}: scene {outside[0]!r} is not in split {split!r}")
        keep = set(scene_filter)
        names = [n for n in names if n in keep]

    channels = {s["channel"]: s["modality"] for s in nusc.sensor}
    absent = [c for c in cams if c not in channels]
    if absent and cameras is not None:
        raise DatasetError(
            f"{tables}: camera {absent[0]!r} not in the sensor table (has: {', '.join(channels)})"
        )
    cams = [c for c in cams if c in channels]
    if not cams:
        raise DatasetError(f"{tables}: no camera channel in the sensor table")

    if sweeps == "auto":
        sweeps = any((root / "sweeps" / c).is_dir() for c in cams)
    elif not isinstance(sweeps, bool):
        raise DatasetError(f"nuscenes option 'sweeps': expected true, false or auto, got {sweeps!r}")
    if gts == "auto":
        gts_dir = root / "gts" if (root / "gts").is_dir() else None
    elif gts in (None, False, ""):
        gts_dir = None
    else:
        gts_dir = Path(gts).expanduser().resolve()
        if not gts_dir.is_dir():
            raise DatasetError(f"nuscenes option 'gts': no such directory: {gts_dir}")

    files = _Files(root, check_files)
    wanted = {by_name[n]["token"] for n in names}
    sample_scene = {s["token"]: s["scene_token"] for s in nusc.sample}
    cam_set = set(cams)
    per: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (scene token, channel) -> sample_data
    for sd in nusc.sample_data:
        if sd["channel"] in cam_set and (sweeps or sd["is_key_frame"]):
            st = sample_scene.get(sd["sample_token"])
            if st in wanted:
                per[(st, sd["channel"])].append(sd)

    cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def calib(sd: dict, where: str) -> tuple[np.ndarray, np.ndarray | None]:
        tok = sd["calibrated_sensor_token"]
        if tok not in cache:
            cs = nusc.get("calibrated_sensor", tok)
            is_cam = sd["channel"].startswith("CAM_")
            K = _intrinsics(cs, where, tables) if is_cam else None
            cache[tok] = (_pose(cs, "calibrated_sensor", where, tables), K)
        return cache[tok]

    def ego(sd: dict, where: str) -> np.ndarray:
        return _pose(nusc.get("ego_pose", sd["ego_pose_token"]), "ego_pose", where, tables)

    def image(sd: dict, sname: str) -> CameraImage:
        where = f"scene {sname!r}, {sd['channel']} sample_data {sd['token']!r}"
        T_ego_from_cam, K = calib(sd, where)
        gt = {}
        for field in (DEPTH_FIELD, SEMANTICS_FIELD):
            if sd.get(field):
                gt[field] = files.require(
                    sd[field], f"{tables / 'sample_data.json'}: {where}, field {field!r}"
                )
        return CameraImage(
            camera=sd["channel"],
            path=files.require(sd["filename"], f"{tables / 'sample_data.json'}: {where}, field 'filename'"),
            rel_path=sd["filename"],
            K=K,
            T_ego_from_cam=T_ego_from_cam,
            T_world_from_ego=ego(sd, where),
            depth_path=gt.get(DEPTH_FIELD),
            semantics_path=gt.get(SEMANTICS_FIELD),
            timestamp=sd["timestamp"] / 1e6,
            meta={"sample_data_token": sd["token"]},
        )

    out: list[Scene] = []
    for name in names:
        sc = by_name[name]
        out.append(_scene(nusc, sc, cams, per, image, calib, ego, files, gts_dir, tables))
    options = {
        "version": version,
        "split": split,
        "scenes": scene_filter,
        "cameras": cams,
        "sweeps": sweeps,
        "gts": None if gts_dir is None else str(gts_dir),
        "check_files": check_files,
    }
    return Dataset(kind="nuscenes", root=root, scenes=out, options=options)


def _scene(nusc, sc: dict, cams, per, image, calib, ego, files: _Files, gts_dir, tables: Path) -> Scene:
    """Records of one scene: keyframes from its samples, sweep frames grouped around the reference camera."""
    name = sc["name"]
    samples: list[dict] = []
    tok = sc.get("first_sample_token") or ""
    seen = set()
    while tok and tok not in seen:
        seen.add(tok)
        s = nusc.get("sample", tok)
        samples.append(s)
        tok = s["next"]
    if not samples:
        raise DatasetError(f"{tables / 'scene.json'}: scene {name!r} has no keyframes (no samples)")
    cams = [c for c in cams if per.get((sc["token"], c)) or any(c in s["data"] for s in samples)]
    if not cams:
        raise DatasetError(f"{tables}: scene {name!r} has no image of the selected cameras")
    ref = cams[0]

    # firing phase of every camera (and of the LiDAR / sample time) relative to the reference camera, us
    def phase(get) -> float:
        d = []
        for s in samples:
            t = get(s)
            if ref in s["data"] and t is not None:
                d.append(t - nusc.get("sample_data", s["data"][ref])["timestamp"])
        return float(np.median(d)) if d else 0.0

    def key_time(c):
        return lambda s: nusc.get("sample_data", s["data"][c])["timestamp"] if c in s["data"] else None

    delta = {c: (phase(key_time(c)) if c != ref else 0.0) for c in cams}
    delta_sample = phase(lambda s: s["timestamp"])

    # frame slots: one per sample (keyframe) and one per reference-camera sweep
    slots: list[dict[str, Any]] = []
    for s in samples:
        t_ref = nusc.get("sample_data", s["data"][ref])["timestamp"] if ref in s["data"] else None
        tau = t_ref if t_ref is not None else s["timestamp"] - delta_sample
        imgs = {c: nusc.get("sample_data", s["data"][c]) for c in cams if c in s["data"]}
        slots.append({"tau": tau, "sample": s, "images": imgs})
    ref_sweeps = sorted((sd for sd in per.get((sc["token"], ref), []) if not sd["is_key_frame"]),
                        key=lambda sd: sd["timestamp"])  # fmt: skip
    slots += [{"tau": sd["timestamp"], "sample": None, "ref": sd, "images": {ref: sd}} for sd in ref_sweeps]
    slots.sort(key=lambda s: s["tau"])
    taus = [s["tau"] for s in slots]
    ref_times = sorted(sd["timestamp"] for sd in per.get((sc["token"], ref), []))
    period = float(np.median(np.diff(ref_times))) if len(ref_times) > 2 else 1e6 / CAMERA_HZ
    dropped = 0
    for c in cams[1:]:
        best: dict[int, float] = {}
        for sd in per.get((sc["token"], c), []):
            if sd["is_key_frame"]:
                continue
            target = sd["timestamp"] - delta[c]
            j = bisect_left(taus, target)
            cands = [k for k in (j - 1, j) if 0 <= k < len(taus)]
            k = min(cands, key=lambda k: abs(taus[k] - target))
            res = abs(taus[k] - target)
            if slots[k]["sample"] is not None or res > 0.5 * period:
                dropped += 1
                continue
            if k in best:
                dropped += 1
                if res >= best[k]:
                    continue
            best[k] = res
            slots[k]["images"][c] = sd
    if dropped:
        log.info(
            "nuscenes %s: %d camera sweeps matched no frame (or a frame twice) and were left out",
            name,
            dropped,
        )

    # frame time and pose; sweep frames strictly between their neighbouring keyframes
    key_ts = [s["sample"]["timestamp"] for s in slots if s["sample"] is not None]
    frames: list[Frame] = []
    for s in slots:
        if s["sample"] is not None:
            frames.append(_keyframe(nusc, s, name, cams, image, calib, ego, files, gts_dir))
            continue
        t = s["tau"]
        i = bisect_left(key_ts, t)
        if (i > 0 and t <= key_ts[i - 1]) or (i < len(key_ts) and t >= key_ts[i]):
            continue
        sd = s["ref"]
        where = f"scene {name!r}, {ref} sample_data {sd['token']!r}"
        frames.append(
            Frame(
                token=sd["token"],
                timestamp=t / 1e6,
                keyframe=False,
                T_world_from_ego=ego(sd, where),
                images={c: image(s["images"][c], name) for c in cams if c in s["images"]},
                meta={"sample_data_token": sd["token"], "sample_token": sd["sample_token"]},
            )
        )
    log_rec = nusc.get("log", sc["log_token"]) if sc.get("log_token") else {}
    meta = {
        "token": sc["token"],
        "log_token": sc.get("log_token"),
        "location": log_rec.get("location"),
        "description": sc.get("description"),
        "reference_camera": ref,
    }
    return Scene(name=name, frames=frames, meta=meta)


def _keyframe(nusc, slot: dict, sname: str, cams, image, calib, ego, files: _Files, gts_dir) -> Frame:
    s = slot["sample"]
    images = {c: image(slot["images"][c], sname) for c in cams if c in slot["images"]}
    if not images:
        raise DatasetError(f"scene {sname!r}, sample {s['token']!r}: no image of the selected cameras")
    lidar_path = T_ego_from_lidar = None
    meta: dict[str, Any] = {"sample_token": s["token"]}
    if LIDAR in s["data"]:
        lsd = nusc.get("sample_data", s["data"][LIDAR])
        where = f"scene {sname!r}, sample {s['token']!r}, {LIDAR} sample_data {lsd['token']!r}"
        T_we = ego(lsd, where)
        meta["lidar_sample_data_token"] = lsd["token"]
        if files.exists(lsd["filename"]):
            lidar_path = files.root / lsd["filename"]
            T_ego_from_lidar = calib(lsd, where)[0]
    else:  # no LiDAR in this sample: the first camera's pose and the sample's time
        T_we = next(iter(images.values())).T_world_from_ego
    occ = None
    if gts_dir is not None:
        p = gts_dir / sname / s["token"] / "labels.npz"
        occ = p if p.is_file() else None
    return Frame(
        token=s["token"],
        timestamp=s["timestamp"] / 1e6,
        keyframe=True,
        T_world_from_ego=T_we,
        images=images,
        lidar_path=lidar_path,
        occupancy_path=occ,
        T_ego_from_lidar=T_ego_from_lidar,
        meta=meta,
    )
