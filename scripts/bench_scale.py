"""Scaling benchmark: scenes/s of the pipeline with 1 and 2 workers, and nuScenes trainval projections.

Measures, on synthetic scenes with the oracle backends, extract-2d + calibrate-depth + voxelize with one
Ray task per scene on a local Ray (2 CPUs): "1 worker" runs tasks that each hold both CPUs (one at a
time), "2 workers" tasks of one CPU (two at a time); Ray's start-up is not counted. Then projects the
wall time and compute hours of nuScenes trainval from the per-image cost that scripts/bench_extract.py
measured (runs/bench_extract/results.json, "default_models_s_per_image"), and writes a section between
``<!-- bench_scale:begin -->`` and ``<!-- bench_scale:end -->`` in --out (replaced, or appended; the rest
of the file is left alone).

    python scripts/bench_scale.py --out /tmp/bench_scale.md [--scenes 4 --frames 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchlib import machine_description, write_marked_section  # noqa: E402

BEGIN, END = "<!-- bench_scale:begin -->", "<!-- bench_scale:end -->"
#: nuScenes v1.0-trainval: 850 scenes, 34,149 keyframes (samples) x 6 cameras; the camera sweeps (12 Hz)
#: bring all camera images to about 1.19 M (1.4 M over the 1000 scenes of the full release)
TRAINVAL = {"scenes": 850, "keyframes": 34149, "cameras": 6, "all_images": 1_190_000}
#: calibrate-depth options for speed (the benchmark measures throughput and scaling, not quality)
FAST = {"widths": (64,), "iters": (5,), "s_steps": 16, "polish_rounds": 2, "overlap": False}


def measure(scenes: int, frames: int, size: tuple[int, int], work: Path) -> dict:
    import ray

    from occlabel.datasets import open_dataset
    from occlabel.datasets.synthetic import synth
    from occlabel.geometry.voxel import make_grid
    from occlabel.scale import run_scenes, stage_task

    root = synth(work / "ds", scenes=scenes, frames=frames, size=size, seed=0, progress=False)
    ds = open_dataset("folder", root)
    names = ds.names()
    n_images = sum(len(f.images) for s in ds.scenes for f in s.frames)
    grid = make_grid([-20, -20, -1], [20, 20, 3], 0.4, "ego", "bench")
    here = str(REPO)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": here}},
    )
    out = {"scenes": scenes, "frames": frames, "size": f"{size[0]}x{size[1]}", "images": n_images, "runs": []}
    try:
        # warm the workers (imports, dataset) outside the timings
        for cpus, label in ((2, "1 worker"), (1, "2 workers"), (2, "1 worker"), (1, "2 workers")):
            d = work / f"run-{time.perf_counter_ns()}"
            cache, labels = str(d / "cache.zarr"), str(d / "labels.zarr")
            t0 = time.perf_counter()
            run_scenes(
                stage_task("extract-2d", dataset_kind="folder", dataset_root=str(root), dataset_options={},
                           out=cache, depth_model="oracle", semantic_model="oracle", device="cpu",
                           num_workers=0),
                names, "ray", num_cpus=cpus, progress=False,
            )  # fmt: skip
            t1 = time.perf_counter()
            run_scenes(
                stage_task("calibrate-depth", cache=cache, device="cpu", **FAST),
                names, "ray", num_cpus=cpus, progress=False,
            )  # fmt: skip
            t2 = time.perf_counter()
            run_scenes(
                stage_task("voxelize", cache=cache, out=labels, grid=grid, device="cpu"),
                names, "ray", num_cpus=cpus, progress=False,
            )  # fmt: skip
            t3 = time.perf_counter()
            out["runs"].append(
                {"workers": label, "extract_s": t1 - t0, "calibrate_s": t2 - t1, "voxelize_s": t3 - t2,
                 "total_s": t3 - t0, "scenes_per_s": scenes / (t3 - t0)}
            )  # fmt: skip
    finally:
        ray.shutdown()
    # the second pass of each setting (the first warms the workers)
    out["runs"] = out["runs"][2:]
    return out


def project(measured: dict, s_per_image: float | None, gpu_s_per_image: float | None) -> dict:
    one, two = measured["runs"]
    speedup = two["scenes_per_s"] / one["scenes_per_s"]
    kf_images = TRAINVAL["keyframes"] * TRAINVAL["cameras"]
    proj = {"speedup_2_workers": speedup, "keyframe_images": kf_images, "all_images": TRAINVAL["all_images"]}
    if s_per_image:
        for which in ("keyframe_images", "all_images"):
            n = proj[which]
            proj[f"cpu_hours_{which}"] = n * s_per_image / 3600
    if gpu_s_per_image:
        for which in ("keyframe_images", "all_images"):
            proj[f"gpu_hours_{which}"] = proj[which] * gpu_s_per_image / 3600
    return proj


def section(measured: dict, proj: dict, s_per_image: float | None, gpu_s: float | None, source: str) -> str:

    one, two = measured["runs"]
    lines = [
        BEGIN,
        f"## Scaling — {time.strftime('%Y-%m-%d')}, {machine_description()}",
        "",
        "Command: `python scripts/bench_scale.py --out docs/benchmarks.md` (part of `make bench`).",
        "",
        f"Measured on {measured['scenes']} synthetic scenes x {measured['frames']} frames (front camera, "
        f"{measured['size']}, {measured['images']} images) with the oracle backends, one Ray task per scene "
        "on a local Ray with 2 CPUs (start-up not counted; the second of two passes). extract-2d, "
        "calibrate-depth (fast options) and voxelize (40 m grid, 0.4 m) run one after the other.",
        "",
        "| workers | extract-2d s | calibrate-depth s | voxelize s | total s | scenes/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in (one, two):
        lines.append(
            f"| {r['workers']} | {r['extract_s']:.1f} | {r['calibrate_s']:.1f} | {r['voxelize_s']:.1f} | "
            f"{r['total_s']:.1f} | {r['scenes_per_s']:.3f} |"
        )
    lines += [
        "",
        f"Speed-up with 2 workers: {proj['speedup_2_workers']:.2f}x. On 2 cores this compares equal compute: "
        "a 1-worker task holds both CPUs and torch uses them as 2 threads (Ray sets OMP_NUM_THREADS to a "
        "task's CPUs), 2 workers run 2 scenes on 1 thread each; the machine is shared with other jobs, so "
        "the figures are noisy. Scenes share nothing, so throughput grows with the number of workers that "
        "have their own cores or GPU; the projection below assumes that (wall ~ total / workers).",
        "",
        "**nuScenes v1.0-trainval projection** (850 scenes): extract-2d dominates (the models); it runs on "
        f"every camera image the adapter emits: the {TRAINVAL['keyframes']:,} keyframes x 6 cameras = "
        f"{proj['keyframe_images']:,} images with `--dataset-option sweeps=false`, about "
        f"{proj['all_images']:,} with the camera sweeps (the default: sweeps are calibrate-depth's temporal "
        "neighbours).",
        "",
    ]
    if s_per_image:
        lines += [
            f"Per-image cost of the default models (Depth Anything V2 Small + Grounded-SAM), from {source}: "
            f"{s_per_image:.1f} s per image on CPU (2 threads). That is "
            f"{proj['cpu_hours_keyframe_images']:,.0f} CPU-hours for the keyframes and "
            f"{proj['cpu_hours_all_images']:,.0f} with sweeps; on N workers, wall time ~ that / N "
            f"(e.g. 100 workers: {proj['cpu_hours_all_images'] / 100:,.0f} h with sweeps).",
        ]
    else:
        lines.append(f"No per-image cost found ({source}); run scripts/bench_extract.py first.")
    if gpu_s:
        lines += [
            "",
            f"With a GPU at {gpu_s:.3f} s per image (--gpu-s-per-image): "
            f"{proj['gpu_hours_keyframe_images']:,.1f} GPU-hours for the keyframes, "
            f"{proj['gpu_hours_all_images']:,.1f} with sweeps; on N GPUs (one Ray task per GPU), wall ~ that / N.",
        ]
    else:
        lines += [
            "",
            "GPU-hours: not measured here (this machine has no GPU; the figure above is CPU). GPU-hours = "
            "images x GPU seconds per image / 3600; pass --gpu-s-per-image from a GPU run of "
            "scripts/bench_extract.py.",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="Markdown file to write the section into.")
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="96x64")
    ap.add_argument("--extract-results", type=Path, default=REPO / "runs/bench_extract/results.json")
    ap.add_argument("--gpu-s-per-image", type=float, default=None)
    ap.add_argument("--json", type=Path, default=REPO / "runs/bench_scale/results.json")
    ap.add_argument("--reuse", action="store_true", help="Reuse the timings of --json (no new measurement).")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    w, h = (int(v) for v in args.size.split("x"))
    s_per_image = None
    source = str(
        args.extract_results.relative_to(REPO)
        if args.extract_results.is_relative_to(REPO)
        else args.extract_results
    )
    if args.extract_results.exists():
        s_per_image = json.loads(args.extract_results.read_text()).get("default_models_s_per_image")
    if args.reuse and args.json.exists():
        measured = json.loads(args.json.read_text())["measured"]
    else:
        with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
            measured = measure(args.scenes, args.frames, (w, h), Path(tmp))
    proj = project(measured, s_per_image, args.gpu_s_per_image)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"measured": measured, "projection": proj, "s_per_image": s_per_image}, indent=1)
    )
    write_marked_section(
        args.out, section(measured, proj, s_per_image, args.gpu_s_per_image, source), BEGIN, END
    )
    print(section(measured, proj, s_per_image, args.gpu_s_per_image, source))


if __name__ == "__main__":
    main()
