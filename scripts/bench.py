"""`make bench`: time and size every stage on synthetic scenes and write docs/benchmarks.md.

    python scripts/bench.py --out docs/benchmarks.md [--work runs/bench] [--device auto] [--quick] [--no-ablation]
        [--reuse-caches] [--voxelize-only]

Sections: the full pipeline on a front-camera and a surround-rig scene (seconds per image / keyframe per
stage, bytes per image and per keyframe, depth and label quality), the ablation of calibrate-depth's cues
on the same scenes (``--no-ablation`` skips it), the compression study behind the store's codec
choice, and voxelize's label quality against ground-truth inputs with its fusion ablation, on two seeds
(``--voxelize-seeds``; ``--no-voxelize-ablation`` skips it). Speed and memory targets live here, not in
timed tests.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine_description, write_marked_section  # noqa: E402

from occlabel import __version__  # noqa: E402
from occlabel.fusion import FUSION_PRESETS  # noqa: E402
from occlabel.pipelines import exact_depth_cache, run_synthetic  # noqa: E402
from occlabel.stages import calibrate_depth, evaluate_depth  # noqa: E402
from occlabel.store.cache import open_cache  # noqa: E402
from occlabel.store.common import COMPRESSOR  # noqa: E402

CODECS = {
    "none": None,
    "zstd-3 (zarr default)": ZstdCodec(level=0),
    "blosc-zstd-3-bitshuffle": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
    "blosc-zstd-5-bitshuffle": BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
    "blosc-zstd-5-shuffle": BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),
    "blosc-lz4-5-bitshuffle": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
}


def compression_study(cache_path: Path, work: Path) -> list[dict]:
    """Bytes per frame and write/read time of each codec on one camera's real stage-1 arrays."""
    cache = open_cache(cache_path)
    scene = cache.scenes()[0]
    cam = cache.cameras(scene)[0]
    arrays = {
        "disparity float16": cache.read_depth(scene, cam).astype(np.float16),
        "labels uint8": cache.read_semantics(scene, cam)[0],
        "confidence uint8": (cache.read_semantics(scene, cam)[1] * 255).round().astype(np.uint8),
    }
    rows = []
    for aname, data in arrays.items():
        T = data.shape[0]
        for cname, codec in CODECS.items():
            path = work / "codec.zarr"
            g = zarr.open_group(str(path), mode="w", zarr_format=3)
            a = g.create_array(
                "x",
                shape=data.shape,
                chunks=(1, *data.shape[1:]),
                dtype=data.dtype,
                compressors=codec,
                fill_value=0,
            )
            t0 = time.perf_counter()
            for t in range(T):
                a[t] = data[t]
            tw = time.perf_counter() - t0
            t0 = time.perf_counter()
            back = a[:]
            tr = time.perf_counter() - t0
            assert np.array_equal(back, data, equal_nan=True)
            nbytes = sum(p.stat().st_size for p in (path / "x" / "c").rglob("*") if p.is_file())
            rows.append(
                {
                    "array": aname,
                    "codec": cname,
                    "bytes_per_frame": nbytes / T,
                    "raw_per_frame": data[0].nbytes,
                    "write_ms": 1e3 * tw / T,
                    "read_ms": 1e3 * tr / T,
                }
            )
    return rows


#: calibrate-depth cue ablation: configuration -> options (the pipeline's own run is the last row, all cues)
ABLATION = {
    "photometric only": {"overlap": False, "ground": False, "sky": False},
    "ground only": {"photometric": False, "overlap": False, "sky": False},
    "photometric + ground": {"overlap": False, "sky": False},
    "photometric + ground + overlap": {"sky": False},
    "photometric + ground + sky": {"overlap": False},
}
ALL_CUES = "photometric + ground + overlap + sky (default)"


def _depth_row(depth: dict, seconds: float, images: int) -> dict:
    d = depth["overall"]
    per_cam = {
        cam: {
            "abs_rel": c["raw"]["abs_rel"],
            "floor": c["floor_abs_rel"],
            "scale_error": c["scale_error_median"],
        }
        for cam, c in depth["per_camera"].items()
    }
    return {
        "abs_rel": d["raw"]["abs_rel"],
        "floor": d["floor_abs_rel"],
        "scale_error": d["scale_error_median"],
        "seconds_per_image": seconds / max(images, 1),
        "per_camera": per_cam,
    }


