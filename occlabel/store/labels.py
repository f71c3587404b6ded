"""The labels store (``LABELS.zarr``): stage-3 voxel labels, one sample per keyframe, and its reader API.

Schema (Zarr v3)::

    LABELS.zarr/                      attrs["occlabel"]: kind="labels", grid (VoxelGrid.to_dict()),
                                      classes (ClassSet.to_dict(): name, names, free, moving),
                                      cache (absolute path of the source CACHE.zarr), source (voxelize's),
                                      depth_key, semantics_key, options (resolved voxelize options),
                                      created, provenance (version, torch, zarr, host, time),
                                      stats (last run), evaluation (last `evaluate` results, when run)
      <scene>/                        attrs["occlabel"]: tokens (N sample tokens), frame_indices (N positions
                                      of the keyframes in the cache's scene), timestamps (N, seconds)
        semantics        (N,X,Y,Z) uint8   class id of the store's class set; its free id (Occ3D: 17,
                                           SemanticKITTI: 0) where free or unknown
        mask_camera      (N,X,Y,Z) bool    voxel crossed or hit by a ray of the keyframe's own cameras
        confidence       (N,X,Y,Z) uint8   0..255 ~ 0..1 (see occlabel.stages.voxelize)
        hits             (N,X,Y,Z) uint16  surface points that fell in the voxel (saturates at 65535)
        passes           (N,X,Y,Z) uint16  free-space evidence, ray-lengths in voxel units (saturates)
        T_world_from_ego (N,4,4)   float64 keyframe ego pose
        T_ego_from_grid  (N,4,4)   float64 the grid's frame in that ego frame (identity for ego grids;
                                           a sensor grid's pose, e.g. KITTI's velodyne)
        done             (N,)      bool    written after the sample's data (resume skips done samples)

N is the number of keyframes of the scene; X, Y, Z the grid's shape, arrays indexed [x, y, z]. Every
voxel array has one sample per chunk (chunks (1, X, Y, Z)), so a sample is written atomically.
Unwritten samples read back as free with an empty mask; trust ``done``.

Reading::

    from occlabel.store.labels import open_labels
    labels = open_labels("labels.zarr")
    len(labels), labels.scenes()
    for s in labels:                       # done samples, scene by scene, in keyframe order
        s["semantics"]                     # <np.uint8: X, Y, Z>
    labels["<sample token>"]               # one sample by token (or labels[i] by position)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from occlabel.conventions import (
    FREE,
    OCC3D_MOVING,
    OCC3D_NAMES,
    OCC3D_NUM_SEMANTIC,
    SEMANTICKITTI_MOVING,
    SEMANTICKITTI_NAMES,
    VoxelGrid,
)
from occlabel.errors import StoreError
from occlabel.store.common import (
    COMPRESSOR,
    create_or_open_array,
    open_root,
    provenance,
    read_meta,
    store_location,
    update_root_meta,
    write_meta,
    write_scene_record,
)


@dataclass(frozen=True)
class ClassSet:
    """The 3D classes of a labels store: which id each class has and which id means free.

    Attributes:
        name: "occ3d", "semantickitti" or a vocabulary's name.
        names: class id -> name, for the classes (the free id is not one of them).
        free: the id written for free and unknown voxels (Occ3D 17; SemanticKITTI 0, "empty").
        moving: ids of classes that can move (fused only near the keyframe).
    """

    name: str
    names: dict[int, str]
    free: int
    moving: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """Length of a lookup table over every id of the set (classes and free): max id + 1."""
        return max([*self.names, self.free]) + 1

    def is_class(self) -> np.ndarray:
        """<np.bool_: 256> true for the ids of the classes (not free, not unused ids)."""
        lut = np.zeros(256, bool)
        lut[list(self.names)] = True
        return lut

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "names": {str(k): v for k, v in sorted(self.names.items())},
            "free": self.free,
            "moving": list(self.moving),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ClassSet:
        """From :meth:`to_dict`'s form; ``None`` (stores written before class sets) is Occ3D."""
        if not d:
            return OCC3D
        return cls(
            name=d["name"],
            names={int(k): str(v) for k, v in d["names"].items()},
            free=int(d["free"]),
            moving=tuple(int(c) for c in d.get("moving", ())),
        )


