"""``occlabel show``: one picture of a labels sample (BEV, 3D, ground truth, camera overlay) or of a cache
frame (image, semantics, relative disparity, metric depth, photometric error before/after calibration).

Everything reads through the public readers (open_labels, open_cache) and the dataset recorded in the
cache; figures are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import SKY, UNLABELED, VoxelGrid
from occlabel.errors import OccLabelError, StoreError
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


def _plt():
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


def _frame(dataset, scene: str, token: str):
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


def sample_ground_truth(reader, s: dict[str, Any], dataset=None, gt_dir: str | Path | None = None):
    """Ground truth of a labels sample, or None: {"semantics", "mask", "classes", "where"}.

    Looks in ``gt_dir`` (Occ3D layout: ``gts/<scene>/<token>/labels.npz``, or ``<scene>/<token>/...``),
    then in the dataset recorded in the cache: its SemanticKITTI voxels for labels on the 256x256x32 grid,
    else its Occ3D occupancy (synthetic worlds, nuScenes with Occ3D ``gts/``).
    """
    from occlabel.datasets.base import load_occupancy
    from occlabel.store.labels import OCC3D, SEMANTICKITTI

    shape = tuple(s["semantics"].shape)
    if gt_dir is not None:
        for p in (
            Path(gt_dir) / "gts" / s["scene"] / s["token"] / "labels.npz",
            Path(gt_dir) / s["scene"] / s["token"] / "labels.npz",
        ):
            if p.exists():
                g = load_occupancy(p)
                return {
                    "semantics": g["semantics"],
                    "mask": g["mask_camera"],
                    "classes": OCC3D,
                    "where": str(p),
                }
        return None
    frame = _frame(dataset, s["scene"], s["token"])
    if frame is None:
        return None
    vox = (getattr(frame, "meta", None) or {}).get("semantickitti_voxels") or {}
    if shape == (256, 256, 32) and "label" in vox:
        from occlabel.store.export import read_semantickitti_voxels

        g = read_semantickitti_voxels(Path(vox["label"]).with_suffix(""), shape)
        valid = g["labels"] != 255
        sem = np.where(valid, g["labels"], 0).astype(np.uint8)
        return {"semantics": sem, "mask": valid, "classes": SEMANTICKITTI, "where": str(vox["label"])}
    if frame.occupancy_path is not None:
        g = load_occupancy(frame.occupancy_path)
        if tuple(g["semantics"].shape) != shape:
            log.warning("ground truth %s is on another grid %s", frame.occupancy_path, g["semantics"].shape)
            return None
        return {
            "semantics": g["semantics"],
            "mask": g["mask_camera"],
            "classes": OCC3D,
            "where": str(frame.occupancy_path),
        }
    return None


def sample_metrics(s: dict[str, Any], gt: dict[str, Any] | None) -> dict[str, Any] | None:
    """Occ3D mIoU and geometry IoU of one sample against its ground truth (both Occ3D classes), or None."""
    if gt is None or s["classes"].name != "occ3d" or gt["classes"].name != "occ3d":
        return None
    from occlabel.stages.evaluate import confusion_matrix, occ3d_metrics

    return occ3d_metrics(confusion_matrix(s["semantics"], gt["semantics"], gt["mask"]))


def camera_view(s: dict[str, Any], dataset, camera: str, max_width: int = 800):
    """(image <uint8: h, w, 3>, K <3, 3>, T_grid_from_cam <4, 4>) of ``camera`` at a labels sample's keyframe,
    resized to at most ``max_width`` (the dataset's K and T_ego_from_cam; the image's own ego pose)."""
    from PIL import Image

    from occlabel.conventions import scale_intrinsics
    from occlabel.datasets.base import load_image

    frame = _frame(dataset, s["scene"], s["token"])
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


# --------------------------------------------------------------------------------------------------
# Labels figure
# --------------------------------------------------------------------------------------------------


def _legend_handles(panels: list[tuple[np.ndarray, np.ndarray | None, Any]], ego: bool = True):
    from matplotlib.patches import Patch

    from occlabel.viz.render import class_names

    seen: dict[tuple[str, tuple[int, ...]], None] = {}
    for sem, mask, classes in panels:
        pal = class_palette(classes)
        occ = sem != classes.free
        if mask is not None:
            occ &= mask.astype(bool)
        names = class_names(classes)
        for cid in np.unique(sem[occ]):
            if int(cid) in names:
                seen.setdefault((names[int(cid)], tuple(int(c) for c in pal[cid])), None)
    handles = [Patch(color=np.array(rgb) / 255, label=name) for name, rgb in seen]
    handles.append(Patch(facecolor=np.array(FREE_RGB) / 255, edgecolor="0.6", label="free (observed)"))
    handles.append(Patch(color=np.array(UNKNOWN_RGB) / 255, label="unobserved"))
    if ego:
        handles.append(Patch(color=np.array(EGO_RGB) / 255, label="ego car"))
    return handles


def _frame_points(panels, grid: VoxelGrid, T_ego_from_grid) -> np.ndarray:
    """Centres of every voxel the 3D renders of ``panels`` [(semantics, mask, classes)] draw, ego car
    included: one framing for renders shown side by side."""
    pts = []
    for sem, mask, classes in panels:
        m = sem if mask is None else np.where(mask.astype(bool), sem, classes.free).astype(np.uint8)
        pts.append(occupied_points(with_ego(m, classes.free, grid, T_ego_from_grid), grid, classes.free))
    return np.concatenate(pts)


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
    g = sample_ground_truth(reader, s, dataset, gt)
    metrics = sample_metrics(s, g)
    grid: VoxelGrid = s["grid"]
    T_eg = s["T_ego_from_grid"]
    columns = [("occlabel", s["semantics"], s["mask_camera"], s["classes"])]
    if g is not None:
        columns.append(("ground truth", g["semantics"], g["mask"], g["classes"]))
    cam = camera_view(s, dataset, camera) if camera else None

    bevs, renders, overlays = [], [], []
    pts = _frame_points([(sem, mask, classes) for _, sem, mask, classes in columns], grid, T_eg)
    for _, sem, mask, classes in columns:
        pal = class_palette(classes)
        bevs.append(bev_rgb(sem, mask, classes.free, pal))
        renders.append(
            render_oblique(sem, grid, pal, classes.free, mask, T_eg, width=render_width, frame_points=pts)
        )
        if cam is not None:
            img, K, T_gc = cam
            lab, _ = project_labels(sem, grid, K, T_gc, (img.shape[1], img.shape[0]), classes.free, mask)
            overlays.append(overlay(img, lab, pal, classes.free))

    # layout in inches, fixed so that the PNG size is known: title, then rows of panels, legend at right
    ncol = len(columns)
    X, Y, _ = grid.shape
    rows = [("bev", PANEL_IN * X / Y), ("3d", PANEL_IN * renders[0].shape[0] / renders[0].shape[1])]
    if cam is not None:
        rows.append(("camera", PANEL_IN * cam[0].shape[0] / cam[0].shape[1]))
    head, gap, margin = 0.75, 0.32, 0.15
    fig_w = margin + ncol * (PANEL_IN + margin) + LEGEND_IN
    fig_h = head + sum(h + gap for _, h in rows) + margin
    plt = _plt()
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    y = fig_h - head
    for name, h in rows:
        y -= gap + h
        for c, (title, *_rest) in enumerate(columns):
            x = margin + c * (PANEL_IN + margin)
            ax = fig.add_axes((x / fig_w, y / fig_h, PANEL_IN / fig_w, h / fig_h))
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "bev":
                ax.imshow(bevs[c], interpolation="nearest", aspect="auto")
                draw_ego_bev(ax, grid, T_eg)
                ax.set_xlim(-0.5, Y - 0.5)
                ax.set_ylim(X - 0.5, -0.5)
                ax.set_title(f"{title}: bird's-eye view (forward up)", fontsize=9)
            elif name == "3d":
                ax.imshow(renders[c], interpolation="nearest", aspect="auto")
                ax.set_title(f"{title}: 3D, from behind and above", fontsize=9)
                for sp in ax.spines.values():
                    sp.set_visible(False)
            else:
                ax.imshow(overlays[c], interpolation="nearest", aspect="auto")
                ax.set_title(f"{title}: projected into {camera}", fontsize=9)
    handles = _legend_handles([(sem, mask, classes) for _, sem, mask, classes in columns])
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=((fig_w - LEGEND_IN + 0.1) / fig_w, (fig_h - head) / fig_h),
        fontsize=7.5,
        frameon=False,
    )
    title = f"{s['scene']} / {s['token']}   grid {grid.name} {X}x{Y}x{grid.shape[2]} @ {grid.voxel_size:g} m"
    sub = f"labels: {Path(labels_path).name}, classes {s['classes'].name}"
    if metrics is not None:
        sub += f"; this sample vs ground truth: mIoU {100 * (metrics['miou'] or 0):.1f}, geometry IoU "
        sub += f"{100 * (metrics['iou_geometry'] or 0):.1f} (Occ3D, GT mask_camera)"
    elif g is None:
        sub += "; no ground truth for this sample"
    fig.text(margin / fig_w, 1 - 0.28 / fig_h, title, fontsize=11, weight="bold", va="top")
    fig.text(margin / fig_w, 1 - 0.52 / fig_h, sub, fontsize=8.5, va="top", color="0.25")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return {
        "path": out,
        "size": (round(fig_w * dpi), round(fig_h * dpi)),
        "scene": s["scene"],
        "token": s["token"],
        "ground_truth": g["where"] if g is not None else None,
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
    g = sample_ground_truth(reader, s, dataset)
    cols = [("occlabel (camera-only)", s["semantics"], s["mask_camera"], s["classes"])]
    if g is not None:
        cols.append(("ground truth", g["semantics"], g["mask"], g["classes"]))
    pts = _frame_points([(sem, m, c) for _, sem, m, c in cols], s["grid"], s["T_ego_from_grid"])
    imgs = [
        render_oblique(
            sem, s["grid"], class_palette(c), c.free, m, s["T_ego_from_grid"], width=width, frame_points=pts
        )
        for _, sem, m, c in cols
    ]
    plt = _plt()
    h, w = imgs[0].shape[:2]
    fig_w = 4.6 * len(cols) + 1.9
    fig_h = 4.6 * h / w + 0.5
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=110)
    for c, ((name, *_), img) in enumerate(zip(cols, imgs, strict=True)):
        ax = fig.add_axes(((0.1 + 4.6 * c) / fig_w, 0.05 / fig_h, 4.5 / fig_w, (fig_h - 0.45) / fig_h))
        ax.imshow(img, interpolation="antialiased")
        ax.set_axis_off()
        ax.set_title(name, fontsize=10)
    fig.legend(
        handles=_legend_handles([(sem, m, c) for _, sem, m, c in cols]),
        loc="center right",
        fontsize=7,
        frameon=False,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------------
# Cache figure
# --------------------------------------------------------------------------------------------------


def _vocab_of(cache, scene: str, camera: str, key: str | None):
    """The semantics' vocabulary (:meth:`Cache.vocabulary`), or None without semantics."""
    return cache.vocabulary(scene, camera, key) if key is not None else None


