"""The picture of one labels sample: BEV and oblique 3D render, the ground truth beside them when there is
one, and the labels projected into a camera image (``occlabel show LABELS.zarr``); and the README render.

Reads through the public readers (open_labels, open_cache) and the dataset recorded in the cache; the
ground truth through :func:`occlabel.store.groundtruth.find_ground_truth`. Figures are drawn with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import VoxelGrid
from occlabel.errors import OccLabelError, StoreError
from occlabel.store.groundtruth import GroundTruth, find_ground_truth
from occlabel.store.labels import ClassSet
from occlabel.viz.bev import FREE_RGB, UNKNOWN_RGB, bev_rgb
from occlabel.viz.render import (
    EGO_RGB,
    class_palette,
    draw_ego_bev,
    occupied_points,
    overlay,
    project_labels,
    render_oblique,
    with_ego,
)

log = logging.getLogger("occlabel.viz")

#: width of one panel column of the labels figure, inches
PANEL_IN = 4.8
#: width of the legend column, inches
LEGEND_IN = 2.1
#: title height, gap above each row of panels, outer margin, inches
HEAD_IN, GAP_IN, MARGIN_IN = 0.75, 0.32, 0.15


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------------
# Reading what a picture needs
# --------------------------------------------------------------------------------------------------


def dataset_of_cache(cache_path: str | Path | None):
    """The dataset recorded in a cache (None when there is no cache or it cannot be opened; logged)."""
    if not cache_path:
        return None
    from occlabel.store.cache import open_cache

    try:
        return open_cache(cache_path).open_dataset()
    except (OccLabelError, OSError) as e:
        log.warning("dataset of %s not available (%s): no images or ground truth", cache_path, e)
        return None


def dataset_frame(dataset, scene: str, token: str):
    """The frame ``token`` of ``scene`` in a dataset (None without a dataset or when it has no such frame)."""
    if dataset is None:
        return None
    for s in dataset.scenes:
        if s.name == scene:
            return next((f for f in s.frames if f.token == token), None)
    return None


def pick_sample(reader, sample: str | None = None, scene: str | None = None) -> dict[str, Any]:
    """A done sample of a labels reader: by token, the middle one of ``scene``, or the middle one overall."""
    if len(reader) == 0:
        raise StoreError(f"{reader.path}: no done sample (run voxelize first)")
    if sample is not None:
        if sample not in reader:
            raise StoreError(f"{reader.path}: no done sample with token {sample!r}")
        return reader[sample]
    if scene is not None:
        reader.scene_meta(scene)  # one line naming the scenes when missing
        tokens = [t for t in reader.scene_meta(scene)["tokens"] if t in reader]
        if not tokens:
            raise StoreError(f"{reader.path}: scene {scene!r} has no done sample")
        return reader[tokens[len(tokens) // 2]]
    return reader[len(reader) // 2]


def sample_ground_truth(
    s: dict[str, Any], dataset=None, gt_dir: str | Path | None = None
) -> GroundTruth | None:
    """Ground truth of a labels sample to draw beside it, or None (:func:`find_ground_truth`, format not
    stated): in ``gt_dir`` (Occ3D layout: ``gts/<scene>/<token>/labels.npz``, or ``<scene>/<token>/...``),
    else in the dataset recorded in the cache: its SemanticKITTI voxels for labels on the 256x256x32 grid,
    else its Occ3D occupancy (synthetic worlds, nuScenes with Occ3D ``gts/``); the dataset's occupancy on
    another grid is left out (logged)."""
    if gt_dir is not None:
        return find_ground_truth(s, gt_dir=gt_dir)
    g = find_ground_truth(s, dataset_frame(dataset, s["scene"], s["token"]))
    if g is not None and tuple(g.semantics.shape) != tuple(s["semantics"].shape):
        log.warning("ground truth %s is on another grid %s", g.where, g.semantics.shape)
        return None
    return g


def sample_metrics(s: dict[str, Any], gt: GroundTruth | None) -> dict[str, Any] | None:
    """Occ3D mIoU and geometry IoU of one sample against its ground truth (both Occ3D classes), or None."""
    if gt is None or s["classes"].name != "occ3d" or gt.classes.name != "occ3d":
        return None
    from occlabel.stages.evaluate import confusion_matrix, occ3d_metrics

    return occ3d_metrics(confusion_matrix(s["semantics"], gt.semantics, gt.mask))


def camera_view(s: dict[str, Any], dataset, camera: str, max_width: int = 800):
    """(image <uint8: h, w, 3>, K <3, 3>, T_grid_from_cam <4, 4>) of ``camera`` at a labels sample's keyframe,
    resized to at most ``max_width`` (the dataset's K and T_ego_from_cam; the image's own ego pose)."""
    from PIL import Image

    from occlabel.conventions import scale_intrinsics
    from occlabel.datasets.base import load_image

    frame = dataset_frame(dataset, s["scene"], s["token"])
    if frame is None:
        raise OccLabelError(
            f"--camera {camera}: the dataset of this store is not available (sample {s['scene']}/{s['token']})"
        )
    if camera not in frame.images:
        raise OccLabelError(
            f"--camera {camera}: not a camera of sample {s['token']} (has: {', '.join(frame.images)})"
        )
    rec = frame.images[camera]
    img = load_image(rec.path)
    H0, W0 = img.shape[:2]
    w = min(W0, max_width)
    h = max(1, round(H0 * w / W0))
    if (w, h) != (W0, H0):
        img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    K = scale_intrinsics(np.asarray(rec.K, np.float64), w / W0, h / H0)
    T_grid_from_world = np.linalg.inv(s["T_world_from_ego"] @ s["T_ego_from_grid"])
    return img, K, T_grid_from_world @ frame.T_world_from_cam(camera)


@dataclass(frozen=True)
class Column:
    """One column of a labels picture: a title and a label grid with its mask and class set."""

    title: str
    semantics: np.ndarray  # <uint8: X, Y, Z>
    mask: np.ndarray | None  # <bool: X, Y, Z> observed voxels
    classes: ClassSet


def sample_columns(s: dict[str, Any], g: GroundTruth | None, title: str = "occlabel") -> list[Column]:
    """The labels of a sample and, when there is one, its ground truth beside them."""
    columns = [Column(title, s["semantics"], s["mask_camera"], s["classes"])]
    if g is not None:
        columns.append(Column("ground truth", g.semantics, g.mask, g.classes))
    return columns


# --------------------------------------------------------------------------------------------------
# Labels figure
# --------------------------------------------------------------------------------------------------


def _legend_handles(columns: list[Column], ego: bool = True):
    from matplotlib.patches import Patch

    from occlabel.viz.render import class_names

    seen: dict[tuple[str, tuple[int, ...]], None] = {}
    for c in columns:
        pal = class_palette(c.classes)
        occ = c.semantics != c.classes.free
        if c.mask is not None:
            occ &= c.mask.astype(bool)
        names = class_names(c.classes)
        for cid in np.unique(c.semantics[occ]):
            if int(cid) in names:
                seen.setdefault((names[int(cid)], tuple(int(v) for v in pal[cid])), None)
    handles = [Patch(color=np.array(rgb) / 255, label=name) for name, rgb in seen]
    handles.append(Patch(facecolor=np.array(FREE_RGB) / 255, edgecolor="0.6", label="free (observed)"))
    handles.append(Patch(color=np.array(UNKNOWN_RGB) / 255, label="unobserved"))
    if ego:
        handles.append(Patch(color=np.array(EGO_RGB) / 255, label="ego car"))
    return handles


def _frame_points(columns: list[Column], grid: VoxelGrid, T_ego_from_grid) -> np.ndarray:
    """Centres of every voxel the 3D renders of ``columns`` draw, ego car included: one framing for
    renders shown side by side."""
    pts = []
    for c in columns:
        free = c.classes.free
        m = (
            c.semantics
            if c.mask is None
            else np.where(c.mask.astype(bool), c.semantics, free).astype(np.uint8)
        )
        pts.append(occupied_points(with_ego(m, free, grid, T_ego_from_grid), grid, free))
    return np.concatenate(pts)


def _panels(columns: list[Column], s: dict[str, Any], cam, render_width: int) -> dict[str, list[np.ndarray]]:
    """The images of every column: {"bev", "3d", "camera" (with ``cam``)} -> [<uint8: h, w, 3> per column]."""
    grid: VoxelGrid = s["grid"]
    T_eg = s["T_ego_from_grid"]
    panels: dict[str, list[np.ndarray]] = {"bev": [], "3d": [], "camera": []}
    pts = _frame_points(columns, grid, T_eg)
    for c in columns:
        pal = class_palette(c.classes)
        free = c.classes.free
        panels["bev"].append(bev_rgb(c.semantics, c.mask, free, pal))
        panels["3d"].append(
            render_oblique(c.semantics, grid, pal, free, c.mask, T_eg, width=render_width, frame_points=pts)
        )
        if cam is not None:
            img, K, T_gc = cam
            lab, _ = project_labels(c.semantics, grid, K, T_gc, (img.shape[1], img.shape[0]), free, c.mask)
            panels["camera"].append(overlay(img, lab, pal, free))
    return panels


def _draw_panel(ax, row: str, image: np.ndarray, title: str, s: dict[str, Any], camera: str | None) -> None:
    """One panel of the labels figure (``row``: "bev", "3d" or "camera")."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.imshow(image, interpolation="nearest", aspect="auto")
    if row == "bev":
        X, Y, _ = s["grid"].shape
        draw_ego_bev(ax, s["grid"], s["T_ego_from_grid"])
        ax.set_xlim(-0.5, Y - 0.5)
        ax.set_ylim(X - 0.5, -0.5)
        ax.set_title(f"{title}: bird's-eye view (forward up)", fontsize=9)
    elif row == "3d":
        ax.set_title(f"{title}: 3D, from behind and above", fontsize=9)
        for sp in ax.spines.values():
            sp.set_visible(False)
    else:
        ax.set_title(f"{title}: projected into {camera}", fontsize=9)


