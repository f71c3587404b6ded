"""``occlabel show``: one picture of a labels sample (BEV, 3D, ground truth, camera overlay:
occlabel.viz.show_labels) or of a cache frame (image, semantics, relative disparity, metric depth,
photometric error before/after calibration: occlabel.viz.show_cache), by the kind of the store.

Everything reads through the public readers (open_labels, open_cache) and the dataset recorded in the
cache; figures are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from occlabel.viz.show_cache import cache_figure, photometric_before_after, pick_frame
from occlabel.viz.show_labels import (
    camera_view,
    dataset_of_cache,
    labels_figure,
    pick_sample,
    sample_ground_truth,
    save_render,
)


def show(store: str | Path, out: str | Path, **kw: Any) -> dict[str, Any]:
    """Picture of a labels store (:func:`labels_figure`) or a cache (:func:`cache_figure`), by store kind."""
    from occlabel.store.common import store_kind

    if store_kind(Path(store)) == "labels":
        return labels_figure(store, out, **kw)
    return cache_figure(store, out, **kw)


__all__ = [
    "cache_figure",
    "camera_view",
    "dataset_of_cache",
    "labels_figure",
    "photometric_before_after",
    "pick_frame",
    "pick_sample",
    "sample_ground_truth",
    "save_render",
    "show",
]
