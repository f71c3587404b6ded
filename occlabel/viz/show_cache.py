"""The picture of one cache frame (``occlabel show CACHE.zarr``): the image with its semantics, the
semantics, the relative disparity, the calibrated metric depth, and the photometric error before and after
calibration, measured as calibrate-depth measures it (:func:`photometric_before_after`).

Reads through the public cache reader (open_cache) and the dataset recorded in it; the semantics'
vocabulary through :meth:`Cache.vocabulary`; the photometric error from occlabel.viz.show_photometric. Drawn
with matplotlib's Agg backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.conventions import SKY, UNLABELED
from occlabel.errors import OccLabelError, StoreError
from occlabel.viz.render import class_palette, overlay
from occlabel.viz.show_labels import pyplot
from occlabel.viz.show_photometric import load_rgb, photometric_before_after, semantics_vocabulary

log = logging.getLogger("occlabel.viz")

#: the note above the photometric panels; {sources}: the neighbour frames
PHOTOMETRIC_NOTE = (
    "Photometric error 0.85·(1−SSIM)/2 + 0.15·L1, minimum over the neighbours calibrate-depth used (frames "
    "{sources}), over static non-sky pixels with a valid warp. Before = no "
    "depth (identity: the reference the calibration must beat); after = the calibrated metric depth."
)


# --------------------------------------------------------------------------------------------------
# Cache figure
# --------------------------------------------------------------------------------------------------


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


@dataclass
class CacheFrame:
    """What the picture of one cache frame shows (None: not available)."""

    scene: str
    camera: str
    t: int  # position in the scene
    token: str
    keyframe: bool
    h: int  # the cache's image size, px
    w: int
    image: np.ndarray | None  # <float32: h, w, 3> in [0, 1] (None: dataset not available)
    disp: np.ndarray | None  # <float32: h, w> relative disparity (or depth: ``space``)
    space: str  # "disparity" or "depth"
    depth_key: str | None
    sem_key: str | None
    labels: np.ndarray | None  # <uint8: h, w> semantics
    vocab: Any  # the semantics' Vocabulary (None without semantics)
    depth: np.ndarray | None  # <float32: h, w> calibrated metric depth, m
    cal: dict[str, Any] | None  # cache.read_calibration of the camera
    photo: dict[str, Any] | None  # photometric_before_after


def read_cache_frame(
    cache_path, scene: str | None, camera: str | None, frame: str | int | None
) -> CacheFrame:
    """Everything the cache figure draws, for the frame :func:`pick_frame` picks."""
    from occlabel.store.cache import open_cache

    cache = open_cache(cache_path)
    scene, camera, t = pick_frame(cache, scene, camera, frame)
    smeta = cache.scene_meta(scene)
    dataset = None
    try:
        dataset = cache.open_dataset()
    except (OccLabelError, OSError) as e:
        log.warning("dataset of %s not available (%s): no image", cache_path, e)
    cm = cache.camera_meta(scene, camera)
    h, w = cm["height"], cm["width"]
    image = None
    if dataset is not None:
        image = load_rgb(dataset.scene(scene).frames[t].images[camera].path, (h, w))
    try:
        disp = cache.read_depth(scene, camera, None, t)
        space = cache.depth_attrs(scene, camera).get("space", "disparity")
        depth_key = cache.resolve_key("depth", None)
    except StoreError:
        disp, space, depth_key = None, "disparity", None
    sem_key = cache.meta.get("default_semantics")
    labels = cache.read_semantics(scene, camera, sem_key, t)[0] if sem_key else None
    depth = cal = None
    try:
        cal = cache.read_calibration(scene, camera)
        if cal["done"][t]:
            depth = cache.metric_depth(scene, camera, t)
    except StoreError:
        pass
    photo = photometric_before_after(cache, dataset, scene, camera, t) if depth is not None else None
    return CacheFrame(
        scene, camera, t, smeta["tokens"][t], bool(smeta["keyframes"][t]), h, w, image, disp, space,
        depth_key, sem_key, labels, semantics_vocabulary(cache, scene, camera, sem_key),
        depth, cal, photo,
    )  # fmt: skip


def _missing(ax, text: str, f: CacheFrame) -> None:
    ax.set_facecolor("0.92")
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.3")
    ax.set_xlim(0, f.w)
    ax.set_ylim(f.h, 0)


def _bar(fig, im, ax, label: str) -> None:
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def _draw_image(ax, f: CacheFrame, pal: np.ndarray) -> None:
    if f.image is None:
        _missing(ax, "image not available (dataset moved?)", f)
        return
    show = (f.image * 255).astype(np.uint8)
    if f.labels is not None:
        show = overlay(show, f.labels, pal, free=UNLABELED, alpha=0.45)
    ax.imshow(show)
    ax.set_title(f"image{' + semantics' if f.labels is not None else ''}", fontsize=9)


def _draw_semantics(ax, f: CacheFrame, pal: np.ndarray) -> None:
    from matplotlib.patches import Patch

    from occlabel.viz.render import class_names

    if f.labels is None:
        _missing(ax, "no semantics", f)
        return
    ax.imshow(pal[f.labels], interpolation="nearest")
    names = dict(f.vocab.names()) if f.vocab is not None else class_names()
    present = [int(c) for c in np.unique(f.labels)]
    handles = [
        Patch(color=pal[c] / 255, label=names.get(c, {SKY: "sky", UNLABELED: "unlabeled"}.get(c, str(c))))
        for c in present
    ]
    ax.legend(handles=handles, fontsize=6, loc="lower left", ncol=2, framealpha=0.7)
    ax.set_title(f"semantics ({f.sem_key})", fontsize=9)


def _draw_disparity(fig, ax, f: CacheFrame) -> None:
    if f.disp is None:
        _missing(ax, "no depth", f)
        return
    im = ax.imshow(f.disp, cmap="magma")
    _bar(
        fig,
        im,
        ax,
        "relative disparity (no unit; unknown affine)" if f.space == "disparity" else "relative depth",
    )
    ax.set_title(f"relative {f.space} ({f.depth_key})", fontsize=9)


def _draw_depth(fig, ax, f: CacheFrame) -> None:
    import matplotlib
    import matplotlib.colors as mcolors

    if f.depth is None:
        _missing(ax, "not calibrated (run calibrate-depth)", f)
        return
    vmax = float(np.nanpercentile(f.depth, 98)) if np.isfinite(f.depth).any() else 1.0
    cmap = matplotlib.colormaps["turbo_r"].with_extremes(bad="0.85")
    im = ax.imshow(f.depth, cmap=cmap, norm=mcolors.Normalize(0, max(1.0, vmax)))
    _bar(fig, im, ax, "metric depth (m)")
    a, b = float(f.cal["scale"][f.t]), float(f.cal["shift"][f.t])
    lhs = "1/z" if f.cal.get("attrs", {}).get("space", "disparity") == "disparity" else "z"
    sign = "−" if b < 0 else "+"
    ax.set_title(f"calibrated depth: {lhs} = {a:.3g}·d {sign} {abs(b):.3g}  (grey: sky / none)", fontsize=9)


def _draw_photometric(fig, axes, f: CacheFrame) -> None:
    import matplotlib

    if f.photo is None:
        _missing(axes[0], "no photometric comparison\n(no calibration or no neighbour)", f)
        _missing(axes[1], "", f)
        return
    vmax = float(np.nanpercentile(f.photo["before"], 98))
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="0.85")
    for ax, key, name in (
        (axes[0], "before", "before: neighbours unwarped (no depth)"),
        (axes[1], "after", "after: warped through calibrated depth"),
    ):
        im = ax.imshow(f.photo[key], cmap=cmap, vmin=0, vmax=vmax)
        _bar(fig, im, ax, "photometric error (SSIM + L1)")
        ax.set_title(f"{name}: mean {f.photo[key + '_mean']:.4f}", fontsize=9)


def _headline(f: CacheFrame) -> str:
    """scene / camera / frame, and the calibration's cue and flags when the frame is calibrated."""
    from occlabel.store.cache import CALIBRATION_CUES, FLAGS

    head = f"{f.scene} / {f.camera} / frame {f.t} ({f.token}){'  keyframe' if f.keyframe else ''}"
    if f.cal is not None and f.cal["done"][f.t]:
        flags = [k for k, bit in FLAGS.items() if int(f.cal["flags"][f.t]) & bit]
        cue = ""
        if "cue" in f.cal:
            cue = {v: k for k, v in CALIBRATION_CUES.items()}.get(int(f.cal["cue"][f.t]), "?")
        head += f"   cue: {cue or '-'}   flags: {', '.join(flags) or 'none'}"
    return head


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
    f = read_cache_frame(cache_path, scene, camera, frame)
    pal = class_palette(f.vocab)
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 2 * 5.4 * f.h / f.w + 1.4), dpi=dpi)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    _draw_image(axes[0, 0], f, pal)
    _draw_semantics(axes[0, 1], f, pal)
    _draw_disparity(fig, axes[0, 2], f)
    _draw_depth(fig, axes[1, 0], f)
    _draw_photometric(fig, axes[1, 1:], f)
    fig.suptitle(_headline(f), fontsize=11, weight="bold", y=0.995)
    if f.photo is not None:
        note = PHOTOMETRIC_NOTE.format(sources=", ".join(map(str, f.photo["sources"])))
        fig.text(0.5, 0.955, note, ha="center", fontsize=8, color="0.25")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    size = fig.canvas.get_width_height()
    plt.close(fig)
    photometric = None
    if f.photo is not None:
        photometric = {k: f.photo[k] for k in ("before_mean", "after_mean", "sources")}
    return {
        "path": out,
        "size": tuple(size),
        "scene": f.scene,
        "camera": f.camera,
        "frame": f.t,
        "token": f.token,
        "photometric": photometric,
    }


__all__ = ["CacheFrame", "cache_figure", "photometric_before_after", "pick_frame", "read_cache_frame"]
