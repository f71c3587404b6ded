"""Camera rigs: a single front camera, or a nuScenes-like six-camera surround rig.

Placement follows the nuScenes ego frame (x forward, y left, z up, origin on the ground under the rear
axle): cameras about 1.5-1.6 m high, yaws 0 / -55 / +55 / 180 / +110 / -110 degrees, 70 degrees
horizontal field of view except the back camera's 110 degrees, pitched 1 degree down. Neighbouring
cameras overlap by 10-20 degrees.
"""

from __future__ import annotations

import math

import numpy as np

#: name: (x, y, z in the ego frame [m], yaw [deg], horizontal field of view [deg])
SURROUND = {
    "CAM_FRONT": (1.70, 0.016, 1.51, 0.0, 70.0),
    "CAM_FRONT_RIGHT": (1.55, -0.49, 1.50, -55.0, 70.0),
    "CAM_FRONT_LEFT": (1.52, 0.49, 1.51, 55.0, 70.0),
    "CAM_BACK": (0.03, 0.0, 1.58, 180.0, 110.0),
    "CAM_BACK_LEFT": (1.04, 0.48, 1.59, 110.0, 70.0),
    "CAM_BACK_RIGHT": (1.01, -0.48, 1.56, -110.0, 70.0),
}
PITCH_DEG = 1.0  # downwards
DEFAULT_SIZE = (320, 192)  # (width, height) per camera


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Pinhole K <np.float64: 3, 3> with square pixels, principal point at the image centre
    ((W - 1) / 2, (H - 1) / 2: pixel centres at integer coordinates)."""
    f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def T_ego_from_cam(x: float, y: float, z: float, yaw_deg: float, pitch_deg: float = PITCH_DEG) -> np.ndarray:
    """Camera (OpenCV: x right, y down, z forward) to ego (x forward, y left, z up), <np.float64: 4, 4>."""
    ya, pi = math.radians(yaw_deg), math.radians(pitch_deg)
    fwd = np.array([math.cos(pi) * math.cos(ya), math.cos(pi) * math.sin(ya), -math.sin(pi)])
    right = np.array([math.sin(ya), -math.cos(ya), 0.0])
    down = np.cross(fwd, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, fwd], 1)
    T[:3, 3] = (x, y, z)
    return T


def make_rig(rig: str = "front", size: tuple[int, int] = DEFAULT_SIZE) -> list[dict]:
    """Cameras of a rig: dicts with ``name``, ``K`` <np.float64: 3, 3>, ``T_ego_from_cam`` <np.float64: 4, 4>,
    ``width``, ``height``. ``rig``: "front" (CAM_FRONT only) or "surround" (six cameras, nuScenes order)."""
    W, H = int(size[0]), int(size[1])
    if W < 8 or H < 8:
        raise ValueError(f"image size {size} too small")
    names = {"front": ["CAM_FRONT"], "surround": list(SURROUND)}.get(rig)
    if names is None:
        raise ValueError(f"unknown rig {rig!r}; known: front, surround")
    out = []
    for n in names:
        x, y, z, yaw, hfov = SURROUND[n]
        out.append(
            {
                "name": n,
                "K": intrinsics(W, H, hfov),
                "T_ego_from_cam": T_ego_from_cam(x, y, z, yaw),
                "width": W,
                "height": H,
            }
        )
    return out
