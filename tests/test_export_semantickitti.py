"""SemanticKITTI SSC export: bit packing by hand, file layout read back as the SemanticKITTI API reads it,
the learning map round trip, naming and cadence, and SSC evaluation against the exported files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cache_builders import BOX_GRID, BOX_OPTS, box_cache, pose
from click.testing import CliRunner

from occlabel.cli import main
from occlabel.errors import StoreError
from occlabel.stages import evaluate, voxelize
from occlabel.store.export import (
    OCC3D_TO_SEMANTICKITTI,
    SEMANTICKITTI_LEARNING_MAP,
    SEMANTICKITTI_LEARNING_MAP_INV,
    export_semantickitti,
    learning_map_lut,
    pack_bits,
    read_semantickitti_voxels,
    semantickitti_names,
    to_semantickitti,
    unpack_bits,
)
from occlabel.store.labels import OCC3D, SEMANTICKITTI, open_labels

SHAPE = (256, 256, 32)
#: the velodyne frame 0.9 m ahead of, 0.05 m left of and 0.3 m below the ego origin
T_EGO_FROM_VELO = pose(0.9, 0.05, -0.3)
EXACT = {**BOX_OPTS, "edge_tol": 0.0, "range_weight_m": 0.0, "tsdf": False}


def api_pack(flags: np.ndarray) -> np.ndarray:
    """semantic-kitti-api's io_data.pack, verbatim in numpy."""
    a = flags.reshape(-1).astype(np.uint8)
    return (
        a[::8] << 7
        | a[1::8] << 6
        | a[2::8] << 5
        | a[3::8] << 4
        | a[4::8] << 3
        | a[5::8] << 2
        | a[6::8] << 1
        | a[7::8]
    ).astype(np.uint8)


def test_bit_packing_by_hand():
    flags = np.zeros(24, bool)
    flags[[0, 7, 9, 23]] = True  # byte 0: bits 7 and 0; byte 1: bit 6; byte 2: bit 0
    packed = pack_bits(flags)
    assert packed.dtype == np.uint8 and packed.tolist() == [0x81, 0x40, 0x01]
    assert np.array_equal(packed, api_pack(flags))
    assert (
        np.array_equal(unpack_bits(packed), flags) and unpack_bits(packed, 10).tolist() == flags[:10].tolist()
    )
    rng = np.random.default_rng(0)
    grid = rng.random(SHAPE) < 0.3
    assert np.array_equal(pack_bits(grid), api_pack(grid)) and pack_bits(grid).size == 256 * 256 * 32 // 8
    assert np.array_equal(unpack_bits(pack_bits(grid)).reshape(SHAPE), grid)


def test_learning_maps():
    lut = learning_map_lut()
    # the inverse map is a right inverse of the learning map on every training id
    assert all(lut[raw] == train for train, raw in SEMANTICKITTI_LEARNING_MAP_INV.items())
    assert lut[252] == 1 and lut[60] == 9 and lut[99] == 0 and lut[255] == 8  # moving car, lane marking ...
    assert set(SEMANTICKITTI_LEARNING_MAP.values()) == set(range(20))
    occ = np.arange(18, dtype=np.uint8)
    sk = to_semantickitti(occ, OCC3D)
    assert sk.tolist() == [OCC3D_TO_SEMANTICKITTI[i] for i in range(18)]
    assert sk[4] == 1 and sk[11] == 9 and sk[15] == 13 and sk[17] == 0  # car, road, building, free -> empty
    assert to_semantickitti(np.array([0, 13, 19], np.uint8), SEMANTICKITTI).tolist() == [0, 13, 19]


def test_names():
    names = semantickitti_names(
        ["08", "scene-b", "3", "scene-a"], {s: [0, 5] for s in ("08", "scene-b", "3", "scene-a")}
    )
    assert names[("08", 1)] == ("08", "000005") and names[("3", 0)] == ("03", "000000")
    assert names[("scene-a", 0)][0] == "00" and names[("scene-b", 0)][0] == "01"  # sorted, free numbers
    with pytest.raises(StoreError, match="same SemanticKITTI sequence"):
        semantickitti_names(["8", "08"], {"8": [0], "08": [0]})


