"""Small HTML helpers of the report: escaping, tables, PNGs embedded as base64 ``data:`` URIs."""

from __future__ import annotations

import base64
import html
import io
from typing import Any


def esc(x: Any) -> str:
    """``str(x)`` escaped for HTML text and attribute values."""
    return html.escape(str(x))


def table(header: list[str], rows: list[list[Any]], num: tuple[int, ...] = ()) -> str:
    """An HTML table; the columns in ``num`` are right-aligned numbers."""
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = [
            f"<td class='num'>{esc(v)}</td>" if i in num else f"<td>{esc(v)}</td>" for i, v in enumerate(r)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_uri(fig, dpi: int = 90) -> str:
    """A matplotlib figure as a PNG ``data:`` URI; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return data_uri(buf.getvalue())


__all__ = ["data_uri", "esc", "figure_uri", "table"]
