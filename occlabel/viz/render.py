"""Headless pictures of voxel labels: palettes, a BEV with the ego car, an oblique 3D render, and labels
projected into a camera image. Pure numpy (no OpenGL, no display); matplotlib only composes figures.

Both the 3D render and the camera overlay are ray casts through the grid
(:func:`occlabel.viz.raycast.cast_rays`: an exact voxel traversal, Amanatides & Woo), so every pixel shows
the first occupied voxel along its ray — a z-buffer without holes at any distance. The 3D view is orthographic; the camera overlay uses the
camera's own intrinsics and pose (perspective).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occlabel.conventions import FREE, OCC3D_CLASSES, SKY, SKY_COLOUR, UNLABELED, VoxelGrid
from occlabel.viz.raycast import cast_rays

#: colour of the ego car marker (crimson; no class of the built-in palettes uses it)
EGO_RGB = (220, 20, 60)
#: ego car box in its ego frame (x forward from the rear axle, y left, z up), metres: a mid-size car
EGO_BOX = ((-1.0, -0.95, 0.0), (3.6, 0.95, 1.6))
#: id the 3D render uses for the ego car's voxels (never a class id of the stores)
EGO_ID = 253
#: background of 3D renders
BACKGROUND_RGB = (246, 246, 244)


# --------------------------------------------------------------------------------------------------
# Palettes and class names
# --------------------------------------------------------------------------------------------------


def class_palette(classes=None) -> np.ndarray:
    """RGB palette <np.uint8: 256, 3> for the ids of a class set (occlabel.store.labels.ClassSet) or of a
    vocabulary (a :class:`~occlabel.models.vocab.Vocabulary` or its name: "occ3d", "semantickitti", a YAML
    path); None: Occ3D.

    The vocabulary's colours when it can be loaded (Occ3D, SemanticKITTI's color_map), else tab20 colours;
    SKY sky-blue, UNLABELED grey, the free id white, :data:`EGO_ID` :data:`EGO_RGB`.
    """
    from occlabel.models.vocab import Vocabulary, load_vocabulary

    name = getattr(classes, "name", classes) or "occ3d"
    pal = np.zeros((256, 3), np.uint8)
    try:
        vocab = classes if isinstance(classes, Vocabulary) else load_vocabulary(name)
        for c in vocab.classes:
            pal[c.id] = c.colour
    except Exception:  # an unknown vocabulary: distinct colours for the set's ids
        import matplotlib

        cmap = matplotlib.colormaps["tab20"]
        ids = sorted(getattr(classes, "names", {}) or range(20))
        for n, cid in enumerate(ids):
            pal[cid] = (np.array(cmap(n % 20)[:3]) * 255).astype(np.uint8)
    if name == "occ3d":
        for cid, _, rgb, _ in OCC3D_CLASSES:
            pal[cid] = rgb
    free = getattr(classes, "free", FREE)
    pal[free] = (255, 255, 255)
    pal[SKY] = SKY_COLOUR
    pal[UNLABELED] = (90, 90, 90)
    pal[EGO_ID] = EGO_RGB
    return pal


def class_names(classes=None) -> dict[int, str]:
    """id -> name of a class set (None: Occ3D classes 0-16)."""
    if classes is None:
        return {cid: n for cid, n, _, _ in OCC3D_CLASSES if cid != FREE}
    return dict(classes.names)


# --------------------------------------------------------------------------------------------------
# BEV
# --------------------------------------------------------------------------------------------------


def ego_in_grid(grid: VoxelGrid, T_ego_from_grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ego origin and its forward unit vector in the grid's frame (metres): (<3>, <3>)."""
    T = np.eye(4) if T_ego_from_grid is None else np.asarray(T_ego_from_grid, np.float64)
    T_grid_from_ego = np.linalg.inv(T)
    return T_grid_from_ego[:3, 3], T_grid_from_ego[:3, 0]


def bev_pixel(points_grid: np.ndarray, grid: VoxelGrid) -> np.ndarray:
    """(column, row) in a BEV image (:func:`occlabel.viz.bev.bev_rgb`, one pixel per voxel column) of points <N, 3> in
    the grid frame; pixel centres at integer coordinates (matplotlib's imshow convention)."""
    p = np.atleast_2d(np.asarray(points_grid, np.float64))
    X, Y, _ = grid.shape
    i = (p[:, 0] - grid.lower[0]) / grid.voxel_size - 0.5  # continuous voxel index along x
    j = (p[:, 1] - grid.lower[1]) / grid.voxel_size - 0.5
    return np.stack([Y - 1 - j, X - 1 - i], 1)