def cue_ablation(results: dict, work: Path, device: str) -> dict:
    """Recalibrate each pipeline scene's cache (a copy) with each cue configuration of :data:`ABLATION`;
    calibrated depth quality per configuration and scene. The default configuration is the pipeline's run."""
    out: dict[str, dict] = {}
    for name, r in results.items():
        cache = work / r["rig"] / "cache.zarr"
        rows = {}
        for conf, opts in ABLATION.items():
            print(f"== cue ablation: {name}, {conf}", flush=True)
            copy = work / "ablation" / f"{r['rig']}.zarr"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(cache, copy)
            t0 = time.perf_counter()
            calibrate_depth.run(copy, device=device, progress=False, overwrite=True, **opts)
            seconds = time.perf_counter() - t0
            rows[conf] = _depth_row(evaluate_depth.run(copy, progress=False), seconds, r["images"])
            shutil.rmtree(copy, ignore_errors=True)
        rows[ALL_CUES] = _depth_row(r["depth"], r["seconds"]["calibrate-depth"], r["images"])
        out[name] = rows
    return out


def render_ablation(ablation: dict) -> list[str]:
    """Markdown lines of the cue ablation table."""
    names = list(ablation)
    lines = [
        "",
        "Calibration cues on their own and together (`calibrate-depth` with cues switched off: "
        "`--no-photometric`, `--no-ground`, `--no-overlap`, `--no-sky`), on the same scenes; AbsRel / floor "
        "and median |scale error| over the images (targets: <= 1.10 and <= 2 %), calibration seconds per image:",
        "",
        "| cues | " + " | ".join(f"{n}: AbsRel | AbsRel / floor | scale error | s/img" for n in names) + " |",
        "|---|" + "---|---|---|---|" * len(names),
    ]
    for conf in ablation[names[0]]:
        cells = []
        for n in names:
            row = ablation[n][conf]
            cells.append(
                f"{row['abs_rel']:.4f} | {row['abs_rel'] / max(row['floor'], 1e-9):.2f} | "
                f"{100 * row['scale_error']:.2f} % | {row['seconds_per_image']:.2f}"
            )
        lines.append(f"| {conf} | " + " | ".join(cells) + " |")
    worst = []
    for n in names:
        for conf, row in ablation[n].items():
            for cam, c in row["per_camera"].items():
                if c["abs_rel"] > 1.2 * c["floor"]:
                    worst.append(
                        f"- {n}, {conf}, {cam}: AbsRel {c['abs_rel']:.4f} vs floor {c['floor']:.4f}, "
                        f"median scale error {100 * c['scale_error']:.1f} %"
                    )
    if worst:
        lines += ["", "Cameras above 1.2 x their floor, per configuration:", "", *worst]
    return lines


