"""Occ3D metrics against hand-computed confusion matrices, and `evaluate.run` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from occlabel.conventions import FREE, OCC3D_NAMES
from occlabel.stages import evaluate, voxelize
from occlabel.stages.evaluate import (
    confusion_matrix,
    format_table,
    geometry_iou,
    occ3d_metrics,
    per_class_iou,
)
from occlabel.store.labels import open_labels

# gt, pred, mask by hand (the last voxel is outside the mask)
GT = np.array([4, 4, 4, 17, 17, 11, 11, 0])
PRED = np.array([4, 4, 17, 4, 17, 11, 15, 0])
MASK = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)


def test_confusion_by_hand():
    c = confusion_matrix(PRED, GT, MASK)
    expected = np.zeros((18, 18), np.int64)
    expected[4, 4] = 2  # rows gt, columns prediction
    expected[4, 17] = 1
    expected[17, 4] = 1
    expected[17, 17] = 1
    expected[11, 11] = 1
    expected[11, 15] = 1
    assert np.array_equal(c, expected)
    # torch inputs (any device) give the same counts
    assert np.array_equal(
        confusion_matrix(torch.from_numpy(PRED), torch.from_numpy(GT), torch.from_numpy(MASK)), c
    )
    # no mask: the masked voxel (0 -> 0) counts too
    assert confusion_matrix(PRED, GT)[0, 0] == 1


def test_metrics_by_hand():
    m = occ3d_metrics(confusion_matrix(PRED, GT, MASK))
    # car: tp 2, gt 3, pred 3 -> 2 / 4; driveable_surface: tp 1, gt 2, pred 1 -> 1 / 2; manmade: 0 / 1
    assert m["per_class"]["car"] == pytest.approx(0.5)
    assert m["per_class"]["driveable_surface"] == pytest.approx(0.5)
    assert m["per_class"]["manmade"] == 0.0
    # classes absent from gt and prediction are NaN -> None and left out of the mean
    assert m["per_class"]["others"] is None and m["per_class"]["bus"] is None
    assert m["classes_in_miou"] == 3
    assert m["miou"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    # geometry: tp = 2 + 1 + 1 (11 -> 15 is still occupied), fp = 1 (free -> car), fn = 1 (car -> free)
    assert m["iou_geometry"] == pytest.approx(4 / 6)
    assert m["iou_free"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["num_voxels"] == 7
    assert list(m["per_class"]) == list(OCC3D_NAMES[:17])


def test_nan_handling():
    all_free = confusion_matrix(np.full(5, FREE), np.full(5, FREE))
    m = occ3d_metrics(all_free)
    assert m["miou"] is None and m["iou_geometry"] is None and m["classes_in_miou"] == 0
    assert m["iou_free"] == 1.0
    assert math.isnan(geometry_iou(all_free))
    iou = per_class_iou(all_free)
    assert np.isnan(iou[:17]).all() and iou[17] == 1.0
    # a class only predicted (never in gt) counts as IoU 0, not NaN
    m = occ3d_metrics(confusion_matrix(np.array([3, 17]), np.array([17, 17])))
    assert m["per_class"]["bus"] == 0.0 and m["miou"] == 0.0 and m["iou_geometry"] == 0.0
    json.dumps(m)  # None, not NaN: valid JSON


def test_out_of_range_labels_are_ignored():
    c = confusion_matrix(np.array([4, 4, 200]), np.array([4, 255, 4]))
    assert c.sum() == 1 and c[4, 4] == 1


def test_against_challenge_formulation():
    """Same figures as the CVPR2023 challenge code's hist_info / per_class_iu / nanmean, on random data."""
    rng = np.random.default_rng(0)
    total = np.zeros((18, 18))
    ours = np.zeros((18, 18), np.int64)
    for _ in range(3):
        gt = rng.choice([0, 4, 11, 15, 17], size=(20, 20, 4), p=[0.05, 0.1, 0.2, 0.15, 0.5])
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 18, gt.shape))
        mask = rng.random(gt.shape) < 0.6
        g, p = gt[mask], pred[mask]
        k = (g >= 0) & (g < 18)
        total += np.bincount(18 * g[k].astype(int) + p[k], minlength=18**2).reshape(18, 18)
        ours += confusion_matrix(pred, gt, mask)
    ref_iou = np.diag(total) / (total.sum(1) + total.sum(0) - np.diag(total))
    ref_miou = np.nanmean(ref_iou[:17])
    assert np.array_equal(ours, total.astype(np.int64))
    m = occ3d_metrics(ours)
    assert m["miou"] == pytest.approx(ref_miou)
    got = np.array([np.nan if v is None else v for v in m["per_class"].values()])
    assert np.allclose(got, ref_iou[:17], equal_nan=True)


def test_format_table():
    m = occ3d_metrics(confusion_matrix(PRED, GT, MASK)) | {"num_samples": 1}
    t = format_table(m)
    assert "mIoU" in t and "geometry IoU" in t and "car" in t and " 50.00" in t and "   -  " in t