#: Occ3D-nuScenes: classes 0-16, 17 = free
OCC3D = ClassSet("occ3d", dict(enumerate(OCC3D_NAMES[:OCC3D_NUM_SEMANTIC])), FREE, OCC3D_MOVING)
#: SemanticKITTI's 19 training classes 1-19 (learning map of semantic-kitti.yaml); 0 = empty
SEMANTICKITTI = ClassSet(
    "semantickitti", dict(enumerate(SEMANTICKITTI_NAMES[1:], start=1)), 0, SEMANTICKITTI_MOVING
)
CLASS_SETS: dict[str, ClassSet] = {"occ3d": OCC3D, "semantickitti": SEMANTICKITTI}


def class_set_from_vocabulary(vocab) -> ClassSet:
    """The class set of labels made from 2D semantics in ``vocab`` (occlabel.models.vocab.Vocabulary).

    The built-in vocabularies give :data:`OCC3D` and :data:`SEMANTICKITTI`; any other vocabulary keeps its
    ids, with free = 0 when 0 is not one of its ids (SemanticKITTI's convention) and max id + 1 otherwise
    (Occ3D's).
    """
    if vocab.name in CLASS_SETS and set(vocab.ids()) == set(CLASS_SETS[vocab.name].names):
        return CLASS_SETS[vocab.name]
    ids = vocab.ids()
    free = 0 if 0 not in ids else max(ids) + 1
    if free > 253:
        raise StoreError(f"vocabulary {vocab.name!r}: no id left for free space (ids up to {max(ids)})")
    return ClassSet(vocab.name, dict(vocab.names()), free, vocab.moving_ids())


#: voxel arrays of a scene: name -> (dtype, fill value; the semantics fill is the class set's free id)
VOXEL_ARRAYS: dict[str, tuple[str, Any]] = {
    "semantics": ("uint8", FREE),
    "mask_camera": ("bool", False),
    "confidence": ("uint8", 0),
    "hits": ("uint16", 0),
    "passes": ("uint16", 0),
}
DIMENSION_NAMES = ("sample", "x", "y", "z")


