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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import SEMANTICKITTI_LEARNING_MAP as LEARNING_MAP
from occlabel.conventions import is_rigid
from occlabel.datasets.base import CameraImage, Dataset, Frame, Scene, rigid_transform
from occlabel.datasets.kitti_calib import kitti_T_cam_from_velo, read_calib, split_rectified_projection
from occlabel.datasets.kitti_options import (
    SPLITS,
    _camera_index,
    _frames,
    _list,
    _listing,
    _pykitti,
    check_options,
    kitti_base,
    pose_file,
    select_sequences,
)
from occlabel.datasets.kitti_voxels import VOXEL_SHAPE, load_semantickitti_voxels
from occlabel.datasets.options import gts_option
from occlabel.errors import DatasetError

log = logging.getLogger(__name__)

CAMERA_HEIGHT_M = 1.65
#: OpenCV camera axes (x right, y down, z forward) expressed in the ego frame (x forward, y left, z up)
R_EGO_FROM_CV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def T_ego_from_cam0(camera_height: float = CAMERA_HEIGHT_M) -> np.ndarray:
    """<np.float64: 4, 4> cam0 (OpenCV) to the KITTI ego frame (ground under cam0, x forward, z up)."""
    return rigid_transform(R_EGO_FROM_CV, [0.0, 0.0, camera_height])


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


@dataclass(frozen=True)
class _Calib:
    """A sequence's cameras and LiDAR in the ego frame (from calib.txt).

    Attributes:
        K: camera index -> intrinsics <np.float64: 3, 3>.
        T_ego_from_cam: camera index -> <np.float64: 4, 4> rectified camera (OpenCV) to ego.
        T_ego_from_velo: <np.float64: 4, 4> velodyne to ego, or None when ``Tr`` is not rigid.
    """

    K: dict[int, np.ndarray]
    T_ego_from_cam: dict[int, np.ndarray]
    T_ego_from_velo: np.ndarray | None


def _calib(calib: dict[str, np.ndarray], seq_dir: Path, cams: list[int], camera_height: float) -> _Calib:
    """Per camera K and T_ego_from_cam, and T_ego_from_velo, from the parsed calib.txt (:func:`read_calib`)."""
    at = seq_dir / "calib.txt"
    T_e0 = T_ego_from_cam0(camera_height)
    K_of, T_of = {}, {}
    for i in cams:
        K, t = split_rectified_projection(calib[f"P{i}"].reshape(3, 4), f"{at}: P{i}")
        T_cam_i_from_cam0 = rigid_transform(np.eye(3), t)
        K_of[i] = K.copy()
        T_of[i] = T_e0 @ np.linalg.inv(T_cam_i_from_cam0)
    Tr = np.eye(4)
    Tr[:3] = calib["Tr"].reshape(3, 4)
    T_ego_from_velo = T_e0 @ Tr if is_rigid(Tr) else None
    if T_ego_from_velo is None:
        log.warning("%s: Tr (velodyne -> cam0) is not rigid; LiDAR and voxel ground truth left out", at)
    return _Calib(K=K_of, T_ego_from_cam=T_of, T_ego_from_velo=T_ego_from_velo)


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
    base = kitti_base(root)
    pykitti = _pykitti()
    cams = sorted({_camera_index(c) for c in (_list(cameras) or ["cam2"])})
    check_options(split, keyframes, keyframe_every, camera_height)
    seqs = select_sequences(base, sequences, split, poses)
    gts_dir = gts_option(gts, "kitti", base / "gts", root / "gts")
    sel = _Selection(cams, frames, keyframes, keyframe_every, float(camera_height), gts_dir, check_files)
    scenes = [_sequence(pykitti, base, s, pose_file(base, poses, s), sel) for s in seqs]
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


@dataclass(frozen=True)
class _Selection:
    """The options every sequence is read with (checked by :func:`load_kitti`)."""

    cams: list[int]
    frames: Any
    keyframes: str
    keyframe_every: int
    camera_height: float
    gts_dir: Path | None
    check: bool


@dataclass(frozen=True)
class _Listings:
    """File names present in a sequence's directories (one listing each)."""

    images: dict[int, set[str]]
    depth: dict[int, set[str]]
    semantics: dict[int, set[str]]
    velodyne: set[str]
    voxels: set[str]