def test_run_end_to_end(tmp_path):
    """GT occupancy = the labels themselves, then with one GT voxel changed: exact figures."""
    from cache_builders import R_EGO_FROM_CAM, build_cache, pose

    K = np.array([[4.0, 0, 2.0], [0, 4.0, 0.0], [0, 0, 1]])
    depth = np.array([[np.nan, 3.7, 3.7, 3.7, np.nan]], np.float32)
    labels = np.array([[254, 15, 15, 4, 254]], np.uint8)
    placeholder = {
        "semantics": np.full((200, 200, 16), 17, np.uint8),
        "mask_camera": np.ones((200, 200, 16), bool),
    }
    frames = [
        {
            "T_world_from_ego": np.eye(4),
            "keyframe": True,
            "maps": {"CAM_FRONT": (depth, labels)},
            "occupancy": placeholder,
        }
    ]
    cache = build_cache(tmp_path, frames, {"CAM_FRONT": (K, pose(0, 0.5, 0, R_EGO_FROM_CAM))})
    vox = dict(device="cpu", progress=False, window=0, min_hits=1.0, ray_stride=1, edge_tol=0.0)
    out = voxelize.run(cache.path, tmp_path / "l.zarr", **vox)
    (s,) = list(open_labels(out))
    occ_path = cache.open_dataset().scenes[0].frames[0].occupancy_path
    np.savez_compressed(
        occ_path,
        semantics=s["semantics"],
        mask_camera=s["mask_camera"].astype(np.uint8),
        mask_lidar=s["mask_camera"].astype(np.uint8),
    )
    res = evaluate.run(out, json_out=tmp_path / "r.json", progress=False)
    assert res["miou"] == 1.0 and res["iou_geometry"] == 1.0 and res["classes_in_miou"] == 2
    assert res["num_samples"] == 1 and res["num_voxels"] == int(s["mask_camera"].sum())

    # GT: one more manmade voxel inside the mask, where the labels say free -> a false negative
    gt = s["semantics"].copy()
    free_seen = np.argwhere((gt == 17) & s["mask_camera"])[0]
    gt[tuple(free_seen)] = 15
    np.savez_compressed(occ_path, semantics=gt, mask_camera=s["mask_camera"].astype(np.uint8))
    res = evaluate.run(out, json_out=tmp_path / "r.json", progress=False)
    assert res["per_class"]["manmade"] == pytest.approx(2 / 3)  # 2 voxels right of 3
    assert res["per_class"]["car"] == 1.0
    assert res["miou"] == pytest.approx((2 / 3 + 1) / 2)
    assert res["iou_geometry"] == pytest.approx(3 / 4)
    assert json.loads((tmp_path / "r.json").read_text())["miou"] == pytest.approx(res["miou"])
    assert open_labels(out).meta["evaluation"]["miou"] == pytest.approx(res["miou"])

    # new samples make the recorded evaluation stale: voxelize drops it
    import zarr

    zarr.open_group(str(out), mode="a")["s0/done"][0] = False
    voxelize.run(cache.path, out, **vox)
    assert "evaluation" not in open_labels(out).meta


# --------------------------------------------------------------------------------------------------
# SemanticKITTI SSC protocol; ground truth from a directory
# --------------------------------------------------------------------------------------------------

# training ids by hand: voxel 8 is 255 (ignored), voxel 9 is flagged invalid (outside the mask)
SK_GT = np.array([1, 1, 1, 0, 0, 9, 9, 13, 255, 1])
SK_PRED = np.array([1, 1, 0, 1, 0, 9, 13, 13, 1, 0])
SK_VALID = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)


def test_ssc_metrics_by_hand():
    c = confusion_matrix(SK_PRED, SK_GT, SK_VALID, num_classes=20)
    assert c.sum() == 8 and c[1, 1] == 2 and c[1, 0] == 1 and c[0, 1] == 1 and c[9, 13] == 1
    m = evaluate.ssc_metrics(c)
    # completion: tp = voxels 0, 1, 5, 6, 7; fp = voxel 3 (empty -> car); fn = voxel 2 (car -> empty)
    assert m["iou_completion"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(5 / 6) and m["recall"] == pytest.approx(5 / 6)
    # car: tp 2 of gt 3 and predicted 3 -> 2 / 4; road: 1 / 2; building: tp 1, predicted 2 -> 1 / 2
    assert m["per_class"]["car"] == pytest.approx(0.5)
    assert m["per_class"]["road"] == pytest.approx(0.5) and m["per_class"]["building"] == pytest.approx(0.5)
    assert m["per_class"]["person"] is None and m["classes_in_miou"] == 3 and "empty" not in m["per_class"]
    assert m["miou"] == pytest.approx(0.5) and m["miou_19"] == pytest.approx(1.5 / 19)
    assert m["accuracy"] == pytest.approx(5 / 8) and m["num_voxels"] == 8
    t = format_table(m | {"num_samples": 1})
    assert "completion IoU" in t and " 71.43" in t and "geometry IoU" not in t
    with pytest.raises(ValueError, match="20x20"):
        evaluate.ssc_metrics(np.zeros((18, 18)))
    empty = evaluate.ssc_metrics(np.zeros((20, 20), np.int64))
    assert empty["iou_completion"] is None and empty["miou"] is None and empty["miou_19"] == 0.0


def test_gt_directory_layouts(tmp_path):
    from cache_builders import BOX_GRID, BOX_OPTS, box_cache

    from occlabel.errors import StoreError
    from occlabel.store.export import export_occ3d

    with pytest.raises(StoreError, match="pass --format"):
        evaluate.detect_gt_format(tmp_path)
    (tmp_path / "a" / "sequences").mkdir(parents=True)
    (tmp_path / "b" / "gts").mkdir(parents=True)
    assert evaluate.detect_gt_format(tmp_path / "a") == "semantickitti"
    assert evaluate.detect_gt_format(tmp_path / "b") == "occ3d"

    cache = box_cache(tmp_path)
    out = voxelize.run(
        cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX_OPTS, edge_tol=0.0
    )
    export_occ3d(out, tmp_path / "occ", allow_other_grid=True)
    res = evaluate.run(out, gt=tmp_path / "occ", progress=False)
    assert res["protocol"].startswith("occ3d") and res["miou"] == 1.0 and res["iou_geometry"] == 1.0
    assert res["gt"] == str((tmp_path / "occ").resolve())