def _load_rgb(path, size: tuple[int, int]) -> np.ndarray:
    """An image file as <float32: h, w, 3> in [0, 1], resized (antialiased) to ``size`` = (h, w)."""
    from PIL import Image

    from occlabel.datasets.base import load_image

    img = load_image(path)
    if img.shape[:2] != tuple(size):
        img = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))
    return img.astype(np.float32) / 255.0


def photometric_before_after(cache, dataset, scene: str, camera: str, t: int) -> dict[str, Any] | None:
    """Photometric error of frame ``t`` before and after calibration, as calibrate-depth measures it.

    Sources: the temporal neighbours calibrate-depth used (its recorded neighbour offsets and baseline
    stride, :func:`occlabel.stages.calibrate_depth.choose_sources`). Error: Monodepth2's
    0.85 (1 - SSIM) / 2 + 0.15 L1 with a per-pair exposure gain, minimum over the sources
    (occlabel.geometry.photometric). *Before*: the sources unwarped (the identity error: what the frame
    costs with no depth at all, the auto-masking reference the objective must beat; a relative disparity
    with its unknown affine gives no metric warp to compare with). *After*: the sources warped into the
    frame through its calibrated metric depth (occlabel.geometry.warp). Both averaged over the same
    pixels: static classes, not sky, inside the border, with a valid warp.

    Returns None when the frame has no calibration or no usable neighbour; else {"before", "after"
    (<float32: h, w>, NaN outside the mask), "mask", "before_mean", "after_mean", "sources" (frame
    indices)}.
    """
    import torch

    from occlabel.geometry.photometric import (
        border_mask,
        fit_gain,
        min_reprojection,
        pixel_error,
        static_mask,
    )
    from occlabel.geometry.warp import relative_pose, warp
    from occlabel.stages.calibrate_depth import CalibrationConfig, choose_sources, ground_heights

    try:
        cal = cache.read_calibration(scene, camera)
    except StoreError:
        return None
    if not cal["done"][t] or dataset is None:
        return None
    rec = (cache.meta.get("stages") or {}).get("calibrate_depth") or {}
    opts = rec.get("options") or {}
    cfg = CalibrationConfig()
    neighbours = tuple(int(n) for n in rec.get("neighbours", (-1, 1)))
    geo = cache.geometry(scene, camera)
    present = geo["present"].astype(bool)
    src, ok, _ = choose_sources(
        geo["T_world_from_cam"][:, :3, 3],
        present,
        np.array([t]),
        neighbours,
        float(opts.get("target_baseline_m", cfg.target_baseline_m)),
        int(opts.get("max_stride", cfg.max_stride)),
    )
    sources = [int(u) for u in src[0][ok[0]]]
    if not sources:
        return None
    frames = dataset.scene(scene).frames
    cm = cache.camera_meta(scene, camera)
    h, w = cm["height"], cm["width"]
    tgt = torch.from_numpy(_load_rgb(frames[t].images[camera].path, (h, w))).permute(2, 0, 1)[None]
    srcs = torch.stack(
        [torch.from_numpy(_load_rgb(frames[u].images[camera].path, (h, w))).permute(2, 0, 1) for u in sources]
    )
    depth = torch.from_numpy(cache.metric_depth(scene, camera, t))[None]
    K = torch.from_numpy(geo["K"]).double()
    T_wc = torch.from_numpy(geo["T_world_from_cam"]).double()
    try:
        labels, _ = cache.read_semantics(scene, camera, None, t)
        _, moving = ground_heights(_vocab_of(cache, scene, camera, cache.meta.get("default_semantics")), cfg)
        static = static_mask(torch.from_numpy(np.ascontiguousarray(labels))[None], moving)
    except StoreError:
        static = torch.ones(1, h, w, dtype=torch.bool)
    border = border_mask(h, w, max(1, round(float(opts.get("border_frac", cfg.border_frac)) * w)))
    base = static & border & torch.isfinite(depth)
    errs, valids, idents = [], [], []
    for j, u in enumerate(sources):
        T_st = relative_pose(T_wc[t][None], T_wc[u][None])
        warped, valid = warp(srcs[j : j + 1], depth.double(), K[t][None], K[u][None], T_st, max_depth=200.0)
        warped = warped.float()
        m = valid & base
        errs.append(pixel_error(tgt, warped * fit_gain(tgt, warped, m)))
        valids.append(valid)
        s = srcs[j : j + 1]
        idents.append(pixel_error(tgt, s * fit_gain(tgt, s, base)))
    err = torch.stack(errs, 1)
    valid = torch.stack(valids, 1)
    after, _, has_warp = min_reprojection(err, valid)
    before = torch.stack(idents, 1).amin(1)
    mask = (base & has_warp)[0].numpy()
    if not mask.any():
        return None
    b, a = before[0].numpy().astype(np.float32), after[0].numpy().astype(np.float32)
    return {
        "before": np.where(mask, b, np.nan),
        "after": np.where(mask, a, np.nan),
        "mask": mask,
        "before_mean": float(b[mask].mean()),
        "after_mean": float(a[mask].mean()),
        "sources": sources,
    }


