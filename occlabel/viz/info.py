"""What a store holds (``occlabel info``), read-only. (The to-do planners behind ``--dry-run`` are the stages'
own ``plan`` functions; their table is :func:`occlabel.cli.dispatch.format_plan`.)

Built on the public readers (open_cache, open_labels) and the stores' recorded attributes; nothing here
opens a store for writing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from occlabel.store.common import store_bytes, store_kind


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def cache_array_bytes(path: str | Path) -> dict[str, int]:
    """Bytes on disk of a cache by kind of array: depth values, semantic labels, confidence, other."""
    out = {"depth": 0, "semantics": 0, "confidence": 0, "other": 0}
    for p in Path(path).rglob("*"):
        if not p.is_file():
            continue
        parts = p.relative_to(path).parts
        if "depth" in parts and "values" in parts:
            out["depth"] += p.stat().st_size
        elif "semantics" in parts and "labels" in parts:
            out["semantics"] += p.stat().st_size
        elif "semantics" in parts and "confidence" in parts:
            out["confidence"] += p.stat().st_size
        else:
            out["other"] += p.stat().st_size
    return out


def labels_array_bytes(path: str | Path) -> dict[str, int]:
    """Bytes on disk of a labels store per voxel array (semantics, mask_camera, confidence, hits, passes)."""
    from occlabel.store.labels import VOXEL_ARRAYS

    out = dict.fromkeys(VOXEL_ARRAYS, 0)
    out["other"] = 0
    for p in Path(path).rglob("*"):
        if not p.is_file():
            continue
        parts = p.relative_to(path).parts
        name = parts[1] if len(parts) > 2 else None
        out[name if name in VOXEL_ARRAYS else "other"] += p.stat().st_size
    return out


# --------------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------------


def cache_info(path: str | Path) -> dict[str, Any]:
    """Scenes, cameras, frames and what every stage has done in a CACHE.zarr, plus provenance and sizes."""
    from occlabel.store.cache import open_cache

    path = Path(path)
    cache = open_cache(path)
    meta = cache.meta
    scenes = []
    n_images = 0
    for s in cache.scenes():
        smeta = cache.scene_meta(s)
        cams = []
        for c in cache.cameras(s):
            row = _camera_row(cache, s, c)
            n_images += row["images"]
            cams.append(row)
        scenes.append(
            {
                "scene": s,
                "frames": len(smeta["tokens"]),
                "keyframes": int(np.sum(smeta.get("keyframes", []))),
                "cameras": cams,
            }
        )
    total = store_bytes(path)
    return {
        "kind": "cache",
        "path": str(path),
        "dataset": meta.get("dataset"),
        "created": meta.get("created"),
        "provenance": {
            k: meta.get(k) for k in ("version", "torch", "zarr", "python", "host", "time") if k in meta
        },
        "default_depth": meta.get("default_depth"),
        "default_semantics": meta.get("default_semantics"),
        "stages": meta.get("stages", {}),
        "scenes": scenes,
        "images": n_images,
        "bytes": total,
        "bytes_by_array": cache_array_bytes(path),
        "bytes_per_image": total / n_images if n_images else None,
    }


def _camera_row(cache, s: str, c: str) -> dict[str, Any]:
    """One camera of a cache scene for :func:`cache_info`: images present, size, depth / semantics done per
    key, frames calibrated, flag and cue counts (zeros when never calibrated)."""
    from occlabel.errors import StoreError
    from occlabel.store.cache import CALIBRATION_CUES, FLAGS

    geo = cache.geometry(s, c)
    present = geo["present"].astype(bool)
    row: dict[str, Any] = {"camera": c, "images": int(present.sum())}
    cm = cache.camera_meta(s, c)
    row["size"] = [cm.get("width"), cm.get("height")]
    row["depth"] = {
        k: int((cache.depth_done(s, c, k).astype(bool) & present).sum()) for k in cache.depth_keys(s, c)
    }
    row["semantics"] = {
        k: int((cache.semantics_done(s, c, k).astype(bool) & present).sum())
        for k in cache.semantic_keys(s, c)
    }
    row["calibrated"] = 0
    row["flags"] = {}
    row["cues"] = {}
    try:
        cal = cache.read_calibration(s, c)
        done = cal["done"].astype(bool) & present
        row["calibrated"] = int(done.sum())
        row["flags"] = {k: int(((cal["flags"] & bit) > 0)[done].sum()) for k, bit in FLAGS.items()}
        if "cue" in cal:
            row["cues"] = {k: int((cal["cue"] == v)[done].sum()) for k, v in CALIBRATION_CUES.items()}
    except StoreError:
        pass
    return row


def labels_info(path: str | Path) -> dict[str, Any]:
    """Grid, classes, samples per scene (done / total), provenance, last run and evaluation, sizes."""
    from occlabel.store.labels import open_labels

    path = Path(path)
    reader = open_labels(path)
    meta = reader.meta
    scenes = []
    done_total = 0
    for s in reader.scenes():
        done = reader.root[s]["done"][:].astype(bool)
        scenes.append({"scene": s, "samples": len(done), "done": int(done.sum())})
        done_total += int(done.sum())
    total = store_bytes(path)
    ev = meta.get("evaluation")
    return {
        "kind": "labels",
        "path": str(path),
        "grid": meta.get("grid"),
        "classes": (meta.get("classes") or {"name": "occ3d"}),
        "source": meta.get("source"),
        "cache": meta.get("cache"),
        "depth_key": meta.get("depth_key"),
        "semantics_key": meta.get("semantics_key"),
        "created": meta.get("created"),
        "provenance": meta.get("provenance", {}),
        "options": meta.get("options", {}),
        "stats": meta.get("stats", {}),
        "evaluation": None
        if not ev
        else {
            k: ev.get(k) for k in ("miou", "iou_geometry", "iou_completion", "num_samples", "protocol", "gt")
        },
        "scenes": scenes,
        "samples": done_total,
        "bytes": total,
        "bytes_by_array": labels_array_bytes(path),
        "bytes_per_sample": total / done_total if done_total else None,
    }


def store_info(path: str | Path) -> dict[str, Any]:
    """:func:`cache_info` or :func:`labels_info`, by the store's recorded kind."""
    return labels_info(path) if store_kind(Path(path)) == "labels" else cache_info(path)


