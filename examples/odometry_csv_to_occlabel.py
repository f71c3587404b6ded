"""Write an occlabel folder dataset (``occlabel.json``) from an odometry log and a camera rig file.

    python examples/odometry_csv_to_occlabel.py --root /data/drive1 --csv /data/drive1/odometry.csv \\
        --rig /data/drive1/rig.json

Inputs (the usual shape of a recording: a pose stream plus timestamped images):

- ``--csv``: the ego pose log, any rate, header ``timestamp,x,y,z,qw,qx,qy,qz``: ``T_world_from_ego`` at
  ``timestamp`` seconds as a translation and a unit quaternion (w, x, y, z); the ego frame is x forward,
  y left, z up (the vehicle's; origin where your odometry puts it, ideally on the ground).
- ``--rig``: JSON ``{"CAM_FRONT": {"K": 3x3, "T_ego_from_cam": 4x4}, ...}``: intrinsics at the images'
  resolution (pixel centres at integer coordinates) and the camera (OpenCV: x right, y down, z forward)
  to ego extrinsics. The first camera is the reference.
- images at ``<root>/<--image-dir>/<CAMERA>/<timestamp>.<jpg|png>``: the file stem is the capture time in
  ``--time-unit`` (s, ms, us or ns).

Every image gets the ego pose at its own capture time, interpolated in the log (linear in translation,
slerp in rotation); an image outside the log's time span is an error. Frames: one per reference-camera
image, at its time; every other camera's image joins the frame nearest in time if it is within half the
reference camera's median period. Every ``--keyframe-every``-th frame is a keyframe.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from occlabel.datasets.base import quaternion_from_rotation, rigid_transform, rotation_from_quaternion
from occlabel.datasets.folder import FORMAT, MANIFEST, load_folder
from occlabel.errors import OccLabelError

TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
COLUMNS = ("timestamp", "x", "y", "z", "qw", "qx", "qy", "qz")


def read_log(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pose log: times <np.float64: N> (increasing), translations <N, 3>, unit quaternions <N, 4>
    (w first, signs made continuous for interpolation)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or any(c not in rows[0] for c in COLUMNS):
        raise OccLabelError(f"{path}: expected a CSV header with {','.join(COLUMNS)}")
    try:
        a = np.array([[float(r[c]) for c in COLUMNS] for r in rows])
    except ValueError as e:
        raise OccLabelError(f"{path}: non-numeric value ({e})") from None
    t, xyz, q = a[:, 0], a[:, 1:4], a[:, 4:8]
    if np.any(np.diff(t) <= 0):
        raise OccLabelError(f"{path}: line {int(np.argmax(np.diff(t) <= 0)) + 3}: timestamps must increase")
    n = np.linalg.norm(q, axis=1)
    if np.any(np.abs(n - 1) > 1e-3):
        raise OccLabelError(
            f"{path}: line {int(np.argmax(np.abs(n - 1) > 1e-3)) + 2}: quaternion is not unit "
            "(not a rotation)"
        )
    q = q / n[:, None]
    for i in range(1, len(q)):  # q and -q are the same rotation: keep neighbours in one hemisphere
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return t, xyz, q


def slerp(q0: np.ndarray, q1: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions <4> at fraction ``u`` in [0, 1]."""
    d = float(np.clip(np.dot(q0, q1), -1.0, 1.0))
    if d > 0.9995:
        q = q0 + u * (q1 - q0)
        return q / np.linalg.norm(q)
    th = np.arccos(d)
    return (np.sin((1 - u) * th) * q0 + np.sin(u * th) * q1) / np.sin(th)


def pose_at(log: tuple[np.ndarray, np.ndarray, np.ndarray], t: float, what: str) -> np.ndarray:
    """``T_world_from_ego`` <np.float64: 4, 4> at time ``t``, interpolated in the log."""
    ts, xyz, q = log
    if not ts[0] <= t <= ts[-1]:
        raise OccLabelError(f"{what}: time {t:.6f} s is outside the pose log ({ts[0]:.6f} .. {ts[-1]:.6f} s)")
    j = int(np.clip(np.searchsorted(ts, t), 1, len(ts) - 1))
    u = (t - ts[j - 1]) / (ts[j] - ts[j - 1])
    return rigid_transform(
        rotation_from_quaternion(slerp(q[j - 1], q[j], u)), (1 - u) * xyz[j - 1] + u * xyz[j]
    )


