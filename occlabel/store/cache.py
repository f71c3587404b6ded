"""The per-frame cache (``CACHE.zarr``): stage-1 outputs (relative depth, semantics) and stage-2 calibration.

Schema (Zarr v3; docs/storage.md is the authoritative description)::

    CACHE.zarr/                         attrs["occlabel"]: kind="cache", version, dataset{kind,root,options},
                                        created, stages{extract_2d, calibrate_depth: options + provenance},
                                        default_depth, default_semantics
      <scene>/                          attrs["occlabel"]: tokens, timestamps, keyframes, cameras
        T_world_from_ego   (T,4,4) float64
        <camera>/                       attrs["occlabel"]: height, width (working res), image_width/height
          present          (T,)   bool     the camera has an image in that frame
          K                (T,3,3) float64 intrinsics at the working resolution
          T_world_from_cam (T,4,4) float64 camera pose at the image's own timestamp
          depth/<key>/                  attrs["occlabel"]: model, space ("disparity" | "depth_m"), ...
            values         (T,h,w) float16 relative disparity (or metric depth), NaN = no value
            done           (T,)   bool
            calibration/                attrs["occlabel"]: method, options; per-frame scale, shift,
                                        loss, valid_frac, flags, cue, ground_*, done: the schema is
                                        occlabel.store.calibration.CALIBRATION_ARRAYS
            metric_depth   (T,h,w) float16 calibrated metres (calibrate-depth --write-depth), + _done (T,)
          semantics/<key>/              attrs["occlabel"]: model, vocabulary
            labels         (T,h,w) uint8   class ids, SKY, UNLABELED
            confidence     (T,h,w) uint8   0..255 ~ 0..1
            done           (T,)   bool

T is the number of frames of the scene (all frames, not only keyframes); arrays are indexed by the
frame's position in the scene. Every per-frame array has one frame per chunk, so a frame is written
atomically, and ``done`` is set only after the frame's data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from occlabel.conventions import scale_intrinsics
from occlabel.datasets import Dataset, Scene, open_dataset
from occlabel.errors import StoreError
from occlabel.models.vocab import Vocabulary, vocabulary_of_provenance
from occlabel.store.calibration import (
    CALIBRATION_ARRAYS,
    CALIBRATION_CUES,
    FLAGS,
    CalibrationStore,
    depth_from_relative,
)
from occlabel.store.common import (
    COMPRESSOR,
    META,
    _jsonable,
    create_or_open_array,
    open_root,
    provenance,
    read_meta,
    read_meta_fresh,
    store_location,
    update_root_meta,
    write_meta,
    write_scene_record,
)


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float16 values rounded (half away from zero in magnitude) to ``bits`` of their 10 mantissa bits.

    Args:
        values: float16 array, any shape.
        bits: mantissa bits kept, 1-10 (10 returns ``values`` unchanged).
    Returns:
        float16 array of the same shape: finite values have relative error at most 2^-(bits+1) (8 bits:
        0.2 %), their low (10 - bits) mantissa bits are zero (so a byte-shuffling compressor packs them);
        NaN and +-inf are kept; a value may round up to the next power of two (the carry is exact).
    """
    if not 1 <= int(bits) <= 10:
        raise ValueError(f"mantissa bits must be in 1..10, got {bits}")
    values = np.asarray(values, np.float16)
    drop = 10 - int(bits)
    if drop == 0:
        return values
    u = values.view(np.uint16).astype(np.uint32)
    rounded = (((u + (1 << (drop - 1))) >> drop) << drop).astype(np.uint16).view(np.float16)
    # rounding the largest finite magnitudes may carry into the exponent and overflow to inf: keep those
    return np.where(np.isfinite(values) & np.isfinite(rounded), rounded, values)


