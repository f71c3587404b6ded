"""Dataset records: the one structure every adapter emits and every stage consumes.

scene -> frames (token, timestamp, keyframe?, ego pose) -> camera images (path, K, T_ego_from_cam,
optional per-image ego pose, optional ground truth). Stages never see a dataset's own objects.
All transforms follow occlabel.conventions (``T_a_from_b``, 4x4 float64).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
        lidar_path: optional LiDAR points, <float32: N, 3> in the ego frame (.npy).
        occupancy_path: optional ground-truth occupancy in the Occ3D labels.npz layout.
    """

    token: str
    timestamp: float
    keyframe: bool
    T_world_from_ego: np.ndarray
    images: dict[str, CameraImage] = field(default_factory=dict)
    lidar_path: Path | None = None
    occupancy_path: Path | None = None

    def T_world_from_cam(self, camera: str) -> np.ndarray:
        """Camera pose <np.float64: 4, 4>, using the image's own ego pose when it has one."""
        img = self.images[camera]
        T_we = img.T_world_from_ego if img.T_world_from_ego is not None else self.T_world_from_ego
        return T_we @ img.T_ego_from_cam


@dataclass(eq=False)
class Scene:
    """A temporally ordered sequence of frames (one drive segment)."""

    name: str
    frames: list[Frame]

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
