"""occlabel: 3D semantic occupancy labels from cameras alone (vision foundation models + self-supervised
metric depth calibration).

Python API (the CLI is a thin layer over it)::

    from occlabel import open_labels, open_cache
    for sample in open_labels("labels.zarr"):
        sample["semantics"]  # uint8 (X, Y, Z), 17 = free
"""

__version__ = "0.1.0"


def open_cache(path, mode="r"):
    """Open a CACHE.zarr (stage-1/2 outputs); see occlabel.store.cache.Cache."""
    from occlabel.store.cache import open_cache as _open

    return _open(path, mode)


def open_labels(path):
    """Open a LABELS.zarr for reading; iterate it for per-sample dicts (see occlabel.store.labels)."""
    from occlabel.store.labels import open_labels as _open

    return _open(path)


__all__ = ["__version__", "open_cache", "open_labels"]
