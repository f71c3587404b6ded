"""Short recipes that chain the stages (each stage is usable alone; these only call them in order)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from occlabel.store.common import store_bytes


def run_synthetic(
    out: str | Path,
    rig: str = "front",
    frames: int = 20,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
    echo: Callable[[str], Any] = print,
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """synth -> extract-2d (oracle) -> calibrate-depth -> voxelize -> evaluate, on one synthetic scene.

    The oracle backends simulate the foundation models from the synthetic ground truth (relative disparity
    under an unknown per-image affine with noise and blur; semantics with boundary noise). Writes
    ``out/{dataset, cache.zarr, labels.zarr, results.json}`` and returns the results dict (metrics,
    seconds per stage, bytes per store).
    """
    from occlabel.datasets import open_dataset
    from occlabel.datasets.synthetic import synth
    from occlabel.stages import calibrate_depth, evaluate, evaluate_depth, extract_2d, voxelize

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        echo(f"[{name}]")
        t0 = time.perf_counter()
        res = fn()
        times[name] = time.perf_counter() - t0
        return res

    root = timed(
        "synth",
        lambda: synth(
            out / "dataset", scenes=1, frames=frames, rig=rig, seed=seed, progress=progress, overwrite=True
        ),
    )
    ds = open_dataset("folder", root)
    cache = timed(
        "extract-2d",
        lambda: extract_2d.run(
            ds,
            out / "cache.zarr",
            depth_model="oracle",
            semantic_model="oracle",
            seed=seed,
            device=device,
            overwrite=True,
            progress=progress,
        ),
    )
    timed("calibrate-depth", lambda: calibrate_depth.run(cache, device=device, progress=progress))
    labels = timed(
        "voxelize",
        lambda: voxelize.run(cache, out / "labels.zarr", device=device, overwrite=True, progress=progress),
    )
    depth_res = timed("evaluate depth", lambda: evaluate_depth.run(cache, progress=progress))
    occ_res = timed("evaluate labels", lambda: evaluate.run(labels, progress=progress))

    bev = timed("picture", lambda: save_demo_bev(labels, ds, out / "bev.png"))
    n_images = sum(len(f.images) for s in ds.scenes for f in s.frames)
    n_key = sum(len(s.keyframe_indices) for s in ds.scenes)
    results = {
        "rig": rig,
        "frames": frames,
        "seed": seed,
        "images": n_images,
        "keyframes": n_key,
        "seconds": times,
        "depth": depth_res,
        "occupancy": occ_res,
        "bytes": {"cache": store_bytes(cache), "labels": store_bytes(labels)},
        "picture": str(bev),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def exact_depth_cache(cache_path: str | Path, out: str | Path, factor: float = 1.0) -> Path:
    """Copy a cache to ``out`` with every image's map replaced by the dataset's true depth times ``factor``
    (as disparity 1 / (factor z), float16 to 11 bits) and calibrated with scale 1, shift 0: the labels then
    see the true geometry, or the true geometry under a known uniform depth error, through the cache path
    (the sensitivity rows of scripts/bench.py; fuse it with ``source="gt-semantics"`` and the "gt" preset
    of occlabel.fusion.FUSION_PRESETS to reproduce ``--source gt``).

    Returns:
        ``out`` as a Path.
    """
    import shutil

    import numpy as np

    from occlabel.datasets.base import load_depth_m
    from occlabel.errors import StoreError
    from occlabel.store.cache import open_cache
    from occlabel.utils import resize_nearest

    out = Path(out)

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(cache_path, out)
    cache = open_cache(out, mode="a")
    dataset = cache.open_dataset()
    for scene in cache.scenes():
        frames = dataset.scene(scene).frames
        for cam in cache.cameras(scene):
            key = cache.resolve_key("depth", None)
            if cache.depth_attrs(scene, cam, key).get("space", "disparity") != "disparity":
                raise StoreError(f"{cache_path}: {scene}/{cam} depth is not a disparity map")
            T = len(frames)
            h, w = cache.camera_meta(scene, cam)["height"], cache.camera_meta(scene, cam)["width"]
            for t, frame in enumerate(frames):
                im = frame.images.get(cam)
                if im is not None and im.depth_path is not None:
                    gt = resize_nearest(load_depth_m(im.depth_path), h, w)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        disp = np.where(np.isfinite(gt) & (gt > 0), 1.0 / (factor * gt), np.nan)
                    cache.write_depth(scene, cam, key, t, disp.astype(np.float32))
            cal = cache.read_calibration(scene, cam, key)
            arrays = {k: cal[k] for k in ("loss", "valid_frac", "flags", "done")}
            arrays.update(scale=np.ones(T), shift=np.zeros(T))
            cache.write_calibration(scene, cam, arrays, {"method": f"exact: true depth x {factor}"}, key)
    return out


def save_demo_bev(labels_path: Path, dataset, path: Path) -> Path:
    """BEV of the middle keyframe's labels beside its ground truth (when the dataset has one)."""
    from occlabel.datasets.base import load_occupancy
    from occlabel.store.labels import open_labels
    from occlabel.viz.bev import bev_rgb, save_bev_comparison

    reader = open_labels(labels_path)
    sample = reader[len(reader) // 2]
    panels = {"occlabel (camera-only)": bev_rgb(sample["semantics"], sample["mask_camera"])}
    frame = next(f for s in dataset.scenes for f in s.frames if f.token == sample["token"])
    if frame.occupancy_path is not None:
        gt = load_occupancy(frame.occupancy_path)
        panels["ground truth"] = bev_rgb(gt["semantics"], gt["mask_camera"])
    return save_bev_comparison(panels, path, title=f"{sample['scene']} / {sample['token']}")


def demo(
    out: str | Path = "runs/demo",
    rig: str = "front",
    frames: int = 20,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """The `occlabel demo` recipe: :func:`run_synthetic` and a short results table."""
    from occlabel.stages import evaluate

    out = Path(out)
    results = run_synthetic(
        out, rig=rig, frames=frames, seed=seed, device=device, progress=progress, echo=echo
    )
    d, occ_res, times = results["depth"]["overall"], results["occupancy"], results["seconds"]
    n_images, n_key = results["images"], results["keyframes"]
    echo("")
    echo(evaluate.format_table(occ_res))
    echo("")
    echo("occlabel demo (synthetic scene; foundation models simulated by oracle backends)")
    echo(f"  images / keyframes            {n_images} / {n_key}")
    echo(f"  calibration scale error       {100 * d['scale_error_median']:.2f} % (median over images)")
    echo(
        f"  depth AbsRel calibrated       {d['raw']['abs_rel']:.4f}   (floor of the best affine fit: {d['floor_abs_rel']:.4f})"
    )
    echo(
        f"  label mIoU / geometry IoU     {100 * occ_res['miou']:.2f} / {100 * occ_res['iou_geometry']:.2f}  (Occ3D protocol, mask_camera)"
    )
    echo("  seconds per stage             " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    echo(f"  results                       {out / 'results.json'}")
    echo(f"  picture                       {results['picture']}")
    echo("")
    pictures = save_demo_pictures(out, progress=progress)
    echo(f"  3D render                     {pictures['render']}")
    echo(f"  report                        {pictures['report']}  (open in a browser)")
    return results


def save_demo_pictures(out: str | Path, progress: bool = False) -> dict[str, Path]:
    """The demo's 3D render (``render3d.png``, the labels beside the ground truth) and its HTML report
    (``report.html``, occlabel.viz.report) in ``out``."""
    from occlabel.viz.report import build_report
    from occlabel.viz.show import save_render

    out = Path(out)
    render = save_render(out / "labels.zarr", out / "render3d.png")
    rep = build_report(out, out / "report.html", progress=progress)
    return {"render": render, "report": rep["path"]}
