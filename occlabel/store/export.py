"""Exporters from a LABELS.zarr to the layouts occupancy trainers read, and readers of those layouts.

Occ3D-nuScenes (BEVDet-Occ, FlashOCC, SparseOcc, STCOcc ...)::

    <out_dir>/gts/<scene_name>/<sample_token>/labels.npz
        semantics    <np.uint8: 200, 200, 16>  [x, y, z] in the keyframe ego frame, 0-16 classes, 17 free
        mask_camera  <np.uint8: 200, 200, 16>  0/1: voxel observed by the keyframe's cameras
        mask_lidar   <np.uint8: 200, 200, 16>  0/1: a copy of mask_camera (no LiDAR is used; trainers
                                               that train with mask_lidar then see the camera mask)
    <out_dir>/occlabel_export.json             provenance and the list of exported samples

Masks are uint8 0/1 as in the Occ3D release; loaders call ``.astype(bool)`` (the challenge metric) or
``torch.from_numpy`` (FlashOCC's LoadOccGTFromFile), both exact on these files. Unknown voxels are 17
(free) with mask 0, so they must be masked, as Occ3D trainers do with mask_camera.

SemanticKITTI semantic scene completion (MonoScene, VoxFormer, OccFormer, semantic-kitti-api)::

    <out_dir>/sequences/<XX>/voxels/<NNNNNN>.label    uint16, 256·256·32 raw SemanticKITTI label ids
    <out_dir>/sequences/<XX>/voxels/<NNNNNN>.invalid  uint8, 256·256·32 / 8 bytes: bit-packed flags
    <out_dir>/occlabel_export.json                    provenance; scene/token -> sequence/frame

Both files are flat in C order of the [x, y, z] array, exactly as the SemanticKITTI API reads them:
``np.fromfile(f, np.uint16).reshape(256, 256, 32)`` (x forward 0-51.2 m, y -25.6-25.6 m, z -2-4.4 m in the
velodyne frame). ``.label`` holds *raw* ids: the training ids 0-19 mapped through ``learning_map_inv`` of
semantic-kitti.yaml (0 empty → 0 "unlabeled", 1 car → 10, ..., 19 traffic-sign → 81), so that loaders
apply ``learning_map`` as they do to the official files. ``.invalid`` is 1 where the voxel was not observed
(outside mask_camera), packed 8 voxels per byte, most significant bit first (``np.packbits``, the API's
``pack``). Labels of the Occ3D class set are first mapped to training ids (:data:`OCC3D_TO_SEMANTICKITTI`,
lossy: no trunk, pole, traffic-sign, parking, bicyclist, motorcyclist). Not written: ``.bin`` and
``.occluded`` describe the single LiDAR scan that LiDAR-input SSC networks (LMSCNet, SSCNet) take as
input — camera-only labels have no such scan, and camera-based trainers read only ``.label`` and
``.invalid`` (MonoScene's and VoxFormer's preprocessing: label → learning_map, invalid → 255).
Files are written for keyframes on SemanticKITTI's 5-frame cadence (frame index % 5 == 0; ``every``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from occlabel.conventions import (
    OCC3D_TO_SEMANTICKITTI,
    SEMANTICKITTI_LEARNING_MAP,
    SEMANTICKITTI_LEARNING_MAP_INV,
    learning_map_lut,
)
from occlabel.errors import StoreError
from occlabel.store.common import provenance
from occlabel.store.labels import OCC3D, SEMANTICKITTI, ClassSet, open_labels

OCC3D_SHAPE = (200, 200, 16)
SEMANTICKITTI_SHAPE = (256, 256, 32)

#: training ids of SemanticKITTI's ignore label (MonoScene & co. mark invalid voxels 255)
SEMANTICKITTI_IGNORE = 255


def to_semantickitti(semantics: np.ndarray, classes: ClassSet) -> np.ndarray:
    """SemanticKITTI training ids <np.uint8: same shape> (0 = empty) of labels in ``classes``.

    SemanticKITTI labels pass through (their free id is 0); Occ3D labels go through
    :data:`OCC3D_TO_SEMANTICKITTI`. Other class sets have no defined mapping (StoreError).
    """
    sem = np.asarray(semantics)
    if classes.name == SEMANTICKITTI.name and classes.free == 0:
        return np.where(classes.is_class()[sem], sem, 0).astype(np.uint8)
    if classes.name == OCC3D.name:
        lut = np.zeros(256, np.uint8)
        for k, v in OCC3D_TO_SEMANTICKITTI.items():
            lut[k] = v
        return lut[sem]
    raise StoreError(
        f"labels of the {classes.name!r} class set have no SemanticKITTI mapping; voxelize semantics made "
        "with --vocab semantickitti (or occ3d)"
    )


def pack_bits(flags: np.ndarray) -> np.ndarray:
    """Bit-pack a bool array in C order, 8 per byte, most significant bit first (the SemanticKITTI API's
    ``pack``: ``a[::8] << 7 | a[1::8] << 6 | ... | a[7::8]``). Returns <np.uint8: ceil(n / 8)>."""
    return np.packbits(np.asarray(flags, bool).reshape(-1), bitorder="big")


def unpack_bits(packed: np.ndarray, n: int | None = None) -> np.ndarray:
    """Inverse of :func:`pack_bits`: <np.bool_: n> (default all 8 · len(packed) bits)."""
    bits = np.unpackbits(np.asarray(packed, np.uint8).reshape(-1), bitorder="big").astype(bool)
    return bits if n is None else bits[:n]


def semantickitti_names(
    scenes: list[str], frame_indices: dict[str, list[int]]
) -> dict[tuple[str, int], tuple[str, str]]:
    """SemanticKITTI (sequence, frame) names of every sample.

    Sequences: a scene whose name is all digits keeps its number ("8" and "08" -> "08"); the other
    scenes take the lowest two-digit numbers not taken, in sorted order. Frames: the sample's position in
    its scene (``frame_index``), six digits, as KITTI numbers its scans.

    Args:
        scenes: scene names; frame_indices: scene -> per-sample frame positions.
    Returns:
        (scene, sample index) -> (sequence "XX", frame "NNNNNN").
    """
    numbered = [f"{int(s):02d}" for s in scenes if s.isdigit()]
    if len(set(numbered)) != len(numbered):
        raise StoreError(
            f"scenes {sorted(s for s in scenes if s.isdigit())} name the same SemanticKITTI sequence"
        )
    free = (f"{i:02d}" for i in range(10**4) if f"{i:02d}" not in set(numbered))
    seq = {s: f"{int(s):02d}" if s.isdigit() else next(free) for s in sorted(scenes)}
    return {(s, i): (seq[s], f"{fi:06d}") for s in scenes for i, fi in enumerate(frame_indices[s])}


def write_semantickitti_voxels(stem: str | Path, train_ids: np.ndarray, invalid: np.ndarray) -> None:
    """Write ``<stem>.label`` and ``<stem>.invalid`` (atomically) for one grid.

    Args:
        train_ids: <uint8: 256, 256, 32> SemanticKITTI training ids 0-19 (0 empty), [x, y, z].
        invalid: <bool: 256, 256, 32> voxels not observed.
    """
    stem = Path(stem)
    raw = np.zeros(256, np.uint16)
    for k, v in SEMANTICKITTI_LEARNING_MAP_INV.items():
        raw[k] = v
    for suffix, data in ((".label", raw[np.asarray(train_ids, np.uint8)]), (".invalid", pack_bits(invalid))):
        tmp = stem.with_name(f".{stem.name}{suffix}.tmp{os.getpid()}")
        np.ascontiguousarray(data).tofile(tmp)
        tmp.replace(stem.with_suffix(suffix))


def read_semantickitti_voxels(
    stem: str | Path, shape: tuple[int, int, int] = SEMANTICKITTI_SHAPE
) -> dict[str, np.ndarray]:
    """Read ``<stem>.label`` (+ ``<stem>.invalid`` when present) as the SemanticKITTI API does.

    Returns:
        {"labels": <np.uint8: X, Y, Z> training ids through ``learning_map`` (255 where invalid, as
        MonoScene's preprocessing marks them), "invalid": <np.bool_: X, Y, Z>, "raw": <np.uint16> ids}.
    """
    stem = Path(stem)
    n = int(np.prod(shape))
    try:
        raw = np.fromfile(stem.with_suffix(".label"), dtype=np.uint16)
        inv_path = stem.with_suffix(".invalid")
        invalid = (
            unpack_bits(np.fromfile(inv_path, dtype=np.uint8), n) if inv_path.exists() else np.zeros(n, bool)
        )
    except OSError as e:
        raise StoreError(f"{stem}: cannot read SemanticKITTI voxels ({e})") from None
    if raw.size != n or invalid.size != n:
        raise StoreError(
            f"{stem}: expected {n} voxels ({'x'.join(map(str, shape))}), got {raw.size} labels / {invalid.size} flags"
        )
    lut = learning_map_lut()
    labels = np.where(raw < lut.size, lut[np.minimum(raw, lut.size - 1)], 0).astype(np.uint8)
    labels[invalid] = SEMANTICKITTI_IGNORE
    return {"labels": labels.reshape(shape), "invalid": invalid.reshape(shape), "raw": raw.reshape(shape)}


def export_occ3d(
    labels_path: str | Path,
    out_dir: str | Path,
    scenes: list[str] | None = None,
    allow_other_grid: bool = False,
    progress: bool = False,
) -> Path:
    """Write every done sample of a labels store as ``out_dir/gts/<scene>/<token>/labels.npz``.

    Args:
        labels_path: LABELS.zarr.
        out_dir: output root (e.g. ``data/nuscenes``); files are replaced atomically when present.
        scenes: only these scenes (default: all).
        allow_other_grid: also export grids other than Occ3D's 200 × 200 × 16 ego grid (same layout).
    Returns:
        the ``gts`` directory.
    """
    from occlabel.utils import progress_bar

    reader = open_labels(labels_path)
    grid = reader.grid
    if not allow_other_grid and (tuple(grid.shape) != OCC3D_SHAPE or grid.frame != "ego"):
        raise StoreError(
            f"{labels_path}: grid {grid.name!r} {grid.shape} ({grid.frame} frame) is not the Occ3D grid "
            f"{OCC3D_SHAPE} in the ego frame; voxelize with --grid occ3d"
        )
    if reader.classes.name != OCC3D.name:
        raise StoreError(
            f"{labels_path}: labels of the {reader.classes.name!r} class set are not Occ3D classes; "
            "export them with --format semantickitti, or voxelize Occ3D semantics"
        )
    if scenes:
        for s in scenes:
            reader.scene_meta(s)
    gts = Path(out_dir) / "gts"
    gts.mkdir(parents=True, exist_ok=True)
    written = []
    for s in progress_bar(reader, total=len(reader), desc="export occ3d", enabled=progress, unit="sample"):
        if scenes and s["scene"] not in scenes:
            continue
        d = gts / s["scene"] / s["token"]
        d.mkdir(parents=True, exist_ok=True)
        mask = s["mask_camera"].astype(np.uint8)
        tmp = d / f".labels.npz.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, semantics=s["semantics"].astype(np.uint8), mask_lidar=mask, mask_camera=mask
            )
        tmp.replace(d / "labels.npz")
        written.append({"scene": s["scene"], "token": s["token"]})
    index = {
        "format": "occ3d-nuscenes gts",
        "labels": str(Path(labels_path).resolve()),
        "grid": grid.to_dict(),
        "mask_lidar": "copy of mask_camera (camera-only labels)",
        "samples": written,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **provenance(),
    }
    (Path(out_dir) / "occlabel_export.json").write_text(json.dumps(index, indent=1))
    return gts


def export_semantickitti(
    labels_path: str | Path,
    out_dir: str | Path,
    scenes: list[str] | None = None,
    every: int = 5,
    allow_other_grid: bool = False,
    progress: bool = False,
) -> Path:
    """Write done samples as ``out_dir/sequences/<XX>/voxels/<NNNNNN>.{label,invalid}`` (see the module
    docstring for the layout, the id mapping and what is not written).

    Args:
        labels_path: LABELS.zarr on the SemanticKITTI grid (256 × 256 × 32, 0.2 m, velodyne frame).
        out_dir: output root (the SemanticKITTI ``dataset`` folder); files are replaced atomically.
        scenes: only these scenes (default: all).
        every: write samples whose frame index is a multiple of this (SemanticKITTI labels every 5th
            scan; 1: every sample).
        allow_other_grid: also export grids of another shape or frame (same layout, other reshape).
    Returns:
        the ``sequences`` directory.
    """
    from occlabel.utils import progress_bar

    if every < 1:
        raise StoreError(f"export semantickitti: every must be >= 1, got {every}")
    reader = open_labels(labels_path)
    grid = reader.grid
    if not allow_other_grid and (tuple(grid.shape) != SEMANTICKITTI_SHAPE or grid.frame != "sensor"):
        raise StoreError(
            f"{labels_path}: grid {grid.name!r} {grid.shape} ({grid.frame} frame) is not the SemanticKITTI grid "
            f"{SEMANTICKITTI_SHAPE} in the velodyne frame; voxelize with --grid semantickitti"
        )
    to_semantickitti(
        np.zeros(1, np.uint8) + reader.classes.free, reader.classes
    )  # refuse unmapped sets early
    if scenes:
        for s in scenes:
            reader.scene_meta(s)
    names = semantickitti_names(
        reader.scenes(), {s: reader.scene_meta(s)["frame_indices"] for s in reader.scenes()}
    )
    seq_dir = Path(out_dir) / "sequences"
    written, skipped = [], 0
    for s in progress_bar(
        reader, total=len(reader), desc="export semantickitti", enabled=progress, unit="sample"
    ):
        if scenes and s["scene"] not in scenes:
            continue
        if s["frame_index"] % every:
            skipped += 1
            continue
        seq, frame = names[(s["scene"], s["index"])]
        d = seq_dir / seq / "voxels"
        d.mkdir(parents=True, exist_ok=True)
        write_semantickitti_voxels(
            d / frame, to_semantickitti(s["semantics"], reader.classes), ~s["mask_camera"]
        )
        written.append({"scene": s["scene"], "token": s["token"], "sequence": seq, "frame": frame})
    index = {
        "format": "semantickitti ssc voxels (.label raw ids via learning_map_inv, .invalid bit-packed MSB first)",
        "labels": str(Path(labels_path).resolve()),
        "grid": grid.to_dict(),
        "classes": reader.classes.to_dict(),
        "class_mapping": "identity"
        if reader.classes.name == SEMANTICKITTI.name
        else "OCC3D_TO_SEMANTICKITTI",
        "invalid": "not in mask_camera",
        "every": every,
        "samples": written,
        "samples_skipped_cadence": skipped,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **provenance(),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "occlabel_export.json").write_text(json.dumps(index, indent=1))
    return seq_dir


__all__ = [
    "OCC3D_TO_SEMANTICKITTI",
    "SEMANTICKITTI_LEARNING_MAP",
    "SEMANTICKITTI_LEARNING_MAP_INV",
    "export_occ3d",
    "export_semantickitti",
    "learning_map_lut",
    "pack_bits",
    "read_semantickitti_voxels",
    "semantickitti_names",
    "to_semantickitti",
    "unpack_bits",
    "write_semantickitti_voxels",
]