class Cache(CalibrationStore):
    """Read/write access to a CACHE.zarr store. Open with :func:`open_cache` or :meth:`Cache.create`.

    The calibration arrays and the stored metric depth: :class:`occlabel.store.calibration.CalibrationStore`.
    """

    def __init__(self, root: zarr.Group, path: str | Path):
        self.root = root
        #: a local Path, or the store's URL (s3://..., gs://...) as a string
        self.path = store_location(path)

    # ------------------------------------------------------------------ creation / opening
    @classmethod
    def create(cls, path: str | Path, dataset: Dataset, overwrite: bool = False) -> Cache:
        """Open ``path`` (a local path or an fsspec URL) for writing, creating it for ``dataset``; an existing
        cache must be for the same dataset."""
        path = store_location(path)
        root = open_root(path, "cache", create=True, overwrite=overwrite)
        meta = read_meta(root)
        ds = {"kind": dataset.kind, "root": str(dataset.root), "options": dataset.options}
        old = meta.get("dataset")
        if old and old["root"] != ds["root"]:
            raise StoreError(
                f"{path}: cache was made for dataset {old['root']}, not {ds['root']} (use another --out or --overwrite)"
            )
        same = (
            json.loads(json.dumps([old.get("kind", ds["kind"]), old.get("options") or {}])) if old else None
        )
        if old and same != json.loads(json.dumps([ds["kind"], ds["options"] or {}], default=str)):
            # later stages reopen the dataset with the recorded adapter and options: mixing is not possible
            raise StoreError(
                f"{path}: cache was made with dataset {old.get('kind')!r} options {old.get('options') or {}}, "
                f"not {ds['kind']!r} {ds['options'] or {}} (use the same --dataset/--dataset-option values, "
                "another --out, or --overwrite)"
            )
        if not meta and not read_meta_fresh(root):  # creation (a concurrent writer may just have done it)
            meta = {
                "kind": "cache",
                "dataset": ds,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "stages": {},
            }
            meta.update(provenance())
            write_meta(root, meta)
        return cls(root, path)

    @property
    def meta(self) -> dict[str, Any]:
        return read_meta(self.root)

    def update_meta(self, **fields: Any) -> None:
        """Set root attribute ``fields`` (merged into the freshest copy in the store: concurrent writers of
        other scenes keep theirs; see occlabel.store.common.update_root_meta)."""
        update_root_meta(self.root, lambda meta: meta.update(fields))

    def record_stage(
        self, stage: str, info: dict[str, Any], scenes: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """Record a stage's run: per scene in the scene group's attrs (``<scene>.attrs.occlabel.stages[stage]``:
        ``scenes[name]``, written only by that scene's writer) and this run's summary (resolved options,
        provenance, counts) under the root's ``attrs["occlabel"]["stages"][stage]`` (the last run's)."""
        for name, rec in (scenes or {}).items():
            write_scene_record(self.root[name], stage, rec)
        record = {**info, **provenance()}

        def update(meta: dict[str, Any]) -> None:
            meta.setdefault("stages", {})[stage] = record

        update_root_meta(self.root, update)

    def scene_record(self, scene: str, stage: str) -> dict[str, Any] | None:
        """``stage``'s record of its last run over ``scene`` (None when it has not run there)."""
        return (self.scene_meta(scene).get("stages") or {}).get(stage)

    def open_dataset(self) -> Dataset:
        """Reopen the dataset recorded in the cache (stage 2 reads its images again)."""
        ds = self.meta["dataset"]
        return open_dataset(ds["kind"], ds["root"], **ds.get("options", {}))

    # ------------------------------------------------------------------ scenes and cameras
    def scenes(self) -> list[str]:
        return sorted(k for k in self.root.group_keys())

    def scene_meta(self, scene: str) -> dict[str, Any]:
        if scene not in self.root:
            raise StoreError(f"{self.path}: no scene {scene!r} (has: {', '.join(self.scenes()) or 'none'})")
        return read_meta(self.root[scene])

    def cameras(self, scene: str) -> list[str]:
        return list(self.scene_meta(scene)["cameras"])

    def init_scene(
        self,
        scene: Scene,
        work_size: dict[str, tuple[int, int]],
        image_size: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        """Create (or check) a scene's groups and its geometry arrays.

        Args:
            scene: the dataset scene.
            work_size: camera -> (width, height) of the stored maps; intrinsics are scaled to it.
            image_size: camera -> (width, height) of its images when the caller already read them (default:
                :meth:`Scene.image_size`).
        """
        T = len(scene.frames)
        g = self.root.require_group(scene.name)
        smeta = {
            "tokens": [f.token for f in scene.frames],
            "timestamps": [f.timestamp for f in scene.frames],
            "keyframes": [f.keyframe for f in scene.frames],
            "cameras": scene.cameras,
        }
        old = read_meta(g)
        if old and old.get("tokens") != smeta["tokens"]:
            raise StoreError(
                f"{self.path}: scene {scene.name!r} in the cache has other frames than the dataset; use --overwrite"
            )
        write_meta(g, {**old, **smeta})  # keeps the scene's stage records
        poses = np.stack([f.T_world_from_ego for f in scene.frames])
        create_or_open_array(g, "T_world_from_ego", (T, 4, 4), "float64", chunks=(T, 4, 4))[:] = poses
        for cam in scene.cameras:
            w, h = work_size[cam]
            cg = g.require_group(cam)
            K = np.zeros((T, 3, 3))
            T_wc = np.tile(np.eye(4), (T, 1, 1))
            present = np.zeros(T, bool)
            native = W0, H0 = image_size[cam] if image_size else scene.image_size(cam)
            for t, f in enumerate(scene.frames):
                im = f.images.get(cam)
                if im is None:
                    continue
                K[t] = scale_intrinsics(im.K, w / W0, h / H0)
                T_wc[t] = f.T_world_from_cam(cam)
                present[t] = True
            write_meta(cg, {"width": w, "height": h, "image_width": native[0], "image_height": native[1]})
            create_or_open_array(cg, "present", (T,), "bool", chunks=(T,))[:] = present
            create_or_open_array(cg, "K", (T, 3, 3), "float64", chunks=(T, 3, 3))[:] = K
            create_or_open_array(cg, "T_world_from_cam", (T, 4, 4), "float64", chunks=(T, 4, 4))[:] = T_wc

    def camera_meta(self, scene: str, camera: str) -> dict[str, Any]:
        return read_meta(self._cam(scene, camera))

    def geometry(self, scene: str, camera: str) -> dict[str, np.ndarray]:
        """{"K": (T,3,3), "T_world_from_cam": (T,4,4), "present": (T,)} at the working resolution."""
        cg = self._cam(scene, camera)
        return {k: cg[k][:] for k in ("K", "T_world_from_cam", "present")}

    def _cam(self, scene: str, camera: str) -> zarr.Group:
        path = f"{scene}/{camera}"
        if path not in self.root:
            raise StoreError(f"{self.path}: no camera {camera!r} in scene {scene!r}")
        return self.root[path]

    # ------------------------------------------------------------------ per-frame maps
    def _maps(self, scene: str, camera: str, family: str, key: str, create: dict | None = None) -> zarr.Group:
        cg = self._cam(scene, camera)
        path = f"{family}/{key}"
        if path not in cg:
            if create is None:
                raise StoreError(
                    f"{self.path}: no {family} {key!r} for {scene}/{camera}; run extract-2d first"
                )
            g = cg.require_group(path)
            write_meta(g, create)
            return g
        g = cg[path]
        if create is not None:
            stored = read_meta(g)
            if json.dumps(stored, sort_keys=True) != json.dumps(_jsonable(create), sort_keys=True):
                changed = sorted(
                    k
                    for k in set(stored) | set(create)
                    if json.dumps(stored.get(k)) != json.dumps(_jsonable(create.get(k)))
                )
                raise StoreError(
                    f"{self.path}: {scene}/{camera}/{path} was written with other settings (differs in "
                    f"{', '.join(changed)}); resume with the same options, pass --overwrite, or use another cache"
                )
        return g

    def _frame_array(
        self, g: zarr.Group, name: str, dtype: str, fill: Any, scene: str, camera: str
    ) -> zarr.Array:
        cm = self.camera_meta(scene, camera)
        T = len(self.scene_meta(scene)["tokens"])
        return create_or_open_array(
            g,
            name,
            (T, cm["height"], cm["width"]),
            dtype,
            chunks=(1, cm["height"], cm["width"]),
            fill_value=fill,
            compressors=COMPRESSOR,
            dimension_names=("frame", "v", "u"),
        )

    def _done(self, g: zarr.Group, scene: str) -> zarr.Array:
        T = len(self.scene_meta(scene)["tokens"])
        return create_or_open_array(g, "done", (T,), "bool", chunks=(1,), fill_value=False)

    def depth_keys(self, scene: str, camera: str) -> list[str]:
        cg = self._cam(scene, camera)
        return sorted(cg["depth"].group_keys()) if "depth" in cg else []

    def semantic_keys(self, scene: str, camera: str) -> list[str]:
        cg = self._cam(scene, camera)
        return sorted(cg["semantics"].group_keys()) if "semantics" in cg else []

    def resolve_key(self, family: str, key: str | None) -> str:
        """The stored key to use: ``key`` itself, or the cache's default for ``family`` ("depth"/"semantics")."""
        if key:
            return key
        k = self.meta.get(f"default_{family}")
        if not k:
            raise StoreError(f"{self.path}: no {family} results in this cache; run extract-2d first")
        return k

    def init_depth(self, scene: str, camera: str, key: str, attrs: dict) -> None:
        """Create (or, resuming, check) depth group ``key``; ``attrs`` must equal the stored ones."""
        g = self._maps(scene, camera, "depth", key, create=attrs)
        self._frame_array(g, "values", "float16", np.nan, scene, camera)
        self._done(g, scene)

    def init_semantics(
        self, scene: str, camera: str, key: str, attrs: dict, vocabulary: Vocabulary | None = None
    ) -> None:
        """Create (or, resuming, check) semantics group ``key``; ``attrs`` must equal the stored ones.

        ``vocabulary`` (the labels' target vocabulary, None: Occ3D ids) is stored beside them in full, for
        :meth:`vocabulary`; a group written before vocabularies were recorded gets it on resume.
        """
        full = {**attrs, "vocabulary": vocabulary.to_dict()} if vocabulary is not None else attrs
        path = f"{scene}/{camera}/semantics/{key}"
        older = path in self.root and "vocabulary" not in read_meta(self.root[path])
        g = self._maps(scene, camera, "semantics", key, create=attrs if older else full)
        if older and vocabulary is not None:
            write_meta(g, full)
        self._frame_array(g, "labels", "uint8", 255, scene, camera)
        self._frame_array(g, "confidence", "uint8", 0, scene, camera)
        self._done(g, scene)

    def vocabulary(self, scene: str, camera: str, key: str | None = None) -> Vocabulary:
        """The target vocabulary of semantics ``key`` (default: the cache's) of one camera: its class ids,
        names, movable classes and colours (:func:`occlabel.models.vocab.vocabulary_of_provenance`)."""
        g = self._maps(scene, camera, "semantics", self.resolve_key("semantics", key))
        return vocabulary_of_provenance(read_meta(g))

    def depth_done(self, scene: str, camera: str, key: str) -> np.ndarray:
        return self._maps(scene, camera, "depth", key)["done"][:]

    def semantics_done(self, scene: str, camera: str, key: str) -> np.ndarray:
        return self._maps(scene, camera, "semantics", key)["done"][:]

    def write_depth(
        self, scene: str, camera: str, key: str, t: int, values: np.ndarray, mantissa_bits: int = 10
    ) -> None:
        """Write frame ``t``'s map <float: h, w> (disparity or metric depth, NaN = none), then mark it done.

        ``mantissa_bits`` < 10 rounds the float16 values to that many mantissa bits (relative error at most
        2^-(bits+1)), which lets the compressor store smooth maps in far fewer bytes; see
        :func:`round_mantissa`.
        """
        g = self._maps(scene, camera, "depth", key)
        g["values"][t] = round_mantissa(np.asarray(values, np.float16), mantissa_bits)
        g["done"][t] = True

    def write_semantics(
        self, scene: str, camera: str, key: str, t: int, labels: np.ndarray, confidence: np.ndarray
    ) -> None:
        """Write frame ``t``'s labels <uint8: h, w> and confidence <uint8: h, w>, then mark it done."""
        g = self._maps(scene, camera, "semantics", key)
        g["labels"][t] = labels.astype(np.uint8)
        g["confidence"][t] = confidence.astype(np.uint8)
        g["done"][t] = True

    def depth_attrs(self, scene: str, camera: str, key: str | None = None) -> dict:
        return read_meta(self._maps(scene, camera, "depth", self.resolve_key("depth", key)))

    def read_depth(
        self, scene: str, camera: str, key: str | None = None, t: int | slice = slice(None)
    ) -> np.ndarray:
        """Stored relative map(s) as float32 (disparity, or depth_m for metric models): (h, w) or (T, h, w)."""
        g = self._maps(scene, camera, "depth", self.resolve_key("depth", key))
        return g["values"][t].astype(np.float32)

    def read_semantics(
        self, scene: str, camera: str, key: str | None = None, t: int | slice = slice(None)
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels uint8, confidence float32 in [0, 1]) for frame(s) ``t``."""
        g = self._maps(scene, camera, "semantics", self.resolve_key("semantics", key))
        return g["labels"][t], g["confidence"][t].astype(np.float32) / 255.0


def open_cache(path: str | Path, mode: str = "r") -> Cache:
    """Open an existing CACHE.zarr at a local path or fsspec URL (``mode`` "r" to read, "a" to add stage
    outputs)."""
    path = store_location(path)
    root = open_root(path, "cache", create=False, mode=mode)
    return Cache(root, path)


__all__ = [
    "CALIBRATION_ARRAYS",
    "CALIBRATION_CUES",
    "Cache",
    "open_cache",
    "depth_from_relative",
    "FLAGS",
    "META",
]
