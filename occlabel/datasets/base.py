"""Dataset records: the one structure every adapter emits and every stage consumes.

scene -> frames (token, timestamp, keyframe?, ego pose) -> camera images (path, K, T_ego_from_cam,
optional per-image ego pose, optional ground truth). Stages never see a dataset's own objects.
All transforms follow occlabel.conventions (``T_a_from_b``, 4x4 float64).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from occlabel.errors import DatasetError


@dataclass(frozen=True, eq=False)
class CameraImage:
    """One camera image of a frame.

    Attributes:
        camera: camera name, e.g. "CAM_FRONT".
        path: absolute path of the image file.
        rel_path: path relative to the dataset root (keys caches and imported results).
        K: intrinsics <np.float64: 3, 3> for the image at its native resolution.
        T_ego_from_cam: <np.float64: 4, 4> camera (OpenCV) to ego.
        T_world_from_ego: <np.float64: 4, 4> ego pose at this image's own timestamp, or None to use the
            frame's pose.
        depth_path: optional ground-truth depth (.npy float32 metres or .png uint16 metres*256).
        semantics_path: optional ground-truth 2D semantics (.png or .npy uint8, conventions' 2D labels).
        timestamp: optional timestamp of this image in seconds (None: the frame's).
        meta: dataset-specific identifiers, JSON-able (nuScenes ``sample_data_token``, KITTI ``frame``);
            never used by the stages.
    """

    camera: str
    path: Path
    rel_path: str
    K: np.ndarray
    T_ego_from_cam: np.ndarray
    T_world_from_ego: np.ndarray | None = None
    depth_path: Path | None = None
    semantics_path: Path | None = None
    timestamp: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def size(self) -> tuple[int, int]:
        """(width, height) of the image in pixels, read from the file header."""
        try:
            with Image.open(self.path) as im:
                return im.size
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path}: cannot read image ({e})") from None


@dataclass(eq=False)
class Frame:
    """One instant of a scene (all cameras).

    Attributes:
        token: unique id of the frame within the dataset (nuScenes sample token for keyframes).
        timestamp: seconds.
        keyframe: whether labels are produced for this frame.
        T_world_from_ego: <np.float64: 4, 4> ego pose.
        images: camera name -> CameraImage.
        lidar_path: optional LiDAR sweep at the frame's time: ``.npy`` <float32: N, 3> (or N x >=3) points,
            or a dataset's own scan file (nuScenes ``.pcd.bin`` float32 N x 5, KITTI velodyne ``.bin``
            float32 N x 4, DGP ``.npz`` key ``data``); read with :func:`load_lidar_points`.
        T_ego_from_lidar: <np.float64: 4, 4> LiDAR to ego frame, or None when ``lidar_path`` holds points
            already in the ego frame.
        occupancy_path: optional ground-truth occupancy in the Occ3D labels.npz layout, on the ``occ3d``
            grid in this frame's ego frame (what ``occlabel evaluate`` reads).
        meta: dataset-specific identifiers and references, JSON-able or paths (nuScenes
            ``sample_token``, KITTI ``frame`` and SemanticKITTI voxel files); never used by the stages.
    """

    token: str
    timestamp: float
    keyframe: bool
    T_world_from_ego: np.ndarray
    images: dict[str, CameraImage] = field(default_factory=dict)
    lidar_path: Path | None = None
    occupancy_path: Path | None = None
    T_ego_from_lidar: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def T_world_from_cam(self, camera: str) -> np.ndarray:
        """Camera pose <np.float64: 4, 4>, using the image's own ego pose when it has one."""
        img = self.images[camera]
        T_we = img.T_world_from_ego if img.T_world_from_ego is not None else self.T_world_from_ego
        return T_we @ img.T_ego_from_cam


@dataclass(eq=False)
class Scene:
    """A temporally ordered sequence of frames (one drive segment).

    Attributes:
        name: unique scene name (nuScenes ``scene-0061``, KITTI sequence ``08``).
        frames: frames in increasing timestamp order.
        meta: dataset-specific facts, JSON-able (nuScenes scene token and log, KITTI sensor transforms).
    """

    name: str
    frames: list[Frame]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def cameras(self) -> list[str]:
        """Camera names present in any frame, in first-seen order."""
        seen: dict[str, None] = {}
        for f in self.frames:
            for c in f.images:
                seen.setdefault(c, None)
        return list(seen)

    @property
    def keyframe_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.frames) if f.keyframe]

    def image_size(self, camera: str) -> tuple[int, int]:
        """(width, height) of ``camera``'s images: the first one whose header reads (an unreadable image is
        skipped here and reported by the stage that reads it).

        Raises:
            DatasetError: no image of the camera can be read.
        """
        errors = []
        for f in self.frames:
            im = f.images.get(camera)
            if im is None:
                continue
            try:
                return im.size()
            except DatasetError as e:
                errors.append(str(e))
                if len(errors) >= 20:
                    break
        detail = f" (first: {errors[0]})" if errors else ""
        raise DatasetError(f"scene {self.name!r}: no readable image of camera {camera!r}{detail}")


