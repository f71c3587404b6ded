"""Write an occlabel folder dataset (``occlabel.json``) from a COLMAP reconstruction's text model.

    python examples/colmap_to_occlabel.py --root /data/myrun --model /data/myrun/sparse/0 --scale 0.87

COLMAP gives, per image, ``T_cam_from_world`` as a quaternion (QW QX QY QZ) and a translation (TX TY TZ)
in ``images.txt``, and the intrinsics in ``cameras.txt``; its camera frame is OpenCV's (x right, y down,
z forward), like occlabel's. What COLMAP does not give, and this script sets:

- **metric scale**: a reconstruction is up to scale; ``--scale`` is metres per COLMAP unit (measure one
  known distance, or divide the true camera height by the reconstructed one).
- **the ego frame**: at the ground under the reference camera (``--ref-camera``, default the camera with
  the most images): origin ``--camera-height`` metres below its centre, x forward along its optical axis,
  y left, z up (the camera is assumed level, like a car's front camera).
- **the rig**: images named ``<camera>/<frame>.<ext>`` (one sub-folder per camera) are grouped into frames
  by ``<frame>``; each other camera's mounting ``T_ref_from_cam`` is the average over the frames where
  both appear of ``inv(T_world_from_ref) @ T_world_from_cam``. Every image keeps its own COLMAP pose as
  its per-image ``T_world_from_ego``. Flat names (no sub-folder) make a single camera ``CAM_FRONT``.
- **time**: ``frame index / --fps`` seconds; every ``--keyframe-every``-th frame is a keyframe.

Pixel convention: COLMAP puts the centre of the top-left pixel at (0.5, 0.5), occlabel at (0, 0), so
``cx = cx_colmap - 0.5`` and ``cy = cy_colmap - 0.5``. Only undistorted pinhole models are accepted
(SIMPLE_PINHOLE, PINHOLE); run ``colmap image_undistorter`` first for the others.

Image paths in ``images.txt`` are relative to ``--image-dir`` (relative to ``--root``, default
``images``). The manifest is validated by loading it back (``occlabel.datasets.folder.load_folder``).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np

from occlabel.datasets.base import quaternion_from_rotation, rigid_transform, rotation_from_quaternion
from occlabel.datasets.folder import FORMAT, MANIFEST, load_folder
from occlabel.errors import OccLabelError

#: OpenCV camera axes in the ego frame (x forward, y left, z up) for a level, forward-looking camera
R_EGO_FROM_CV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


def read_cameras(path: Path) -> dict[int, dict]:
    """cameras.txt -> {camera_id: {"model", "width", "height", "K" <np.float64: 3, 3>}} (K in occlabel's
    pixel-centre convention)."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        cid, model, w, h, p = int(f[0]), f[1], int(f[2]), int(f[3]), [float(v) for v in f[4:]]
        if model not in PINHOLE_MODELS:
            raise OccLabelError(
                f"{path}: line {n}: camera {cid} uses the {model} model (distortion); undistort first "
                "(colmap image_undistorter) so that cameras are SIMPLE_PINHOLE or PINHOLE"
            )
        fx, fy, cx, cy = (p[0], p[0], p[1], p[2]) if model == "SIMPLE_PINHOLE" else p[:4]
        K = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])
        out[cid] = {"model": model, "width": w, "height": h, "K": K}
    return out


def read_images(path: Path) -> list[dict]:
    """images.txt -> [{"name", "camera_id", "T_world_from_cam" <np.float64: 4, 4> (COLMAP units)}].

    Each image takes two lines (pose line, then its 2D points); the second is skipped.
    """
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    out = []
    for i in range(0, len(lines), 2):
        f = lines[i].split()
        if not f:
            continue
        q = np.array([float(v) for v in f[1:5]])
        t = np.array([float(v) for v in f[5:8]])
        T_cam_from_world = rigid_transform(rotation_from_quaternion(q), t)
        out.append(
            {
                "name": " ".join(f[9:]),
                "camera_id": int(f[8]),
                "T_world_from_cam": np.linalg.inv(T_cam_from_world),
            }
        )
    return out


def mean_rigid(Ts: list[np.ndarray]) -> np.ndarray:
    """Average of rigid transforms <np.float64: 4, 4>: chordal mean of the rotations, mean translation."""
    U, _, Vt = np.linalg.svd(np.mean([T[:3, :3] for T in Ts], 0))
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    return rigid_transform(R, np.mean([T[:3, 3] for T in Ts], 0))