def draw_ego_bev(ax, grid: VoxelGrid, T_ego_from_grid: np.ndarray | None = None) -> None:
    """Draw the ego car (its box outline and a heading arrow) on a BEV axes of :func:`occlabel.viz.bev.bev_rgb`."""
    lo, hi = EGO_BOX
    corners_ego = np.array(
        [[lo[0], lo[1], 0], [hi[0], lo[1], 0], [hi[0], hi[1], 0], [lo[0], hi[1], 0]], float
    )
    T = np.eye(4) if T_ego_from_grid is None else np.asarray(T_ego_from_grid, np.float64)
    T_grid_from_ego = np.linalg.inv(T)
    pts = corners_ego @ T_grid_from_ego[:3, :3].T + T_grid_from_ego[:3, 3]
    px = bev_pixel(pts, grid)
    ax.fill(px[:, 0], px[:, 1], facecolor=np.array(EGO_RGB) / 255, edgecolor="black", linewidth=0.6, zorder=5)
    origin, fwd = ego_in_grid(grid, T)
    a = bev_pixel(np.stack([origin, origin + fwd * (hi[0] + 2.5)]), grid)
    ax.annotate(
        "",
        xy=a[1],
        xytext=a[0],
        arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.0, "mutation_scale": 8},
        zorder=6,
    )


# --------------------------------------------------------------------------------------------------
# 3D render and camera overlay (ray casts: occlabel.viz.raycast)
# --------------------------------------------------------------------------------------------------


def with_ego(semantics: np.ndarray, free: int, grid: VoxelGrid, T_ego_from_grid: np.ndarray | None = None):
    """A copy of ``semantics`` with the ego car's box (:data:`EGO_BOX`) written as :data:`EGO_ID` where free."""
    T = np.eye(4) if T_ego_from_grid is None else np.asarray(T_ego_from_grid, np.float64)
    c = grid.centres().reshape(-1, 3).astype(np.float64)
    p = c @ T[:3, :3].T + T[:3, 3]
    lo, hi = np.array(EGO_BOX[0]), np.array(EGO_BOX[1])
    box = np.all((p >= lo) & (p <= hi), 1).reshape(semantics.shape)
    out = semantics.copy()
    out[box & (semantics == free)] = EGO_ID
    return out


def occupied_points(semantics: np.ndarray, grid: VoxelGrid, free: int = FREE, mask=None) -> np.ndarray:
    """Centres <N, 3> (grid frame, metres) of the occupied voxels (inside ``mask`` when given)."""
    occ = semantics != free
    if mask is not None:
        occ &= mask.astype(bool)
    idx = np.argwhere(occ)
    return np.asarray(grid.lower) + (idx + 0.5) * grid.voxel_size


def _shade(colours: np.ndarray, axis: np.ndarray, frac_edge: np.ndarray | None) -> np.ndarray:
    """Lambert-like shading by the face a ray entered through (top bright, sides darker), edges darkened."""
    factor = np.select([axis == 2, axis == 0, axis == 1], [1.0, 0.78, 0.62], 0.9)
    if frac_edge is not None:
        factor = factor * np.where(frac_edge, 0.82, 1.0)
    return np.clip(colours.astype(np.float32) * factor[:, None], 0, 255).astype(np.uint8)