def _sequence(pykitti, base: Path, seq: str, pose_path: Path | None, sel: _Selection) -> Scene:
    """The Scene of sequence ``seq``: one Frame per selected frame id (see the module docstring)."""
    seq_dir, times, T_w_c0 = _open_sequence(pykitti, base, seq, pose_path)
    h = sel.camera_height
    cal = _calib(read_calib(seq_dir / "calib.txt", strict=False), seq_dir, sel.cams, h)
    T_c0_e = np.linalg.inv(T_ego_from_cam0(h))
    ids = _frames(sel.frames, len(times), f"sequence {seq}")
    lst = _Listings(
        images={i: _listing(seq_dir / f"image_{i}") for i in sel.cams},
        depth={i: _listing(seq_dir / f"depth_{i}") for i in sel.cams},
        semantics={i: _listing(seq_dir / f"semantics_{i}") for i in sel.cams},
        velodyne=_listing(seq_dir / "velodyne"),
        voxels=_listing(seq_dir / "voxels"),
    )
    key_ids, cadence = _keyframe_ids(sel, seq_dir, lst.voxels, len(times))
    if not key_ids.intersection(ids):
        raise DatasetError(f"sequence {seq}: no keyframe among the selected frames (keyframes: {cadence})")
    out = [
        _frame(seq, seq_dir, f, f in key_ids, float(times[f]), T_w_c0[f] @ T_c0_e, cal, lst, sel) for f in ids
    ]
    smeta = {
        "sequence": seq,
        "poses": str(pose_path),
        "camera_height_m": h,
        "T_ego_from_cam0": T_ego_from_cam0(h).tolist(),
        "T_ego_from_velo": None if cal.T_ego_from_velo is None else cal.T_ego_from_velo.tolist(),
        "keyframes": cadence,
    }
    return Scene(name=seq, frames=out, meta=smeta)


def _open_sequence(
    pykitti, base: Path, seq: str, pose_path: Path | None
) -> tuple[Path, np.ndarray, np.ndarray]:
    """(sequence directory, times <np.float64: N> s, T_world_from_cam0 <np.float64: N, 4, 4>), checked."""
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
    return seq_dir, times, T_w_c0


def _keyframe_ids(sel: _Selection, seq_dir: Path, vox_l: set[str], n_frames: int) -> tuple[set[int], str]:
    """(keyframe ids, the cadence in words): the voxel files' frames, or every ``keyframe_every``-th."""
    if sel.keyframes == "auto" and (seq_dir / "voxels").is_dir():
        key_ids = {
            int(n.split(".")[0])
            for n in vox_l
            if n.endswith((".bin", ".label")) and n.split(".")[0].isdigit()
        }
        return key_ids, "voxels/"
    return set(range(0, n_frames, sel.keyframe_every)), f"every {sel.keyframe_every}th frame"


def _frame(
    seq: str, seq_dir: Path, f: int, key: bool, t: float, T_we: np.ndarray, cal: _Calib, lst: _Listings, sel
) -> Frame:
    """Frame ``f`` of a sequence: its images, LiDAR scan, and (keyframes) voxel and Occ3D ground truth."""
    name = f"{f:06d}"
    meta: dict[str, Any] = {"sequence": seq, "frame": f}
    images = {f"cam{i}": _image(seq, seq_dir, f, i, cal, lst, sel.check) for i in sel.cams}
    if key:
        vox = {e: str(seq_dir / "voxels" / f"{name}.{e}") for e in ("label", "invalid", "occluded", "bin")
               if f"{name}.{e}" in lst.voxels}  # fmt: skip
        if vox:
            meta["semantickitti_voxels"] = vox
    velo = cal.T_ego_from_velo is not None and f"{name}.bin" in lst.velodyne
    occ = None
    if key and sel.gts_dir is not None:
        p = sel.gts_dir / seq / f"{seq}_{name}" / "labels.npz"
        occ = p if p.is_file() else None
    return Frame(
        token=f"{seq}_{name}",
        timestamp=t,
        keyframe=key,
        T_world_from_ego=T_we,
        images=images,
        lidar_path=seq_dir / "velodyne" / f"{name}.bin" if velo else None,
        occupancy_path=occ,
        T_ego_from_lidar=cal.T_ego_from_velo if velo else None,
        meta=meta,
    )


def _image(seq: str, seq_dir: Path, f: int, i: int, cal: _Calib, lst: _Listings, check: bool) -> CameraImage:
    """Camera ``i``'s image of frame ``f``, with its depth / semantics ground truth when present."""
    name = f"{f:06d}"
    rel = f"image_{i}/{name}.png"
    if check and rel.split("/")[1] not in lst.images[i]:
        raise DatasetError(f"sequence {seq}, frame {f}, camera cam{i}: file not found: {seq_dir / rel}")
    dp = next(
        (seq_dir / f"depth_{i}" / (name + e) for e in (".npy", ".png") if name + e in lst.depth[i]),
        None,
    )
    sp = seq_dir / f"semantics_{i}" / (name + ".png") if name + ".png" in lst.semantics[i] else None
    return CameraImage(
        camera=f"cam{i}",
        path=seq_dir / rel,
        rel_path=f"sequences/{seq}/{rel}",
        K=cal.K[i],
        T_ego_from_cam=cal.T_ego_from_cam[i],
        depth_path=dp,
        semantics_path=sp,
        meta={"frame": f},
    )


__all__ = [
    "CAMERA_HEIGHT_M",
    "LEARNING_MAP",
    "R_EGO_FROM_CV",
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