def pick_frame(cache, scene: str | None, camera: str | None, frame: str | int | None):
    """(scene, camera, t): defaults are the first scene and camera and its middle calibrated keyframe
    (else middle extracted frame); ``frame`` is a position in the scene or a frame token."""
    scenes = cache.scenes()
    if not scenes:
        raise StoreError(f"{cache.path}: no scene (run extract-2d first)")
    scene = scene or scenes[0]
    smeta = cache.scene_meta(scene)
    camera = camera or cache.cameras(scene)[0]
    cache.geometry(scene, camera)  # one line naming the camera when missing
    T = len(smeta["tokens"])
    if frame is not None:
        f = str(frame)
        if f in smeta["tokens"]:
            return scene, camera, smeta["tokens"].index(f)
        try:
            t = int(f)
        except ValueError:
            raise StoreError(
                f"{cache.path}: scene {scene!r} has no frame {f!r} (a position 0..{T - 1} or a token)"
            ) from None
        if not 0 <= t < T:
            raise StoreError(f"{cache.path}: frame {t} out of range 0..{T - 1} in scene {scene!r}")
        return scene, camera, t
    done = cache.depth_done(scene, camera, cache.resolve_key("depth", None)).astype(bool)
    try:
        cal = cache.read_calibration(scene, camera)["done"].astype(bool)
        done &= cal
    except StoreError:
        pass
    key = np.asarray(smeta["keyframes"], bool)
    cand = np.flatnonzero(done & key) if (done & key).any() else np.flatnonzero(done)
    if not len(cand):
        raise StoreError(f"{cache.path}: {scene}/{camera} has no extracted frame")
    return scene, camera, int(cand[len(cand) // 2])


def cache_figure(
    cache_path: str | Path,
    out: str | Path,
    scene: str | None = None,
    camera: str | None = None,
    frame: str | int | None = None,
    dpi: int = 100,
) -> dict[str, Any]:
    """Save the picture of one cache frame: the image with its semantics, the semantics, the relative
    disparity, the calibrated metric depth (colour bars with units) and the photometric error before and
    after calibration (:func:`photometric_before_after`). Returns {"path", "size", "scene", "camera",
    "frame", "token", "photometric"}."""
    import matplotlib
    import matplotlib.colors as mcolors
    from matplotlib.patches import Patch

    from occlabel.store.cache import FLAGS, open_cache
    from occlabel.viz.render import class_names

    cache = open_cache(cache_path)
    scene, camera, t = pick_frame(cache, scene, camera, frame)
    smeta = cache.scene_meta(scene)
    token = smeta["tokens"][t]
    dataset = None
    try:
        dataset = cache.open_dataset()
    except (OccLabelError, OSError) as e:
        log.warning("dataset of %s not available (%s): no image", cache_path, e)
    cm = cache.camera_meta(scene, camera)
    h, w = cm["height"], cm["width"]
    image = None
    if dataset is not None:
        image = _load_rgb(dataset.scene(scene).frames[t].images[camera].path, (h, w))
    try:
        disp = cache.read_depth(scene, camera, None, t)
        space = cache.depth_attrs(scene, camera).get("space", "disparity")
    except StoreError:
        disp, space = None, "disparity"
    sem_key = cache.meta.get("default_semantics")
    labels = None
    if sem_key:
        labels, _ = cache.read_semantics(scene, camera, sem_key, t)
    vocab = _vocab_of(cache, scene, camera, sem_key)
    pal = class_palette(vocab)
    depth = cal = None
    try:
        cal = cache.read_calibration(scene, camera)
        if cal["done"][t]:
            depth = cache.metric_depth(scene, camera, t)
    except StoreError:
        pass
    photo = photometric_before_after(cache, dataset, scene, camera, t) if depth is not None else None

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(15, 2 * 5.4 * h / w + 1.4), dpi=dpi)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])

    def missing(ax, text):
        ax.set_facecolor("0.92")
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.3")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)

    def bar(im, ax, label):
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        cb.set_label(label, fontsize=8)
        cb.ax.tick_params(labelsize=7)

    ax = axes[0, 0]
    if image is not None:
        show = (image * 255).astype(np.uint8)
        if labels is not None:
            show = overlay(show, labels, pal, free=UNLABELED, alpha=0.45)
        ax.imshow(show)
        ax.set_title(f"image{' + semantics' if labels is not None else ''}", fontsize=9)
    else:
        missing(ax, "image not available (dataset moved?)")
    ax = axes[0, 1]
    if labels is not None:
        ax.imshow(pal[labels], interpolation="nearest")
        names = dict(vocab.names()) if vocab is not None else class_names()
        present = [int(c) for c in np.unique(labels)]
        handles = [
            Patch(color=pal[c] / 255, label=names.get(c, {SKY: "sky", UNLABELED: "unlabeled"}.get(c, str(c))))
            for c in present
        ]
        ax.legend(handles=handles, fontsize=6, loc="lower left", ncol=2, framealpha=0.7)
        ax.set_title(f"semantics ({sem_key})", fontsize=9)
    else:
        missing(ax, "no semantics")
    ax = axes[0, 2]
    if disp is not None:
        im = ax.imshow(disp, cmap="magma")
        bar(
            im,
            ax,
            "relative disparity (no unit; unknown affine)" if space == "disparity" else "relative depth",
        )
        ax.set_title(f"relative {space} ({cache.resolve_key('depth', None)})", fontsize=9)
    else:
        missing(ax, "no depth")
    ax = axes[1, 0]
    if depth is not None:
        vmax = float(np.nanpercentile(depth, 98)) if np.isfinite(depth).any() else 1.0
        cmap = matplotlib.colormaps["turbo_r"].with_extremes(bad="0.85")
        im = ax.imshow(depth, cmap=cmap, norm=mcolors.Normalize(0, max(1.0, vmax)))
        bar(im, ax, "metric depth (m)")
        a, b = float(cal["scale"][t]), float(cal["shift"][t])
        lhs = "1/z" if cal.get("attrs", {}).get("space", "disparity") == "disparity" else "z"
        sign = "−" if b < 0 else "+"
        ax.set_title(
            f"calibrated depth: {lhs} = {a:.3g}·d {sign} {abs(b):.3g}  (grey: sky / none)", fontsize=9
        )
    else:
        missing(ax, "not calibrated (run calibrate-depth)")
    if photo is not None:
        vmax = float(np.nanpercentile(photo["before"], 98))
        cmap = matplotlib.colormaps["inferno"].with_extremes(bad="0.85")
        for ax, key, name in (
            (axes[1, 1], "before", "before: neighbours unwarped (no depth)"),
            (axes[1, 2], "after", "after: warped through calibrated depth"),
        ):
            im = ax.imshow(photo[key], cmap=cmap, vmin=0, vmax=vmax)
            bar(im, ax, "photometric error (SSIM + L1)")
            ax.set_title(f"{name}: mean {photo[key + '_mean']:.4f}", fontsize=9)
    else:
        missing(axes[1, 1], "no photometric comparison\n(no calibration or no neighbour)")
        missing(axes[1, 2], "")
    flags = []
    cue = ""
    if cal is not None and cal["done"][t]:
        flags = [k for k, bit in FLAGS.items() if int(cal["flags"][t]) & bit]
        if "cue" in cal:
            from occlabel.store.cache import CALIBRATION_CUES

            cue = {v: k for k, v in CALIBRATION_CUES.items()}.get(int(cal["cue"][t]), "?")
    head = f"{scene} / {camera} / frame {t} ({token}){'  keyframe' if smeta['keyframes'][t] else ''}"
    if cal is not None and cal["done"][t]:
        head += f"   cue: {cue or '-'}   flags: {', '.join(flags) or 'none'}"
    fig.suptitle(head, fontsize=11, weight="bold", y=0.995)
    if photo is not None:
        fig.text(
            0.5,
            0.955,
            "Photometric error 0.85·(1−SSIM)/2 + 0.15·L1, minimum over the neighbours calibrate-depth used (frames "
            f"{', '.join(map(str, photo['sources']))}), over static non-sky pixels with a valid warp. Before = no "
            "depth (identity: the reference the calibration must beat); after = the calibrated metric depth.",
            ha="center",
            fontsize=8,
            color="0.25",
        )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    size = fig.canvas.get_width_height()
    plt.close(fig)
    return {
        "path": out,
        "size": tuple(size),
        "scene": scene,
        "camera": camera,
        "frame": t,
        "token": token,
        "photometric": None
        if photo is None
        else {k: photo[k] for k in ("before_mean", "after_mean", "sources")},
    }


def show(store: str | Path, out: str | Path, **kw: Any) -> dict[str, Any]:
    """Picture of a labels store (:func:`labels_figure`) or a cache (:func:`cache_figure`), by store kind."""
    from occlabel.store.common import store_kind

    if store_kind(Path(store)) == "labels":
        return labels_figure(store, out, **kw)
    return cache_figure(store, out, **kw)


__all__ = [
    "cache_figure",
    "camera_view",
    "labels_figure",
    "photometric_before_after",
    "pick_frame",
    "pick_sample",
    "sample_ground_truth",
    "save_render",
    "show",
]