def _prov(p: dict[str, Any]) -> str:
    if not p:
        return "-"
    return (
        f"occlabel {p.get('version', '?')}, torch {p.get('torch', '?')}, zarr {p.get('zarr', '?')}, "
        f"python {p.get('python', '?')} on {p.get('host', '?')} at {p.get('time', '?')}"
    )


def _stage_line(name: str, rec: dict[str, Any]) -> str:
    sec = rec.get("seconds")
    if name == "extract_2d":
        n = rec.get("images_processed", 0)
        d = (rec.get("depth_model") or {}).get("name", "?")
        s = (rec.get("semantic_model") or {}).get("name", "none") if rec.get("semantic_model") else "none"
        rate = f" ({n / sec:.2f} img/s)" if sec and n else ""
        line = (
            f"{n} images in {sec or 0:.1f} s{rate}; depth {d}, semantics {s}, device {rec.get('device', '?')}"
        )
        if rec.get("skipped"):
            line += f"; {len(rec['skipped'])} skipped"
        return line
    if name == "calibrate_depth":
        n = rec.get("frames_calibrated", 0)
        rate = f" ({n / sec:.2f} frames/s)" if sec and n else ""
        flags = ", ".join(f"{k} {v}" for k, v in (rec.get("flag_counts") or {}).items() if v) or "none"
        return f"{n} frames in {sec or 0:.1f} s{rate}; flags: {flags}; device {rec.get('device', '?')}"
    return f"{sec or 0:.1f} s"


def format_info(info: dict[str, Any]) -> str:
    """The text ``occlabel info`` prints (``info``: :func:`cache_info` or :func:`labels_info`)."""
    if info["kind"] == "cache":
        return "\n".join(_cache_header(info) + _cache_table(info))
    return "\n".join(_labels_header(info) + _labels_run(info) + _labels_table(info))


def _cache_header(info: dict[str, Any]) -> list[str]:
    """A cache's path and size, dataset, provenance, default results, and one line per 2D/calibration stage."""
    ds = info.get("dataset") or {}
    lines = [f"{info['path']}: occlabel cache, {human_bytes(info['bytes'])} on disk"]
    lines.append(
        f"  dataset          {ds.get('kind', '?')} {ds.get('root', '?')}  {ds.get('options') or ''}".rstrip()
    )
    lines.append(f"  created          {info.get('created') or '?'} by {_prov(info['provenance'])}")
    lines.append(
        f"  results          depth {info['default_depth'] or '-'}, semantics {info['default_semantics'] or '-'} (defaults)"
    )
    for name in ("extract_2d", "calibrate_depth"):
        rec = info["stages"].get(name)
        state = _stage_line(name, rec) if rec else "not run"
        lines.append(f"  {name.replace('_', '-'):<17}{state}")
        if rec:
            lines.append(f"  {'':17}{_prov(rec)}")
    return lines