def velo_labels(tmp_path, label: int = 15, **opts):
    """The hand-computed box (cache_builders) voxelized on the SemanticKITTI grid in a velodyne frame."""
    cache = box_cache(tmp_path, label=label)
    out = voxelize.run(
        cache.path,
        tmp_path / "l.zarr",
        grid="semantickitti",
        device="cpu",
        progress=False,
        T_ego_from_grid=T_EGO_FROM_VELO.tolist(),
        **{**EXACT, **opts},
    )
    return cache, out


#: box points (3.6, 1.3 | 0.4 | -0.5, 0) in the ego frame are (2.7, 1.25 | 0.35 | -0.55, 0.3) in the velodyne
#: frame: i = floor(2.7 / 0.2) = 13, j = floor((y + 25.6) / 0.2) = 134, 129, 125, k = floor(2.3 / 0.2) = 11
BOX_VOXELS = {(13, 134, 11), (13, 129, 11), (13, 125, 11)}


def test_export_round_trip(tmp_path):
    _, out = velo_labels(tmp_path)
    (s,) = list(open_labels(out))
    assert {tuple(v) for v in np.argwhere(s["semantics"] != 17)} == BOX_VOXELS
    assert np.allclose(s["T_ego_from_grid"], T_EGO_FROM_VELO)
    seq = export_semantickitti(out, tmp_path / "sk")
    files = sorted(p.relative_to(seq).as_posix() for p in seq.rglob("*") if p.is_file())
    assert files == ["00/voxels/000000.invalid", "00/voxels/000000.label"]
    stem = seq / "00" / "voxels" / "000000"
    # exactly as the SemanticKITTI API / MonoScene read them
    raw = np.fromfile(stem.with_suffix(".label"), dtype=np.uint16).reshape(SHAPE)
    assert stem.with_suffix(".label").stat().st_size == 2 * 256 * 256 * 32
    assert {tuple(v) for v in np.argwhere(raw)} == BOX_VOXELS and set(raw[raw > 0].tolist()) == {
        50
    }  # building
    invalid = np.unpackbits(np.fromfile(stem.with_suffix(".invalid"), dtype=np.uint8)).reshape(SHAPE)
    assert stem.with_suffix(".invalid").stat().st_size == 256 * 256 * 32 // 8
    assert np.array_equal(invalid.astype(bool), ~s["mask_camera"]) and not invalid[13, 129, 11]
    back = read_semantickitti_voxels(stem)
    expected = to_semantickitti(s["semantics"], OCC3D)
    expected[~s["mask_camera"]] = 255
    assert np.array_equal(back["labels"], expected) and np.array_equal(back["raw"], raw)
    index = json.loads((tmp_path / "sk" / "occlabel_export.json").read_text())
    assert index["samples"] == [{"scene": "s0", "token": "s0_f000", "sequence": "00", "frame": "000000"}]


def test_semantickitti_classes_pass_through(tmp_path):
    """Labels voxelized from SemanticKITTI-vocabulary semantics keep their training ids; free is 0."""
    _, out = velo_labels(tmp_path, label=13, classes="semantickitti")
    r = open_labels(out)
    assert r.classes == SEMANTICKITTI and r.meta["classes"]["free"] == 0
    (s,) = list(r)
    assert {tuple(v) for v in np.argwhere(s["semantics"] != 0)} == BOX_VOXELS and (s["semantics"] <= 13).all()
    stem = export_semantickitti(out, tmp_path / "sk") / "00" / "voxels" / "000000"
    raw = np.fromfile(stem.with_suffix(".label"), dtype=np.uint16)
    assert sorted(set(raw.tolist())) == [0, 50]
    with pytest.raises(StoreError, match="not Occ3D classes"):
        from occlabel.store.export import export_occ3d

        export_occ3d(out, tmp_path / "o", allow_other_grid=True)