def convert(
    root: Path,
    csv_path: Path,
    rig_path: Path,
    image_dir: str = "images",
    time_unit: str = "s",
    keyframe_every: int = 5,
    scene: str = "drive",
) -> Path:
    """Write ``root/occlabel.json`` (see the module docstring)."""
    root = Path(root).resolve()
    log = read_log(Path(csv_path))
    rig = json.loads(Path(rig_path).read_text())
    if not isinstance(rig, dict) or not rig:
        raise OccLabelError(f"{rig_path}: expected {{camera: {{K, T_ego_from_cam}}}}")
    unit = TIME_UNITS[time_unit]
    shots: dict[str, list[tuple[float, str]]] = {}
    for cam in rig:
        d = root / image_dir / cam
        files = sorted(p for p in d.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not files:
            raise OccLabelError(f"{d}: no images of camera {cam}")
        try:
            shots[cam] = sorted((float(p.stem) * unit, p.relative_to(root).as_posix()) for p in files)
        except ValueError:
            raise OccLabelError(
                f"{d}: image names must be capture times ({time_unit}), e.g. 1690000000.123.jpg"
            ) from None
    ref = next(iter(rig))
    ref_t = np.array([t for t, _ in shots[ref]])
    half = 0.5 * float(np.median(np.diff(ref_t))) if len(ref_t) > 1 else np.inf
    groups: list[dict[str, tuple[float, str]]] = [{ref: s} for s in shots[ref]]
    for cam in list(rig)[1:]:
        for t, rel in shots[cam]:
            k = int(np.argmin(np.abs(ref_t - t)))
            if abs(ref_t[k] - t) <= half and (
                cam not in groups[k] or abs(groups[k][cam][0] - ref_t[k]) > abs(t - ref_t[k])
            ):
                groups[k][cam] = (t, rel)
    frames = []
    for i, g in enumerate(groups):
        images = {}
        for cam, (t, rel) in g.items():
            images[cam] = {
                "path": rel,
                "K": rig[cam]["K"],
                "T_ego_from_cam": rig[cam]["T_ego_from_cam"],
                "T_world_from_ego": pose_at(log, t, rel).tolist(),
                "timestamp": t,
            }
        frames.append(
            {
                "token": f"{scene}-{i:06d}",
                "timestamp": g[ref][0],
                "keyframe": i % keyframe_every == 0,
                "T_world_from_ego": images[ref]["T_world_from_ego"],
                "images": images,
            }
        )
    doc = {"format": FORMAT, "scenes": [{"name": scene, "frames": frames}]}
    (root / MANIFEST).write_text(json.dumps(doc, indent=1))
    load_folder(root)  # validate: one line naming the frame and field of any problem
    return root / MANIFEST


def write_log(path: Path, times: np.ndarray, poses: np.ndarray) -> None:
    """Write a pose log CSV (for tests and demos) from times <N> and T_world_from_ego <N, 4, 4>."""
    rows = [",".join(COLUMNS)]
    for t, T in zip(times, poses, strict=True):
        q = quaternion_from_rotation(T[:3, :3])
        rows.append(",".join(repr(float(v)) for v in [t, *T[:3, 3], *q]))
    Path(path).write_text("\n".join(rows) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, type=Path, help="dataset root (occlabel.json is written here)")
    ap.add_argument("--csv", required=True, type=Path, help="pose log: timestamp,x,y,z,qw,qx,qy,qz")
    ap.add_argument("--rig", required=True, type=Path, help="JSON: camera -> {K, T_ego_from_cam}")
    ap.add_argument("--image-dir", default="images", help="folder of <CAMERA>/<time>.jpg, relative to --root")
    ap.add_argument(
        "--time-unit", choices=list(TIME_UNITS), default="s", help="unit of the image names' times"
    )
    ap.add_argument("--keyframe-every", type=int, default=5)
    ap.add_argument("--scene", default="drive")
    a = ap.parse_args()
    try:
        path = convert(a.root, a.csv, a.rig, a.image_dir, a.time_unit, a.keyframe_every, a.scene)
    except OccLabelError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
