"""extract-2d throughput with real-size random-weight models: `python scripts/bench_extract.py`.

Random weights of the real Depth Anything V2 Small architecture cost the same compute as the released
weights (none can be downloaded here). The script saves such a model with ``save_pretrained``, runs
``occlabel extract-2d`` on nuScenes-sized 1600x900 images through the same loading path users take, and
times the bare model forward at the same network size and batch on the same device. The section it
writes into docs/benchmarks.md (between markers, replacing an older one) gives images/s of both, their
ratio (target: extract-2d >= 0.9 x bare forward) and cache bytes per image.

Images: the six nuScenes camera images in ../shared/data when present (cycled to --images), otherwise
synthetic 1600x900 renders.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from occlabel.datasets import open_dataset  # noqa: E402
from occlabel.models.depth.depth_anything import DepthAnything, network_size  # noqa: E402
from occlabel.stages import extract_2d  # noqa: E402
from occlabel.store.common import store_bytes  # noqa: E402

BEGIN, END = "<!-- bench_extract:begin -->", "<!-- bench_extract:end -->"
SHARED_NUSCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuscenes_scene-0061_keyframe"


def save_random_da_v2_small(path: Path) -> Path:
    """Depth-Anything-V2-Small-hf architecture (DINOv2-S backbone, DPT head) with random weights."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor
    from transformers.models.dinov2 import Dinov2Config

    if (path / "config.json").exists():
        return path
    backbone = Dinov2Config(
        image_size=518,
        hidden_size=384,
        num_attention_heads=6,
        out_indices=[3, 6, 9, 12],
        out_features=["stage3", "stage6", "stage9", "stage12"],
        reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(path)
    DPTImageProcessor(
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(path)
    return path


def make_dataset(root: Path, n: int) -> Path:
    """A folder dataset of ``n`` 1600x900 images (one camera, one scene)."""
    root.mkdir(parents=True, exist_ok=True)
    sources = sorted(SHARED_NUSCENES.glob("*.jpg")) if SHARED_NUSCENES.is_dir() else []
    rng = np.random.default_rng(0)
    frames = []
    K = [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]
    T_ego_from_cam = [[0, 0, 1, 1.7], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1]]
    for i in range(n):
        dst = root / f"{i:04d}.jpg"
        if not dst.exists():
            if sources:
                Image.open(sources[i % len(sources)]).save(dst, quality=95)
            else:
                Image.fromarray(rng.integers(0, 255, (900, 1600, 3), dtype=np.uint8)).save(dst, quality=95)
        T = np.eye(4)
        T[0, 3] = float(i)
        frames.append(
            {
                "token": f"b{i:04d}",
                "timestamp": 0.1 * i,
                "keyframe": True,
                "T_world_from_ego": T.tolist(),
                "images": {"CAM_FRONT": {"path": dst.name, "K": K, "T_ego_from_cam": T_ego_from_cam}},
            }
        )
    (root / "occlabel.json").write_text(
        json.dumps({"format": "occlabel.folder/1", "scenes": [{"name": "bench", "frames": frames}]})
    )
    return root


def storage_proxy(work: Path) -> list[dict]:
    """Cache KB per image at 640x360 for maps with real scene structure: a synthetic six-camera scene
    rendered at 640x360 run through extract-2d with the oracle backends (ground-truth inverse depth under
    a per-image affine, blur and a 3 % low-frequency distortion, plus iid per-pixel noise of 2 % (the
    oracle's default, harsher than a network's smooth output), 0.2 % or none; ground-truth labels with
    boundary noise), stored with exact float16 (--depth-bits 10), 8 and the default 7 mantissa bits."""
    from occlabel.datasets.synthetic import synth

    root = work / "proxy_ds"
    if not (root / "occlabel.json").exists():
        synth(
            root, scenes=1, frames=3, rig="surround", size=(640, 360), seed=0, progress=False, overwrite=True
        )
    ds = open_dataset("folder", root)
    n = sum(len(f.images) for s in ds.scenes for f in s.frames)
    rows = []
    for noise in (0.02, 0.002, 0.0):
        for bits in (10, 8, 7):
            cache = Path(
                extract_2d.run(
                    ds,
                    work / "proxy.zarr",
                    overwrite=True,
                    progress=False,
                    depth_bits=bits,
                    depth_conf={"noise": noise},
                )
            )
            files = [p for p in cache.rglob("*") if p.is_file()]
            rows.append(
                {
                    "noise": noise,
                    "bits": bits,
                    "depth": sum(p.stat().st_size for p in files if "/depth/" in str(p)) / n / 1e3,
                    "semantics": sum(p.stat().st_size for p in files if "/semantics/" in str(p)) / n / 1e3,
                    "total": store_bytes(cache) / n / 1e3,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    ap.add_argument("--work", type=Path, default=Path("runs/bench_extract"))
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    model_dir = save_random_da_v2_small(args.work / "da-v2-small-random")
    root = make_dataset(args.work / "dataset", args.images)
    ds = open_dataset("folder", root)

    # extract-2d through the user path (warm-up run first: model load and caches are not throughput)
    common = dict(
        depth_model=str(model_dir),
        semantic_model="none",
        device=str(dev),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        progress=False,
    )
    extract_2d.run(
        open_dataset("folder", make_dataset(args.work / "warm", args.batch_size)),
        args.work / "warm.zarr",
        overwrite=True,
        **common,
    )
    t0 = time.perf_counter()
    cache = extract_2d.run(ds, args.work / "cache.zarr", overwrite=True, **common)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_extract = time.perf_counter() - t0
    depth_bytes = sum(
        p.stat().st_size for p in (Path(cache) / "bench" / "CAM_FRONT" / "depth").rglob("*") if p.is_file()
    )

    # bare forward at the same network size and batch
    model = DepthAnything(str(model_dir), None, dev)
    h, w = network_size(900, 1600, model.conf["input_size"])
    x = torch.randn(args.batch_size, 3, h, w, device=dev)
    n_batches = -(-args.images // args.batch_size)
    with torch.no_grad(), torch.autocast("cuda", torch.float16, enabled=dev.type == "cuda"):
        model.model(pixel_values=x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n_batches):
            model.model(pixel_values=x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    t_bare = (time.perf_counter() - t0) * args.images / (n_batches * args.batch_size)

    device_name = (
        torch.cuda.get_device_name(0) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    section = "\n".join(
        [
            BEGIN,
            f"## extract-2d with real-size random-weight models — {time.strftime('%Y-%m-%d')}",
            "",
            f"Device: {device_name}; torch {torch.__version__}. Command: `python scripts/bench_extract.py` "
            f"(part of `make bench`). {args.images} images of 1600x900 "
            f"({'the nuScenes samples in ../shared' if SHARED_NUSCENES.is_dir() else 'synthetic noise'}), "
            f"Depth Anything V2 Small architecture with random weights, network input {h}x{w}, batch "
            f"{args.batch_size}, {args.num_workers} decoding worker(s), semantics off.",
            "",
            "| measure | value |",
            "|---|---|",
            f"| extract-2d (decode, resize, model, write) | {args.images / t_extract:.3f} images/s |",
            f"| bare model forward, same size and batch | {args.images / t_bare:.3f} images/s |",
            f"| ratio (target >= 0.9) | {t_bare / t_extract:.2f} |",
            f"| cache bytes per image, disparity at 640x360 float16 | {depth_bytes / args.images / 1e3:.1f} KB |",
            f"| whole cache per image (incl. metadata) | {store_bytes(Path(cache)) / args.images / 1e3:.1f} KB |",
            "",
            "Random weights give near-noise disparity, which compresses worse than a real model's smooth maps, so",
            "the bytes here are an upper bound.",
            END,
        ]
    )
    text = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
    if BEGIN in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    args.out.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
