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

import logging
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.datasets.base import CameraImage, Dataset, Frame, Scene
from occlabel.datasets.nuscenes_tables import (
    CAMERAS,
    DEPTH_FIELD,
    LIDAR,
    SEMANTICS_FIELD,
    VERSIONS,
    _devkit,
    _Files,
    _intrinsics,
    _pose,
    open_tables,
    parse_options,
    resolve_sweeps,
    select_cameras,
    select_scenes,
    tables_dir,
)
from occlabel.datasets.options import gts_option
from occlabel.errors import DatasetError

log = logging.getLogger(__name__)

__all__ = ["CAMERAS", "CAMERA_HZ", "DEPTH_FIELD", "LIDAR", "SEMANTICS_FIELD", "VERSIONS", "load_nuscenes"]

CAMERA_HZ = 12.0  # nominal camera rate; the measured period of the reference camera is used when known


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
    tables = tables_dir(root, version)
    NuScenes, create_splits_scenes = _devkit()
    scene_filter, cams = parse_options(scenes, cameras, split, check_files, create_splits_scenes)
    nusc = open_tables(NuScenes, version, root, tables)
    by_name, names = select_scenes(nusc, version, split, scene_filter, tables, create_splits_scenes)
    cams = select_cameras(nusc, cams, cameras, tables)
    sweeps = resolve_sweeps(sweeps, root, cams)
    gts_dir = gts_option(gts, "nuscenes", root / "gts")

    reader = _Reader(nusc, tables, _Files(root, check_files), gts_dir)
    per = _sample_data_by_channel(nusc, {by_name[n]["token"] for n in names}, cams, sweeps)
    out = [_scene(reader, by_name[name], cams, per) for name in names]
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


def _sample_data_by_channel(
    nusc, wanted: set[str], cams: list[str], sweeps: bool
) -> dict[tuple[str, str], list[dict]]:
    """(scene token, channel) -> the camera sample_data of the wanted scenes (sweeps too when ``sweeps``)."""
    sample_scene = {s["token"]: s["scene_token"] for s in nusc.sample}
    cam_set = set(cams)
    per: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for sd in nusc.sample_data:
        if sd["channel"] in cam_set and (sweeps or sd["is_key_frame"]):
            st = sample_scene.get(sd["sample_token"])
            if st in wanted:
                per[(st, sd["channel"])].append(sd)
    return per


