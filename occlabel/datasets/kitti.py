"""The ``kitti`` dataset: KITTI odometry sequences and SemanticKITTI, read through pykitti.

``load_kitti(root, sequences=["08"], ...)`` (or ``open_dataset("kitti", root, ...)``) emits the records of
occlabel.datasets.base; pykitti (extra ``occlabel[kitti]``) is imported only here.

Layout (the odometry devkit's; SemanticKITTI adds ``poses.txt`` and ``voxels/`` per sequence)::

    <root>/sequences/XX/image_0|1|2|3/NNNNNN.png   cam0/cam1 grey, cam2/cam3 colour (rectified)
    <root>/sequences/XX/calib.txt                 P0..P3 (3x4 rectified projections), Tr (velodyne -> cam0)
    <root>/sequences/XX/times.txt                 seconds since the start of the sequence, one per frame
    <root>/poses/XX.txt                           T_world_from_cam0 per frame, row-major 3x4 (odometry GT)
    <root>/sequences/XX/poses.txt                 SemanticKITTI's copy (used when poses/XX.txt is absent)
    <root>/sequences/XX/velodyne/NNNNNN.bin       optional LiDAR scans, float32 N x 4
    <root>/sequences/XX/voxels/NNNNNN.label|.invalid|.bin   optional SemanticKITTI voxel ground truth

``root`` may also be the directory that holds ``dataset/sequences``.

Frames
    Camera 0 (left grey) carries the poses: KITTI's world is cam0 at frame 0. The **ego frame** is defined
    at the ground under cam0: origin ``camera_height`` (1.65 m, KITTI's camera mounting height) below
    cam0's optical centre along cam0's -y (up) axis; x forward = cam0's optical axis, y left = -cam0 x,
    z up = -cam0 y, i.e. ``T_ego_from_cam0 = [[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, h], [0, 0, 0, 1]]``.
    It is not levelled: it shares cam0's small pitch and roll relative to the road (within about a
    degree on KITTI). ``T_world_from_ego = T_world_from_cam0 @ inv(T_ego_from_cam0)``; the ego frame is
    the same whichever camera is chosen, so labels from cam2 and cam3 share a grid.

    Rectified cameras share cam0's orientation; camera i sits where its projection matrix puts it:
    ``P_i = K_i [I | t_i]`` with ``t_i = inv(K_i) P_i[:, 3]`` = the position of cam0's centre in camera
    i's frame, so ``T_cam_i_from_cam0 = [I | t_i]`` (all three components, not only the x baseline) and
    ``T_ego_from_cam_i = T_ego_from_cam0 @ inv(T_cam_i_from_cam0)``; ``K_i = P_i[:, :3]``. cam2 sits
    about 6 cm left of cam0, cam3 about 48 cm right. LiDAR: ``T_ego_from_lidar = T_ego_from_cam0 @ Tr``.

    Timestamps are times.txt's seconds since the start of the sequence. Tokens are ``<seq>_<frame:06d>``,
    scenes are named by the sequence (``"08"``).

Keyframes
    SemanticKITTI's voxel cadence: frames that have ``voxels/NNNNNN.bin`` or ``.label`` files when the
    sequence has a ``voxels/`` directory, else every ``keyframe_every``-th frame (default 5: 0, 5, 10 ...).
    SemanticKITTI ground truth is attached to keyframes as ``frame.meta["semantickitti_voxels"]``
    (paths of the ``label``, ``invalid``, ``occluded``, ``bin`` files present); read it with
    :func:`load_semantickitti_voxels` (grid ``semantickitti`` in the velodyne frame, placed in the ego frame
    by ``frame.T_ego_from_lidar``). Occ3D-layout ground truth in the ego frame,
    ``gts/<seq>/<token>/labels.npz``, is attached as ``occupancy_path`` (what ``occlabel evaluate`` reads).

Ground truth for the oracle backends (written by ``occlabel synth --layout kitti``): per camera i,
``sequences/XX/depth_<i>/NNNNNN.npy|.png`` (float32 metres, or uint16 metres*256 like KITTI's depth
benchmark) and ``sequences/XX/semantics_<i>/NNNNNN.png`` are attached to the image when present.

Options (``--split``, ``--dataset-option KEY=VALUE``):
    sequences       sequence ids (list or comma-separated, e.g. "08" or "00,02"); None: the split's, or
                    every sequence that has poses.
    split           SemanticKITTI's: train (00-07, 09, 10), val (08), test (11-21; no poses published).
    cameras         cam2 (default), cam0, cam1, cam3, or several (comma-separated).
    poses           "auto" (default: poses/XX.txt, else sequences/XX/poses.txt) or a directory of XX.txt.
    frames          "START:STOP" (STOP excluded) or a list of frame ids; None: all.
    keyframes       "auto" (default: the voxel cadence above) or "every" (every ``keyframe_every``-th).
    keyframe_every  5.
    camera_height   metres from cam0 down to the ego origin (1.65).
    gts             Occ3D-layout ground truth directory; "auto": ``<root>/gts`` when it exists.
    check_files     check that every image exists (default true).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import SEMANTICKITTI_LEARNING_MAP as LEARNING_MAP
from occlabel.conventions import is_rigid
from occlabel.datasets.base import CameraImage, Dataset, Frame, Scene, rigid_transform
from occlabel.datasets.kitti_calib import kitti_T_cam_from_velo, read_calib, split_rectified_projection
from occlabel.datasets.kitti_voxels import VOXEL_SHAPE, load_semantickitti_voxels
from occlabel.errors import DatasetError

log = logging.getLogger(__name__)

CAMERA_HEIGHT_M = 1.65
#: OpenCV camera axes (x right, y down, z forward) expressed in the ego frame (x forward, y left, z up)
R_EGO_FROM_CV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
SPLITS = {
    "train": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"],
    "val": ["08"],
    "test": [f"{i:02d}" for i in range(11, 22)],
}


def T_ego_from_cam0(camera_height: float = CAMERA_HEIGHT_M) -> np.ndarray:
    """<np.float64: 4, 4> cam0 (OpenCV) to the KITTI ego frame (ground under cam0, x forward, z up)."""
    return rigid_transform(R_EGO_FROM_CV, [0.0, 0.0, camera_height])


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


def read_poses(path: Path) -> np.ndarray:
    """``<np.float64: N, 4, 4>`` T_world_from_cam0 from a KITTI poses file (row-major 3x4 per line).

    Raises DatasetError naming the line of a malformed or non-rigid pose.
    """
    out = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read poses ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            v = np.array([float(x) for x in line.split()], np.float64)
        except ValueError:
            raise DatasetError(f"{path}: line {n} (frame {n - 1}): not 12 numbers") from None
        if v.shape != (12,):
            raise DatasetError(f"{path}: line {n} (frame {n - 1}): expected 12 numbers, got {v.size}")
        T = np.eye(4)
        T[:3] = v.reshape(3, 4)
        if not is_rigid(T):
            raise DatasetError(
                f"{path}: line {n} (frame {n - 1}): not a rigid transform "
                "(rotation must be orthonormal with det +1)"
            )
        out.append(T)
    if not out:
        raise DatasetError(f"{path}: no poses")
    return np.stack(out)


def _calib(
    calib: dict[str, np.ndarray], seq_dir: Path, cams: list[int], camera_height: float
) -> dict[str, Any]:
    """Per camera K and T_ego_from_cam, and T_ego_from_velo, from the parsed calib.txt (:func:`read_calib`)."""
    at = seq_dir / "calib.txt"
    T_e0 = T_ego_from_cam0(camera_height)
    out: dict[str, Any] = {"K": {}, "T_ego_from_cam": {}}
    for i in cams:
        K, t = split_rectified_projection(calib[f"P{i}"].reshape(3, 4), f"{at}: P{i}")
        T_cam_i_from_cam0 = rigid_transform(np.eye(3), t)
        out["K"][i] = K.copy()
        out["T_ego_from_cam"][i] = T_e0 @ np.linalg.inv(T_cam_i_from_cam0)
    Tr = np.eye(4)
    Tr[:3] = calib["Tr"].reshape(3, 4)
    out["T_ego_from_velo"] = T_e0 @ Tr if is_rigid(Tr) else None
    if out["T_ego_from_velo"] is None:
        log.warning("%s: Tr (velodyne -> cam0) is not rigid; LiDAR and voxel ground truth left out", at)
    return out


def _listing(d: Path) -> set[str]:
    try:
        return set(os.listdir(d))
    except OSError:
        return set()


def load_kitti(
    root: str | Path,
    sequences: str | list | None = None,
    split: str | None = None,
    cameras: str | list = "cam2",
    poses: str | Path = "auto",
    frames: str | list | None = None,
    keyframes: str = "auto",
    keyframe_every: int = 5,
    camera_height: float = CAMERA_HEIGHT_M,
    gts: str | Path | None = "auto",
    check_files: bool = True,
) -> Dataset:
    """Load KITTI odometry / SemanticKITTI sequences as occlabel records (see the module docstring).

    Args:
        root: the directory holding ``sequences/`` (and ``poses/``), or its parent holding ``dataset/``.
    Raises:
        DatasetError: one line naming the sequence, file, line or frame at fault.
    """
    root = Path(root).expanduser().resolve()
    base = root if (root / "sequences").is_dir() else root / "dataset"
    if not (base / "sequences").is_dir():
        raise DatasetError(
            f"{root}: no sequences/ directory (expected the KITTI odometry layout, see docs/datasets.md)"
        )
    pykitti = _pykitti()
    cams = sorted({_camera_index(c) for c in (_list(cameras) or ["cam2"])})
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

    def pose_file(seq: str) -> Path | None:
        if poses != "auto":
            p = Path(poses).expanduser() / f"{seq}.txt"
            return p if p.is_file() else None
        for p in (base / "poses" / f"{seq}.txt", base / "sequences" / seq / "poses.txt"):
            if p.is_file():
                return p
        return None

    explicit = [_seq_id(s) for s in _list(sequences) or []]
    if explicit:
        seqs = explicit
        if split is not None:
            outside = [s for s in seqs if s not in SPLITS[split]]
            if outside:
                raise DatasetError(f"kitti: sequence {outside[0]} is not in split {split!r}")
    elif split is not None:
        seqs = [s for s in SPLITS[split] if (base / "sequences" / s).is_dir()]
        if not seqs:
            raise DatasetError(
                f"{base / 'sequences'}: no sequence of split {split!r} ({', '.join(SPLITS[split])})"
            )
    else:
        found = sorted(p.name for p in (base / "sequences").iterdir() if p.is_dir() and p.name.isdigit())
        seqs = [s for s in found if pose_file(s) is not None]
        skipped = sorted(set(found) - set(seqs))
        if skipped:
            log.info("kitti: sequences without poses left out: %s", ", ".join(skipped))
        if not seqs:
            raise DatasetError(
                f"{base / 'sequences'}: no sequence with poses (poses/XX.txt or sequences/XX/poses.txt)"
            )
    if gts == "auto":
        gts_dir = (
            base / "gts" if (base / "gts").is_dir() else (root / "gts" if (root / "gts").is_dir() else None)
        )
    elif gts in (None, False, ""):
        gts_dir = None
    else:
        gts_dir = Path(gts).expanduser().resolve()
        if not gts_dir.is_dir():
            raise DatasetError(f"kitti option 'gts': no such directory: {gts_dir}")

    scenes = [
        _sequence(pykitti, base, s, cams, pose_file(s), frames, keyframes, keyframe_every,
                  float(camera_height), gts_dir, check_files)
        for s in seqs
    ]  # fmt: skip
    options = {
        "sequences": seqs,
        "split": split,
        "cameras": [f"cam{i}" for i in cams],
        "poses": str(poses),
        "frames": frames,
        "keyframes": keyframes,
        "keyframe_every": keyframe_every,
        "camera_height": float(camera_height),
        "gts": None if gts_dir is None else str(gts_dir),
        "check_files": check_files,
    }
    return Dataset(kind="kitti", root=root, scenes=scenes, options=options)


def _sequence(
    pykitti, base, seq, cams, pose_path, frames_opt, keyframes, keyframe_every, h, gts_dir, check
) -> Scene:
    seq_dir = base / "sequences" / seq
    if not seq_dir.is_dir():
        raise DatasetError(f"{base / 'sequences'}: no sequence {seq}")
    for need in ("calib.txt", "times.txt"):
        if not (seq_dir / need).is_file():
            raise DatasetError(f"sequence {seq}: file not found: {seq_dir / need}")
    if pose_path is None:
        raise DatasetError(
            f"sequence {seq}: no poses (looked for {base / 'poses' / (seq + '.txt')} "
            f"and {seq_dir / 'poses.txt'})"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            odo = pykitti.odometry(str(base), seq)
    except KeyError as e:
        raise DatasetError(
            f"{seq_dir / 'calib.txt'}: missing entry {e.args[0]!r} (needs P0, P1, P2, P3 and Tr)"
        ) from None
    except ValueError as e:
        raise DatasetError(f"{seq_dir}: cannot parse calib.txt or times.txt ({e})") from None
    times = np.array([t.total_seconds() for t in odo.timestamps], np.float64)
    if len(times) == 0:
        raise DatasetError(f"{seq_dir / 'times.txt'}: no frames")
    if np.any(np.diff(times) <= 0):
        n = int(np.argmax(np.diff(times) <= 0)) + 2
        raise DatasetError(f"{seq_dir / 'times.txt'}: line {n}: timestamps must increase")
    T_w_c0 = read_poses(pose_path)
    if len(T_w_c0) != len(times):
        raise DatasetError(
            f"{pose_path}: {len(T_w_c0)} poses but {seq_dir / 'times.txt'} has {len(times)} frames"
        )
    cal = _calib(read_calib(seq_dir / "calib.txt", strict=False), seq_dir, cams, h)
    T_c0_e = np.linalg.inv(T_ego_from_cam0(h))
    ids = _frames(frames_opt, len(times), f"sequence {seq}")

    listing = {i: _listing(seq_dir / f"image_{i}") for i in cams}
    depth_l = {i: _listing(seq_dir / f"depth_{i}") for i in cams}
    sem_l = {i: _listing(seq_dir / f"semantics_{i}") for i in cams}
    velo_l = _listing(seq_dir / "velodyne")
    vox_l = _listing(seq_dir / "voxels")
    if keyframes == "auto" and (seq_dir / "voxels").is_dir():
        key_ids = {
            int(n.split(".")[0])
            for n in vox_l
            if n.endswith((".bin", ".label")) and n.split(".")[0].isdigit()
        }
        cadence = "voxels/"
    else:
        key_ids = set(range(0, len(times), keyframe_every))
        cadence = f"every {keyframe_every}th frame"
    if not key_ids.intersection(ids):
        raise DatasetError(f"sequence {seq}: no keyframe among the selected frames (keyframes: {cadence})")

    out: list[Frame] = []
    for f in ids:
        name = f"{f:06d}"
        images = {}
        for i in cams:
            rel = f"image_{i}/{name}.png"
            if check and rel.split("/")[1] not in listing[i]:
                raise DatasetError(
                    f"sequence {seq}, frame {f}, camera cam{i}: file not found: {seq_dir / rel}"
                )
            dp = next(
                (seq_dir / f"depth_{i}" / (name + e) for e in (".npy", ".png") if name + e in depth_l[i]),
                None,
            )
            sp = seq_dir / f"semantics_{i}" / (name + ".png") if name + ".png" in sem_l[i] else None
            images[f"cam{i}"] = CameraImage(
                camera=f"cam{i}",
                path=seq_dir / rel,
                rel_path=f"sequences/{seq}/{rel}",
                K=cal["K"][i],
                T_ego_from_cam=cal["T_ego_from_cam"][i],
                depth_path=dp,
                semantics_path=sp,
                meta={"frame": f},
            )
        meta: dict[str, Any] = {"sequence": seq, "frame": f}
        key = f in key_ids
        if key:
            vox = {e: str(seq_dir / "voxels" / f"{name}.{e}") for e in ("label", "invalid", "occluded", "bin")
                   if f"{name}.{e}" in vox_l}  # fmt: skip
            if vox:
                meta["semantickitti_voxels"] = vox
        velo = cal["T_ego_from_velo"] is not None and f"{name}.bin" in velo_l
        occ = None
        if key and gts_dir is not None:
            p = gts_dir / seq / f"{seq}_{name}" / "labels.npz"
            occ = p if p.is_file() else None
        out.append(
            Frame(
                token=f"{seq}_{name}",
                timestamp=float(times[f]),
                keyframe=key,
                T_world_from_ego=T_w_c0[f] @ T_c0_e,
                images=images,
                lidar_path=seq_dir / "velodyne" / f"{name}.bin" if velo else None,
                occupancy_path=occ,
                T_ego_from_lidar=cal["T_ego_from_velo"] if velo else None,
                meta=meta,
            )
        )
    smeta = {
        "sequence": seq,
        "poses": str(pose_path),
        "camera_height_m": h,
        "T_ego_from_cam0": T_ego_from_cam0(h).tolist(),
        "T_ego_from_velo": None if cal["T_ego_from_velo"] is None else cal["T_ego_from_velo"].tolist(),
        "keyframes": cadence,
    }
    return Scene(name=seq, frames=out, meta=smeta)


__all__ = [
    "LEARNING_MAP",
    "SPLITS",
    "VOXEL_SHAPE",
    "T_ego_from_cam0",
    "kitti_T_cam_from_velo",
    "load_kitti",
    "load_semantickitti_voxels",
    "read_calib",
    "read_poses",
    "split_rectified_projection",
]