def test_cadence_and_grid_checks(tmp_path):
    from test_labels_store import three_keyframes  # keyframes 0, 2, 4

    cache = three_keyframes(tmp_path)
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **EXACT)
    with pytest.raises(StoreError, match="not the SemanticKITTI grid"):
        export_semantickitti(out, tmp_path / "x")
    seq = export_semantickitti(out, tmp_path / "x", every=4, allow_other_grid=True)
    assert sorted(p.name for p in seq.rglob("*.label")) == ["000000.label", "000004.label"]
    raw = np.fromfile(seq / "00" / "voxels" / "000004.label", dtype=np.uint16).reshape(BOX_GRID.shape)
    assert (raw[open_labels(out)[2]["semantics"] == 15] == 50).all()


def test_ssc_evaluation_against_exported_files(tmp_path):
    """The labels against their own export: 100 %; then one GT voxel changed, one flagged invalid."""
    _, out = velo_labels(tmp_path)
    root = tmp_path / "sk"
    stem = export_semantickitti(out, root) / "00" / "voxels" / "000000"
    res = evaluate.run(out, gt=root, progress=False)  # layout detected
    assert res["protocol"].startswith("semantickitti") and res["iou_completion"] == 1.0
    assert res["miou"] == 1.0 and res["classes_in_miou"] == 1 and res["per_class"]["building"] == 1.0
    n_valid = int(open_labels(out)[0]["mask_camera"].sum())
    assert res["num_voxels"] == n_valid and res["num_samples"] == 1

    raw = np.fromfile(stem.with_suffix(".label"), dtype=np.uint16).reshape(SHAPE)
    invalid = np.unpackbits(np.fromfile(stem.with_suffix(".invalid"), dtype=np.uint8)).reshape(SHAPE)
    raw[13, 129, 11] = 10  # GT says car where the labels say building
    raw[12, 129, 11] = 40  # GT road in front of the box, where the labels say empty (the ray passed)
    raw[13, 134, 11] = 0  # GT empty where the labels say building ...
    invalid[13, 134, 11] = 1  # ... but flagged invalid: ignored
    assert not invalid[12, 129, 11]
    raw.tofile(stem.with_suffix(".label"))
    np.packbits(invalid.reshape(-1)).tofile(stem.with_suffix(".invalid"))
    res = evaluate.run(out, gt=root, gt_format="semantickitti", progress=False, json_out=tmp_path / "r.json")
    # completion: tp 2 (13,125 building; 13,129 car vs building), fn 1 (road), fp 0 -> 2/3
    assert res["iou_completion"] == pytest.approx(2 / 3)
    assert res["precision"] == 1.0 and res["recall"] == pytest.approx(2 / 3)
    # building: tp 1, predicted 2 (one on GT car) -> 1/2; car 0; road 0 -> mIoU over 3 classes
    assert res["per_class"]["building"] == pytest.approx(0.5) and res["per_class"]["car"] == 0.0
    assert res["per_class"]["road"] == 0.0 and res["classes_in_miou"] == 3
    assert res["miou"] == pytest.approx(0.5 / 3) and res["miou_19"] == pytest.approx(0.5 / 19)
    assert res["num_voxels"] == n_valid - 1
    assert json.loads((tmp_path / "r.json").read_text())["iou_completion"] == pytest.approx(2 / 3)


def test_cli(tmp_path):
    _, out = velo_labels(tmp_path)
    r = CliRunner().invoke(
        main, ["-q", "export", str(out), "--format", "semantickitti", "--out", str(tmp_path / "sk")]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        main, ["-q", "evaluate", str(out), "--gt", str(tmp_path / "sk"), "--json", str(tmp_path / "e.json")]
    )
    assert r.exit_code == 0, r.output
    assert "completion IoU" in r.output and "100.00" in r.output
    r = CliRunner().invoke(
        main, ["-q", "evaluate", str(out), "--format", "occ3d", "--gt", str(tmp_path / "sk")]
    )
    assert r.exit_code == 2 and "no done sample has ground-truth occupancy" in r.output  # no gts/ there