def _captions(s: dict[str, Any], labels_path, g: GroundTruth | None, metrics) -> tuple[str, str]:
    """(title, subtitle) of the labels figure."""
    grid: VoxelGrid = s["grid"]
    X, Y, Z = grid.shape
    title = f"{s['scene']} / {s['token']}   grid {grid.name} {X}x{Y}x{Z} @ {grid.voxel_size:g} m"
    sub = f"labels: {Path(labels_path).name}, classes {s['classes'].name}"
    if metrics is not None:
        sub += f"; this sample vs ground truth: mIoU {100 * (metrics['miou'] or 0):.1f}, geometry IoU "
        sub += f"{100 * (metrics['iou_geometry'] or 0):.1f} (Occ3D, GT mask_camera)"
    elif g is None:
        sub += "; no ground truth for this sample"
    return title, sub


def _compose(columns: list[Column], panels, s: dict[str, Any], camera: str | None, dpi: int):
    """(figure, its (width, height) in inches): the labels figure without its captions, rows of panels
    (BEV, 3D, camera) per column and the legend at the right; the layout is fixed in inches so that the PNG
    size is known."""
    X, Y, _ = s["grid"].shape
    render = panels["3d"][0]
    rows = [("bev", PANEL_IN * X / Y), ("3d", PANEL_IN * render.shape[0] / render.shape[1])]
    if panels["camera"]:
        cam = panels["camera"][0]
        rows.append(("camera", PANEL_IN * cam.shape[0] / cam.shape[1]))
    fig_w = MARGIN_IN + len(columns) * (PANEL_IN + MARGIN_IN) + LEGEND_IN
    fig_h = HEAD_IN + sum(h + GAP_IN for _, h in rows) + MARGIN_IN
    fig = pyplot().figure(figsize=(fig_w, fig_h), dpi=dpi)
    y = fig_h - HEAD_IN
    for name, h in rows:
        y -= GAP_IN + h
        for c, col in enumerate(columns):
            x = MARGIN_IN + c * (PANEL_IN + MARGIN_IN)
            ax = fig.add_axes((x / fig_w, y / fig_h, PANEL_IN / fig_w, h / fig_h))
            _draw_panel(ax, name, panels[name][c], col.title, s, camera)
    fig.legend(
        handles=_legend_handles(columns),
        loc="upper left",
        bbox_to_anchor=((fig_w - LEGEND_IN + 0.1) / fig_w, (fig_h - HEAD_IN) / fig_h),
        fontsize=7.5,
        frameon=False,
    )
    return fig, (fig_w, fig_h)


