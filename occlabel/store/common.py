"""Zarr v3 helpers shared by the cache and labels stores: opening, attributes, arrays, provenance."""

from __future__ import annotations

import platform
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from occlabel.errors import StoreError

#: the one attribute key occlabel writes under
META = "occlabel"
#: compression for per-frame maps and voxel grids: the smallest total in the compression study of
#: docs/benchmarks.md (float16 disparity + uint8 labels + uint8 confidence per frame)
COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def read_meta(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    return dict(node.attrs.get(META, {}))


def write_meta(node: zarr.Group | zarr.Array, meta: dict[str, Any]) -> None:
    node.attrs[META] = _jsonable(meta)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def open_root(path: Path, kind: str, create: bool, overwrite: bool = False, mode: str = "a") -> zarr.Group:
    """Open the root group of an occlabel store of ``kind`` ("cache" or "labels").

    create=True makes it when missing (wiping it first with overwrite=True); an existing store of another
    kind, or a directory that is not a store, is refused with a one-line StoreError.
    """
    path = Path(path)
    if create and overwrite and path.exists():
        if path.is_dir() and not (path / "zarr.json").exists() and any(path.iterdir()):
            raise StoreError(f"{path}: exists and is not a Zarr store; refusing to delete it")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if not path.exists():
        if not create:
            raise StoreError(f"{path}: no such store")
        path.parent.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        write_meta(root, {})
        return root
    if not (path / "zarr.json").exists():
        raise StoreError(f"{path}: not a Zarr v3 store")
    root = zarr.open_group(str(path), mode="a" if create else mode, zarr_format=3)
    meta = read_meta(root)
    if meta and meta.get("kind") != kind:
        raise StoreError(f"{path}: is a {meta.get('kind')!r} store, expected a {kind!r} store")
    return root


def create_or_open_array(
    g: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: str,
    chunks: tuple[int, ...],
    fill_value: Any = 0,
    compressors: Any = "auto",
    dimension_names: tuple[str, ...] | None = None,
) -> zarr.Array:
    """The array ``name`` of ``g``, created when missing; an existing one must match shape and dtype."""
    if name in g:
        a = g[name]
        if tuple(a.shape) != tuple(shape) or np.dtype(a.dtype) != np.dtype(dtype):
            raise StoreError(
                f"{g.store_path}/{name}: exists with shape {a.shape} {a.dtype}, expected {shape} {dtype}; use --overwrite"
            )
        return a
    return g.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=fill_value,
        compressors=compressors,
        dimension_names=dimension_names,
    )


def provenance() -> dict[str, Any]:
    """Who wrote this and when: occlabel/torch/zarr versions, host, time."""
    import torch

    from occlabel import __version__

    return {
        "version": __version__,
        "torch": torch.__version__,
        "zarr": zarr.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def store_bytes(path: Path) -> int:
    """Bytes on disk under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def store_kind(path: Path) -> str:
    """ "cache" or "labels": the kind recorded in an occlabel store's root attributes."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise StoreError(f"{path}: not a Zarr v3 store" if path.exists() else f"{path}: no such store")
    kind = read_meta(zarr.open_group(str(path), mode="r", zarr_format=3)).get("kind")
    if kind not in ("cache", "labels"):
        raise StoreError(f"{path}: not an occlabel store (no attrs['occlabel']['kind'])")
    return kind
