"""The one ground-truth lookup (occlabel.store.groundtruth): which file belongs to a labels sample, from a
ground-truth directory (Occ3D or SemanticKITTI layout) or the dataset's own frame."""

from __future__ import annotations

import numpy as np
import pytest

from occlabel.datasets.base import Frame
from occlabel.errors import StoreError
from occlabel.store.export import write_semantickitti_voxels
from occlabel.store.groundtruth import detect_gt_format, find_ground_truth

OCC = (4, 3, 2)
SK = (256, 256, 32)


def sample(shape, scene="s0", token="t1", index=0) -> dict:
    return {"scene": scene, "token": token, "index": index, "semantics": np.zeros(shape, np.uint8)}


def occ3d_file(path, value: int = 4):
    path.parent.mkdir(parents=True, exist_ok=True)
    sem = np.full(OCC, 17, np.uint8)
    sem[0, 0, 0] = value
    mask = np.ones(OCC, bool)
    mask[3, 2, 1] = False
    np.savez(path, semantics=sem, mask_camera=mask)
    return path


def sk_files(stem):
    stem.parent.mkdir(parents=True, exist_ok=True)
    ids = np.zeros(SK, np.uint8)
    ids[1, 2, 3] = 1  # car
    invalid = np.zeros(SK, bool)
    invalid[0, 0, 0] = True
    write_semantickitti_voxels(stem, ids, invalid)
    return stem


def test_occ3d_directory(tmp_path):
    p = occ3d_file(tmp_path / "gts" / "s0" / "t1" / "labels.npz")
    for fmt in ("occ3d", None):
        g = find_ground_truth(sample(OCC), gt_dir=tmp_path, gt_format=fmt)
        assert g.classes.name == "occ3d" and g.where == str(p)
        assert g.semantics[0, 0, 0] == 4 and g.semantics[1, 1, 1] == 17 and not g.mask[3, 2, 1]
    assert find_ground_truth(sample(OCC, token="t2"), gt_dir=tmp_path) is None
    # the gts/ folder itself: only when the format is not stated (show --gt), not for evaluate --format occ3d
    g = find_ground_truth(sample(OCC), gt_dir=tmp_path / "gts")
    assert g is not None and g.where == str(p)
    assert find_ground_truth(sample(OCC), gt_dir=tmp_path / "gts", gt_format="occ3d") is None
    assert detect_gt_format(tmp_path) == "occ3d"


def test_semantickitti_directory(tmp_path):
    stem = sk_files(tmp_path / "sequences" / "03" / "voxels" / "000005")
    names = {("s0", 0): ("03", "000005")}
    g = find_ground_truth(sample(SK), gt_dir=tmp_path, gt_format="semantickitti", sk_names=names)
    assert g.classes.name == "semantickitti" and g.where == str(stem.with_suffix(".label"))
    assert g.semantics[1, 2, 3] == 1 and g.mask[1, 2, 3]
    assert g.semantics[0, 0, 0] == 0 and not g.mask[0, 0, 0]  # invalid: masked out, 0 (not 255)
    names = {("s0", 0): ("03", "000010")}
    assert find_ground_truth(sample(SK), gt_dir=tmp_path, gt_format="semantickitti", sk_names=names) is None
    with pytest.raises(StoreError, match="expected"):  # read with the labels' shape
        find_ground_truth(
            sample(OCC), gt_dir=tmp_path, gt_format="semantickitti", sk_names={("s0", 0): ("03", "000005")}
        )
    assert detect_gt_format(tmp_path) == "semantickitti"


def test_dataset_frame(tmp_path):
    occ = occ3d_file(tmp_path / "occ.npz", value=9)
    stem = sk_files(tmp_path / "vox" / "000000")
    label = str(stem.with_suffix(".label"))
    frame = Frame(
        "t1", 0.0, True, np.eye(4), {}, occupancy_path=occ, meta={"semantickitti_voxels": {"label": label}}
    )
    bare = Frame("t1", 0.0, True, np.eye(4), {})
    # not stated: the voxels for labels on the SemanticKITTI grid, else the occupancy
    assert find_ground_truth(sample(SK), frame).where == label
    assert find_ground_truth(sample(OCC), frame).where == str(occ)
    # stated: only that format
    assert find_ground_truth(sample(SK), frame, gt_format="occ3d").where == str(occ)
    assert find_ground_truth(sample(SK), bare, gt_format="semantickitti") is None
    assert find_ground_truth(sample(OCC), bare) is None and find_ground_truth(sample(OCC)) is None
    # an occupancy on another grid is returned as it is: the caller decides
    assert (
        find_ground_truth(
            sample(SK), Frame("t1", 0.0, True, np.eye(4), {}, occupancy_path=occ)
        ).semantics.shape
        == OCC
    )