@dataclass(eq=False)
class Dataset:
    """A loaded dataset: where it came from and its scenes.

    Attributes:
        kind: adapter name ("folder", "nuscenes", ...).
        root: dataset root directory.
        scenes: the scenes, in dataset order.
        options: adapter options needed to reopen it (recorded in stores' provenance).
    """

    kind: str
    root: Path
    scenes: list[Scene]
    options: dict = field(default_factory=dict)

    def scene(self, name: str) -> Scene:
        for s in self.scenes:
            if s.name == name:
                return s
        raise DatasetError(f"scene {name!r} not in dataset {self.root} (has: {', '.join(self.names())})")

    def names(self) -> list[str]:
        return [s.name for s in self.scenes]

    def select(self, names: list[str] | None) -> list[Scene]:
        """The scenes named (all when ``names`` is None or empty), in dataset order."""
        if not names:
            return list(self.scenes)
        for n in names:
            self.scene(n)
        keep = set(names)
        return [s for s in self.scenes if s.name in keep]


# --------------------------------------------------------------------------------------------------
# Readers for the files records point at (I/O only; no geometry)
# --------------------------------------------------------------------------------------------------


def load_image(path: Path) -> np.ndarray:
    """An image as <np.uint8: H, W, 3> RGB (grey images are repeated to 3 channels)."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None


def load_depth_m(path: Path) -> np.ndarray:
    """Ground-truth depth as <np.float32: H, W> metres with NaN where there is no value.

    Accepts .npy (float metres; 0 or NaN = none) and .png (uint16 metres * 256, KITTI style; 0 = none).
    """
    path = Path(path)
    try:
        if path.suffix == ".npy":
            d = np.load(path).astype(np.float32)
        elif path.suffix == ".png":
            with Image.open(path) as im:
                d = np.asarray(im, dtype=np.float32) / 256.0
        else:
            raise DatasetError(f"{path}: depth must be .npy (metres) or .png (uint16 metres*256)")
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read depth ({e})") from None
    if d.ndim != 2:
        raise DatasetError(f"{path}: depth must be 2D (H, W), got shape {d.shape}")
    d[~(d > 0)] = np.nan
    return d


def load_semantics(path: Path) -> np.ndarray:
    """2D semantics as <np.uint8: H, W> (class ids, conventions.SKY, conventions.UNLABELED)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            s = np.load(path)
        else:
            with Image.open(path) as im:
                s = np.asarray(im)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read semantics ({e})") from None
    if s.ndim != 2:
        raise DatasetError(f"{path}: semantics must be a single-channel (H, W) map, got shape {s.shape}")
    return s.astype(np.uint8)


def load_occupancy(path: Path) -> dict[str, np.ndarray]:
    """Occ3D-layout ground truth: {"semantics": uint8 (X,Y,Z), "mask_camera": bool, "mask_lidar": bool}."""
    try:
        with np.load(path) as z:
            out = {"semantics": z["semantics"].astype(np.uint8)}
            for k in ("mask_camera", "mask_lidar"):
                out[k] = z[k].astype(bool) if k in z else np.ones_like(out["semantics"], bool)
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{path}: cannot read occupancy labels.npz ({e})") from None
    return out


def load_lidar_points(path: Path, T_ego_from_lidar: np.ndarray | None = None) -> np.ndarray:
    """A LiDAR sweep as <np.float32: N, 3> points in the ego frame (of the sweep's time).

    Accepts ``.npy`` (float N x >=3, x y z first), nuScenes ``.pcd.bin`` (float32 N x 5: x, y, z,
    intensity, ring), KITTI velodyne ``.bin`` (float32 N x 4: x, y, z, reflectance) and DGP ``.npz``
    (key ``data``: N x >=3, x y z first). Points are mapped
    through ``T_ego_from_lidar`` <float: 4, 4> when given (None: they are in the ego frame already).
    """
    path = Path(path)
    try:
        if path.suffix == ".npy":
            pts = np.load(path)
        elif path.suffix == ".npz":
            with np.load(path) as z:
                pts = z["data"]
        elif path.name.endswith(".pcd.bin"):
            pts = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
        elif path.suffix == ".bin":
            pts = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
        else:
            raise DatasetError(
                f"{path}: LiDAR must be .npy, nuScenes .pcd.bin, KITTI velodyne .bin or DGP .npz"
            )
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{path}: cannot read LiDAR points ({e})") from None
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise DatasetError(f"{path}: LiDAR points must be N x 3 or wider, got shape {pts.shape}")
    xyz = pts[:, :3].astype(np.float64)
    if T_ego_from_lidar is not None:
        T = np.asarray(T_ego_from_lidar, np.float64)
        xyz = xyz @ T[:3, :3].T + T[:3, 3]
    return xyz.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Pose helpers shared by the adapters and the layout writers (pure numpy)
# --------------------------------------------------------------------------------------------------


def rotation_from_quaternion(q: np.ndarray | list[float]) -> np.ndarray:
    """Rotation matrix <np.float64: 3, 3> of a unit quaternion ``(w, x, y, z)`` (nuScenes, COLMAP order).

    The quaternion is normalised; check its norm before calling when a non-unit value is an error.
    """
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def quaternion_from_rotation(R: np.ndarray) -> np.ndarray:
    """Unit quaternion <np.float64: 4> ``(w, x, y, z)`` with ``w >= 0`` of a rotation <float: 3, 3>.

    A nearly orthonormal ``R`` is first projected onto the closest rotation (SVD).
    """
    U, _, Vt = np.linalg.svd(np.asarray(R, np.float64))
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    # Shepperd's method: pivot on the largest of w, x, y, z for accuracy
    tr = np.trace(R)
    cands = [tr, R[0, 0], R[1, 1], R[2, 2]]
    i = int(np.argmax(cands))
    if i == 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif i == 1:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif i == 2:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def rigid_transform(R: np.ndarray, t: np.ndarray | list[float]) -> np.ndarray:
    """The 4x4 transform <np.float64: 4, 4> ``[[R, t], [0, 0, 0, 1]]``."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T
