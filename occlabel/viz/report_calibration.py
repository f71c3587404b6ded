"""The calibration diagnostics of the report: per camera a plot of the per-frame scale, loss and cue
agreement, the ``calibration/cue`` and ``calibration/flags`` arrays as a strip, and a table of the flagged
frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from occlabel.errors import StoreError
from occlabel.utils import progress_bar
from occlabel.viz.html import esc, figure_uri, table

#: colours of calibration cue codes (occlabel.store.cache.CALIBRATION_CUES) in plots and strips
CUE_COLOURS = {
    "none": "#9e9e9e",
    "photometric": "#1f77b4",
    "overlap": "#17becf",
    "ground": "#2ca02c",
    "prior": "#ff7f0e",
}


def _plot(cal: dict[str, Any], cue: np.ndarray, keyframes: np.ndarray, tol: float, title: str) -> str:
    """PNG data URI of one camera's calibration: scale by cue, loss, ground-cue agreement, keyframes shaded."""
    from matplotlib.ticker import MaxNLocator

    from occlabel.store.cache import CALIBRATION_CUES
    from occlabel.viz.show_labels import pyplot

    plt = pyplot()
    done = cal["done"].astype(bool)
    t = np.arange(len(done))
    fig, axes = plt.subplots(3, 1, figsize=(10, 6.2), sharex=True)
    ax = axes[0]
    for name, code in CALIBRATION_CUES.items():
        m = done & (cue == code)
        if m.any():
            ax.scatter(
                t[m], cal["scale"][m], s=22, color=CUE_COLOURS.get(name, "k"), label=f"cue: {name}", zorder=3
            )
    ax.plot(t[done], cal["scale"][done], color="0.7", lw=0.8, zorder=1)
    pos = cal["scale"][done]
    if len(pos) and np.all(pos[np.isfinite(pos)] > 0):
        ax.set_yscale("log")
    ax.set_ylabel("scale a\n(1/z = a·d + b)")
    ax.legend(fontsize=7, loc="best", ncol=3)
    ax.set_title(f"{title}: per-frame calibration (dots: frames; keyframes shaded)", fontsize=10)
    axes[1].plot(t[done], cal["loss"][done], marker="o", ms=3, color="#444")
    axes[1].set_ylabel("photometric\nloss")
    _plot_agreement(axes[2], cal, done, t, tol)
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    for a in axes:
        for k in np.flatnonzero(keyframes):
            a.axvspan(k - 0.5, k + 0.5, color="#fff3c4", zorder=0)
        a.grid(alpha=0.3)
    fig.tight_layout()
    return figure_uri(fig)


def _plot_agreement(ax, cal: dict[str, Any], done: np.ndarray, t: np.ndarray, tol: float) -> None:
    """depth(photometric) / depth(ground) per frame, with the agreement band."""
    if "ground_ratio" in cal:
        gr = cal["ground_ratio"]
        ax.axhspan(1 - tol, 1 + tol, color="#2ca02c", alpha=0.15, label=f"agreement ±{100 * tol:.0f} %")
        m = done & np.isfinite(gr)
        ax.plot(t[m], gr[m], marker="o", ms=3, color="#2ca02c", label="depth(photometric) / depth(ground)")
        ax.axhline(1, color="0.5", lw=0.6)
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no ground cue recorded", transform=ax.transAxes, ha="center")
    ax.set_ylabel("cue\nagreement")
    ax.set_xlabel("frame")