def convert(
    root: Path,
    model: Path,
    image_dir: str = "images",
    scale: float = 1.0,
    camera_height: float = 1.5,
    fps: float = 10.0,
    keyframe_every: int = 5,
    ref_camera: str | None = None,
    scene: str = "colmap",
) -> Path:
    """Write ``root/occlabel.json`` from ``model/{cameras,images}.txt`` (see the module docstring)."""
    root = Path(root).resolve()
    cams = read_cameras(Path(model) / "cameras.txt")
    imgs = read_images(Path(model) / "images.txt")
    if not imgs:
        raise OccLabelError(f"{model}/images.txt: no images")
    by_frame: dict[str, dict[str, dict]] = {}
    for im in imgs:
        p = PurePosixPath(im["name"])
        cam = p.parent.name if p.parent.name else "CAM_FRONT"
        im["T_world_from_cam"][:3, 3] *= scale
        by_frame.setdefault(p.stem, {})[cam] = im
    counts = Counter(c for f in by_frame.values() for c in f)
    ref = ref_camera or counts.most_common(1)[0][0]
    if ref not in counts:
        raise OccLabelError(f"--ref-camera {ref!r} has no image (cameras: {', '.join(counts)})")
    T_ego_from_ref = rigid_transform(R_EGO_FROM_CV, [0.0, 0.0, camera_height])
    T_ego_from_cam = {ref: T_ego_from_ref}
    for c in counts:
        if c == ref:
            continue
        pairs = [
            np.linalg.inv(f[ref]["T_world_from_cam"]) @ f[c]["T_world_from_cam"]
            for f in by_frame.values()
            if ref in f and c in f
        ]
        if not pairs:
            raise OccLabelError(f"camera {c!r} never appears in a frame with the reference camera {ref!r}")
        T_ego_from_cam[c] = T_ego_from_ref @ mean_rigid(pairs)

    frames = []
    for i, key in enumerate(sorted(by_frame)):
        group = by_frame[key]
        images = {}
        for c, im in sorted(group.items()):
            rel = (PurePosixPath(image_dir) / im["name"]).as_posix()
            T_world_from_ego = im["T_world_from_cam"] @ np.linalg.inv(T_ego_from_cam[c])
            images[c] = {
                "path": rel,
                "K": cams[im["camera_id"]]["K"].tolist(),
                "T_ego_from_cam": T_ego_from_cam[c].tolist(),
                "T_world_from_ego": T_world_from_ego.tolist(),
            }
        first = ref if ref in group else sorted(group)[0]
        frames.append(
            {
                "token": f"{scene}-{key}",
                "timestamp": i / fps,
                "keyframe": i % keyframe_every == 0,
                "T_world_from_ego": images[first]["T_world_from_ego"],
                "images": images,
            }
        )
    doc = {"format": FORMAT, "scenes": [{"name": scene, "frames": frames}]}
    (root / MANIFEST).write_text(json.dumps(doc, indent=1))
    load_folder(root)  # validate: one line naming the frame and field of any problem
    return root / MANIFEST


def write_colmap_text(
    model: Path, cameras: dict[int, tuple[str, int, int, list[float]]], images: list[dict]
) -> None:
    """Write a COLMAP text model (for tests and demos): ``images`` items hold "name", "camera_id",
    "T_world_from_cam" <4, 4>; points3D.txt is left empty."""
    model.mkdir(parents=True, exist_ok=True)
    (model / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n"
        + "".join(
            f"{cid} {m} {w} {h} {' '.join(repr(float(v)) for v in p)}\n"
            for cid, (m, w, h, p) in cameras.items()
        )
    )
    lines = ["# Image list with two lines of data per image:"]
    for i, im in enumerate(images, 1):
        T = np.linalg.inv(im["T_world_from_cam"])
        q = quaternion_from_rotation(T[:3, :3])
        vals = " ".join(repr(float(v)) for v in [*q, *T[:3, 3]])
        lines += [f"{i} {vals} {im['camera_id']} {im['name']}", ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, type=Path, help="dataset root (occlabel.json is written here)")
    ap.add_argument("--model", required=True, type=Path, help="COLMAP text model (cameras.txt, images.txt)")
    ap.add_argument("--image-dir", default="images", help="image folder relative to --root")
    ap.add_argument("--scale", type=float, default=1.0, help="metres per COLMAP unit")
    ap.add_argument(
        "--camera-height", type=float, default=1.5, help="reference camera height above ground, m"
    )
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--keyframe-every", type=int, default=5)
    ap.add_argument("--ref-camera", default=None)
    ap.add_argument("--scene", default="colmap")
    a = ap.parse_args()
    try:
        path = convert(
            a.root,
            a.model,
            a.image_dir,
            a.scale,
            a.camera_height,
            a.fps,
            a.keyframe_every,
            a.ref_camera,
            a.scene,
        )
    except OccLabelError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
