"""Which ground-truth occupancy belongs to a labels sample: the one lookup behind ``evaluate``, ``show`` and
``report``.

Two places hold ground truth:

- a ground-truth directory, in the layouts the exporters write (occlabel.store.export): Occ3D
  (``gts/<scene>/<token>/labels.npz``) or SemanticKITTI (``sequences/<XX>/voxels/<NNNNNN>.label`` +
  ``.invalid``, named by :func:`~occlabel.store.export.semantickitti_names`);
- the dataset recorded in the source cache: a frame's SemanticKITTI voxels
  (``frame.meta["semantickitti_voxels"]``, occlabel.datasets.kitti) or its Occ3D occupancy
  (``frame.occupancy_path``).

The format is either stated ("occ3d" or "semantickitti": only that one is looked for, as ``evaluate``
scores one protocol) or not (None: whatever the sample has, as ``show`` draws it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from occlabel.errors import StoreError
from occlabel.store.export import SEMANTICKITTI_SHAPE, read_semantickitti_voxels, semantickitti_names
from occlabel.store.labels import OCC3D, SEMANTICKITTI, ClassSet

#: ground-truth formats (and protocols) ``evaluate --format`` accepts
GT_FORMATS = ("occ3d", "semantickitti")


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth occupancy of one labels sample, indexed [x, y, z] like the labels.

    Attributes:
        semantics: <np.uint8: X, Y, Z> class ids of ``classes`` (SemanticKITTI training ids: 0 where
            invalid).
        mask: <np.bool_: X, Y, Z> the voxels that count: Occ3D ``mask_camera``; SemanticKITTI: not flagged
            invalid and not 255.
        classes: OCC3D or SEMANTICKITTI.
        where: the file read.
    """

    semantics: np.ndarray
    mask: np.ndarray
    classes: ClassSet
    where: str


def detect_gt_format(gt_dir: str | Path) -> str:
    """ "semantickitti" when ``gt_dir`` holds ``sequences/``, "occ3d" when it holds ``gts/``."""
    d = Path(gt_dir)
    if (d / "sequences").is_dir():
        return "semantickitti"
    if (d / "gts").is_dir():
        return "occ3d"
    raise StoreError(
        f"{d}: neither a SemanticKITTI dataset folder (sequences/XX/voxels/) nor an Occ3D one (gts/); "
        "pass --format"
    )


def reader_semantickitti_names(reader) -> dict[tuple[str, int], tuple[str, str]]:
    """(scene, sample index) -> SemanticKITTI (sequence, frame) of every sample of a labels reader."""
    return semantickitti_names(
        reader.scenes(), {sc: reader.scene_meta(sc)["frame_indices"] for sc in reader.scenes()}
    )


def find_ground_truth(
    sample: dict[str, Any],
    frame=None,
    gt_dir: str | Path | None = None,
    gt_format: str | None = None,
    sk_names: dict[tuple[str, int], tuple[str, str]] | None = None,
) -> GroundTruth | None:
    """The ground truth of a labels sample (``LabelsReader[i]``), or None when there is none.

    Args:
        sample: the labels sample; its "scene", "token", "index" and the shape of its "semantics" are used.
        frame: the sample's dataset frame (:class:`occlabel.datasets.base.Frame`), read when ``gt_dir`` is
            None; None: no ground truth.
        gt_dir: a ground-truth directory, or None: the dataset's own (``frame``).
        gt_format: "occ3d", "semantickitti", or None (not stated). With ``gt_dir``: "semantickitti" reads
            ``sequences/<sk_names[(scene, index)]>``; else Occ3D ``gts/<scene>/<token>/labels.npz``, and when
            not stated also ``<scene>/<token>/labels.npz`` (a ``gts/`` folder given itself). From the
            dataset: "semantickitti" its SemanticKITTI voxels, "occ3d" its occupancy, None the voxels when the
            labels are on the 256 x 256 x 32 grid and the frame has them, else the occupancy.
        sk_names: :func:`reader_semantickitti_names` of the store (SemanticKITTI directories only).
    Returns:
        a :class:`GroundTruth`; an occupancy file on another grid is returned as it is (the caller decides),
        SemanticKITTI voxels are read with the labels' shape (another size raises StoreError).
    """
    shape = tuple(sample["semantics"].shape)
    if gt_dir is not None:
        if gt_format == "semantickitti":
            seq, name = sk_names[(sample["scene"], sample["index"])]
            stem = Path(gt_dir) / "sequences" / seq / "voxels" / name
            label = stem.with_suffix(".label")
            return _semantickitti(stem, shape, str(label)) if label.exists() else None
        roots = [Path(gt_dir) / "gts"] + ([Path(gt_dir)] if gt_format is None else [])
        for root in roots:
            p = root / sample["scene"] / sample["token"] / "labels.npz"
            if p.exists():
                return _occupancy(p)
        return None
    if frame is None:
        return None
    vox = (getattr(frame, "meta", None) or {}).get("semantickitti_voxels") or {}
    if gt_format == "semantickitti" or (
        gt_format is None and shape == SEMANTICKITTI_SHAPE and "label" in vox
    ):
        if "label" not in vox:
            return None
        return _semantickitti(Path(vox["label"]).with_suffix(""), shape, str(vox["label"]))
    return _occupancy(frame.occupancy_path) if frame.occupancy_path is not None else None


def _semantickitti(stem: Path, shape: tuple[int, ...], where: str) -> GroundTruth:
    """``<stem>.label`` (+ ``.invalid``) read with the labels' shape (another size is refused, both named)."""
    g = read_semantickitti_voxels(stem, shape)
    valid = g["labels"] != 255
    sem = np.where(valid, g["labels"], 0).astype(np.uint8)
    return GroundTruth(sem, valid, SEMANTICKITTI, where)


def _occupancy(path: Path) -> GroundTruth:
    """An Occ3D ``labels.npz``: its semantics and ``mask_camera``."""
    from occlabel.datasets.base import load_occupancy

    g = load_occupancy(path)
    return GroundTruth(g["semantics"], g["mask_camera"], OCC3D, str(path))


__all__ = ["GT_FORMATS", "GroundTruth", "detect_gt_format", "find_ground_truth", "reader_semantickitti_names"]
