"""The `folder` dataset: any directory of posed images described by an ``occlabel.json`` manifest.

This is the format users bring their own data in, and the format the synthetic world writes. The
manifest is a contract (docs/datasets.md)::

    {"format": "occlabel.folder/1",
     "scenes": [{"name": "scene-0001",
                 "frames": [{"token": "f000", "timestamp": 0.0, "keyframe": true,
                             "T_world_from_ego": [[4x4]],
                             "images": {"CAM_FRONT": {"path": "images/CAM_FRONT/000000.jpg",
                                                      "K": [[3x3]], "T_ego_from_cam": [[4x4]],
                                                      "T_world_from_ego": [[4x4]],   (optional)
                                                      "timestamp": 0.01,              (optional)
                                                      "depth": "gt/depth/...npy",     (optional)
                                                      "semantics": "gt/sem/...png"}}, (optional)
                             "lidar": "lidar/000000.npy",          (optional)
                             "occupancy": "gt/occ/f000.npz"}]}]}   (optional)

Paths are relative to the dataset root. Loading validates everything and raises one DatasetError that
names the scene, frame and field at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import is_rigid
from occlabel.datasets.base import CameraImage, Dataset, Frame, Scene
from occlabel.errors import DatasetError

FORMAT = "occlabel.folder/1"
MANIFEST = "occlabel.json"


def _where(scene: str | None = None, frame: str | None = None, field: str | None = None) -> str:
    parts = []
    if scene is not None:
        parts.append(f"scene {scene!r}")
    if frame is not None:
        parts.append(f"frame {frame!r}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)


def _at(mpath: Path, scene: str, frame: str, field: str) -> str:
    return f"{mpath}: {_where(scene, frame, field)}"


def _at_image(mpath: Path, scene: str, frame: str, camera: str, field: str) -> str:
    return _at(mpath, scene, frame, f"images.{camera}.{field}")


def _matrix(value: Any, shape: tuple[int, int], where: str, rigid: bool = False) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: expected a {shape[0]}x{shape[1]} matrix of numbers") from None
    if m.shape != shape:
        raise DatasetError(
            f"{where}: expected shape {shape[0]}x{shape[1]}, got {'x'.join(map(str, m.shape)) or 'a scalar'}"
        )
    if not np.all(np.isfinite(m)):
        raise DatasetError(f"{where}: contains NaN or infinity")
    if rigid and not is_rigid(m):
        raise DatasetError(
            f"{where}: not a rigid transform (rotation must be orthonormal with det +1, last row 0 0 0 1)"
        )
    return m


def _intrinsics(value: Any, where: str) -> np.ndarray:
    K = _matrix(value, (3, 3), where)
    if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1]) and K[1, 0] == 0):
        raise DatasetError(
            f"{where}: not a pinhole intrinsic matrix [[fx,s,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0"
        )
    return K


def _file(root: Path, value: Any, where: str, check: bool) -> Path:
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{where}: expected a relative path string")
    p = root / value
    if check and not p.is_file():
        raise DatasetError(f"{where}: file not found: {p}")
    return p


def load_folder(root: str | Path, check_files: bool = True) -> Dataset:
    """Load and validate ``root/occlabel.json``.

    Args:
        root: dataset root directory.
        check_files: check that every referenced file exists (on by default).
    Raises:
        DatasetError: one line naming scene, frame and field of the first problem.
    """
    root = Path(root).expanduser().resolve()
    mpath = root / MANIFEST
    scenes_doc = _read_manifest(root, mpath)
    ctx = _Manifest(root=root, path=mpath, check=check_files)
    scenes: list[Scene] = []
    names: set[str] = set()
    for si, sd in enumerate(scenes_doc):
        sname = sd.get("name") if isinstance(sd, dict) else None
        if not isinstance(sname, str) or not sname or "/" in sname:
            raise DatasetError(f"{mpath}: scene #{si}: field 'name' must be a non-empty string without '/'")
        if sname in names:
            raise DatasetError(f"{mpath}: scene {sname!r} appears twice")
        names.add(sname)
        scenes.append(_scene(ctx, sname, sd))
    return Dataset(kind="folder", root=root, scenes=scenes, options={})


def _read_manifest(root: Path, mpath: Path) -> list:
    """The manifest's ``scenes`` list, after checking the file, its JSON and its ``format``."""
    if not mpath.is_file():
        raise DatasetError(f"{root}: no {MANIFEST} manifest (see docs/datasets.md for the folder format)")
    try:
        doc = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{mpath}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DatasetError(f"{mpath}: field 'format' must be {FORMAT!r}, got {got!r}")
    scenes_doc = doc.get("scenes")
    if not isinstance(scenes_doc, list) or not scenes_doc:
        raise DatasetError(f"{mpath}: field 'scenes' must be a non-empty list")
    return scenes_doc


