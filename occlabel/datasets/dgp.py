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

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import is_rigid
from occlabel.datasets.base import (
    CameraImage,
    Dataset,
    Frame,
    Scene,
)
from occlabel.datasets.dgp_depth import default_depth_dir, depth_file, write_lidar_depth
from occlabel.datasets.dgp_format import (
    BOUNDING_BOX_3D,
    option_names,
    parse_scene,
    parse_timestamp_us,
    pose_matrix,
    read_json,
    resolve_root,
)
from occlabel.errors import DatasetError

log = logging.getLogger(__name__)


def _scene_names(value: Any, available: list[str]) -> list[str] | None:
    """Requested scene names; a number (YAML reads scenes=150 as one) names the zero-padded ``000150``."""
    raw = value if isinstance(value, list | tuple) else [value] if isinstance(value, int) else None
    names = option_names(value, "scenes")
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
    names = option_names(value, "cameras")
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
    base, files, index_name = resolve_root(root, index, split)
    docs = [(f, read_json(f, "DGP scene")) for f in files]
    names = {}
    for f, _ in docs:
        name = f.parent.name
        if name in names.values():
            name = f"{name}-{f.stem.removeprefix('scene_')[:8]}"
        names[f] = name
    wanted = _scene_names(scenes, list(names.values()))
    if wanted is not None:
        docs = [(f, d) for f, d in docs if names[f] in wanted]
    parsed = [parse_scene(f, d, names[f], base) for f, d in docs]
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


@dataclass
class _SceneFiles:
    """Where one scene's files are: its directory, the dataset base (``rel_path``s are relative to it),
    whether image files are checked (one listing per directory, cached), and the LiDAR depth directory."""

    scene_dir: Path
    base: Path
    check: bool
    depth_dir: Path | None
    listing: dict[Path, set[str]] = field(default_factory=dict)

    def require(self, path: Path, where: str) -> None:
        """A DatasetError naming ``where`` when checking files and ``path`` is not there."""
        if not self.check:
            return
        d_ = path.parent
        if d_ not in self.listing:
            self.listing[d_] = {q.name for q in d_.iterdir()} if d_.is_dir() else set()
        if path.name not in self.listing[d_]:
            raise DatasetError(f"{where}: file not found: {path}")


@dataclass(frozen=True)
class _Lidar:
    """A sample's point cloud: the ego pose it gives, its file, extrinsic and the frame meta it adds.

    Attributes:
        T_world_from_ego: <np.float64: 4, 4> at the sweep's time. path: the scan file.
        T_ego_from_lidar: <np.float64: 4, 4>. meta: lidar name, datum key, time (s), point format, boxes.
    """

    T_world_from_ego: np.ndarray
    path: Path
    T_ego_from_lidar: np.ndarray
    meta: dict[str, Any]


def _build_scene(
    p: dict[str, Any], cams: list[str], base: Path, check: bool, depth_dir: Path | None
) -> Scene:
    """The Scene of a parsed scene (``parse_scene``): one keyframe per sample that has a selected camera."""
    files = _SceneFiles(scene_dir=p["path"].parent, base=base, check=check, depth_dir=depth_dir)
    frames = []
    for s in p["samples"]:
        where = f"scene {p['name']}, sample at {s['t_us']} us"
        lidar = next(((n, d) for n, (k, d) in s["datums"].items() if k == "point_cloud"), None)
        images = {c: _image(p, s, c, where, files, lidar) for c in cams if c in s["datums"]}
        if not images:
            continue
        meta: dict[str, Any] = {"scene": p["name"], "sample_index": s["index"]}
        lidar_path, T_el = None, None
        if lidar is not None:
            pc = _lidar(p, s, lidar, where, files.scene_dir)
            T_we, lidar_path, T_el = pc.T_world_from_ego, pc.path, pc.T_ego_from_lidar
            meta.update(pc.meta)
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


def _image(p: dict, s: dict, c: str, where: str, files: _SceneFiles, lidar: tuple | None) -> CameraImage:
    """Camera ``c``'s image of sample ``s``: K, extrinsic, its own ego pose and time, the LiDAR depth file."""
    _, d = s["datums"][c]
    img = d["datum"]["image"]
    cal = s["calib"].get(c)
    if cal is None or cal["K"] is None:
        raise DatasetError(f"{where}: camera {c} has no intrinsics in calibration {s['calib_key']}")
    fn = img.get("filename")
    if not fn:
        raise DatasetError(f"{where}: camera {c} datum has no filename")
    path = files.scene_dir / fn
    files.require(path, f"{where}, camera {c}")
    T_wc = pose_matrix(img.get("pose"), f"{where}, camera {c} datum {d['key']}")
    T_ec = cal["T_body_from_sensor"]
    for T, what in ((T_wc, "pose"), (T_ec, "extrinsic")):
        if not is_rigid(T):
            raise DatasetError(f"{where}, camera {c}: {what} is not a rigid transform")
    base = files.base
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
    if files.depth_dir is not None and lidar is not None:
        im = replace(im, depth_path=depth_file(files.depth_dir, p["name"], im, lidar[1]["key"]))
    return im


def _lidar(p: dict, s: dict, lidar: tuple[str, dict], where: str, scene_dir: Path) -> _Lidar:
    """The point cloud datum ``lidar`` = (name, datum) of sample ``s`` (pose, file, 3D boxes)."""
    n, d = lidar
    pc = d["datum"]["point_cloud"]
    cal = s["calib"].get(n)
    if cal is None:
        raise DatasetError(f"{where}: point cloud {n} has no extrinsics in calibration {s['calib_key']}")
    T_el = cal["T_body_from_sensor"]
    T_we = pose_matrix(pc.get("pose"), f"{where}, point cloud {n} datum {d['key']}") @ np.linalg.inv(T_el)
    if not pc.get("filename"):
        raise DatasetError(f"{where}: point cloud {n} datum has no filename")
    t_l = parse_timestamp_us(d["id"]["timestamp"]) / 1e6
    meta = {"lidar": n, "lidar_datum_key": d["key"], "lidar_timestamp": t_l,
            "point_format": pc.get("point_format") or pc.get("point_fields") or []}  # fmt: skip
    boxes = pc.get("annotations", {}).get(str(BOUNDING_BOX_3D))
    if boxes:
        meta["boxes_3d"] = str(scene_dir / boxes)
        if p["ontology"] is not None:
            meta["boxes_ontology"] = str(p["ontology"])
    return _Lidar(T_world_from_ego=T_we, path=scene_dir / pc["filename"], T_ego_from_lidar=T_el, meta=meta)