def _cache_table(info: dict[str, Any]) -> list[str]:
    """A blank line, the scene x camera table of done counts, the totals and the size per image."""
    lines = [""]
    lines.append(
        f"  {'scene':<16}{'camera':<14}{'frames':>7}{'images':>8}{'depth':>9}{'semantics':>11}{'calibrated':>12}  flagged"
    )
    for s in info["scenes"]:
        for c in s["cameras"]:
            d = max(c["depth"].values(), default=0)
            sm = max(c["semantics"].values(), default=0)
            flagged = ", ".join(f"{k} {v}" for k, v in c["flags"].items() if v) or "-"
            n = c["images"]
            cols = f"{d}/{n}".rjust(9) + f"{sm}/{n}".rjust(11) + f"{c['calibrated']}/{n}".rjust(12)
            lines.append(f"  {s['scene']:<16}{c['camera']:<14}{s['frames']:>7}{n:>8}{cols}  {flagged}")
    lines.append(
        f"  {len(info['scenes'])} scene(s), {info['images']} images, "
        f"{sum(s['keyframes'] for s in info['scenes'])} keyframes"
    )
    by = info["bytes_by_array"]
    per = info["bytes_per_image"]
    if per:
        n = info["images"]
        lines.append(
            f"  size per image {human_bytes(per)}: depth {human_bytes(by['depth'] / n)}, semantics "
            f"{human_bytes(by['semantics'] / n)}, confidence {human_bytes(by['confidence'] / n)}, "
            f"other {human_bytes(by['other'] / n)}"
        )
    return lines


def _labels_header(info: dict[str, Any]) -> list[str]:
    """A labels store's path and size, grid, classes, source cache and keys, provenance."""
    g = info.get("grid") or {}
    shape = "x".join(map(str, g.get("shape", [])))
    lines = [f"{info['path']}: occlabel labels, {human_bytes(info['bytes'])} on disk"]
    lines.append(
        f"  grid             {g.get('name', '?')} {shape} @ {g.get('voxel_size', '?')} m, {g.get('frame', '?')} frame, "
        f"range {g.get('lower')} .. {g.get('upper')}"
    )
    cl = info["classes"]
    lines.append(
        f"  classes          {cl.get('name')} ({len(cl.get('names', {})) or 17} classes, free = {cl.get('free', 17)})"
    )
    lines.append(
        f"  source           {info.get('source')} of {info.get('cache')} (depth {info.get('depth_key')}, semantics {info.get('semantics_key')})"
    )
    lines.append(
        f"  created          {info.get('created') or '?'}; last written by {_prov(info['provenance'])}"
    )
    return lines


def _labels_run(info: dict[str, Any]) -> list[str]:
    """The last voxelize run (keyframes, seconds, rate) when recorded, and the evaluation or "not run"."""
    lines = []
    st = info.get("stats") or {}
    if st:
        sec = st.get("seconds") or {}
        tot = sum(v for v in sec.values() if isinstance(v, int | float))
        n = st.get("keyframes_written", 0)
        rate = f" ({n / tot:.2f} keyframes/s)" if tot and n else ""
        lines.append(
            f"  last run         {n} keyframes in {tot:.1f} s{rate} on {st.get('device', '?')}, {st.get('keyframes_skipped_done', 0)} already done"
        )
    ev = info.get("evaluation")
    if ev:
        parts = [f"mIoU {100 * ev['miou']:.2f}" if ev.get("miou") is not None else None]
        if ev.get("iou_geometry") is not None:
            parts.append(f"geometry IoU {100 * ev['iou_geometry']:.2f}")
        if ev.get("iou_completion") is not None:
            parts.append(f"completion IoU {100 * ev['iou_completion']:.2f}")
        lines.append(
            f"  evaluation       {', '.join(p for p in parts if p)} over {ev.get('num_samples')} samples ({ev.get('gt')})"
        )
    else:
        lines.append("  evaluation       not run")
    return lines


def _labels_table(info: dict[str, Any]) -> list[str]:
    """A blank line, samples done per scene, the total and the size per sample by array."""
    lines = ["", f"  {'scene':<20}{'samples':>9}{'done':>7}"]
    for s in info["scenes"]:
        lines.append(f"  {s['scene']:<20}{s['samples']:>9}{s['done']:>7}")
    lines.append(f"  {len(info['scenes'])} scene(s), {info['samples']} samples done")
    if info["bytes_per_sample"]:
        n = info["samples"]
        by = info["bytes_by_array"]
        lines.append(
            f"  size per sample {human_bytes(info['bytes_per_sample'])}: "
            + ", ".join(f"{k} {human_bytes(v / n)}" for k, v in by.items())
        )
    return lines


__all__ = [
    "cache_info",
    "format_info",
    "human_bytes",
    "labels_info",
    "store_info",
]