@dataclass
class _Manifest:
    """What every scene of one manifest is read with: the root, the manifest's path (in error messages),
    whether files are checked, and the frame tokens seen so far (unique across scenes)."""

    root: Path
    path: Path
    check: bool
    tokens: set[str] = field(default_factory=set)

    def file(self, value: Any, where: str) -> Path:
        return _file(self.root, value, where, self.check)


def _scene(ctx: _Manifest, sname: str, sd: dict) -> Scene:
    """Scene ``sname`` of the manifest: its frames, in increasing time, at least one a keyframe."""
    mpath = ctx.path
    frames_doc = sd.get("frames")
    if not isinstance(frames_doc, list) or not frames_doc:
        raise DatasetError(f"{mpath}: {_where(sname, field='frames')}: must be a non-empty list")
    frames: list[Frame] = []
    for fi, fd in enumerate(frames_doc):
        frames.append(_frame(ctx, sname, fi, fd, frames[-1] if frames else None))
    if not any(f.keyframe for f in frames):
        raise DatasetError(
            f'{mpath}: {_where(sname)}: no frame has "keyframe": true (labels are made for keyframes)'
        )
    return Scene(name=sname, frames=frames)


def _frame(ctx: _Manifest, sname: str, fi: int, fd: Any, prev: Frame | None) -> Frame:
    """Frame #``fi`` of a scene (``prev``: the frame before it, whose timestamp it must exceed)."""
    mpath = ctx.path
    if not isinstance(fd, dict):
        raise DatasetError(f"{mpath}: {_where(sname, f'#{fi}')}: must be an object")
    token = fd.get("token")
    if not isinstance(token, str) or not token or "/" in token:
        raise DatasetError(
            f"{mpath}: {_where(sname, f'#{fi}', 'token')}: must be a non-empty string without '/'"
        )
    if token in ctx.tokens:
        raise DatasetError(f"{mpath}: {_where(sname, token, 'token')}: duplicate token")
    ctx.tokens.add(token)
    w = partial(_at, mpath, sname, token)
    ts = fd.get("timestamp")
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        raise DatasetError(f"{w('timestamp')}: must be a number (seconds)")
    if prev is not None and ts <= prev.timestamp:
        raise DatasetError(f"{w('timestamp')}: frames must be in increasing time order")
    key = fd.get("keyframe", False)
    if not isinstance(key, bool):
        raise DatasetError(f"{w('keyframe')}: must be true or false")
    if "T_world_from_ego" not in fd:
        raise DatasetError(f"{w('T_world_from_ego')}: missing")
    T_we = _matrix(fd["T_world_from_ego"], (4, 4), w("T_world_from_ego"), rigid=True)
    imgs_doc = fd.get("images")
    if not isinstance(imgs_doc, dict) or not imgs_doc:
        raise DatasetError(f"{w('images')}: must be a non-empty object camera -> image")
    images = {cam: _image(ctx, sname, token, cam, idoc) for cam, idoc in imgs_doc.items()}
    return Frame(
        token=token,
        timestamp=float(ts),
        keyframe=key,
        T_world_from_ego=T_we,
        images=images,
        lidar_path=ctx.file(fd["lidar"], w("lidar")) if fd.get("lidar") else None,
        occupancy_path=ctx.file(fd["occupancy"], w("occupancy")) if fd.get("occupancy") else None,
    )


