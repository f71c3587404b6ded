"""The photometric error of a cache frame before and after calibration, measured as calibrate-depth
measures it (what ``occlabel show CACHE.zarr`` draws in its bottom row)."""

from __future__ import annotations

from typing import Any

import numpy as np

from occlabel.errors import StoreError


def semantics_vocabulary(cache, scene: str, camera: str, key: str | None):
    """The semantics' vocabulary (:meth:`Cache.vocabulary`), or None without semantics."""
    return cache.vocabulary(scene, camera, key) if key is not None else None


def load_rgb(path, size: tuple[int, int]) -> np.ndarray:
    """An image file as <float32: h, w, 3> in [0, 1], resized (antialiased) to ``size`` = (h, w)."""
    from PIL import Image

    from occlabel.datasets.base import load_image

    img = load_image(path)
    if img.shape[:2] != tuple(size):
        img = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))
    return img.astype(np.float32) / 255.0


def _photometric_sources(cache, scene: str, camera: str, t: int, opts: dict, neighbours, cfg) -> list[int]:
    """The neighbour frames calibrate-depth warps into frame ``t`` (its recorded offsets and baseline)."""
    from occlabel.stages.calibrate_depth import choose_sources

    geo = cache.geometry(scene, camera)
    src, ok, _ = choose_sources(
        geo["T_world_from_cam"][:, :3, 3],
        geo["present"].astype(bool),
        np.array([t]),
        neighbours,
        float(opts.get("target_baseline_m", cfg.target_baseline_m)),
        int(opts.get("max_stride", cfg.max_stride)),
    )
    return [int(u) for u in src[0][ok[0]]]


def _photometric_mask(cache, scene: str, camera: str, t: int, opts: dict, cfg, depth, h: int, w: int):
    """<bool: 1, h, w> the pixels compared: static classes (all without semantics), inside the border,
    with a finite depth."""
    import torch

    from occlabel.geometry.photometric import border_mask, static_mask
    from occlabel.stages.calibrate_depth import ground_heights

    try:
        labels, _ = cache.read_semantics(scene, camera, None, t)
        _, moving = ground_heights(
            semantics_vocabulary(cache, scene, camera, cache.meta.get("default_semantics")), cfg
        )
        static = static_mask(torch.from_numpy(np.ascontiguousarray(labels))[None], moving)
    except StoreError:
        static = torch.ones(1, h, w, dtype=torch.bool)
    border = border_mask(h, w, max(1, round(float(opts.get("border_frac", cfg.border_frac)) * w)))
    return static & border & torch.isfinite(depth)


def _errors(tgt, srcs, depth, geo: dict, t: int, sources: list[int], base):
    """(before <1, h, w>: the identity error, min over the sources; after <1, h, w>: the error of the
    sources warped through ``depth``, min over the valid warps; has_warp <bool: 1, h, w>)."""
    import torch

    from occlabel.geometry.photometric import fit_gain, min_reprojection, pixel_error
    from occlabel.geometry.warp import relative_pose, warp

    K = torch.from_numpy(geo["K"]).double()
    T_wc = torch.from_numpy(geo["T_world_from_cam"]).double()
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
    after, _, has_warp = min_reprojection(torch.stack(errs, 1), torch.stack(valids, 1))
    return torch.stack(idents, 1).amin(1), after, has_warp


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

    from occlabel.stages.calibrate_depth import CalibrationConfig

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
    sources = _photometric_sources(cache, scene, camera, t, opts, neighbours, cfg)
    if not sources:
        return None
    frames = dataset.scene(scene).frames
    cm = cache.camera_meta(scene, camera)
    h, w = cm["height"], cm["width"]
    tgt = torch.from_numpy(load_rgb(frames[t].images[camera].path, (h, w))).permute(2, 0, 1)[None]
    srcs = torch.stack(
        [torch.from_numpy(load_rgb(frames[u].images[camera].path, (h, w))).permute(2, 0, 1) for u in sources]
    )
    depth = torch.from_numpy(cache.metric_depth(scene, camera, t))[None]
    geo = cache.geometry(scene, camera)
    base = _photometric_mask(cache, scene, camera, t, opts, cfg, depth, h, w)
    before, after, has_warp = _errors(tgt, srcs, depth, geo, t, sources, base)
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


__all__ = ["load_rgb", "photometric_before_after", "semantics_vocabulary"]