class LabelsWriter:
    """Write access to a LABELS.zarr (used by occlabel.stages.voxelize). Create with :meth:`create`."""

    def __init__(self, root: zarr.Group, path: str | Path):
        self.root = root
        #: a local Path, or the store's URL as a string
        self.path = store_location(path)
        #: scene -> samples written by this writer (recorded per scene by :meth:`update_meta`)
        self._written: dict[str, int] = {}

    @classmethod
    def create(
        cls, path: str | Path, grid: VoxelGrid, meta: dict[str, Any], overwrite: bool = False
    ) -> LabelsWriter:
        """Open ``path`` for writing, creating it with root ``meta`` (kind, grid, provenance are added).

        An existing store must have been made with the same grid, classes, source cache and options (the
        fields ``grid``, ``classes``, ``cache``, ``source``, ``depth_key``, ``semantics_key``, ``options``);
        otherwise a StoreError asks for ``--overwrite`` or another ``--out``.
        """
        path = store_location(path)
        root = open_root(path, "labels", create=True, overwrite=overwrite)
        new = {"kind": "labels", "grid": grid.to_dict(), **meta}
        new = _roundtrip_json(new)
        prov = provenance()

        def merge(old: dict[str, Any]) -> dict[str, Any]:
            # the freshest root attrs: several writers (shards, Ray tasks) may open one store at once
            if old:
                for k in ("grid", "classes", "cache", "source", "depth_key", "semantics_key", "options"):
                    if k in new and old.get(k) != new[k]:
                        raise StoreError(
                            f"{path}: existing labels were made with another {k} ({old.get(k)!r}, now {new[k]!r}); "
                            "use --overwrite or another --out"
                        )
                merged = {**old, **{k: v for k, v in new.items() if k not in ("created",)}}
            else:
                merged = {**new, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            merged["provenance"] = prov
            return merged

        update_root_meta(root, merge)
        return cls(root, path)

    @property
    def meta(self) -> dict[str, Any]:
        return read_meta(self.root)

    def update_meta(self, drop: tuple[str, ...] = (), **fields: Any) -> None:
        """Set root attribute ``fields`` and remove the keys in ``drop`` (merged into the freshest copy in
        the store, see occlabel.store.common.update_root_meta). Also records, in each scene group this
        writer initialised, ``stages.voxelize``: samples written by this run, samples done, provenance."""
        for scene, n in self._written.items():
            done = self.done(scene)
            write_scene_record(
                self.root[scene],
                "voxelize",
                {"keyframes_written": n, "keyframes_done": int(done.sum()), "keyframes": int(done.size)},
            )

        def update(meta: dict[str, Any]) -> None:
            for k in drop:
                meta.pop(k, None)
            meta.update(_roundtrip_json(fields))

        update_root_meta(self.root, update)

    @property
    def grid(self) -> VoxelGrid:
        return VoxelGrid.from_dict(self.meta["grid"])

    @property
    def classes(self) -> ClassSet:
        return ClassSet.from_dict(self.meta.get("classes"))

    def init_scene(
        self,
        scene: str,
        tokens: list[str],
        frame_indices: list[int],
        timestamps: list[float],
        T_world_from_ego: np.ndarray,
    ) -> zarr.Group:
        """Create (or check) a scene group for N keyframes.

        Args:
            tokens: N sample tokens; frame_indices: N positions of the keyframes in the cache's scene;
            timestamps: N seconds; T_world_from_ego: <float64: N, 4, 4> keyframe ego poses.
        """
        N = len(tokens)
        g = self.root.require_group(scene)
        smeta = {
            "tokens": list(tokens),
            "frame_indices": [int(i) for i in frame_indices],
            "timestamps": list(timestamps),
        }
        old = read_meta(g)
        if old and old.get("tokens") != smeta["tokens"]:
            raise StoreError(
                f"{self.path}: scene {scene!r} holds other samples than the cache; use --overwrite"
            )
        write_meta(g, {**old, **smeta})  # keeps the scene's stage records
        self._written.setdefault(scene, 0)
        X, Y, Z = self.grid.shape
        free = self.classes.free
        for name, (dtype, fill) in VOXEL_ARRAYS.items():
            create_or_open_array(
                g,
                name,
                (N, X, Y, Z),
                dtype,
                chunks=(1, X, Y, Z),
                fill_value=free if name == "semantics" else fill,
                compressors=COMPRESSOR,
                dimension_names=DIMENSION_NAMES,
            )
        poses = create_or_open_array(
            g,
            "T_world_from_ego",
            (N, 4, 4),
            "float64",
            chunks=(N, 4, 4),
            dimension_names=("sample", "row", "col"),
        )
        poses[:] = np.asarray(T_world_from_ego, np.float64).reshape(N, 4, 4)
        new = "T_ego_from_grid" not in g
        grid_poses = create_or_open_array(
            g,
            "T_ego_from_grid",
            (N, 4, 4),
            "float64",
            chunks=(1, 4, 4),
            dimension_names=("sample", "row", "col"),
        )
        if new:
            grid_poses[:] = np.broadcast_to(np.eye(4), (N, 4, 4))
        create_or_open_array(
            g, "done", (N,), "bool", chunks=(1,), fill_value=False, dimension_names=("sample",)
        )
        return g

    def done(self, scene: str) -> np.ndarray:
        """<bool: N> samples of ``scene`` already written."""
        return self.root[f"{scene}/done"][:]

    def write_sample(self, scene: str, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Write sample ``index`` of ``scene``, then mark it done.

        ``arrays``: every name of VOXEL_ARRAYS (each (X, Y, Z)) and optionally "T_ego_from_grid" <4, 4>
        (default identity: the grid lives in the keyframe's ego frame).
        """
        g = self.root[scene]
        for name, (dtype, _) in VOXEL_ARRAYS.items():
            g[name][index] = np.asarray(arrays[name]).astype(dtype, copy=False)
        g["T_ego_from_grid"][index] = np.asarray(arrays.get("T_ego_from_grid", np.eye(4)), np.float64)
        g["done"][index] = True
        self._written[scene] = self._written.get(scene, 0) + 1


class LabelsReader:
    """Read-only view of a LABELS.zarr: a sequence of per-sample dicts over its *done* samples.

    ``reader[i]`` (position) or ``reader[token]`` gives::

        {"scene": str, "token": str, "index": int (sample index within the scene),
         "frame_index": int (position of the keyframe in the cache's scene), "timestamp": float,
         "semantics": <np.uint8: X, Y, Z> (the class set's ids; ``classes.free`` = free, Occ3D 17),
         "mask_camera": <np.bool_: X, Y, Z>, "confidence": <np.uint8: X, Y, Z> (0..255),
         "T_world_from_ego": <np.float64: 4, 4>, "T_ego_from_grid": <np.float64: 4, 4> (identity for
         ego grids), "grid": VoxelGrid, "classes": ClassSet}

    plus "hits" and "passes" (<np.uint16: X, Y, Z>) when opened with ``counts=True``.
    """

    def __init__(self, path: str | Path, counts: bool = False):
        self.path = store_location(path)
        self.root = open_root(self.path, "labels", create=False, mode="r")
        self.meta = read_meta(self.root)
        if self.meta.get("kind") != "labels" or "grid" not in self.meta:
            raise StoreError(f"{self.path}: not an occlabel labels store")
        self.grid = VoxelGrid.from_dict(self.meta["grid"])
        self.classes = ClassSet.from_dict(self.meta.get("classes"))
        self.counts = counts
        self._samples: list[tuple[str, int]] = []
        self._by_token: dict[str, int] = {}
        self._scene_meta: dict[str, dict[str, Any]] = {}
        for scene in self.scenes():
            g = self.root[scene]
            smeta = read_meta(g)
            self._scene_meta[scene] = smeta
            done = g["done"][:]
            for i in np.flatnonzero(done):
                self._by_token[smeta["tokens"][i]] = len(self._samples)
                self._samples.append((scene, int(i)))

    def scenes(self) -> list[str]:
        """Scene names in the store (sorted)."""
        return sorted(k for k in self.root.group_keys())

    def scene_meta(self, scene: str) -> dict[str, Any]:
        """{"tokens", "frame_indices", "timestamps"} of a scene (all N samples, done or not)."""
        if scene not in self._scene_meta:
            raise StoreError(f"{self.path}: no scene {scene!r} (has: {', '.join(self.scenes()) or 'none'})")
        return self._scene_meta[scene]

    def tokens(self) -> list[str]:
        """Tokens of the done samples, in iteration order."""
        return [self._scene_meta[s]["tokens"][i] for s, i in self._samples]

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for scene, i in self._samples:
            yield self.read(scene, i)

    def __contains__(self, token: str) -> bool:
        return token in self._by_token

    def __getitem__(self, key: int | str) -> dict[str, Any]:
        if isinstance(key, str):
            if key not in self._by_token:
                raise KeyError(f"{self.path}: no done sample with token {key!r}")
            key = self._by_token[key]
        scene, i = self._samples[key]
        return self.read(scene, i)

    def read(self, scene: str, index: int) -> dict[str, Any]:
        """Sample ``index`` of ``scene`` as a dict (see the class docstring), whether done or not."""
        g = self.root[scene]
        smeta = self.scene_meta(scene)
        out: dict[str, Any] = {
            "scene": scene,
            "token": smeta["tokens"][index],
            "index": int(index),
            "frame_index": int(smeta["frame_indices"][index]),
            "timestamp": float(smeta["timestamps"][index]),
            "semantics": g["semantics"][index],
            "mask_camera": g["mask_camera"][index],
            "confidence": g["confidence"][index],
            "T_world_from_ego": g["T_world_from_ego"][index],
            # stores written before grid poses were recorded hold ego grids only
            "T_ego_from_grid": g["T_ego_from_grid"][index] if "T_ego_from_grid" in g else np.eye(4),
            "grid": self.grid,
            "classes": self.classes,
        }
        if self.counts:
            out["hits"] = g["hits"][index]
            out["passes"] = g["passes"][index]
        return out

    def __repr__(self) -> str:
        return f"LabelsReader({str(self.path)!r}, {len(self)} samples, {len(self.scenes())} scenes, grid {self.grid.name} {self.grid.shape})"


def open_labels(path: str | Path, counts: bool = False) -> LabelsReader:
    """Open a LABELS.zarr for reading (see :class:`LabelsReader`); ``counts=True`` adds hits/passes."""
    return LabelsReader(path, counts=counts)


def _roundtrip_json(x: Any) -> Any:
    """``x`` as it reads back from the attributes (tuples -> lists, numpy -> Python), for comparisons."""

    def default(o: Any) -> Any:
        if isinstance(o, np.ndarray | np.generic):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    return json.loads(json.dumps(x, default=default))


__all__ = [
    "CLASS_SETS",
    "ClassSet",
    "LabelsReader",
    "LabelsWriter",
    "OCC3D",
    "SEMANTICKITTI",
    "SEMANTICKITTI_NAMES",
    "VOXEL_ARRAYS",
    "class_set_from_vocabulary",
    "open_labels",
]
