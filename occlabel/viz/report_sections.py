"""The sections of the report page (occlabel.viz.report builds the page): summary cards, configuration and
provenance, time per stage, evaluation against ground truth, storage per frame, and the gallery of
``occlabel show`` pictures. Each ``*_section`` returns (HTML of the ``<section>``, whether it has content).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.errors import StoreError
from occlabel.utils import progress_bar
from occlabel.viz.html import data_uri, esc, figure_uri, table
from occlabel.viz.info import human_bytes

log = logging.getLogger("occlabel.viz")


@dataclass(frozen=True)
class RunFacts:
    """What the sections read about a run directory."""

    cache_path: Path | None
    labels_paths: list[Path]
    results: dict[str, Any] | None  # the demo's results.json
    cinfo: dict[str, Any] | None  # occlabel.viz.info.cache_info
    linfos: list[dict[str, Any]]  # occlabel.viz.info.labels_info per labels store
    evals: dict[Path, dict[str, Any] | None]  # evaluate_quietly per labels store


def evaluate_quietly(labels_path: Path) -> dict[str, Any] | None:
    """Occ3D figures of a labels store against the ground truth its dataset has, without writing anything
    (``occlabel evaluate`` records its results in the store; this reads them when they are there)."""
    from occlabel.stages.evaluate import OCC3D_NUM_CLASSES, confusion_matrix, occ3d_metrics
    from occlabel.store.labels import open_labels
    from occlabel.viz.show_labels import dataset_of_cache, sample_ground_truth

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
        g = sample_ground_truth(s, dataset)
        if g is None or g.classes.name != "occ3d":
            continue
        total += confusion_matrix(s["semantics"], g.semantics, g.mask)
        n += 1
    if not n:
        return None
    res = occ3d_metrics(total)
    res["num_samples"] = n
    res["gt"] = f"dataset {dataset.root}"
    return res


def evaluate_all(labels_paths: list[Path]) -> dict[Path, dict[str, Any] | None]:
    """:func:`evaluate_quietly` of every labels store (None where it fails; logged)."""
    evals = {}
    for lp in labels_paths:
        try:
            evals[lp] = evaluate_quietly(lp)
        except (StoreError, OSError) as e:
            log.warning("report: evaluation of %s failed: %s", lp, e)
            evals[lp] = None
    return evals


# --------------------------------------------------------------------------------------------------
# Summary, configuration, timing
# --------------------------------------------------------------------------------------------------


def summary_section(run: RunFacts) -> tuple[str, bool]:
    cards = []
    if run.cinfo:
        cards += [
            (run.cinfo["images"], "images"),
            (sum(s["keyframes"] for s in run.cinfo["scenes"]), "keyframes"),
            (len(run.cinfo["scenes"]), "scenes"),
        ]
    for lp, ev in run.evals.items():
        if ev and ev.get("miou") is not None:
            cards.append((f"{100 * ev['miou']:.1f}", f"mIoU, {lp.name}"))
            if ev.get("iou_geometry") is not None:
                cards.append((f"{100 * ev['iou_geometry']:.1f}", f"geometry IoU, {lp.name}"))
    if run.results and run.results.get("depth"):
        d = run.results["depth"].get("overall", {})
        if d.get("raw"):
            cards.append((f"{d['raw']['abs_rel']:.4f}", "depth AbsRel (calibrated)"))
        if d.get("scale_error_median") is not None:
            cards.append((f"{100 * d['scale_error_median']:.2f} %", "median scale error"))
    stores = f"{esc(run.cache_path or '-')}; {esc(', '.join(map(str, run.labels_paths)) or 'no labels')}"
    html = (
        "<section id='summary'><h2>Summary</h2><div class='cards'>"
        + "".join(f"<div class='card'><b>{esc(v)}</b><span>{esc(k)}</span></div>" for v, k in cards)
        + "</div>"
        + f"<p class='muted'>Stores: {stores}</p></section>"
    )
    return html, bool(cards)


def configuration_section(run: RunFacts) -> tuple[str, bool]:
    cfg = []
    if run.cinfo:
        ci = run.cinfo
        ds = ci.get("dataset") or {}
        prov = ci.get("provenance") or {}
        rows = [["dataset", f"{ds.get('kind')} {ds.get('root')}"], ["dataset options", json.dumps(ds.get("options") or {})],
                ["created", ci.get("created")], ["written by", ", ".join(f"{k} {v}" for k, v in prov.items())],
                ["default depth / semantics", f"{ci.get('default_depth')} / {ci.get('default_semantics')}"]]  # fmt: skip
        cfg.append("<h3>Cache " + esc(run.cache_path) + "</h3>" + table(["", ""], rows))
        for name, rec in (ci.get("stages") or {}).items():
            cfg.append(
                f"<details><summary>stage record: {esc(name)}</summary><pre>{esc(json.dumps(rec, indent=1))}</pre></details>"
            )
    for li in run.linfos:
        g = li.get("grid") or {}
        rows = [["grid", f"{g.get('name')} {g.get('shape')} @ {g.get('voxel_size')} m, {g.get('frame')} frame"],
                ["classes", (li.get("classes") or {}).get("name")], ["source", f"{li.get('source')} of {li.get('cache')}"],
                ["created", li.get("created")], ["written by", ", ".join(f"{k} {v}" for k, v in (li.get("provenance") or {}).items())]]  # fmt: skip
        cfg.append("<h3>Labels " + esc(li["path"]) + "</h3>" + table(["", ""], rows))
        cfg.append(
            f"<details><summary>voxelize options</summary><pre>{esc(json.dumps(li.get('options'), indent=1))}</pre></details>"
        )
    html = "<section id='configuration'><h2>Configuration and provenance</h2>" + "".join(cfg) + "</section>"
    return html, bool(cfg)


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


def timing_section(run: RunFacts) -> tuple[str, bool]:
    trows = _timing_rows(run.cinfo, run.linfos, run.results)
    html = (
        "<section id='timing'><h2>Time and throughput per stage</h2>"
        + (
            table(["stage", "work", "seconds", "throughput", "device"], trows, (2,))
            if trows
            else "<p class='muted'>No stage records.</p>"
        )
        + "<p class='muted'>From the stage records in the stores (the last run of each stage; a resumed run counts only "
        "the work it did).</p></section>"
    )
    return html, bool(trows)


# --------------------------------------------------------------------------------------------------
# Evaluation, storage
# --------------------------------------------------------------------------------------------------


def _iou_figure(ev: dict[str, Any], title: str) -> str:
    from occlabel.conventions import OCC3D_CLASSES
    from occlabel.viz.show_labels import pyplot

    plt = pyplot()
    colours = {n: np.array(rgb) / 255 for _, n, rgb, _ in OCC3D_CLASSES}
    items = list(ev["per_class"].items())
    fig, ax = plt.subplots(figsize=(9, 0.26 * len(items) + 1.2))
    names = [k for k, _ in items]
    vals = [100 * v if v is not None else 0 for _, v in items]
    cols = [colours.get(k, np.array([0.3, 0.5, 0.8])) for k in names]
    y = np.arange(len(items))[::-1]
    ax.barh(y, vals, color=cols, edgecolor="0.3", linewidth=0.5)
    for yi, (_, v) in zip(y, items, strict=True):
        label = "absent" if v is None else f"{100 * v:.1f}"
        ax.text((100 * v if v is not None else 0) + 0.8, yi, label, va="center", fontsize=7)
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
    return figure_uri(fig)


def _evaluation_parts(lp: Path, ev: dict[str, Any] | None) -> list[str]:
    """The headline, per-class IoU plot and protocol of one labels store."""
    if not ev or "per_class" not in ev:
        return [f"<p class='muted'>{esc(lp.name)}: no ground truth to evaluate against.</p>"]
    head = f"{lp.name}: mIoU {100 * (ev.get('miou') or 0):.2f}"
    if ev.get("iou_geometry") is not None:
        head += f", geometry IoU {100 * ev['iou_geometry']:.2f}"
    if ev.get("iou_completion") is not None:
        head += f", completion IoU {100 * ev['iou_completion']:.2f}"
    head += f" over {ev.get('num_samples')} samples"
    return [
        f"<h3>{esc(head)}</h3><img alt='per-class IoU {esc(lp.name)}' src='{_iou_figure(ev, head)}'>",
        f"<p class='muted'>Ground truth: {esc(ev.get('gt'))}. {esc(ev.get('protocol') or 'Occ3D protocol: confusion over the ground truth mask_camera.')}</p>",
    ]


def evaluation_section(run: RunFacts) -> tuple[str, bool]:
    parts = []
    for lp, ev in run.evals.items():
        parts += _evaluation_parts(lp, ev)
    if run.results and run.results.get("depth"):
        d = run.results["depth"].get("overall", {})
        raw = d.get("raw") or {}
        rows = [[k, f"{v:.4f}" if isinstance(v, float) else v] for k, v in raw.items()]
        floor = d.get("floor_abs_rel")
        rows.append(["floor AbsRel (best affine fit)", f"{floor:.4f}" if isinstance(floor, float) else floor])
        parts.append(
            "<h3>Depth of the calibrated cache (results.json)</h3>" + table(["metric", "value"], rows, (1,))
        )
    html = (
        "<section id='evaluation'><h2>Evaluation against ground truth</h2>"
        + ("".join(parts) or "<p class='muted'>No labels store.</p>")
        + "</section>"
    )
    return html, any(ev and "per_class" in ev for ev in run.evals.values())


def storage_section(run: RunFacts) -> tuple[str, bool]:
    rows = []
    if run.cinfo and run.cinfo.get("images"):
        n = run.cinfo["images"]
        for k, v in run.cinfo["bytes_by_array"].items():
            rows.append(["cache", k, human_bytes(v), human_bytes(v / n) + " / image"])
        rows.append(
            [
                "cache",
                "total",
                human_bytes(run.cinfo["bytes"]),
                human_bytes(run.cinfo["bytes"] / n) + " / image",
            ]
        )
    for li in run.linfos:
        n = li.get("samples") or 0
        name = Path(li["path"]).name
        for k, v in li["bytes_by_array"].items():
            rows.append([name, k, human_bytes(v), human_bytes(v / n) + " / sample" if n else "-"])
        total = human_bytes(li["bytes"] / n) + " / sample" if n else "-"
        rows.append([name, "total", human_bytes(li["bytes"]), total])
    if not rows:
        body = "<p class='muted'>Nothing stored.</p>"
    else:
        body = table(["store", "array", "on disk", "per frame"], rows, (2, 3)) + (
            "<p class='muted'>Per image for the cache (one depth map, one label map and one confidence map per camera "
            "image, Blosc zstd); per keyframe sample for labels stores.</p>"
        )
    html = "<section id='storage'><h2>Storage per frame</h2>" + body + "</section>"
    return html, bool(run.cinfo or run.linfos)


# --------------------------------------------------------------------------------------------------
# Gallery
# --------------------------------------------------------------------------------------------------


def _gallery_jobs(cache_path: Path | None, labels_paths: list[Path], samples: int) -> list[tuple[str, Any]]:
    """("labels", (store, token, camera or None)) for ``samples`` spread samples of each labels store (the
    first camera of the dataset overlaid), then ("cache", (store, scene, camera)) for two cameras."""
    from occlabel.store.labels import open_labels
    from occlabel.viz.show_labels import dataset_frame, dataset_of_cache

    jobs: list[tuple[str, Any]] = []
    for lp in labels_paths:
        reader = open_labels(lp)
        n = len(reader)
        if not n:
            continue
        picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(samples, n))})
        try:
            s0 = reader[picks[0]]
            frame = dataset_frame(dataset_of_cache(reader.meta.get("cache")), s0["scene"], s0["token"])
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
    return jobs


def _gallery_picture(kind: str, args, out: Path) -> str:
    """Draw one gallery picture into ``out``; returns its caption."""
    from occlabel.viz.show_cache import cache_figure
    from occlabel.viz.show_labels import labels_figure

    if kind == "labels":
        lp, token, cam = args
        r = labels_figure(lp, out, sample=token, camera=cam, dpi=80, render_width=560)
        cap = f"{Path(lp).name}: {r['scene']} / {r['token']}" + (f" (with {cam})" if cam else "")
        if r.get("metrics"):
            cap += f" — this sample: mIoU {100 * (r['metrics']['miou'] or 0):.1f}, geometry IoU {100 * (r['metrics']['iou_geometry'] or 0):.1f}"
        return cap
    cp, s, c = args
    r = cache_figure(cp, out, scene=s, camera=c, dpi=80)
    cap = f"{Path(cp).name}: {r['scene']} / {r['camera']} / frame {r['frame']} ({r['token']})"
    if r.get("photometric"):
        p = r["photometric"]
        cap += f" — photometric error {p['before_mean']:.4f} unwarped → {p['after_mean']:.4f} with calibrated depth"
    return cap


def _gallery(
    cache_path: Path | None, labels_paths: list[Path], samples: int, progress: bool, tmp: Path
) -> tuple[str, int]:
    figs = []
    jobs = _gallery_jobs(cache_path, labels_paths, samples)
    for kind, args in progress_bar(
        jobs, total=len(jobs), desc="report: gallery", enabled=progress, unit="fig"
    ):
        out = tmp / f"g{len(figs)}.png"
        try:
            cap = _gallery_picture(kind, args, out)
        except Exception as e:  # a picture that fails is reported, not fatal
            log.warning("report: picture %s %s failed: %s", kind, args, e)
            figs.append(f"<p class='muted'>picture {esc(kind)} {esc(args)} failed: {esc(e)}</p>")
            continue
        figs.append(
            f"<figure><img alt='{esc(cap)}' src='{data_uri(out.read_bytes())}'><figcaption>{esc(cap)}</figcaption></figure>"
        )
    n_ok = sum(1 for f in figs if f.startswith("<figure"))
    return "<div class='gallery'>" + "".join(figs) + "</div>", n_ok


def gallery_section(run: RunFacts, samples: int, progress: bool) -> tuple[str, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        gal, n_figs = _gallery(run.cache_path, run.labels_paths, samples, progress, Path(tmp))
    html = ("<section id='gallery'><h2>Gallery</h2><p class='muted'>What <code>occlabel show</code> draws: per labels "
            "sample the bird's-eye view and the 3D render (ground truth on the right when the dataset has it) and the "
            "labels projected into a camera; per cache frame the 2D outputs, the calibrated depth and the photometric "
            "error before and after calibration.</p>" + gal + "</section>")  # fmt: skip
    return html, n_figs > 0


__all__ = [
    "RunFacts",
    "configuration_section",
    "evaluate_all",
    "evaluate_quietly",
    "evaluation_section",
    "gallery_section",
    "storage_section",
    "summary_section",
    "timing_section",
]
