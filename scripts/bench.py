"""`make bench`: time and size every stage on synthetic scenes and write docs/benchmarks.md.

    python scripts/bench.py --out docs/benchmarks.md [--work runs/bench] [--device auto] [--quick]

Sections: the full pipeline on a front-camera and a surround-rig scene (seconds per image / keyframe per
stage, bytes per image and per keyframe, depth and label quality), and the compression study behind the
store's codec choice. Speed and memory targets live here, not in timed tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from occlabel import __version__  # noqa: E402
from occlabel.pipelines import run_synthetic  # noqa: E402
from occlabel.store.cache import open_cache  # noqa: E402
from occlabel.store.common import COMPRESSOR  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} threads, {dev}; torch {torch.__version__}, Python {platform.python_version()}"


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


def render(results: dict, study: list[dict], args) -> str:
    today = time.strftime("%Y-%m-%d")
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python scripts/bench.py`). Each section says its date, machine and command.",
        "",
        f"## Pipeline on synthetic scenes — {today}",
        "",
        f"Machine: {machine()}. occlabel {__version__}. Command: `make bench`"
        + (" (`--quick`)" if args.quick else "")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="smaller scenes (a smoke test of the script)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    frames = 10 if args.quick else 20
    results = {}
    for rig, n in (("front", frames), ("surround", frames // 2)):
        print(f"== pipeline: {rig}, {n} frames", flush=True)
        results[f"{rig}, {n} frames"] = run_synthetic(
            args.work / rig, rig=rig, frames=n, seed=0, device=args.device, progress=False
        )
    print("== compression study", flush=True)
    study = compression_study(args.work / "front" / "cache.zarr", args.work)
    (args.work / "bench.json").write_text(json.dumps({"pipeline": results, "compression": study}, indent=1))
    text = render(results, study, args)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
