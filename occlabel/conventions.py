"""Conventions used everywhere in occlabel: frames, class tables, palettes and voxel grids.

Written once here and in docs/conventions.md; code that needs a frame, a label value, a class table or a grid
preset reads it here.

Frames
------
- Camera frame: OpenCV. x right, y down, z forward (optical axis). A pixel (u, v) has u along x
  (columns) and v along y (rows); pixel *centres* sit at integer coordinates, (0, 0) being the centre of
  the top-left pixel, as OpenCV and the nuScenes/KITTI intrinsics assume.
- Ego frame: x forward, y left, z up (nuScenes ego / ISO 8855), origin where the dataset puts it
  (nuScenes: rear-axle centre on the ground).
- World frame: any fixed frame of the dataset (nuScenes global, KITTI first-camera frame, ...).
- Transforms are 4x4 homogeneous matrices named ``T_a_from_b``: ``p_a = T_a_from_b @ p_b``.
  Compose as ``T_a_from_c = T_a_from_b @ T_b_from_c``.
- Intrinsics ``K`` are 3x3: ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels of the image they
  belong to. Scaling an image by (sx, sy) scales row 0 of K by sx and row 1 by sy (see `scale_intrinsics`).

Depth
-----
- ``*_depth_m``: metric depth along the optical axis (z in the camera frame), metres, float32;
  0 or NaN means no value.
- ``*_disparity``: affine-invariant relative disparity as a depth foundation model outputs it; the metric
  inverse depth is ``1 / depth_m = scale * disparity + shift`` with unknown ``scale > 0`` and ``shift``.

Voxels
------
- Voxel index order is [x, y, z] (arrays are shaped (X, Y, Z)); the centre of voxel (i, j, k) is
  ``lower + (index + 0.5) * voxel_size``.

2D semantic maps
----------------
uint8 per pixel: the target vocabulary's class id (Occ3D: 0-16), ``SKY`` (254) for sky and
``UNLABELED`` (255) where nothing is known.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# --------------------------------------------------------------------------------------------------
# Class tables: every class table and learning map of occlabel lives here (the vocabulary YAMLs of
# occlabel/models/vocab/ are their user-facing form for the 2D backends).
# Occ3D-nuScenes class table (ids 0-16 are semantic classes, 17 is free space)
# --------------------------------------------------------------------------------------------------

#: (id, name, RGB colour, moving). Colours follow the palette used by the Occ3D / CVPR2023 occupancy
#: challenge visualisations.
OCC3D_CLASSES: tuple[tuple[int, str, tuple[int, int, int], bool], ...] = (
    (0, "others", (0, 0, 0), False),
    (1, "barrier", (255, 120, 50), False),
    (2, "bicycle", (255, 192, 203), True),
    (3, "bus", (255, 255, 0), True),
    (4, "car", (0, 150, 245), True),
    (5, "construction_vehicle", (0, 255, 255), True),
    (6, "motorcycle", (200, 180, 0), True),
    (7, "pedestrian", (255, 0, 0), True),
    (8, "traffic_cone", (255, 240, 150), False),
    (9, "trailer", (135, 60, 0), True),
    (10, "truck", (160, 32, 240), True),
    (11, "driveable_surface", (255, 0, 255), False),
    (12, "other_flat", (139, 137, 137), False),
    (13, "sidewalk", (75, 0, 75), False),
    (14, "terrain", (150, 240, 80), False),
    (15, "manmade", (230, 230, 250), False),
    (16, "vegetation", (0, 175, 0), False),
    (17, "free", (255, 255, 255), False),
)
OCC3D_NAMES: tuple[str, ...] = tuple(c[1] for c in OCC3D_CLASSES)
OCC3D_NUM_CLASSES = 18  # including free
OCC3D_NUM_SEMANTIC = 17  # 0..16, the classes mIoU is averaged over
FREE = 17
OCC3D_MOVING: tuple[int, ...] = tuple(c[0] for c in OCC3D_CLASSES if c[3])
OCC3D_ID = {name: i for i, name in enumerate(OCC3D_NAMES)}

#: 2D label for sky pixels (rays to infinity: free space along the whole ray, no depth).
SKY = 254
#: 2D label for pixels with no semantic information.
UNLABELED = 255
SKY_COLOUR = (135, 206, 235)


def occ3d_palette() -> np.ndarray:
    """RGB palette, <np.uint8: 256, 3>: Occ3D classes 0-17, SKY and UNLABELED (grey), black elsewhere."""
    pal = np.zeros((256, 3), np.uint8)
    for cid, _, rgb, _ in OCC3D_CLASSES:
        pal[cid] = rgb
    pal[SKY] = SKY_COLOUR
    pal[UNLABELED] = (90, 90, 90)
    return pal


def moving_mask_lut(moving: tuple[int, ...] = OCC3D_MOVING) -> np.ndarray:
    """Lookup table <np.bool_: 256>: True for 2D labels of classes that can move."""
    lut = np.zeros(256, bool)
    lut[list(moving)] = True
    return lut


# --------------------------------------------------------------------------------------------------
# SemanticKITTI class table and learning maps (semantic-kitti.yaml); Occ3D -> SemanticKITTI
# --------------------------------------------------------------------------------------------------

#: SemanticKITTI's training ids 0-19 -> name: 0 "empty" (free and unknown), the 19 classes 1-19
SEMANTICKITTI_NAMES: tuple[str, ...] = (
    "empty", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation",
    "trunk", "terrain", "pole", "traffic-sign",
)  # fmt: skip
#: training ids of the classes that can move (vehicles and people)
SEMANTICKITTI_MOVING: tuple[int, ...] = tuple(range(1, 9))
#: raw SemanticKITTI label id -> training id (``learning_map`` of semantic-kitti.yaml; 0 = empty)
SEMANTICKITTI_LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10,
    48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}  # fmt: skip
#: training id 0-19 -> raw id (``learning_map_inv``)
SEMANTICKITTI_LEARNING_MAP_INV: dict[int, int] = {
    0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44, 11: 48, 12: 49, 13: 50,
    14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81,
}  # fmt: skip
#: Occ3D class name -> SemanticKITTI *raw* label id of the nearest SemanticKITTI class ("others" and traffic
#: cones: 99, other-object, which the learning map sends to 0)
OCC3D_TO_SEMANTICKITTI_RAW: dict[str, int] = {
    "others": 99, "barrier": 51, "bicycle": 11, "bus": 13, "car": 10, "construction_vehicle": 20,
    "motorcycle": 15, "pedestrian": 30, "traffic_cone": 99, "trailer": 20, "truck": 18,
    "driveable_surface": 40, "other_flat": 49, "sidewalk": 48, "terrain": 72, "manmade": 50, "vegetation": 70,
}  # fmt: skip
#: Occ3D class id (0-17) -> SemanticKITTI training id: :data:`OCC3D_TO_SEMANTICKITTI_RAW` through the
#: learning map ("others" and traffic cones have no class: 0), free (17) -> 0 (empty)
OCC3D_TO_SEMANTICKITTI: dict[int, int] = {
    **{
        i: SEMANTICKITTI_LEARNING_MAP[OCC3D_TO_SEMANTICKITTI_RAW[n]] for i, n in enumerate(OCC3D_NAMES[:FREE])
    },
    FREE: 0,
}


def learning_map_lut(size: int | None = None) -> np.ndarray:
    """<np.uint8: size> raw SemanticKITTI id -> training id (ids not in the map -> 0, as the API's LUT);
    ``size`` defaults to the largest raw id + 1 (260), 65536 covers every uint16 label."""
    lut = np.zeros(max(SEMANTICKITTI_LEARNING_MAP) + 1 if size is None else size, np.uint8)
    for raw, train in SEMANTICKITTI_LEARNING_MAP.items():
        lut[raw] = train
    return lut


# --------------------------------------------------------------------------------------------------
# Voxel grids
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoxelGrid:
    """An axis-aligned voxel grid in a named frame; arrays over it are shaped (X, Y, Z), order [x, y, z].

    Attributes:
        name: preset name ("occ3d", ...).
        lower: (x, y, z) of the grid's minimum corner, metres.
        upper: (x, y, z) of the maximum corner, metres.
        voxel_size: edge length, metres (cubic voxels).
        frame: the frame the grid lives in ("ego" of the keyframe, or "sensor" for SemanticKITTI).
    """

    name: str
    lower: tuple[float, float, float]
    upper: tuple[float, float, float]
    voxel_size: float
    frame: str = "ego"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(
            int(round((u - lo) / self.voxel_size)) for lo, u in zip(self.lower, self.upper, strict=True)
        )

    def centres(self) -> np.ndarray:
        """Voxel centres, <np.float32: X, Y, Z, 3> in the grid's frame."""
        axes = [
            lo + (np.arange(n, dtype=np.float64) + 0.5) * self.voxel_size
            for lo, n in zip(self.lower, self.shape, strict=True)
        ]
        return np.stack(np.meshgrid(*axes, indexing="ij"), -1).astype(np.float32)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["lower"], d["upper"] = list(self.lower), list(self.upper)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VoxelGrid:
        return cls(
            name=d["name"],
            lower=tuple(float(x) for x in d["lower"]),
            upper=tuple(float(x) for x in d["upper"]),
            voxel_size=float(d["voxel_size"]),
            frame=d.get("frame", "ego"),
        )


#: Preset grids. "sensor" grids live in a LiDAR frame, which voxelize places in each keyframe's ego frame
#: with a T_ego_from_grid (nuScenes: lidar2ego) or relative to a camera (KITTI: velodyne from camera 0 via
#: calib.txt's Tr); the pose is stored with every sample. Any other box: geometry.voxel.make_grid.
GRIDS: dict[str, VoxelGrid] = {
    # Occ3D-nuScenes: 200 x 200 x 16 at 0.4 m, ego frame of the keyframe.
    "occ3d": VoxelGrid("occ3d", (-40.0, -40.0, -1.0), (40.0, 40.0, 5.4), 0.4, "ego"),
    # SemanticKITTI SSC: 256 x 256 x 32 at 0.2 m, velodyne (sensor) frame, x forward from the sensor.
    "semantickitti": VoxelGrid("semantickitti", (0.0, -25.6, -2.0), (51.2, 25.6, 4.4), 0.2, "sensor"),
    # SurroundOcc: 200 x 200 x 16 at 0.5 m, LiDAR (sensor) frame.
    "surroundocc": VoxelGrid("surroundocc", (-50.0, -50.0, -5.0), (50.0, 50.0, 3.0), 0.5, "sensor"),
}


def get_grid(name: str) -> VoxelGrid:
    """The preset grid called ``name``; raises KeyError with the known names."""
    try:
        return GRIDS[name]
    except KeyError:
        raise KeyError(f"unknown grid {name!r}; known: {', '.join(GRIDS)}") from None


# --------------------------------------------------------------------------------------------------
# Small helpers on conventions
# --------------------------------------------------------------------------------------------------


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics of an image resized by factors (sx, sy) (new_width / width, new_height / height).

    Pixel centres at integer coordinates: u' = sx * (u + 0.5) - 0.5. The numpy twin of
    occlabel.geometry.warp.scale_intrinsics (torch, batched); both scale the skew with x.
    Args: K <float: 3, 3>. Returns a new <np.float64: 3, 3>.
    """
    K = np.asarray(K, np.float64).copy()
    K[0] *= sx  # fx, skew, cx
    K[1] *= sy  # fy, cy
    K[0, 2] += 0.5 * sx - 0.5
    K[1, 2] += 0.5 * sy - 0.5
    return K


def is_rigid(T: np.ndarray, atol: float = 1e-4) -> bool:
    """True when T <float: 4, 4> is a proper rigid transform (rotation with det +1, last row 0 0 0 1)."""
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return (
        np.allclose(R @ R.T, np.eye(3), atol=atol)
        and abs(np.linalg.det(R) - 1.0) < atol
        and np.allclose(T[3], [0, 0, 0, 1], atol=atol)
    )


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform <float: 4, 4> (exact, no general matrix inverse)."""
    T = np.asarray(T, np.float64)
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out
