"""LiDAR ground truth of the ``dgp`` adapter: per-image LiDAR depth maps and 3D boxes in the ego frame.

Depth (what ``CameraImage.depth_path`` of a DGP image names; ``occlabel evaluate CACHE.zarr`` and the
oracle depth read it through ``load_depth_m``): the sample's point cloud, mapped to the world with its own
pose (sensor -> world at the sweep's time) and into the camera with the image's (at the exposure), so the
ego motion between sweep and exposure (~40-90 ms on DDAD) is accounted for, as dgp's
``generate_depth_from_datum``. Each return lands on the pixel whose centre is nearest its projection
(pixel centres at integer coordinates, occlabel.conventions); the nearest return wins a pixel. Returns
closer than ``MIN_DEPTH_M`` or beyond what the file can hold are dropped. No occlusion filtering: where
the LiDAR sees past an edge the camera does not, a background return can sit on a foreground pixel (as in
KITTI's raw projected depth). Files: ``<depth_dir>/<scene>/<camera>/<image stem>_<hash>.png``, uint16
metres * 256 (4 mm steps, up to 255.99 m; 0 = none); the hash covers the datum keys, the calibration key
and ``DEPTH_VERSION``, so a changed dataset never reuses a stale map. Maps are written once, when a load
finds them missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from occlabel.datasets.base import CameraImage, Frame, Scene, load_lidar_points
from occlabel.errors import DatasetError

log = logging.getLogger(__name__)

DEPTH_VERSION = 1
MIN_DEPTH_M = 0.1
MAX_DEPTH_M = 65535 / 256.0


# --------------------------------------------------------------------------------------------------
# Geometry (pure numpy)
# --------------------------------------------------------------------------------------------------


def project_depth(points_cam: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sparse depth map of points seen by a pinhole camera: the nearest point per pixel.

    Args:
        points_cam: <float: N, 3> points in the camera frame (OpenCV: x right, y down, z forward).
        K: <float: 3, 3> intrinsics of the ``width`` x ``height`` image.
    Returns:
        <np.float32: height, width> depth along the optical axis (metres), 0 where no point lands.
    """
    p = np.asarray(points_cam, np.float64)
    z = p[:, 2]
    keep = np.isfinite(p).all(1) & (z > MIN_DEPTH_M) & (z < MAX_DEPTH_M)
    p, z = p[keep], z[keep]
    uvw = p @ np.asarray(K, np.float64).T
    u = np.rint(uvw[:, 0] / z).astype(np.int64)
    v = np.rint(uvw[:, 1] / z).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, z = u[inside], v[inside], z[inside]
    out = np.zeros(height * width, np.float32)
    order = np.argsort(-z)  # far first: the nearest point is written last and wins
    out[v[order] * width + u[order]] = z[order]
    return out.reshape(height, width)


def lidar_in_camera(
    points_lidar: np.ndarray, T_world_from_lidar: np.ndarray, T_world_from_cam: np.ndarray
) -> np.ndarray:
    """<np.float64: N, 3> points of the LiDAR frame (at the sweep's time) in the camera frame (exposure)."""
    T = np.linalg.inv(np.asarray(T_world_from_cam, np.float64)) @ np.asarray(T_world_from_lidar, np.float64)
    return np.asarray(points_lidar, np.float64)[:, :3] @ T[:3, :3].T + T[:3, 3]


# --------------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------------