def render_oblique(
    semantics: np.ndarray,
    grid: VoxelGrid,
    palette: np.ndarray,
    free: int = FREE,
    mask: np.ndarray | None = None,
    T_ego_from_grid: np.ndarray | None = None,
    width: int = 720,
    azimuth_deg: float = 200.0,
    elevation_deg: float = 38.0,
    ego: bool = True,
    frame_points: np.ndarray | None = None,
    aspect: float | None = 1.6,
) -> np.ndarray:
    """Orthographic 3D render of the occupied voxels from an oblique view, shaded cubes.

    Args:
        semantics: <np.uint8: X, Y, Z> class ids, ``free`` where free or unknown.
        grid: the voxel grid (metres, grid frame).
        palette: <np.uint8: 256, 3> (:func:`class_palette`).
        mask: optional <bool: X, Y, Z>: only voxels inside it are drawn (ground truth: its mask_camera).
        T_ego_from_grid: the grid's pose in the ego frame (ego car marker and view heading).
        width: image width in pixels (the height follows the projected grid).
        azimuth_deg, elevation_deg: viewing direction, from the grid centre towards the viewer, in the ego
            frame: 180 looks from behind, 200 from behind and to the right, 90 from the left.
        ego: draw the ego car (:data:`EGO_BOX`) as a crimson block.
        frame_points: <N, 3> points (grid frame, metres) the view is framed on (default: the centres of
            the voxels drawn, ego included: :func:`occupied_points`); pass the same points to renders that
            are compared side by side.
        aspect: width / height of the image (None: the framed points' own).
    Returns:
        <np.uint8: H, W, 3> image.
    """
    sem = semantics
    if mask is not None:
        sem = np.where(mask.astype(bool), semantics, free).astype(np.uint8)
    if ego:
        sem = with_ego(sem, free, grid, T_ego_from_grid)
    occ = sem != free
    vs = grid.voxel_size
    view = _view_axes(T_ego_from_grid, azimuth_deg, elevation_deg)
    lower, upper = np.array(grid.lower), np.array(grid.upper)
    centre = (lower + upper) / 2
    pts = _framed_points(frame_points if frame_points is not None else occupied_points(sem, grid, free), grid)
    plane = _image_plane(view, pts - centre, vs, width, aspect)
    uu, vv = np.meshgrid(plane.cols, plane.rows)
    depth = np.linalg.norm(upper - lower)
    origins = centre + uu[..., None] * view.right + vv[..., None] * view.up + view.to_viewer * depth
    o_idx = (origins.reshape(-1, 3) - lower) / vs
    d_idx = np.broadcast_to(view.view / vs, o_idx.shape)
    hit, t, axis = cast_rays(occ, o_idx, d_idx)
    img = np.empty((plane.height * width, 3), np.uint8)
    img[:] = BACKGROUND_RGB
    ok = hit[:, 0] >= 0
    colours = palette[sem[hit[ok, 0], hit[ok, 1], hit[ok, 2]]]
    edge = None
    if vs / plane.px >= 5:  # voxels big enough on screen: darken their edges so that cubes read as cubes
        edge = _edge_pixels(o_idx[ok] + d_idx[ok] * t[ok, None], axis[ok])
    img[ok] = _shade(colours, axis[ok], edge)
    return img.reshape(plane.height, width, 3)


def _framed_points(frame_points: np.ndarray, grid: VoxelGrid) -> np.ndarray:
    """<np.float64: N, 3> the points a view frames (grid frame, metres): ``frame_points``, or the grid's
    eight corners when there are none."""
    pts = np.asarray(frame_points, np.float64).reshape(-1, 3)
    if not len(pts):  # nothing occupied: the whole grid
        lower, upper = np.array(grid.lower), np.array(grid.upper)
        pts = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
        pts = lower + pts * (upper - lower)
    return pts


@dataclass(frozen=True)
class _View:
    """An orthographic view's unit vectors in the grid frame <3>: ``to_viewer`` (from the scene towards
    the viewer), ``view`` (= -to_viewer), ``right`` and ``up`` (the image's axes)."""

    to_viewer: np.ndarray
    view: np.ndarray
    right: np.ndarray
    up: np.ndarray


def _view_axes(T_ego_from_grid: np.ndarray | None, azimuth_deg: float, elevation_deg: float) -> _View:
    """The view from ``azimuth_deg`` / ``elevation_deg`` (ego frame, degrees) with the ego's z up."""
    T = np.eye(4) if T_ego_from_grid is None else np.asarray(T_ego_from_grid, np.float64)
    R_grid_from_ego = T[:3, :3].T
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    to_viewer = R_grid_from_ego @ np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    up_world = R_grid_from_ego @ np.array([0.0, 0.0, 1.0])
    view = -to_viewer
    right = np.cross(view, up_world)
    right /= np.linalg.norm(right)
    up = np.cross(right, view)
    return _View(to_viewer=to_viewer, view=view, right=right, up=up)


@dataclass(frozen=True)
class _Plane:
    """The image plane's pixel grid: ``height`` rows of ``width`` pixels of ``px`` metres; pixel centres
    at ``cols`` <W> (along right) and ``rows`` <H> (along up, top first), metres from the grid centre."""

    width: int
    height: int
    px: float
    cols: np.ndarray
    rows: np.ndarray