def labels_figure(
    labels_path: str | Path,
    out: str | Path,
    sample: str | None = None,
    scene: str | None = None,
    camera: str | None = None,
    gt: str | Path | None = None,
    dpi: int = 100,
    render_width: int = 720,
) -> dict[str, Any]:
    """Save the picture of one labels sample: BEV and oblique 3D render, the ground truth beside them when
    there is one, and with ``camera`` the labels (and ground truth) projected into that camera's image.

    Returns {"path", "size" (width, height px), "scene", "token", "ground_truth" (where or None),
    "metrics" (this sample's Occ3D figures or None)}.
    """
    from occlabel.store.labels import open_labels

    reader = open_labels(labels_path)
    s = pick_sample(reader, sample, scene)
    dataset = dataset_of_cache(reader.meta.get("cache"))
    g = sample_ground_truth(s, dataset, gt)
    metrics = sample_metrics(s, g)
    columns = sample_columns(s, g)
    cam = camera_view(s, dataset, camera) if camera else None
    panels = _panels(columns, s, cam, render_width)

    fig, (fig_w, fig_h) = _compose(columns, panels, s, camera, dpi)
    title, sub = _captions(s, labels_path, g, metrics)
    fig.text(MARGIN_IN / fig_w, 1 - 0.28 / fig_h, title, fontsize=11, weight="bold", va="top")
    fig.text(MARGIN_IN / fig_w, 1 - 0.52 / fig_h, sub, fontsize=8.5, va="top", color="0.25")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)
    return {
        "path": out,
        "size": (round(fig_w * dpi), round(fig_h * dpi)),
        "scene": s["scene"],
        "token": s["token"],
        "ground_truth": g.where if g is not None else None,
        "metrics": metrics,
    }


