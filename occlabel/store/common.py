"""Zarr v3 helpers shared by the cache and labels stores: opening, attributes, arrays, provenance.

A store location is a local path or an fsspec URL (``s3://bucket/run/cache.zarr``, ``gs://...``,
``file:///abs/path``): every open goes through :func:`open_root`, so a URL string works wherever a path
does. Local paths (and ``file://`` URLs) use zarr's LocalStore, whose writes are atomic (temporary file +
rename); other URLs use ``zarr.storage.FsspecStore`` with :func:`storage_options` (docs/scaling.md).

Concurrency (docs/scaling.md): several processes may write different scenes of one store at once. Each
scene's data and its per-scene records (group attrs) are written only by that scene's writer; the root
attributes are written when the store is created and otherwise only through :func:`update_root_meta`,
which re-reads them from the store right before writing, so a concurrent writer can at worst replace a
field with its own value of the same field, never drop fields or corrupt the JSON.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import time
from collections.abc import Callable
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


def read_meta_fresh(node: zarr.Group) -> dict[str, Any]:
    """``node``'s occlabel attributes as they are in the store now (not as they were when it was opened)."""
    fresh = zarr.open_group(node.store, path=node.path, mode="r", zarr_format=3)
    return read_meta(fresh)


def update_root_meta(root: zarr.Group, update: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict:
    """Read-modify-write the occlabel attributes of ``root`` with the freshest copy from the store.

    ``update(meta)`` changes ``meta`` in place (or returns a new dict). The write replaces the whole
    attribute document atomically; writers running at the same time only ever set fields to values that
    are valid on their own (the same options, their own last-run summary), so a lost update never leaves
    the store inconsistent. Per-scene records belong in the scene's group (:func:`write_scene_record`).
    """
    meta = read_meta_fresh(root)
    out = update(meta)
    meta = meta if out is None else out
    write_meta(root, meta)
    return meta


def write_scene_record(group: zarr.Group, stage: str, record: dict[str, Any]) -> None:
    """Record ``stage``'s run over one scene in the scene group's attrs: ``occlabel.stages[stage]``.

    Only the scene's own writer calls this, so concurrent writers of other scenes never touch it.
    """
    meta = read_meta_fresh(group)
    meta.setdefault("stages", {})[stage] = {**record, **provenance()}
    write_meta(group, meta)


def scene_records(root: zarr.Group, stage: str, scenes: list[str] | None = None) -> dict[str, dict]:
    """scene -> its ``stage`` record (see :func:`write_scene_record`), for the scenes that have one."""
    names = scenes if scenes is not None else sorted(root.group_keys())
    out = {}
    for s in names:
        if s in root:
            rec = read_meta_fresh(root[s]).get("stages", {}).get(stage)
            if rec is not None:
                out[s] = rec
    return out


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


#: URL schemes that name local files (opened with zarr's LocalStore, like a plain path)
_LOCAL_SCHEMES = ("file://", "local://")


def is_url(path: Any) -> bool:
    """True for an fsspec URL of a remote store (``s3://``, ``gs://``, ``memory://`` ...); False for local
    paths and ``file://`` URLs."""
    return isinstance(path, str) and "://" in path and not path.startswith(_LOCAL_SCHEMES)


def store_location(path: str | Path) -> str | Path:
    """A store location as given: a remote URL stays a string (trailing ``/`` dropped), anything else
    becomes a Path (``file:///abs/x.zarr`` -> ``/abs/x.zarr``)."""
    if is_url(path):
        return str(path).rstrip("/")
    if isinstance(path, str):
        for scheme in _LOCAL_SCHEMES:
            if path.startswith(scheme):
                return Path(path[len(scheme) :])
    return Path(path)


def location_str(path: str | Path) -> str:
    """The absolute, process-independent name of a store: the URL, or the resolved local path."""
    loc = store_location(path)
    return loc if isinstance(loc, str) else str(loc.resolve())


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for ``url``: ``OCCLABEL_STORAGE_OPTIONS`` (a JSON object, e.g.
    ``{"endpoint_url": "http://minio:9000"}``), plus, for ``s3://``, ``endpoint_url`` from
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (S3-compatible servers). Credentials come from the
    filesystem's usual sources (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE, instance roles;
    GOOGLE_APPLICATION_CREDENTIALS for gs://)."""
    raw = os.environ.get("OCCLABEL_STORAGE_OPTIONS", "").strip()
    try:
        opts = dict(json.loads(raw)) if raw else {}
    except (ValueError, TypeError):
        raise StoreError("OCCLABEL_STORAGE_OPTIONS: expected a JSON object") from None
    if url.startswith(("s3://", "s3a://")) and "endpoint_url" not in opts:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
    return opts


def _filesystem(url: str):
    """(fsspec filesystem, path inside it) of a remote URL."""
    import fsspec

    try:
        fs, fpath = fsspec.core.url_to_fs(url, **storage_options(url))
    except (ImportError, ValueError) as e:
        raise StoreError(
            f"{url}: cannot open this URL ({e}); install the filesystem (s3fs, gcsfs ...)"
        ) from None
    return fs, fpath


def _fsspec_store(url: str, read_only: bool):
    from zarr.storage import FsspecStore

    try:
        return FsspecStore.from_url(url, storage_options=storage_options(url) or None, read_only=read_only)
    except (ImportError, ValueError, TypeError) as e:
        raise StoreError(
            f"{url}: cannot open this URL ({e}); install the filesystem (s3fs, gcsfs ...)"
        ) from None


def store_exists(path: str | Path) -> bool:
    """Whether anything exists at the store location (a directory or any object under the URL prefix)."""
    loc = store_location(path)
    if isinstance(loc, Path):
        return loc.exists()
    fs, fpath = _filesystem(loc)
    return bool(fs.exists(fpath + "/zarr.json")) or bool(fs.exists(fpath))


def _is_zarr(path: str | Path) -> bool:
    loc = store_location(path)
    if isinstance(loc, Path):
        return (loc / "zarr.json").exists()
    fs, fpath = _filesystem(loc)
    return bool(fs.exists(fpath + "/zarr.json"))


def delete_store(path: str | Path) -> None:
    """Delete the store at ``path`` (refused for a non-empty directory or prefix that is not a Zarr store)."""
    loc = store_location(path)
    if isinstance(loc, Path):
        if not loc.exists():
            return
        if loc.is_dir() and not (loc / "zarr.json").exists() and any(loc.iterdir()):
            raise StoreError(f"{loc}: exists and is not a Zarr store; refusing to delete it")
        shutil.rmtree(loc) if loc.is_dir() else loc.unlink()
        return
    fs, fpath = _filesystem(loc)
    if not fs.exists(fpath):
        return
    if not fs.exists(fpath + "/zarr.json") and fs.ls(fpath):
        raise StoreError(f"{loc}: exists and is not a Zarr store; refusing to delete it")
    fs.rm(fpath, recursive=True)


def open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    """``zarr.open_group`` of a local path or fsspec URL (zarr format 3)."""
    loc = store_location(path)
    if isinstance(loc, Path):
        return zarr.open_group(str(loc), mode=mode, zarr_format=3)
    return zarr.open_group(_fsspec_store(loc, read_only=mode == "r"), mode=mode, zarr_format=3)


def open_root(
    path: str | Path, kind: str, create: bool, overwrite: bool = False, mode: str = "a"
) -> zarr.Group:
    """Open the root group of an occlabel store of ``kind`` ("cache" or "labels") at a path or URL.

    create=True makes it when missing (wiping it first with overwrite=True); an existing store of another
    kind, or a directory that is not a store, is refused with a one-line StoreError. Creating never
    deletes what a concurrent writer has made (it opens with mode "a"); the caller writes the root
    attributes when they are empty.
    """
    loc = store_location(path)
    if create and overwrite:
        delete_store(loc)
    if not _is_zarr(loc):
        if not create:
            raise StoreError(f"{loc}: not a Zarr v3 store" if store_exists(loc) else f"{loc}: no such store")
        if isinstance(loc, Path):
            if loc.exists() and (not loc.is_dir() or any(loc.iterdir())):
                raise StoreError(f"{loc}: not a Zarr v3 store")
            loc.parent.mkdir(parents=True, exist_ok=True)
        return open_group(loc, mode="a")
    root = open_group(loc, mode="a" if create else mode)
    meta = read_meta(root)
    if meta and meta.get("kind") != kind:
        raise StoreError(f"{loc}: is a {meta.get('kind')!r} store, expected a {kind!r} store")
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


def store_bytes(path: str | Path) -> int:
    """Bytes on disk (or in the bucket) under ``path``."""
    loc = store_location(path)
    if isinstance(loc, Path):
        return sum(p.stat().st_size for p in loc.rglob("*") if p.is_file())
    fs, fpath = _filesystem(loc)
    return int(fs.du(fpath, total=True)) if fs.exists(fpath) else 0


def store_kind(path: str | Path) -> str:
    """ "cache" or "labels": the kind recorded in an occlabel store's root attributes."""
    loc = store_location(path)
    if not _is_zarr(loc):
        raise StoreError(f"{loc}: not a Zarr v3 store" if store_exists(loc) else f"{loc}: no such store")
    kind = read_meta(open_group(loc, mode="r")).get("kind")
    if kind not in ("cache", "labels"):
        raise StoreError(f"{loc}: not an occlabel store (no attrs['occlabel']['kind'])")
    return kind