def _image_plane(view: _View, rel: np.ndarray, vs: float, width: int, aspect: float | None) -> _Plane:
    """The pixel grid framing the cubes of side ``vs`` centred at ``rel`` <N, 3> (metres from the grid
    centre), widened on its short side to ``aspect`` (width / height) when given, with a 4 % margin."""
    cube = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * vs / 2
    u = rel @ view.right
    v = rel @ view.up
    du, dv = cube @ view.right, cube @ view.up
    umin, umax = u.min() + du.min(), u.max() + du.max()
    vmin, vmax = v.min() + dv.min(), v.max() + dv.max()
    if aspect is not None:  # widen the short side to the requested width / height
        if (umax - umin) / max(vmax - vmin, 1e-9) < aspect:
            grow = aspect * (vmax - vmin) - (umax - umin)
            umin, umax = umin - grow / 2, umax + grow / 2
        else:
            grow = (umax - umin) / aspect - (vmax - vmin)
            vmin, vmax = vmin - grow / 2, vmax + grow / 2
    pad = 0.04 * (umax - umin)
    px = (umax - umin + 2 * pad) / width  # metres per pixel
    height = max(8, int(np.ceil((vmax - vmin + 2 * pad) / px)))
    cols = umin - pad + (np.arange(width) + 0.5) * px
    rows = vmax + pad - (np.arange(height) + 0.5) * px
    return _Plane(width=width, height=height, px=px, cols=cols, rows=rows)


def _edge_pixels(p: np.ndarray, a: np.ndarray) -> np.ndarray:
    """<bool: M> hits near an edge of their voxel face: ``p`` <M, 3> hit points (voxel units), ``a`` <M>
    the axis of the face entered; near = within 0.07 of a boundary along either other axis."""
    frac = p - np.floor(p)
    near = (frac < 0.07) | (frac > 0.93)
    edge = np.zeros(len(a), bool)
    for k in range(3):
        others = [j for j in range(3) if j != k]
        edge |= (a == k) & (near[:, others[0]] | near[:, others[1]])
    return edge


def project_labels(
    semantics: np.ndarray,
    grid: VoxelGrid,
    K: np.ndarray,
    T_grid_from_cam: np.ndarray,
    size: tuple[int, int],
    free: int = FREE,
    mask: np.ndarray | None = None,
    near_m: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """What a camera sees of the labels: the first occupied voxel along every pixel's ray (z-buffered).

    Args:
        semantics: <np.uint8: X, Y, Z>; mask: optional <bool: X, Y, Z> restricting the occupied voxels.
        K: <3, 3> intrinsics of an image of ``size`` = (width, height) (pixel centres at integers).
        T_grid_from_cam: <4, 4> the camera (OpenCV) in the grid's frame.
        near_m: near plane (camera z, metres): voxels closer are not drawn (the car's own voxels).
    Returns:
        labels <np.uint8: H, W> (``free`` where no voxel is hit) and depth <np.float32: H, W> (camera z of
        the point where the ray enters the voxel, metres; NaN where none).
    """
    W, H = size
    occ = semantics != free
    if mask is not None:
        occ &= mask.astype(bool)
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    pix = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3)
    rays_cam = pix @ np.linalg.inv(K).T  # camera z = 1: the ray parameter is the z-depth
    T = np.asarray(T_grid_from_cam, np.float64)
    dirs = rays_cam @ T[:3, :3].T
    lower = np.array(grid.lower)
    o_idx = np.broadcast_to((T[:3, 3] - lower) / grid.voxel_size, dirs.shape)
    hit, t, _ = cast_rays(occ, o_idx, dirs / grid.voxel_size, t_min=near_m)
    ok = hit[:, 0] >= 0
    labels = np.full(H * W, free, np.uint8)
    labels[ok] = semantics[hit[ok, 0], hit[ok, 1], hit[ok, 2]]
    depth = np.full(H * W, np.nan, np.float32)
    depth[ok] = t[ok]
    return labels.reshape(H, W), depth.reshape(H, W)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, free: int, alpha: float = 0.55):
    """Blend label colours over an image <uint8: H, W, 3> where ``labels`` != ``free`` (and not 255)."""
    out = image.astype(np.float32)
    m = (labels != free) & (labels != UNLABELED)
    out[m] = (1 - alpha) * out[m] + alpha * palette[labels[m]].astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)


__all__ = [
    "BACKGROUND_RGB",
    "EGO_BOX",
    "EGO_ID",
    "EGO_RGB",
    "bev_pixel",
    "cast_rays",
    "class_names",
    "class_palette",
    "draw_ego_bev",
    "ego_in_grid",
    "occupied_points",
    "overlay",
    "project_labels",
    "render_oblique",
    "with_ego",
]
