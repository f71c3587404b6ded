"""nuScenes options, scene and camera selection, and table readers: the ``nuscenes`` adapter up to scene
building (occlabel.datasets.nuscenes builds the records; its docstring lists every option and field).

The devkit (extra ``occlabel[nuscenes]``) is imported only here, on first use.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.datasets.base import rigid_transform, rotation_from_quaternion
from occlabel.errors import DatasetError

VERSIONS = ("v1.0-mini", "v1.0-trainval", "v1.0-test")
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
LIDAR = "LIDAR_TOP"
DEPTH_FIELD = "occlabel_depth"
SEMANTICS_FIELD = "occlabel_semantics"


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


def tables_dir(root: Path, version: Any) -> Path:
    """``<root>/<version>``, the directory of the nuScenes tables; a one-line DatasetError when absent."""
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
    return tables


def parse_options(
    scenes: Any, cameras: Any, split: str | None, check_files: Any, create_splits_scenes
) -> tuple[list[str] | None, list[str]]:
    """(scene names or None, camera channels) of the options; checks ``split`` and ``check_files``."""
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
    return scene_filter, cams


def open_tables(NuScenes, version: str, root: Path, tables: Path):
    """The devkit's ``NuScenes`` database (its prints silenced); a one-line DatasetError when it fails."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, OSError, KeyError, ValueError, IndexError, TypeError) as e:
        raise DatasetError(f"{tables}: cannot load the nuScenes tables ({type(e).__name__}: {e})") from None


def select_scenes(
    nusc, version: str, split: str | None, scene_filter: list[str] | None, tables: Path, create_splits_scenes
) -> tuple[dict[str, dict], list[str]]:
    """(scene name -> scene record, the names to load in table order) of the split and ``scenes`` option."""
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
    return by_name, names


def select_cameras(nusc, cams: list[str], cameras: Any, tables: Path) -> list[str]:
    """The requested channels the sensor table has (an explicitly named absent one is an error)."""
    channels = {s["channel"]: s["modality"] for s in nusc.sensor}
    absent = [c for c in cams if c not in channels]
    if absent and cameras is not None:
        raise DatasetError(
            f"{tables}: camera {absent[0]!r} not in the sensor table (has: {', '.join(channels)})"
        )
    cams = [c for c in cams if c in channels]
    if not cams:
        raise DatasetError(f"{tables}: no camera channel in the sensor table")
    return cams


def resolve_sweeps(sweeps: Any, root: Path, cams: list[str]) -> bool:
    """The ``sweeps`` option as a bool ("auto": a ``sweeps/<camera>/`` directory exists)."""
    if sweeps == "auto":
        return any((root / "sweeps" / c).is_dir() for c in cams)
    if not isinstance(sweeps, bool):
        raise DatasetError(f"nuscenes option 'sweeps': expected true, false or auto, got {sweeps!r}")
    return sweeps