def _strip(cal: dict[str, Any], cue: np.ndarray, cue_name: dict[int, str]) -> str:
    """The cue and flags arrays as a table, one cell per frame."""
    from occlabel.store.cache import FLAGS

    done = cal["done"].astype(bool)
    t = np.arange(len(done))
    strip = ["<table class='strip'><tr><th>frame</th>" + "".join(f"<td>{i}</td>" for i in t) + "</tr>"]
    strip.append(
        "<tr><th>cue</th>"
        + "".join(
            f"<td title='{esc(cue_name.get(int(v), v))}' style='background:{CUE_COLOURS.get(cue_name.get(int(v), 'none'), '#ccc') if d else '#eee'}'>"
            f"{esc(cue_name.get(int(v), '?')[0].upper() if d else '')}</td>"
            for v, d in zip(cue, done, strict=True)
        )
        + "</tr>"
    )
    for fname, bit in FLAGS.items():
        on = (cal["flags"].astype(int) & bit) > 0
        strip.append(
            f"<tr><th>{esc(fname)}</th>"
            + "".join(
                f"<td style='background:{'#d62728' if o and d else '#f3f3f3'}'></td>"
                for o, d in zip(on, done, strict=True)
            )
            + "</tr>"
        )
    strip.append("</table>")
    return "".join(strip)


def _flagged_rows(cal, cue, cue_name, s: str, c: str, tokens: list[str]) -> list[list[Any]]:
    """Rows of the flagged-frames table: scene, camera, frame, token, flags, cue, scale, shift."""
    from occlabel.store.cache import FLAGS

    rows = []
    for i in np.flatnonzero(cal["done"].astype(bool) & (cal["flags"] > 0)):
        names = [k for k, bit in FLAGS.items() if int(cal["flags"][i]) & bit]
        rows.append([s, c, int(i), tokens[i], ", ".join(names), cue_name.get(int(cue[i]), "?"),
                     f"{cal['scale'][i]:.4g}", f"{cal['shift'][i]:.4g}"])  # fmt: skip
    return rows


def _intro(tol: float) -> str:
    legend = " ".join(
        f"<span style='background:{col};color:#fff;padding:1px 6px;border-radius:3px;font-size:11px'>{esc(n[0].upper())} {esc(n)}</span>"
        for n, col in CUE_COLOURS.items()
    )
    return (
        "<p class='muted'>Per frame: the fitted scale of <code>1/z = a·d + b</code> (log axis; relative depth models "
        "give each image its own unknown affine, so the scale varies from frame to frame by design), the final "
        "photometric loss, and the agreement of the photometric and ground-plane cues (median depth ratio over the "
        f"ground inliers; flagged <code>cue_disagreement</code> outside ±{100 * tol:.0f} %). Below each plot the "
        f"<code>calibration/cue</code> and <code>calibration/flags</code> arrays, one column per frame (red: set). Cues: {legend}</p>"
    )


def calibration_section(cache_path: Path | None, progress: bool) -> tuple[str, bool]:
    """HTML of the calibration diagnostics and whether it has content."""
    if cache_path is None:
        return "<p class='muted'>No cache in this run.</p>", False
    from occlabel.store.cache import CALIBRATION_CUES, open_cache

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
            parts.append(f"<h3>{esc(s)} / {esc(c)}</h3><p class='muted'>not calibrated</p>")
            continue
        any_cal = True
        smeta = cache.scene_meta(s)
        cue = cal.get("cue", np.where(cal["done"].astype(bool), 1, 0)).astype(int)
        uri = _plot(cal, cue, np.asarray(smeta["keyframes"], bool), tol, f"{s} / {c}")
        parts.append(f"<h3>{esc(s)} / {esc(c)}</h3><img alt='calibration {esc(s)}/{esc(c)}' src='{uri}'>")
        parts.append(_strip(cal, cue, cue_name))
        flagged += _flagged_rows(cal, cue, cue_name, s, c, smeta["tokens"])
    if flagged:
        tail = "<h3>Flagged frames</h3>" + table(
            ["scene", "camera", "frame", "token", "flags", "cue", "scale", "shift"], flagged, (2, 6, 7)
        )
    else:
        tail = "<h3>Flagged frames</h3><p>None: every calibrated frame has a clean fit.</p>"
    return _intro(tol) + "".join(parts) + tail, any_cal


__all__ = ["CUE_COLOURS", "calibration_section"]