def default_depth_dir(base: Path) -> Path:
    """``$XDG_CACHE_HOME/occlabel/dgp_depth/<dataset directory name>-<hash of its path>``."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = hashlib.sha1(str(base).encode()).hexdigest()[:10]
    return cache / "occlabel" / "dgp_depth" / f"{base.name or 'root'}-{tag}"


def depth_file(depth_dir: Path, scene: str, image: CameraImage, lidar_key: str) -> Path:
    """Where the LiDAR depth of ``image`` goes (see the module docstring)."""
    key = f"{image.meta['datum_key']}|{lidar_key}|{image.meta['calibration_key']}|{DEPTH_VERSION}"
    h = hashlib.sha1(key.encode()).hexdigest()[:10]
    return depth_dir / scene / image.camera / f"{Path(image.rel_path).stem}_{h}.png"


def _image_size(image: CameraImage) -> tuple[int, int]:
    w, h = image.meta.get("image_size") or (None, None)
    return (int(w), int(h)) if w and h else image.size()


def _write_png(path: Path, depth_m: np.ndarray) -> None:
    """uint16 metres * 256, written atomically (a concurrent or killed writer never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    q = np.clip(np.rint(depth_m * 256.0), 0, 65535).astype(np.uint16)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    os.close(fd)
    try:
        Image.fromarray(q).save(tmp, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep a shared depth_dir from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_lidar_depth(scene: Scene) -> int:
    """Write every missing LiDAR depth map the scene's images name (``depth_path``); returns how many."""
    todo: list[tuple[Frame, list[CameraImage]]] = []
    for f in scene.frames:
        ims = [im for im in f.images.values() if im.depth_path is not None and not im.depth_path.is_file()]
        if ims:
            todo.append((f, ims))
    if not todo:
        return 0
    t0, n = time.perf_counter(), 0
    for f, ims in todo:
        pts = load_lidar_points(f.lidar_path)  # the LiDAR's own frame
        T_wl = f.T_world_from_ego @ f.T_ego_from_lidar
        for im in ims:
            w, h = _image_size(im)
            d = project_depth(lidar_in_camera(pts, T_wl, f.T_world_from_cam(im.camera)), im.K, w, h)
            try:
                _write_png(im.depth_path, d)
            except OSError as e:
                raise DatasetError(
                    f"cannot write LiDAR depth {im.depth_path} ({e}); set depth_dir=DIR"
                ) from None
            n += 1
    log.info("dgp scene %s: wrote %d LiDAR depth maps in %.1f s", scene.name, n, time.perf_counter() - t0)
    return n


# --------------------------------------------------------------------------------------------------
# 3D boxes
# --------------------------------------------------------------------------------------------------


def read_boxes_3d(frame: Frame) -> list[dict[str, Any]]:
    """The 3D boxes of a DGP frame's point cloud (``frame.meta["boxes_3d"]``), in the frame's ego frame.

    Returns a list of {"class_id", "class_name" (from the scene's ontology, or None), "instance_id",
    "T_ego_from_box" <np.float64: 4, 4> (box centre; box axes: x along ``length``, y along ``width``,
    z up along ``height``), "size_m" <np.float64: 3> (length, width, height), "num_points"}; [] when the
    frame has no boxes.
    """
    from occlabel.datasets.dgp import pose_matrix

    path = frame.meta.get("boxes_3d")
    if not path:
        return []
    names = {}
    if frame.meta.get("boxes_ontology"):
        try:
            items = json.loads(Path(frame.meta["boxes_ontology"]).read_text()).get("items", [])
            names = {int(it.get("id", 0)): it.get("name") for it in items}
        except (OSError, ValueError, AttributeError) as e:
            raise DatasetError(f"{frame.meta['boxes_ontology']}: cannot read ontology ({e})") from None
    try:
        anns = json.loads(Path(path).read_text()).get("annotations", [])
    except (OSError, ValueError, AttributeError) as e:
        raise DatasetError(f"{path}: cannot read 3D boxes ({e})") from None
    T_el = frame.T_ego_from_lidar if frame.T_ego_from_lidar is not None else np.eye(4)
    out = []
    for i, a in enumerate(anns):
        box = a.get("box", {})
        cid = int(a.get("class_id", 0))
        out.append(
            {
                "class_id": cid,
                "class_name": names.get(cid),
                "instance_id": int(a.get("instance_id", 0)),
                "T_ego_from_box": T_el @ pose_matrix(box.get("pose"), f"{path}: box {i}"),
                "size_m": np.array([float(box.get(k, 0.0)) for k in ("length", "width", "height")]),
                "num_points": int(a.get("num_points", 0)),
            }
        )
    return out
