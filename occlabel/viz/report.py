"""``occlabel report RUN_DIR``: one self-contained HTML page about a run (no external assets).

A run directory holds a CACHE.zarr and one or more LABELS.zarr (``occlabel demo`` writes ``cache.zarr``
and ``labels.zarr``; ``results.json`` when present adds the demo's timings and depth metrics). The page
has: configuration and provenance (the stage records in the stores), time and throughput per stage,
calibration diagnostics (per-frame scale, loss and cue agreement, the cue and flag arrays, flagged frames),
per-class IoU when there is ground truth, storage per frame, and a gallery of ``occlabel show`` pictures.
Pictures are PNGs embedded as base64 ``data:`` URIs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.errors import StoreError
from occlabel.store.common import store_kind
from occlabel.utils import progress_bar
from occlabel.viz.info import cache_info, human_bytes, labels_info

log = logging.getLogger("occlabel.viz")

SECTIONS = ("summary", "configuration", "timing", "calibration", "evaluation", "storage", "gallery")

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f4f4f2;color:#222}
header{background:#1f2a36;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c9d2dc;font-size:13px}
nav{padding:8px 32px;background:#e6e8ea;font-size:13px} nav a{margin-right:14px;color:#1f4f82}
main{padding:8px 32px 40px;max-width:1500px}
section{background:#fff;border-radius:6px;padding:14px 20px;margin:16px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:17px;margin:4px 0 10px;border-bottom:1px solid #ddd;padding-bottom:6px}
h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f1f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#f7f8fa;border:1px solid #e1e4e8;border-radius:6px;padding:8px 14px;min-width:150px}
.card b{display:block;font-size:20px} .card span{font-size:12px;color:#555}
img{max-width:100%;height:auto;border:1px solid #e3e3e3}
pre{background:#f7f7f7;padding:8px;font-size:11.5px;overflow:auto;max-height:420px}
details summary{cursor:pointer;font-size:13px;margin:4px 0}
.strip td{padding:0;width:14px;height:16px;border:1px solid #fff;font-size:9px;text-align:center}
.muted{color:#666;font-size:12.5px}
.gallery figure{margin:10px 0} figcaption{font-size:12px;color:#444}
"""

#: colours of calibration cue codes (occlabel.store.cache.CALIBRATION_CUES) in plots and strips
CUE_COLOURS = {
    "none": "#9e9e9e",
    "photometric": "#1f77b4",
    "overlap": "#17becf",
    "ground": "#2ca02c",
    "prior": "#ff7f0e",
}