def render(results: dict, study: list[dict], args, ablation: dict | None = None) -> str:
    today = time.strftime("%Y-%m-%d")
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python scripts/bench.py`). Each section says its date, machine and command.",
        "",
        f"## Pipeline on synthetic scenes — {today}",
        "",
        f"Machine: {machine_description()}. occlabel {__version__}. Command: `make bench`"
        + (" (`--quick`)" if args.quick else "")
        + (
            " (`--reuse-caches`: extract-2d and calibrate-depth times from the run that made the caches)"
            if getattr(args, "reuse_caches", False)
            else ""
        )
        + ". Foundation models are simulated by the oracle backends (no weights here), so extract-2d time",
        "is I/O + resizing only; the real models' cost is measured in the extract-2d section when it exists.",
        "",
        "| scene | images | keyframes | extract-2d s/img | calibrate s/img | voxelize s/keyframe | cache KB/img | labels KB/keyframe |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        s = r["seconds"]
        lines.append(
            f"| {name} | {r['images']} | {r['keyframes']} | {s['extract-2d'] / r['images']:.3f} | "
            f"{s['calibrate-depth'] / r['images']:.3f} | {s['voxelize'] / r['keyframes']:.3f} | "
            f"{r['bytes']['cache'] / r['images'] / 1e3:.1f} | {r['bytes']['labels'] / r['keyframes'] / 1e3:.1f} |"
        )
    ref_s, ref_where = extract_reference(args)
    lines += [
        "",
        f"Speed against extract-2d with the default models (Depth Anything V2 Small + Grounded-SAM, 100 boxes per "
        "image: its worst case) at "
        f"{ref_s:.1f} s/image on this machine ({ref_where}): calibrate-depth costs "
        + ", ".join(
            f"{100 * r['seconds']['calibrate-depth'] / r['images'] / ref_s:.1f} % ({name})"
            for name, r in results.items()
        )
        + " of it per image (target <= 10 %).",
    ]
    lines += [
        "",
        "Quality on the same scenes (depth on all calibrated images; labels on keyframes, Occ3D protocol over",
        "`mask_camera`; the floor is the AbsRel of the best per-image affine fit of the disparity to the true depth):",
        "",
        "| scene | depth AbsRel | floor AbsRel | AbsRel / floor | median scale error | label mIoU | geometry IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        d = r["depth"]["overall"]
        o = r["occupancy"]
        lines.append(
            f"| {name} | {d['raw']['abs_rel']:.4f} | {d['floor_abs_rel']:.4f} | "
            f"{d['raw']['abs_rel'] / max(d['floor_abs_rel'], 1e-9):.2f} | {100 * d['scale_error_median']:.2f} % | "
            f"{100 * o['miou']:.2f} | {100 * o['iou_geometry']:.2f} |"
        )
    outliers = [
        (name, cam, c["raw"]["abs_rel"], c["floor_abs_rel"], c["scale_error_median"])
        for name, r in results.items()
        for cam, c in r["depth"]["per_camera"].items()
        if c["raw"]["abs_rel"] > 1.2 * c["floor_abs_rel"]
    ]
    if outliers:
        lines += ["", "Cameras whose calibrated AbsRel exceeds 1.2 x their floor:", ""]
        lines += [
            f"- {name}, {cam}: AbsRel {a:.4f} vs floor {f:.4f}, median scale error {100 * e:.1f} %"
            for name, cam, a, f, e in outliers
        ]
    if ablation:
        lines += render_ablation(ablation)
        meta = getattr(args, "ablation_meta", None)
        if meta and meta["date"] != today or getattr(args, "reuse_ablation", None):
            lines += [
                "",
                f"(Rows other than the defaults come from the run of {meta['date']} of the same calibration "
                f"method (version {meta['method_version']}; results are deterministic for a seed), "
                "`--reuse-ablation`; their s/img were measured with other work on the machine.)",
            ]
    lines += [
        "",
        f"## Store compression — {today}",
        "",
        "Per-frame chunks of one camera of the front scene, rewritten with each codec (bytes on disk per frame,",
        "write and read time per frame). The store uses the codec marked *used*.",
        "",
        "| array | codec | KB/frame | ratio | write ms/frame | read ms/frame |",
        "|---|---|---|---|---|---|",
    ]
    used_name = next(
        (n for n, c in CODECS.items() if c is not None and c.to_dict() == COMPRESSOR.to_dict()), None
    )
    totals: dict[str, float] = {}
    for row in study:
        totals[row["codec"]] = totals.get(row["codec"], 0.0) + row["bytes_per_frame"]
    for row in study:
        used = " *used*" if row["codec"] == used_name else ""
        lines.append(
            f"| {row['array']} | {row['codec']}{used} | {row['bytes_per_frame'] / 1e3:.1f} | "
            f"{row['raw_per_frame'] / row['bytes_per_frame']:.2f} | {row['write_ms']:.2f} | {row['read_ms']:.2f} |"
        )
    lines += ["", "Total per frame (disparity + labels + confidence):", ""]
    lines += [
        f"- {name}: {b / 1e3:.1f} KB" + (" *used*" if name == used_name else "") for name, b in totals.items()
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Voxelize: label quality against ground-truth inputs, and the fusion ablation
# --------------------------------------------------------------------------------------------------

#: voxelize ablation: configuration -> (cache, voxelize options). "cal": the pipeline's calibrated cache;
#: "orc": the same disparity calibrated per image by its best affine fit to the true depth (oracle
#: calibration: what is left is fusion error, not calibration error); "orc-rel": the same fit weighted to
#: relative depth error (no range bias, see :func:`depth_bias_by_range`); "exact", "exact*F": the ground-truth
#: depth (times F) written as the cache's map (scale 1, shift 0); "blur": the oracle's disparity with its
#: 1-px blur only (no iid or low-frequency noise), calibrated by the per-image affine fit. The last two
#: groups measure how sensitive the Occ3D metric is to depth error, with the semantics fixed to the truth;
#: their "reference fusion" rows fuse with the "gt" preset (occlabel.fusion.FUSION_PRESETS), the options
#: source "gt" resolves to.
VOXELIZE_CONFIGS: dict[str, tuple[str, dict]] = {
    "GT depth + GT semantics (reference)": ("cal", {"source": "gt"}),
    "estimated (defaults)": ("cal", {}),
    "estimated, oracle calibration": ("orc", {}),
    "GT depth + estimated semantics": ("cal", {"source": "gt-depth"}),
    "estimated depth + GT semantics": ("cal", {"source": "gt-semantics"}),
    "no TSDF (voting only)": ("cal", {"tsdf": False}),
    "no TSDF space carving": ("cal", {"tsdf_carve": 0.0}),
    "no free-space carving (occ_ratio 0, no TSDF carving)": ("cal", {"occ_ratio": 0.0, "tsdf_carve": 0.0}),
    "estimated, oracle calibration fitted on relative error": ("orc-rel", {}),
    "no near-frame moving-class rule": ("cal", {"moving_share": 0.0}),
    "no static/moving split": ("cal", {"moving_classes": []}),
    "no surface-normal clearance (1-voxel stops)": ("cal", {"clearance": 0.0}),
    "no flying-pixel filter": ("cal", {"edge_tol": 0.0}),
    "no range weighting": ("cal", {"range_weight_m": 0.0}),
    "window 0 (keyframe only)": ("cal", {"window": 0}),
    "window 2": ("cal", {"window": 2}),
    "window 4": ("cal", {"window": 4}),
    "window 12": ("cal", {"window": 12}),
    "sensitivity: exact depth + GT semantics, reference fusion": (
        "exact",
        {"source": "gt-semantics", **FUSION_PRESETS["gt"]},
    ),
    "sensitivity: exact depth + GT semantics, estimated-depth fusion (defaults)": (
        "exact",
        {"source": "gt-semantics"},
    ),
    "sensitivity: exact depth x 1.005 + GT semantics, reference fusion": (
        "exact*1.005",
        {"source": "gt-semantics", **FUSION_PRESETS["gt"]},
    ),
    "sensitivity: exact depth x 0.995 + GT semantics, reference fusion": (
        "exact*0.995",
        {"source": "gt-semantics", **FUSION_PRESETS["gt"]},
    ),
    "sensitivity: exact depth x 1.02 + GT semantics, reference fusion": (
        "exact*1.02",
        {"source": "gt-semantics", **FUSION_PRESETS["gt"]},
    ),
    "sensitivity: blur-only depth (1 px, no noise, affine fit) + GT semantics, defaults": (
        "blur",
        {"source": "gt-semantics"},
    ),
}
VOX_REFERENCE = "GT depth + GT semantics (reference)"
#: markers of the voxelize section in benchmarks.md (``--voxelize-only`` replaces just that section)
VOX_BEGIN, VOX_END = "<!-- bench_voxelize:begin -->", "<!-- bench_voxelize:end -->"
VOX_HEADLINE = ("estimated (defaults)", "estimated, oracle calibration")
#: extract-2d with the default models (Depth Anything V2 Small + Grounded-SAM at its 100-box worst case) on
#: this CPU, s/image: scripts/bench_extract.py, 2026-11-24 (used when its results.json is not here)
EXTRACT_REFERENCE_S = 226.7


def pipeline(args, run_dir: Path, rig: str, frames: int, seed: int) -> dict:
    """:func:`run_synthetic` on one scene; with ``--reuse-caches``, a scene this script already extracted and
    calibrated in ``run_dir`` (its results.json and cache.zarr) keeps them (extract-2d and calibrate-depth are
    deterministic for a seed; their times stay those of that run) and only voxelize and evaluate run again."""
    from occlabel.stages import evaluate, voxelize
    from occlabel.store.common import store_bytes

    res_path, cache = run_dir / "results.json", run_dir / "cache.zarr"
    if args.reuse_caches and res_path.exists() and cache.exists():
        r = json.loads(res_path.read_text())
        if (r["rig"], r["frames"], r["seed"]) == (rig, frames, seed):
            print(f"   (reusing {cache}: extract-2d and calibrate-depth of an earlier run)", flush=True)
            t0 = time.perf_counter()
            labels = voxelize.run(
                cache, run_dir / "labels.zarr", device=args.device, overwrite=True, progress=False
            )
            r["seconds"]["voxelize"] = time.perf_counter() - t0
            r["occupancy"] = evaluate.run(labels, progress=False)
            r["bytes"]["labels"] = store_bytes(labels)
            r["reused"] = True
            res_path.write_text(json.dumps(r, indent=1))
            return r
    return run_synthetic(run_dir, rig=rig, frames=frames, seed=seed, device=args.device, progress=False)


def extract_reference(args) -> tuple[float, str]:
    """extract-2d seconds per image with the default models on this machine: measured by
    scripts/bench_extract.py (its results.json) when it ran here, else :data:`EXTRACT_REFERENCE_S`."""
    path = Path(getattr(args, "extract_results", "runs/bench_extract/results.json"))
    if path.exists():
        r = json.loads(path.read_text())
        return float(r["default_models_s_per_image"]), f"measured by scripts/bench_extract.py, {r['date']}"
    return EXTRACT_REFERENCE_S, "measured by scripts/bench_extract.py on 2026-11-24 (docs/benchmarks.md)"


def oracle_calibration(cache_path: Path, out: Path | None, relative: bool = False) -> Path:
    """Copy a cache to ``out`` (None: in place) with each image's (scale, shift) replaced by the least-squares
    affine fit of its disparity to the true inverse depth (the calibration floor of evaluate-depth); the
    cache need not be calibrated before. ``relative``: residuals weighted by the true depth, i.e. the fit
    minimises relative (not absolute) inverse-depth error, so near pixels do not dominate the far ones."""
    from occlabel.datasets.base import load_depth_m
    from occlabel.utils import resize_nearest

    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(cache_path, out)
    else:
        out = Path(cache_path)
    cache = open_cache(out, mode="a")
    dataset = cache.open_dataset()
    for scene in cache.scenes():
        frames = dataset.scene(scene).frames
        for cam in cache.cameras(scene):
            T = len(frames)
            key = cache.resolve_key("depth", None)
            done = cache.depth_done(scene, cam, key).astype(bool)
            scale, shift = np.full(T, np.nan), np.full(T, np.nan)
            for t, frame in enumerate(frames):
                im = frame.images.get(cam)
                if im is None or im.depth_path is None or not done[t]:
                    continue
                disp = cache.read_depth(scene, cam, key, t)
                gt = resize_nearest(load_depth_m(im.depth_path), *disp.shape)
                ok = np.isfinite(gt) & np.isfinite(disp) & (gt > 0) & (gt <= 80)
                if ok.sum() < 2:
                    continue
                A = np.stack([disp[ok], np.ones(int(ok.sum()))], 1).astype(np.float64)
                y = 1.0 / gt[ok].astype(np.float64)
                if relative:
                    A, y = A * gt[ok][:, None], y * gt[ok]
                (scale[t], shift[t]), *_ = np.linalg.lstsq(A, y, rcond=None)
            fitted = np.isfinite(scale)
            arrays = {
                "scale": np.nan_to_num(scale),
                "shift": np.nan_to_num(shift),
                "loss": np.zeros(T),
                "valid_frac": fitted.astype(np.float64),
                "flags": np.zeros(T, np.uint8),
                "done": fitted,
            }
            cache.write_calibration(
                scene, cam, arrays, {"method": "oracle: per-image affine fit to GT depth"}, key
            )
    return out


def blur_only_cache(run_dir: Path, out: Path, seed: int, device: str) -> Path:
    """extract-2d of a pipeline scene's dataset with the oracle depth's 1-px blur and no noise, calibrated
    by the per-image affine fit (:func:`oracle_calibration`)."""
    from occlabel.datasets import open_dataset
    from occlabel.stages import extract_2d

    extract_2d.run(
        open_dataset("folder", run_dir / "dataset"),
        out,
        depth_model="oracle",
        semantic_model="oracle",
        seed=seed,
        device=device,
        overwrite=True,
        progress=False,
        depth_conf={"noise": 0.0, "smooth_noise": 0.0},
    )
    return oracle_calibration(out, None)


#: range bins of :func:`depth_bias_by_range`, metres
BIAS_BINS = ((0, 10), (10, 20), (20, 30), (30, 40), (40, 80))


def depth_bias_by_range(cache_path: Path) -> list[float | None]:
    """Median signed log error (percent) of a cache's calibrated depth against the true depth, per range bin
    of :data:`BIAS_BINS`, over the static-class pixels of every image (negative: too near)."""
    from occlabel.conventions import moving_mask_lut
    from occlabel.datasets.base import load_depth_m
    from occlabel.utils import resize_nearest

    cache = open_cache(cache_path)
    dataset = cache.open_dataset()
    moving = moving_mask_lut()
    errs: list[list[np.ndarray]] = [[] for _ in BIAS_BINS]
    for scene in cache.scenes():
        frames = dataset.scene(scene).frames
        for cam in cache.cameras(scene):
            done = cache.read_calibration(scene, cam)["done"]
            for t, frame in enumerate(frames):
                im = frame.images.get(cam)
                if im is None or im.depth_path is None or not done[t]:
                    continue
                depth = cache.metric_depth(scene, cam, t)
                gt = resize_nearest(load_depth_m(im.depth_path), *depth.shape)
                labels = cache.read_semantics(scene, cam, None, t)[0]
                ok = np.isfinite(depth) & np.isfinite(gt) & (gt > 0) & ~moving[labels]
                e, g = np.log(depth[ok] / gt[ok]), gt[ok]
                for i, (lo, hi) in enumerate(BIAS_BINS):
                    errs[i].append(e[(g >= lo) & (g < hi)])
    out = []
    for parts in errs:
        e = np.concatenate(parts) if parts else np.zeros(0)
        out.append(float(100 * np.median(e)) if e.size else None)
    return out


def voxelize_ablation(results: dict, args, frames: int) -> dict:
    """Voxelize every scene and seed with each configuration of :data:`VOXELIZE_CONFIGS` and evaluate it.

    Seed 0 reuses the pipeline's scenes; other seeds run the synthetic pipeline first. Returns
    {"scenes": {scene: {config: {miou, iou_geometry, per_class, seconds_per_keyframe, cpu_s_per_kf}}},
     "total": {config: the same over the summed confusion of all scenes}, "images_per_keyframe": {...}}.
    """
    from occlabel.stages import evaluate, voxelize

    seeds = [int(s) for s in args.voxelize_seeds.split(",") if s.strip()]
    work = args.work / "voxelize"
    scenes: dict[str, dict] = {}
    bias: dict[str, dict] = {}
    per_kf_images: dict[str, float] = {}
    for seed in seeds:
        for rig, n in (("front", frames), ("surround", frames // 2)):
            name = f"{rig}, {n} frames, seed {seed}"
            if seed == 0 and f"{rig}, {n} frames" in results:
                r = results[f"{rig}, {n} frames"]
                run_dir = args.work / rig
            else:
                print(f"== pipeline for the voxelize ablation: {name}", flush=True)
                run_dir = work / f"{rig}-seed{seed}"
                r = pipeline(args, run_dir, rig=rig, frames=n, seed=seed)
            per_kf_images[name] = r["images"] / max(r["keyframes"], 1)
            derived: dict[str, Path] = {"cal": run_dir / "cache.zarr"}

            def cache_for(which: str, run_dir: Path = run_dir, seed: int = seed, derived=derived) -> Path:
                # derived caches are made once per scene, when a configuration first needs them
                if which not in derived:
                    out = work / f"{which.replace('*', 'x')}.zarr"
                    if which in ("orc", "orc-rel"):
                        derived[which] = oracle_calibration(run_dir / "cache.zarr", out, which == "orc-rel")
                    elif which.startswith("exact"):
                        factor = float(which.partition("*")[2] or 1.0)
                        derived[which] = exact_depth_cache(run_dir / "cache.zarr", out, factor)
                    elif which == "blur":
                        derived[which] = blur_only_cache(run_dir, out, seed, args.device)
                    else:
                        raise KeyError(which)
                return derived[which]

            bias[name] = {
                which: depth_bias_by_range(cache_for(which)) for which in ("cal", "orc", "orc-rel", "blur")
            }
            rows = {}
            for conf, (which, opts) in VOXELIZE_CONFIGS.items():
                print(f"== voxelize ablation: {name}, {conf}", flush=True)
                out = voxelize.run(
                    cache_for(which),
                    work / "labels.zarr",
                    device=args.device,
                    overwrite=True,
                    progress=False,
                    **opts,
                )
                ev = evaluate.run(out, progress=False)
                stats = open_labels_meta(out)["stats"]
                rows[conf] = {
                    "miou": ev["miou"],
                    "iou_geometry": ev["iou_geometry"],
                    "per_class": ev["per_class"],
                    "confusion": ev["confusion"],
                    "seconds_per_keyframe": stats["seconds_per_keyframe"],
                    "cpu_seconds_per_keyframe": stats["cpu_seconds_per_keyframe"],
                }
            scenes[name] = rows
            for which, path in derived.items():
                if which != "cal":
                    shutil.rmtree(path, ignore_errors=True)
    total = {}
    for conf in VOXELIZE_CONFIGS:
        c = sum(np.asarray(scenes[s][conf]["confusion"], np.int64) for s in scenes)
        m = evaluate.occ3d_metrics(c)
        total[conf] = {
            "miou": m["miou"],
            "iou_geometry": m["iou_geometry"],
            "per_class": m["per_class"],
            "seconds_per_keyframe": float(np.mean([scenes[s][conf]["seconds_per_keyframe"] for s in scenes])),
        }
    return {
        "scenes": scenes,
        "total": total,
        "images_per_keyframe": per_kf_images,
        "seeds": seeds,
        "depth_bias": bias,
    }


def open_labels_meta(path: Path) -> dict:
    from occlabel.store.labels import open_labels

    return open_labels(path).meta


def render_voxelize_ablation(vox: dict, args) -> str:
    """The voxelize section of benchmarks.md: quality against GT inputs, per-class IoU, ablation, speed."""

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or not b else f"{a / b:.2f}"

    ref = VOX_REFERENCE
    seeds = ", ".join(map(str, vox["seeds"]))
    lines = [
        "",
        VOX_BEGIN,
        "",
        f"## Voxelize: label quality and ablation — {time.strftime('%Y-%m-%d')}",
        "",
        f"Machine: {machine_description()}. Command: `python scripts/bench.py` (`voxelize_ablation`); synthetic scenes "
        f"front ({'10' if args.quick else '20'} frames) and surround ({'5' if args.quick else '10'} frames), "
        f"keyframe every 5th frame, seeds {seeds}"
        + ". Occ3D protocol over the ground truth's `mask_camera`. *Reference*: labels fused from the "
        "dataset's ground-truth depth and semantics through the same code (`--source gt`); *estimated*: "
        "the oracle backends' simulated foundation-model outputs after `calibrate-depth`; *oracle "
        "calibration*: the same disparity with each image's best affine fit to the true depth (the "
        "calibration floor), which separates fusion error from calibration error. Targets: reference "
        "geometry IoU >= 0.80; estimated mIoU >= 0.90 x reference mIoU.",
        "",
        "| scene | reference mIoU / geometry IoU | estimated mIoU / geometry IoU | mIoU ratio | "
        "oracle calibration mIoU / geometry IoU | mIoU ratio | voxelize s/keyframe |",
        "|---|---|---|---|---|---|---|",
    ]
    est, orc = VOX_HEADLINE
    for name, rows in vox["scenes"].items():
        lines.append(
            f"| {name} | {pct(rows[ref]['miou'])} / {pct(rows[ref]['iou_geometry'])} | "
            f"{pct(rows[est]['miou'])} / {pct(rows[est]['iou_geometry'])} | {ratio(rows[est]['miou'], rows[ref]['miou'])} | "
            f"{pct(rows[orc]['miou'])} / {pct(rows[orc]['iou_geometry'])} | {ratio(rows[orc]['miou'], rows[ref]['miou'])} | "
            f"{rows[est]['seconds_per_keyframe']:.2f} |"
        )
    tot = vox["total"]
    lines += [
        "",
        "Ablation over all scenes and seeds together (one confusion matrix; every row changes one thing "
        "from the defaults unless it says otherwise):",
        "",
        "| configuration | mIoU | geometry IoU | mIoU / reference | voxelize s/keyframe |",
        "|---|---|---|---|---|",
    ]
    for conf, row in tot.items():
        lines.append(
            f"| {conf} | {pct(row['miou'])} | {pct(row['iou_geometry'])} | {ratio(row['miou'], tot[ref]['miou'])} | "
            f"{row['seconds_per_keyframe']:.2f} |"
        )
    cols = [ref, est, orc, "GT depth + estimated semantics", "estimated depth + GT semantics"]
    short = [
        "reference",
        "estimated",
        "oracle calibration",
        "GT depth + est. semantics",
        "est. depth + GT semantics",
    ]
    lines += [
        "",
        "Per-class IoU over all scenes and seeds (`-`: the class is in neither ground truth nor labels):",
        "",
        "| class | " + " | ".join(short) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for cls in tot[ref]["per_class"]:
        vals = [tot[c]["per_class"][cls] for c in cols]
        if all(v is None for v in vals):
            continue
        lines.append(f"| {cls} | " + " | ".join(pct(v) for v in vals) + " |")
    lines += [
        "",
        "Calibrated depth, median signed error by true range (static-class pixels of every image; the median "
        "of each scene, averaged over the scenes; negative = too near). *Calibrated*: calibrate-depth; *oracle*: the "
        "per-image least-squares affine fit in inverse depth (the floor evaluate-depth reports); *oracle, "
        "relative*: the same fit weighted to relative error; *blur only*: the oracle depth without its iid and "
        "low-frequency noise, oracle fit.",
        "",
        "| depth | " + " | ".join(f"{lo}-{hi} m" for lo, hi in BIAS_BINS) + " |",
        "|---|" + "---|" * len(BIAS_BINS),
    ]
    for which, label in (
        ("cal", "calibrated"),
        ("orc", "oracle"),
        ("orc-rel", "oracle, relative"),
        ("blur", "blur only, oracle"),
    ):
        per_scene = [vox["depth_bias"][n][which] for n in vox["depth_bias"]]
        vals = []
        for i in range(len(BIAS_BINS)):
            xs = [b[i] for b in per_scene if b[i] is not None]
            vals.append(f"{np.mean(xs):+.2f} %" if xs else "-")
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    ref_s, ref_from = extract_reference(args)
    lines += [
        "",
        f"Speed: voxelize costs {tot[est]['seconds_per_keyframe']:.2f} s per keyframe here (mean over scenes, "
        "wall clock on the machine above, window 8). Per keyframe the pipeline extracts "
        + ", ".join(f"{v:.0f} images ({k})" for k, v in vox["images_per_keyframe"].items())
        + f"; at {ref_s:.1f} s per image for extract-2d with the default models on this machine ({ref_from}), "
        "voxelize is "
        + ", ".join(
            f"{100 * vox['scenes'][k][est]['seconds_per_keyframe'] / (v * ref_s):.2f} %"
            for k, v in vox["images_per_keyframe"].items()
        )
        + " of it (target <= 5 %).",
        "",
        VOX_END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="smaller scenes (a smoke test of the script)")
    ap.add_argument(
        "--no-ablation",
        action="store_true",
        help="skip the calibration cue ablation (recalibrates each scene 5x)",
    )
    ap.add_argument(
        "--no-voxelize-ablation", action="store_true", help="skip the voxelize quality section and ablation"
    )
    ap.add_argument(
        "--voxelize-only",
        action="store_true",
        help="run the voxelize section alone (pipelines reused with --reuse-caches) and replace only that "
        "section of --out",
    )
    ap.add_argument(
        "--voxelize-seeds",
        default="0,1",
        help="seeds of the voxelize ablation scenes (0 reuses the pipeline's)",
    )
    ap.add_argument(
        "--reuse-caches",
        action="store_true",
        help="keep scenes already extracted and calibrated under --work (rerun voxelize and evaluate only)",
    )
    ap.add_argument(
        "--reuse-ablation",
        type=Path,
        default=None,
        metavar="BENCH_JSON",
        help="take the cue ablation from an earlier run's bench.json (same calibration method version)",
    )
    ap.add_argument(
        "--extract-results",
        type=Path,
        default=Path("runs/bench_extract/results.json"),
        help="extract-2d timings of scripts/bench_extract.py (the reference of the speed targets)",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    frames = 10 if args.quick else 20
    results = {}
    for rig, n in (("front", frames), ("surround", frames // 2)):
        print(f"== pipeline: {rig}, {n} frames", flush=True)
        results[f"{rig}, {n} frames"] = pipeline(args, args.work / rig, rig=rig, frames=n, seed=0)
    if args.voxelize_only:
        vox = voxelize_ablation(results, args, frames)
        (args.work / "voxelize_ablation.json").write_text(json.dumps(vox, indent=1))
        section = render_voxelize_ablation(vox, args)
        write_marked_section(args.out, section, VOX_BEGIN, VOX_END)
        print(section)
        return
    ablation_meta = {"date": time.strftime("%Y-%m-%d"), "method_version": calibrate_depth.METHOD_VERSION}
    if args.reuse_ablation:
        saved = json.loads(args.reuse_ablation.read_text())
        ablation, ablation_meta = saved["cue_ablation"], saved["cue_ablation_meta"]
        if ablation_meta["method_version"] != calibrate_depth.METHOD_VERSION:
            sys.exit(
                f"--reuse-ablation: {args.reuse_ablation} is of calibration method version "
                f"{ablation_meta['method_version']}, this code is {calibrate_depth.METHOD_VERSION}"
            )
        for name, r in results.items():  # the defaults row is this run's pipeline
            ablation[name][ALL_CUES] = _depth_row(r["depth"], r["seconds"]["calibrate-depth"], r["images"])
    elif args.no_ablation:
        ablation = None
    else:
        ablation = cue_ablation(results, args.work, args.device)
    args.ablation_meta = ablation_meta
    print("== compression study", flush=True)
    study = compression_study(args.work / "front" / "cache.zarr", args.work)
    (args.work / "bench.json").write_text(
        json.dumps(
            {
                "pipeline": results,
                "compression": study,
                "cue_ablation": ablation,
                "cue_ablation_meta": ablation_meta,
            },
            indent=1,
        )
    )
    text = render(results, study, args, ablation)
    if not args.no_voxelize_ablation:
        vox = voxelize_ablation(results, args, frames)
        (args.work / "voxelize_ablation.json").write_text(json.dumps(vox, indent=1))
        text += render_voxelize_ablation(vox, args)
    args.out.write_text(text + kept_sections(args.out, skip=("bench_voxelize",)))
    print(text)


def kept_sections(path: Path, skip: tuple[str, ...] = ()) -> str:
    """The sections other scripts keep between ``<!-- name:begin -->`` / ``<!-- name:end -->`` markers in
    ``path`` (scripts/bench_extract.py, scripts/bench_real.py), to append after this script's own text."""
    if not path.exists():
        return ""
    text, out = path.read_text(), []
    for m in re.finditer(r"<!-- (\w+):begin -->.*?<!-- \1:end -->", text, flags=re.S):
        if m.group(1) in skip:
            continue
        out.append("\n" + m.group(0) + "\n")
    return "".join(out)


if __name__ == "__main__":
    main()