def save_render(
    labels_path: str | Path, out: str | Path, sample: str | None = None, width: int = 900
) -> Path:
    """The oblique 3D render of a sample beside its ground truth (when there is one), with a legend, as a
    small PNG (the README picture)."""
    from occlabel.store.labels import open_labels

    reader = open_labels(labels_path)
    s = pick_sample(reader, sample)
    dataset = dataset_of_cache(reader.meta.get("cache"))
    cols = sample_columns(s, sample_ground_truth(s, dataset), title="occlabel (camera-only)")
    grid, T_eg = s["grid"], s["T_ego_from_grid"]
    pts = _frame_points(cols, grid, T_eg)
    imgs = [
        render_oblique(
            c.semantics, grid, class_palette(c.classes), c.classes.free, c.mask, T_eg, width=width,
            frame_points=pts,
        )
        for c in cols
    ]  # fmt: skip
    plt = pyplot()
    h, w = imgs[0].shape[:2]
    fig_w = 4.6 * len(cols) + 1.9
    fig_h = 4.6 * h / w + 0.5
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=110)
    for c, (col, img) in enumerate(zip(cols, imgs, strict=True)):
        ax = fig.add_axes(((0.1 + 4.6 * c) / fig_w, 0.05 / fig_h, 4.5 / fig_w, (fig_h - 0.45) / fig_h))
        ax.imshow(img, interpolation="antialiased")
        ax.set_axis_off()
        ax.set_title(col.title, fontsize=10)
    fig.legend(handles=_legend_handles(cols), loc="center right", fontsize=7, frameon=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = [
    "Column",
    "camera_view",
    "dataset_frame",
    "dataset_of_cache",
    "labels_figure",
    "pick_sample",
    "pyplot",
    "sample_columns",
    "sample_ground_truth",
    "sample_metrics",
    "save_render",
]