def _image(ctx: _Manifest, sname: str, token: str, cam: str, idoc: Any) -> CameraImage:
    """Camera ``cam``'s image of a frame: path, K <3, 3>, T_ego_from_cam <4, 4>, the optional fields."""
    fw = partial(_at_image, ctx.path, sname, token, cam)
    if not isinstance(idoc, dict):
        raise DatasetError(f"{_at(ctx.path, sname, token, f'images.{cam}')}: must be an object")
    for req in ("path", "K", "T_ego_from_cam"):
        if req not in idoc:
            raise DatasetError(f"{fw(req)}: missing")
    its = idoc.get("timestamp")
    if its is not None and (not isinstance(its, int | float) or isinstance(its, bool)):
        raise DatasetError(f"{fw('timestamp')}: must be a number (seconds)")
    T_we = idoc.get("T_world_from_ego")
    return CameraImage(
        camera=cam,
        path=ctx.file(idoc["path"], fw("path")),
        rel_path=idoc["path"],
        K=_intrinsics(idoc["K"], fw("K")),
        T_ego_from_cam=_matrix(idoc["T_ego_from_cam"], (4, 4), fw("T_ego_from_cam"), rigid=True),
        T_world_from_ego=_matrix(T_we, (4, 4), fw("T_world_from_ego"), rigid=True)
        if T_we is not None
        else None,
        depth_path=ctx.file(idoc["depth"], fw("depth")) if idoc.get("depth") else None,
        semantics_path=ctx.file(idoc["semantics"], fw("semantics")) if idoc.get("semantics") else None,
        timestamp=float(its) if its is not None else None,
    )


def _rel(root: Path, p: Path | None) -> str | None:
    return None if p is None else Path(p).resolve().relative_to(root).as_posix()


def write_manifest(root: str | Path, scenes: list[Scene]) -> Path:
    """Write ``root/occlabel.json`` describing ``scenes`` (their files must lie under ``root``)."""
    root = Path(root).resolve()
    doc: dict[str, Any] = {"format": FORMAT, "scenes": []}
    for s in scenes:
        sd: dict[str, Any] = {"name": s.name, "frames": []}
        for f in s.frames:
            fd: dict[str, Any] = {
                "token": f.token,
                "timestamp": float(f.timestamp),
                "keyframe": bool(f.keyframe),
                "T_world_from_ego": np.asarray(f.T_world_from_ego).tolist(),
                "images": {},
            }
            for cam, im in f.images.items():
                idoc: dict[str, Any] = {
                    "path": _rel(root, im.path),
                    "K": np.asarray(im.K).tolist(),
                    "T_ego_from_cam": np.asarray(im.T_ego_from_cam).tolist(),
                }
                if im.T_world_from_ego is not None:
                    idoc["T_world_from_ego"] = np.asarray(im.T_world_from_ego).tolist()
                if im.timestamp is not None:
                    idoc["timestamp"] = float(im.timestamp)
                if im.depth_path is not None:
                    idoc["depth"] = _rel(root, im.depth_path)
                if im.semantics_path is not None:
                    idoc["semantics"] = _rel(root, im.semantics_path)
                fd["images"][cam] = idoc
            if f.lidar_path is not None:
                fd["lidar"] = _rel(root, f.lidar_path)
            if f.occupancy_path is not None:
                fd["occupancy"] = _rel(root, f.occupancy_path)
            sd["frames"].append(fd)
        doc["scenes"].append(sd)
    path = root / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path