class _Reader:
    """Table look-ups of one loaded dataset as records: sensor calibration (cached), ego poses, images.

    ``where`` arguments name the scene and record in error messages.
    """

    def __init__(self, nusc, tables: Path, files: _Files, gts_dir: Path | None):
        self.nusc = nusc
        self.tables = tables
        self.files = files
        self.gts_dir = gts_dir
        self._calib: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def calib(self, sd: dict, where: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(T_ego_from_sensor <np.float64: 4, 4>, K <np.float64: 3, 3> or None for a non-camera)."""
        tok = sd["calibrated_sensor_token"]
        if tok not in self._calib:
            cs = self.nusc.get("calibrated_sensor", tok)
            is_cam = sd["channel"].startswith("CAM_")
            K = _intrinsics(cs, where, self.tables) if is_cam else None
            self._calib[tok] = (_pose(cs, "calibrated_sensor", where, self.tables), K)
        return self._calib[tok]

    def ego(self, sd: dict, where: str) -> np.ndarray:
        """T_world_from_ego <np.float64: 4, 4> at a sample_data's instant."""
        return _pose(self.nusc.get("ego_pose", sd["ego_pose_token"]), "ego_pose", where, self.tables)

    def image(self, sd: dict, sname: str) -> CameraImage:
        """The CameraImage of a camera sample_data (its own ego pose and time; ground truth when given)."""
        where = f"scene {sname!r}, {sd['channel']} sample_data {sd['token']!r}"
        at = f"{self.tables / 'sample_data.json'}: {where}"
        T_ego_from_cam, K = self.calib(sd, where)
        gt = {}
        for field in (DEPTH_FIELD, SEMANTICS_FIELD):
            if sd.get(field):
                gt[field] = self.files.require(sd[field], f"{at}, field {field!r}")
        return CameraImage(
            camera=sd["channel"],
            path=self.files.require(sd["filename"], f"{at}, field 'filename'"),
            rel_path=sd["filename"],
            K=K,
            T_ego_from_cam=T_ego_from_cam,
            T_world_from_ego=self.ego(sd, where),
            depth_path=gt.get(DEPTH_FIELD),
            semantics_path=gt.get(SEMANTICS_FIELD),
            timestamp=sd["timestamp"] / 1e6,
            meta={"sample_data_token": sd["token"]},
        )


@dataclass
class _Slot:
    """A frame to be: a sample (keyframe) or a reference-camera sweep, with the images matched to it.

    Attributes:
        tau: the reference camera's time of the frame, microseconds.
        sample: the sample record of a keyframe; None for a sweep frame.
        images: channel -> sample_data.
        ref: the reference camera's sample_data of a sweep frame; None for a keyframe.
    """

    tau: float
    sample: dict | None
    images: dict[str, dict]
    ref: dict | None = None


def _scene(reader: _Reader, sc: dict, cams: list[str], per: dict[tuple[str, str], list[dict]]) -> Scene:
    """Records of one scene: keyframes from its samples, sweep frames grouped around the reference camera."""
    nusc, name = reader.nusc, sc["name"]
    samples = _samples(nusc, sc, reader.tables)
    cams = [c for c in cams if per.get((sc["token"], c)) or any(c in s["data"] for s in samples)]
    if not cams:
        raise DatasetError(f"{reader.tables}: scene {name!r} has no image of the selected cameras")
    scene_sd = {c: per.get((sc["token"], c), []) for c in cams}
    delta, delta_sample = _phases(nusc, samples, cams)
    slots = _slots(nusc, samples, cams, scene_sd[cams[0]], delta_sample)
    ref_times = sorted(sd["timestamp"] for sd in scene_sd[cams[0]])
    period = float(np.median(np.diff(ref_times))) if len(ref_times) > 2 else 1e6 / CAMERA_HZ
    dropped = _match_sweeps(slots, cams, scene_sd, delta, period)
    if dropped:
        log.info(
            "nuscenes %s: %d camera sweeps matched no frame (or a frame twice) and were left out",
            name,
            dropped,
        )
    frames = _frames(reader, slots, name, cams)
    log_rec = nusc.get("log", sc["log_token"]) if sc.get("log_token") else {}
    meta = {
        "token": sc["token"],
        "log_token": sc.get("log_token"),
        "location": log_rec.get("location"),
        "description": sc.get("description"),
        "reference_camera": cams[0],
    }
    return Scene(name=name, frames=frames, meta=meta)


def _samples(nusc, sc: dict, tables: Path) -> list[dict]:
    """The scene's samples in order, following ``next`` from ``first_sample_token`` (a cycle ends it)."""
    samples: list[dict] = []
    tok = sc.get("first_sample_token") or ""
    seen = set()
    while tok and tok not in seen:
        seen.add(tok)
        s = nusc.get("sample", tok)
        samples.append(s)
        tok = s["next"]
    if not samples:
        raise DatasetError(f"{tables / 'scene.json'}: scene {sc['name']!r} has no keyframes (no samples)")
    return samples


def _phases(nusc, samples: list[dict], cams: list[str]) -> tuple[dict[str, float], float]:
    """Firing phase of every camera, and of the sample (LiDAR) time, relative to the reference camera
    ``cams[0]``: the median over keyframes of the time offsets, microseconds (0 when never seen together)."""
    ref = cams[0]

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
    return delta, phase(lambda s: s["timestamp"])


def _slots(
    nusc, samples: list[dict], cams: list[str], ref_sd: list[dict], delta_sample: float
) -> list[_Slot]:
    """Frame slots in time order: one per sample (its key images) and one per reference-camera sweep."""
    ref = cams[0]
    slots: list[_Slot] = []
    for s in samples:
        t_ref = nusc.get("sample_data", s["data"][ref])["timestamp"] if ref in s["data"] else None
        tau = t_ref if t_ref is not None else s["timestamp"] - delta_sample
        imgs = {c: nusc.get("sample_data", s["data"][c]) for c in cams if c in s["data"]}
        slots.append(_Slot(tau=tau, sample=s, images=imgs))
    ref_sweeps = sorted((sd for sd in ref_sd if not sd["is_key_frame"]), key=lambda sd: sd["timestamp"])
    slots += [_Slot(tau=sd["timestamp"], sample=None, images={ref: sd}, ref=sd) for sd in ref_sweeps]
    slots.sort(key=lambda s: s.tau)
    return slots


def _match_sweeps(
    slots: list[_Slot],
    cams: list[str],
    scene_sd: dict[str, list[dict]],
    delta: dict[str, float],
    period: float,
) -> int:
    """Add every other camera's sweeps to the sweep slot nearest in time after removing the camera's phase
    (in place); returns how many were left out (farther than half a ``period`` (us), or a keyframe's slot,
    or a second image for a slot: the nearer one is kept)."""
    taus = [s.tau for s in slots]
    dropped = 0
    for c in cams[1:]:
        best: dict[int, float] = {}
        for sd in scene_sd[c]:
            if sd["is_key_frame"]:
                continue
            target = sd["timestamp"] - delta[c]
            j = bisect_left(taus, target)
            cands = [k for k in (j - 1, j) if 0 <= k < len(taus)]
            k = min(cands, key=lambda k: abs(taus[k] - target))
            res = abs(taus[k] - target)
            if slots[k].sample is not None or res > 0.5 * period:
                dropped += 1
                continue
            if k in best:
                dropped += 1
                if res >= best[k]:
                    continue
            best[k] = res
            slots[k].images[c] = sd
    return dropped


def _frames(reader: _Reader, slots: list[_Slot], name: str, cams: list[str]) -> list[Frame]:
    """Frames of the slots; a sweep frame not strictly between its neighbouring keyframes is left out."""
    key_ts = [s.sample["timestamp"] for s in slots if s.sample is not None]
    frames: list[Frame] = []
    for s in slots:
        if s.sample is not None:
            frames.append(_keyframe(reader, s, name, cams))
            continue
        t = s.tau
        i = bisect_left(key_ts, t)
        if (i > 0 and t <= key_ts[i - 1]) or (i < len(key_ts) and t >= key_ts[i]):
            continue
        sd = s.ref
        where = f"scene {name!r}, {cams[0]} sample_data {sd['token']!r}"
        frames.append(
            Frame(
                token=sd["token"],
                timestamp=t / 1e6,
                keyframe=False,
                T_world_from_ego=reader.ego(sd, where),
                images={c: reader.image(s.images[c], name) for c in cams if c in s.images},
                meta={"sample_data_token": sd["token"], "sample_token": sd["sample_token"]},
            )
        )
    return frames


def _keyframe(reader: _Reader, slot: _Slot, sname: str, cams: list[str]) -> Frame:
    """The keyframe of a sample: its images, LIDAR_TOP pose and scan, Occ3D labels when present."""
    s = slot.sample
    images = {c: reader.image(slot.images[c], sname) for c in cams if c in slot.images}
    if not images:
        raise DatasetError(f"scene {sname!r}, sample {s['token']!r}: no image of the selected cameras")
    lidar_path = T_ego_from_lidar = None
    meta: dict[str, Any] = {"sample_token": s["token"]}
    if LIDAR in s["data"]:
        lsd = reader.nusc.get("sample_data", s["data"][LIDAR])
        where = f"scene {sname!r}, sample {s['token']!r}, {LIDAR} sample_data {lsd['token']!r}"
        T_we = reader.ego(lsd, where)
        meta["lidar_sample_data_token"] = lsd["token"]
        if reader.files.exists(lsd["filename"]):
            lidar_path = reader.files.root / lsd["filename"]
            T_ego_from_lidar = reader.calib(lsd, where)[0]
    else:  # no LiDAR in this sample: the first camera's pose and the sample's time
        T_we = next(iter(images.values())).T_world_from_ego
    occ = None
    if reader.gts_dir is not None:
        p = reader.gts_dir / sname / s["token"] / "labels.npz"
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