def _png(fig, dpi: int = 90) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return _data_uri(buf.getvalue())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[Any]], num: tuple[int, ...] = ()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = [
            f"<td class='num'>{_esc(v)}</td>" if i in num else f"<td>{_esc(v)}</td>" for i, v in enumerate(r)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def find_stores(run_dir: str | Path) -> tuple[Path | None, list[Path]]:
    """(cache, [labels stores]) of a run directory (its direct children), or of a store given directly;
    a labels store without a cache beside it brings the cache it records."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StoreError(f"{run_dir}: no such run directory")
    candidates = [run_dir] if (run_dir / "zarr.json").exists() else sorted(run_dir.iterdir())
    cache, labels = None, []
    for p in candidates:
        if not (p / "zarr.json").exists():
            continue
        try:
            kind = store_kind(p)
        except StoreError:
            continue
        if kind == "cache" and cache is None:
            cache = p
        elif kind == "labels":
            labels.append(p)
    if cache is None:
        for lp in labels:
            from occlabel.store.labels import open_labels

            c = open_labels(lp).meta.get("cache")
            if c and Path(c).exists():
                cache = Path(c)
                break
    if cache is None and not labels:
        raise StoreError(f"{run_dir}: holds no occlabel store (CACHE.zarr or LABELS.zarr)")
    return cache, labels


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def _timing_rows(cinfo, linfos, results) -> list[list[Any]]:
    def row(name: str, n: int, unit: str, seconds: float, device: str) -> list[Any]:
        rate = f"{n / seconds:.2f} {unit}/s" if seconds and n else "-"
        return [name, f"{n} {unit}", f"{seconds:.2f}", rate, device]

    rows = []
    st = (cinfo or {}).get("stages", {})
    for stage, name, count, unit in (
        ("extract_2d", "extract-2d", "images_processed", "images"),
        ("calibrate_depth", "calibrate-depth", "frames_calibrated", "frames"),
    ):
        if stage in st:
            r = st[stage]
            rows.append(row(name, r.get(count, 0), unit, r.get("seconds") or 0, r.get("device", "")))
    for li in linfos:
        stt = li.get("stats") or {}
        if stt:
            sec = sum(v for v in (stt.get("seconds") or {}).values() if isinstance(v, int | float))
            name = f"voxelize ({Path(li['path']).name})"
            rows.append(row(name, stt.get("keyframes_written", 0), "keyframes", sec, stt.get("device", "")))
    if results and results.get("seconds"):
        for k, v in results["seconds"].items():
            rows.append([f"{k} (results.json, wall)", "", f"{v:.2f}", "", ""])
    return rows


def _calibration_section(cache_path: Path | None, progress: bool) -> tuple[str, bool]:
    """HTML of the calibration diagnostics and whether it has content."""
    if cache_path is None:
        return "<p class='muted'>No cache in this run.</p>", False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from occlabel.store.cache import CALIBRATION_CUES, FLAGS, open_cache

    cache = open_cache(cache_path)
    cue_name = {v: k for k, v in CALIBRATION_CUES.items()}
    tol = (((cache.meta.get("stages") or {}).get("calibrate_depth") or {}).get("options") or {}).get(
        "cue_tolerance", 0.05
    )
    parts, flagged = [], []
    jobs = [(s, c) for s in cache.scenes() for c in cache.cameras(s)]
    any_cal = False
    for s, c in progress_bar(jobs, total=len(jobs), desc="report: calibration", enabled=progress, unit="cam"):
        try:
            cal = cache.read_calibration(s, c)
        except StoreError:
            parts.append(f"<h3>{_esc(s)} / {_esc(c)}</h3><p class='muted'>not calibrated</p>")
            continue
        any_cal = True
        tokens = cache.scene_meta(s)["tokens"]
        keyframes = np.asarray(cache.scene_meta(s)["keyframes"], bool)
        done = cal["done"].astype(bool)
        t = np.arange(len(done))
        cue = cal.get("cue", np.where(done, 1, 0)).astype(int)
        fig, axes = plt.subplots(3, 1, figsize=(10, 6.2), sharex=True)
        ax = axes[0]
        for name, code in CALIBRATION_CUES.items():
            m = done & (cue == code)
            if m.any():
                ax.scatter(
                    t[m],
                    cal["scale"][m],
                    s=22,
                    color=CUE_COLOURS.get(name, "k"),
                    label=f"cue: {name}",
                    zorder=3,
                )
        ax.plot(t[done], cal["scale"][done], color="0.7", lw=0.8, zorder=1)
        pos = cal["scale"][done]
        if len(pos) and np.all(pos[np.isfinite(pos)] > 0):
            ax.set_yscale("log")
        ax.set_ylabel("scale a\n(1/z = a·d + b)")
        ax.legend(fontsize=7, loc="best", ncol=3)
        ax.set_title(f"{s} / {c}: per-frame calibration (dots: frames; keyframes shaded)", fontsize=10)
        ax = axes[1]
        ax.plot(t[done], cal["loss"][done], marker="o", ms=3, color="#444")
        ax.set_ylabel("photometric\nloss")
        ax = axes[2]
        if "ground_ratio" in cal:
            gr = cal["ground_ratio"]
            ax.axhspan(1 - tol, 1 + tol, color="#2ca02c", alpha=0.15, label=f"agreement ±{100 * tol:.0f} %")
            m = done & np.isfinite(gr)
            ax.plot(
                t[m], gr[m], marker="o", ms=3, color="#2ca02c", label="depth(photometric) / depth(ground)"
            )
            ax.axhline(1, color="0.5", lw=0.6)
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no ground cue recorded", transform=ax.transAxes, ha="center")
        ax.set_ylabel("cue\nagreement")
        ax.set_xlabel("frame")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for a in axes:
            for k in np.flatnonzero(keyframes):
                a.axvspan(k - 0.5, k + 0.5, color="#fff3c4", zorder=0)
            a.grid(alpha=0.3)
        fig.tight_layout()
        parts.append(
            f"<h3>{_esc(s)} / {_esc(c)}</h3><img alt='calibration {_esc(s)}/{_esc(c)}' src='{_png(fig)}'>"
        )
        # the cue and flags arrays, one cell per frame
        strip = ["<table class='strip'><tr><th>frame</th>" + "".join(f"<td>{i}</td>" for i in t) + "</tr>"]
        strip.append(
            "<tr><th>cue</th>"
            + "".join(
                f"<td title='{_esc(cue_name.get(int(v), v))}' style='background:{CUE_COLOURS.get(cue_name.get(int(v), 'none'), '#ccc') if d else '#eee'}'>"
                f"{_esc(cue_name.get(int(v), '?')[0].upper() if d else '')}</td>"
                for v, d in zip(cue, done, strict=True)
            )
            + "</tr>"
        )
        for fname, bit in FLAGS.items():
            on = (cal["flags"].astype(int) & bit) > 0
            strip.append(
                f"<tr><th>{_esc(fname)}</th>"
                + "".join(
                    f"<td style='background:{'#d62728' if o and d else '#f3f3f3'}'></td>"
                    for o, d in zip(on, done, strict=True)
                )
                + "</tr>"
            )
        strip.append("</table>")
        parts.append("".join(strip))
        for i in np.flatnonzero(done & (cal["flags"] > 0)):
            names = [k for k, bit in FLAGS.items() if int(cal["flags"][i]) & bit]
            flagged.append([s, c, int(i), tokens[i], ", ".join(names), cue_name.get(int(cue[i]), "?"),
                            f"{cal['scale'][i]:.4g}", f"{cal['shift'][i]:.4g}"])  # fmt: skip
    legend = " ".join(
        f"<span style='background:{col};color:#fff;padding:1px 6px;border-radius:3px;font-size:11px'>{_esc(n[0].upper())} {_esc(n)}</span>"
        for n, col in CUE_COLOURS.items()
    )
    head = (
        "<p class='muted'>Per frame: the fitted scale of <code>1/z = a·d + b</code> (log axis; relative depth models "
        "give each image its own unknown affine, so the scale varies from frame to frame by design), the final "
        "photometric loss, and the agreement of the photometric and ground-plane cues (median depth ratio over the "
        f"ground inliers; flagged <code>cue_disagreement</code> outside ±{100 * tol:.0f} %). Below each plot the "
        f"<code>calibration/cue</code> and <code>calibration/flags</code> arrays, one column per frame (red: set). Cues: {legend}</p>"
    )
    if flagged:
        tail = "<h3>Flagged frames</h3>" + _table(
            ["scene", "camera", "frame", "token", "flags", "cue", "scale", "shift"], flagged, (2, 6, 7)
        )
    else:
        tail = "<h3>Flagged frames</h3><p>None: every calibrated frame has a clean fit.</p>"
    return head + "".join(parts) + tail, any_cal


def evaluate_quietly(labels_path: Path) -> dict[str, Any] | None:
    """Occ3D figures of a labels store against the ground truth its dataset has, without writing anything
    (``occlabel evaluate`` records its results in the store; this reads them when they are there)."""
    from occlabel.stages.evaluate import OCC3D_NUM_CLASSES, confusion_matrix, occ3d_metrics
    from occlabel.store.labels import open_labels
    from occlabel.viz.show import dataset_of_cache, sample_ground_truth

    reader = open_labels(labels_path)
    ev = reader.meta.get("evaluation")
    if ev:
        return ev
    if reader.classes.name != "occ3d":
        return None
    dataset = dataset_of_cache(reader.meta.get("cache"))
    if dataset is None:
        return None
    total = np.zeros((OCC3D_NUM_CLASSES, OCC3D_NUM_CLASSES), np.int64)
    n = 0
    for s in reader:
        g = sample_ground_truth(reader, s, dataset)
        if g is None or g["classes"].name != "occ3d":
            continue
        total += confusion_matrix(s["semantics"], g["semantics"], g["mask"])
        n += 1
    if not n:
        return None
    res = occ3d_metrics(total)
    res["num_samples"] = n
    res["gt"] = f"dataset {dataset.root}"
    return res


def _iou_figure(ev: dict[str, Any], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from occlabel.conventions import OCC3D_CLASSES

    colours = {n: np.array(rgb) / 255 for _, n, rgb, _ in OCC3D_CLASSES}
    items = list(ev["per_class"].items())
    fig, ax = plt.subplots(figsize=(9, 0.26 * len(items) + 1.2))
    names = [k for k, _ in items]
    vals = [100 * v if v is not None else 0 for _, v in items]
    cols = [colours.get(k, np.array([0.3, 0.5, 0.8])) for k in names]
    y = np.arange(len(items))[::-1]
    ax.barh(y, vals, color=cols, edgecolor="0.3", linewidth=0.5)
    for yi, (_, v) in zip(y, items, strict=True):
        ax.text(
            (100 * v if v is not None else 0) + 0.8,
            yi,
            "absent" if v is None else f"{100 * v:.1f}",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU (%)")
    m = ev.get("miou")
    ax.axvline(
        100 * m if m is not None else 0, color="crimson", lw=1, ls="--", label=f"mIoU {100 * (m or 0):.1f}"
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _storage_section(cinfo, linfos) -> str:
    rows = []
    if cinfo and cinfo.get("images"):
        n = cinfo["images"]
        for k, v in cinfo["bytes_by_array"].items():
            rows.append(["cache", k, human_bytes(v), human_bytes(v / n) + " / image"])
        rows.append(
            ["cache", "total", human_bytes(cinfo["bytes"]), human_bytes(cinfo["bytes"] / n) + " / image"]
        )
    for li in linfos:
        n = li.get("samples") or 0
        name = Path(li["path"]).name
        for k, v in li["bytes_by_array"].items():
            rows.append([name, k, human_bytes(v), human_bytes(v / n) + " / sample" if n else "-"])
        rows.append(
            [
                name,
                "total",
                human_bytes(li["bytes"]),
                human_bytes(li["bytes"] / n) + " / sample" if n else "-",
            ]
        )
    if not rows:
        return "<p class='muted'>Nothing stored.</p>"
    return _table(["store", "array", "on disk", "per frame"], rows, (2, 3)) + (
        "<p class='muted'>Per image for the cache (one depth map, one label map and one confidence map per camera "
        "image, Blosc zstd); per keyframe sample for labels stores.</p>"
    )


def _gallery(
    cache_path: Path | None, labels_paths: list[Path], samples: int, progress: bool, tmp: Path
) -> tuple[str, int]:
    from occlabel.store.labels import open_labels
    from occlabel.viz.show import cache_figure, labels_figure

    figs = []
    jobs: list[tuple[str, Any]] = []
    for lp in labels_paths:
        reader = open_labels(lp)
        n = len(reader)
        if not n:
            continue
        picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(samples, n))})
        cameras = []
        try:
            from occlabel.viz.show import dataset_of_cache

            ds = dataset_of_cache(reader.meta.get("cache"))
            s0 = reader[picks[0]]
            frame = next(
                f for sc in ds.scenes if sc.name == s0["scene"] for f in sc.frames if f.token == s0["token"]
            )
            cameras = list(frame.images)[:1]
        except Exception:  # no dataset: no overlay
            cameras = []
        for i in picks:
            jobs.append(("labels", (lp, reader.tokens()[i], cameras[0] if cameras else None)))
    if cache_path is not None:
        from occlabel.store.cache import open_cache

        cache = open_cache(cache_path)
        for s in cache.scenes()[:1]:
            for c in cache.cameras(s)[:2]:
                jobs.append(("cache", (cache_path, s, c)))
    for kind, args in progress_bar(
        jobs, total=len(jobs), desc="report: gallery", enabled=progress, unit="fig"
    ):
        out = tmp / f"g{len(figs)}.png"
        try:
            if kind == "labels":
                lp, token, cam = args
                r = labels_figure(lp, out, sample=token, camera=cam, dpi=80, render_width=560)
                cap = f"{Path(lp).name}: {r['scene']} / {r['token']}" + (f" (with {cam})" if cam else "")
                if r.get("metrics"):
                    cap += f" — this sample: mIoU {100 * (r['metrics']['miou'] or 0):.1f}, geometry IoU {100 * (r['metrics']['iou_geometry'] or 0):.1f}"
            else:
                cp, s, c = args
                r = cache_figure(cp, out, scene=s, camera=c, dpi=80)
                cap = f"{Path(cp).name}: {r['scene']} / {r['camera']} / frame {r['frame']} ({r['token']})"
                if r.get("photometric"):
                    p = r["photometric"]
                    cap += f" — photometric error {p['before_mean']:.4f} unwarped → {p['after_mean']:.4f} with calibrated depth"
        except Exception as e:  # a picture that fails is reported, not fatal
            log.warning("report: picture %s %s failed: %s", kind, args, e)
            figs.append(f"<p class='muted'>picture {_esc(kind)} {_esc(args)} failed: {_esc(e)}</p>")
            continue
        figs.append(
            f"<figure><img alt='{_esc(cap)}' src='{_data_uri(out.read_bytes())}'><figcaption>{_esc(cap)}</figcaption></figure>"
        )
    n_ok = sum(1 for f in figs if f.startswith("<figure"))
    return "<div class='gallery'>" + "".join(figs) + "</div>", n_ok


def build_report(
    run_dir: str | Path, out: str | Path, samples: int = 3, progress: bool = False
) -> dict[str, Any]:
    """Write the HTML report of a run directory; returns {"path", "bytes", "sections" (name -> filled)}."""
    import tempfile

    from occlabel import __version__

    run_dir = Path(run_dir)
    cache_path, labels_paths = find_stores(run_dir)
    results = None
    rj = run_dir / "results.json"
    if rj.exists():
        try:
            results = json.loads(rj.read_text())
        except (OSError, ValueError):
            results = None
    cinfo = cache_info(cache_path) if cache_path else None
    linfos = [labels_info(p) for p in labels_paths]
    filled: dict[str, bool] = {}
    body: list[str] = []

    # summary
    cards = []
    if cinfo:
        cards += [
            (cinfo["images"], "images"),
            (sum(s["keyframes"] for s in cinfo["scenes"]), "keyframes"),
            (len(cinfo["scenes"]), "scenes"),
        ]
    evals = {}
    for lp in labels_paths:
        try:
            evals[lp] = evaluate_quietly(lp)
        except (StoreError, OSError) as e:
            log.warning("report: evaluation of %s failed: %s", lp, e)
            evals[lp] = None
    for lp, ev in evals.items():
        if ev and ev.get("miou") is not None:
            cards.append((f"{100 * ev['miou']:.1f}", f"mIoU, {lp.name}"))
            if ev.get("iou_geometry") is not None:
                cards.append((f"{100 * ev['iou_geometry']:.1f}", f"geometry IoU, {lp.name}"))
    if results and results.get("depth"):
        d = results["depth"].get("overall", {})
        if d.get("raw"):
            cards.append((f"{d['raw']['abs_rel']:.4f}", "depth AbsRel (calibrated)"))
        if d.get("scale_error_median") is not None:
            cards.append((f"{100 * d['scale_error_median']:.2f} %", "median scale error"))
    body.append(
        "<section id='summary'><h2>Summary</h2><div class='cards'>"
        + "".join(f"<div class='card'><b>{_esc(v)}</b><span>{_esc(k)}</span></div>" for v, k in cards)
        + "</div>"
        + f"<p class='muted'>Stores: {_esc(cache_path or '-')}; {_esc(', '.join(map(str, labels_paths)) or 'no labels')}</p></section>"
    )
    filled["summary"] = bool(cards)

    # configuration and provenance
    cfg = []
    if cinfo:
        ds = cinfo.get("dataset") or {}
        prov = cinfo.get("provenance") or {}
        rows = [["dataset", f"{ds.get('kind')} {ds.get('root')}"], ["dataset options", json.dumps(ds.get("options") or {})],
                ["created", cinfo.get("created")], ["written by", ", ".join(f"{k} {v}" for k, v in prov.items())],
                ["default depth / semantics", f"{cinfo.get('default_depth')} / {cinfo.get('default_semantics')}"]]  # fmt: skip
        cfg.append("<h3>Cache " + _esc(cache_path) + "</h3>" + _table(["", ""], rows))
        for name, rec in (cinfo.get("stages") or {}).items():
            cfg.append(
                f"<details><summary>stage record: {_esc(name)}</summary><pre>{_esc(json.dumps(rec, indent=1))}</pre></details>"
            )
    for li in linfos:
        g = li.get("grid") or {}
        rows = [["grid", f"{g.get('name')} {g.get('shape')} @ {g.get('voxel_size')} m, {g.get('frame')} frame"],
                ["classes", (li.get("classes") or {}).get("name")], ["source", f"{li.get('source')} of {li.get('cache')}"],
                ["created", li.get("created")], ["written by", ", ".join(f"{k} {v}" for k, v in (li.get("provenance") or {}).items())]]  # fmt: skip
        cfg.append("<h3>Labels " + _esc(li["path"]) + "</h3>" + _table(["", ""], rows))
        cfg.append(
            f"<details><summary>voxelize options</summary><pre>{_esc(json.dumps(li.get('options'), indent=1))}</pre></details>"
        )
    body.append(
        "<section id='configuration'><h2>Configuration and provenance</h2>" + "".join(cfg) + "</section>"
    )
    filled["configuration"] = bool(cfg)

    # timing
    trows = _timing_rows(cinfo, linfos, results)
    body.append(
        "<section id='timing'><h2>Time and throughput per stage</h2>"
        + (
            _table(["stage", "work", "seconds", "throughput", "device"], trows, (2,))
            if trows
            else "<p class='muted'>No stage records.</p>"
        )
        + "<p class='muted'>From the stage records in the stores (the last run of each stage; a resumed run counts only "
        "the work it did).</p></section>"
    )
    filled["timing"] = bool(trows)

    # calibration
    cal_html, has_cal = _calibration_section(cache_path, progress)
    body.append("<section id='calibration'><h2>Calibration diagnostics</h2>" + cal_html + "</section>")
    filled["calibration"] = has_cal

    # evaluation
    ev_parts = []
    for lp, ev in evals.items():
        if not ev or "per_class" not in ev:
            ev_parts.append(f"<p class='muted'>{_esc(lp.name)}: no ground truth to evaluate against.</p>")
            continue
        head = f"{lp.name}: mIoU {100 * (ev.get('miou') or 0):.2f}"
        if ev.get("iou_geometry") is not None:
            head += f", geometry IoU {100 * ev['iou_geometry']:.2f}"
        if ev.get("iou_completion") is not None:
            head += f", completion IoU {100 * ev['iou_completion']:.2f}"
        head += f" over {ev.get('num_samples')} samples"
        ev_parts.append(
            f"<h3>{_esc(head)}</h3><img alt='per-class IoU {_esc(lp.name)}' src='{_iou_figure(ev, head)}'>"
        )
        ev_parts.append(
            f"<p class='muted'>Ground truth: {_esc(ev.get('gt'))}. {_esc(ev.get('protocol') or 'Occ3D protocol: confusion over the ground truth mask_camera.')}</p>"
        )
    if results and results.get("depth"):
        d = results["depth"].get("overall", {})
        raw = d.get("raw") or {}
        rows = [[k, f"{v:.4f}" if isinstance(v, float) else v] for k, v in raw.items()]
        floor = d.get("floor_abs_rel")
        rows.append(["floor AbsRel (best affine fit)", f"{floor:.4f}" if isinstance(floor, float) else floor])
        ev_parts.append(
            "<h3>Depth of the calibrated cache (results.json)</h3>" + _table(["metric", "value"], rows, (1,))
        )
    has_ev = any(ev and "per_class" in ev for ev in evals.values())
    body.append(
        "<section id='evaluation'><h2>Evaluation against ground truth</h2>"
        + ("".join(ev_parts) or "<p class='muted'>No labels store.</p>")
        + "</section>"
    )
    filled["evaluation"] = has_ev

    # storage
    body.append(
        "<section id='storage'><h2>Storage per frame</h2>" + _storage_section(cinfo, linfos) + "</section>"
    )
    filled["storage"] = bool(cinfo or linfos)

    # gallery
    with tempfile.TemporaryDirectory() as tmp:
        gal, n_figs = _gallery(cache_path, labels_paths, samples, progress, Path(tmp))
    body.append("<section id='gallery'><h2>Gallery</h2><p class='muted'>What <code>occlabel show</code> draws: per labels "
                "sample the bird's-eye view and the 3D render (ground truth on the right when the dataset has it) and the "
                "labels projected into a camera; per cache frame the 2D outputs, the calibrated depth and the photometric "
                "error before and after calibration.</p>" + gal + "</section>")  # fmt: skip
    filled["gallery"] = n_figs > 0

    nav = "".join(f"<a href='#{s}'>{s}</a>" for s in SECTIONS)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>occlabel report: {_esc(run_dir.name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>occlabel report — {_esc(run_dir.resolve().name)}</h1>"
        f"<p>{_esc(run_dir.resolve())} · generated {time.strftime('%Y-%m-%d %H:%M:%S')} by occlabel {_esc(__version__)}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(body)}</main></body></html>"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return {"path": out, "bytes": out.stat().st_size, "sections": filled}


__all__ = ["SECTIONS", "build_report", "evaluate_quietly", "find_stores"]
