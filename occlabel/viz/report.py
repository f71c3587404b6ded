"""``occlabel report RUN_DIR``: one self-contained HTML page about a run (no external assets).

A run directory holds a CACHE.zarr and one or more LABELS.zarr (``occlabel demo`` writes ``cache.zarr``
and ``labels.zarr``; ``results.json`` when present adds the demo's timings and depth metrics). The page
has: configuration and provenance (the stage records in the stores), time and throughput per stage,
calibration diagnostics (per-frame scale, loss and cue agreement, the cue and flag arrays, flagged frames),
per-class IoU when there is ground truth, storage per frame, and a gallery of ``occlabel show`` pictures.
Pictures are PNGs embedded as base64 ``data:`` URIs. The sections: occlabel.viz.report_sections and
occlabel.viz.report_calibration; this module finds the stores and builds the page.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from occlabel.errors import StoreError
from occlabel.store.common import store_kind
from occlabel.viz.html import esc
from occlabel.viz.info import cache_info, labels_info
from occlabel.viz.report_calibration import calibration_section
from occlabel.viz.report_sections import (
    RunFacts,
    configuration_section,
    evaluate_all,
    evaluate_quietly,
    evaluation_section,
    gallery_section,
    storage_section,
    summary_section,
    timing_section,
)

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
        from occlabel.store.labels import open_labels

        for lp in labels:
            c = open_labels(lp).meta.get("cache")
            if c and Path(c).exists():
                cache = Path(c)
                break
    if cache is None and not labels:
        raise StoreError(f"{run_dir}: holds no occlabel store (CACHE.zarr or LABELS.zarr)")
    return cache, labels


def _results_json(run_dir: Path) -> dict[str, Any] | None:
    """The demo's ``results.json`` of a run directory (None when absent or unreadable)."""
    rj = run_dir / "results.json"
    if rj.exists():
        try:
            return json.loads(rj.read_text())
        except (OSError, ValueError):
            return None
    return None


def build_report(
    run_dir: str | Path, out: str | Path, samples: int = 3, progress: bool = False
) -> dict[str, Any]:
    """Write the HTML report of a run directory; returns {"path", "bytes", "sections" (name -> filled)}."""
    from occlabel import __version__

    run_dir = Path(run_dir)
    cache_path, labels_paths = find_stores(run_dir)
    results = _results_json(run_dir)
    cinfo = cache_info(cache_path) if cache_path else None
    linfos = [labels_info(p) for p in labels_paths]
    run = RunFacts(cache_path, labels_paths, results, cinfo, linfos, evaluate_all(labels_paths))
    body: list[str] = []
    filled: dict[str, bool] = {}
    for name, section in (
        ("summary", summary_section),
        ("configuration", configuration_section),
        ("timing", timing_section),
        ("calibration", lambda r: _calibration(r, progress)),
        ("evaluation", evaluation_section),
        ("storage", storage_section),
        ("gallery", lambda r: gallery_section(r, samples, progress)),
    ):
        html, filled[name] = section(run)
        body.append(html)

    nav = "".join(f"<a href='#{s}'>{s}</a>" for s in SECTIONS)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>occlabel report: {esc(run_dir.name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>occlabel report — {esc(run_dir.resolve().name)}</h1>"
        f"<p>{esc(run_dir.resolve())} · generated {time.strftime('%Y-%m-%d %H:%M:%S')} by occlabel {esc(__version__)}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(body)}</main></body></html>"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return {"path": out, "bytes": out.stat().st_size, "sections": filled}


def _calibration(run: RunFacts, progress: bool) -> tuple[str, bool]:
    cal_html, has_cal = calibration_section(run.cache_path, progress)
    return "<section id='calibration'><h2>Calibration diagnostics</h2>" + cal_html + "</section>", has_cal


__all__ = ["SECTIONS", "build_report", "evaluate_quietly", "find_stores"]
