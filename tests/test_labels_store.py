"""LABELS.zarr: schema, reader API, partial stores; Occ3D export read back exactly as trainers read it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from cache_builders import BOX_GRID, BOX_OPTS, R_EGO_FROM_CAM, box_cache, build_cache, pose

from occlabel.conventions import FREE, GRIDS
from occlabel.errors import StoreError
from occlabel.stages import voxelize
from occlabel.store.common import COMPRESSOR
from occlabel.store.export import export_occ3d
from occlabel.store.labels import open_labels

#: the hand-computed options, without the estimated-depth filters: in a 5-pixel image every box pixel
#: borders the sky, which the flying-pixel filter rightly distrusts, and range weights would change the
#: hit/pass ratios worked out by hand; the TSDF (on for estimated depth) would also fill the voxel behind a
#: surface seen once
BOX = {**BOX_OPTS, "edge_tol": 0.0, "range_weight_m": 0.0, "tsdf": False}


def three_keyframes(root: Path):
    """Ego driving +x at 0.5 m per frame, a wall 6 m ahead; keyframes 0, 2, 4."""
    K = np.array([[4.0, 0, 2.0], [0, 4.0, 0.0], [0, 0, 1]])
    frames = []
    for t in range(5):
        depth = np.full((1, 5), 5.7 - 0.5 * t, np.float32)
        labels = np.full((1, 5), 15, np.uint8)
        frames.append(
            {
                "T_world_from_ego": pose(0.5 * t, 0, 0),
                "keyframe": t % 2 == 0,
                "maps": {"CAM_FRONT": (depth, labels)},
            }
        )
    return build_cache(root, frames, {"CAM_FRONT": (K, pose(0, 0.4, 0, R_EGO_FROM_CAM))})


def test_schema_and_reader(tmp_path):
    cache = three_keyframes(tmp_path)
    out = voxelize.run(
        cache.path,
        tmp_path / "l.zarr",
        grid=BOX_GRID,
        device="cpu",
        progress=False,
        **{**BOX, "window": 1},
    )
    g = zarr.open_group(str(out), mode="r")
    meta = dict(g.attrs["occlabel"])
    assert meta["kind"] == "labels" and meta["grid"]["shape"] == [7, 6, 1] and meta["source"] == "cache"
    assert Path(meta["cache"]) == Path(cache.path).resolve() and meta["options"]["window"] == 1
    assert "version" in meta["provenance"] and meta["stats"]["keyframes_written"] == 3
    sg = g["s0"]
    smeta = dict(sg.attrs["occlabel"])
    # the scene's own record of the run (docs/scaling.md: per-scene records)
    assert smeta.pop("stages")["voxelize"]["keyframes_written"] == 3
    assert smeta == {
        "tokens": ["s0_f000", "s0_f002", "s0_f004"],
        "frame_indices": [0, 2, 4],
        "timestamps": [0.0, 0.2, 0.4],
    }
    for name, dtype in [
        ("semantics", np.uint8),
        ("mask_camera", np.bool_),
        ("confidence", np.uint8),
        ("hits", np.uint16),
        ("passes", np.uint16),
    ]:
        a = sg[name]
        assert a.shape == (3, 7, 6, 1) and a.dtype == dtype and a.chunks == (1, 7, 6, 1), name
        assert a.metadata.dimension_names == ("sample", "x", "y", "z")
        assert type(a.compressors[0]) is type(COMPRESSOR)
    assert sg["T_world_from_ego"].shape == (3, 4, 4) and sg["done"][:].all()

    r = open_labels(out)
    assert len(r) == 3 and r.scenes() == ["s0"] and r.tokens() == ["s0_f000", "s0_f002", "s0_f004"]
    s = r["s0_f002"]
    assert s["scene"] == "s0" and s["index"] == 1 and s["frame_index"] == 2 and s["timestamp"] == 0.2
    assert np.allclose(s["T_world_from_ego"], pose(1.0, 0, 0)) and s["grid"] == BOX_GRID
    assert set(s) >= {"semantics", "mask_camera", "confidence"} and "hits" not in s
    assert "hits" in open_labels(out, counts=True)[0]
    assert [x["token"] for x in r] == r.tokens() and r[1]["token"] == "s0_f002"
    assert "s0_f002" in r and "nope" not in r
    with pytest.raises(KeyError):
        r["nope"]
    # the wall is 6 m ahead of the world origin: each keyframe sees it at its own ego x (grid in ego frame)
    for x in r:
        x_ego = 5.7 - 0.5 * x["frame_index"]
        i = int(np.floor(x_ego + 1))
        assert (x["semantics"][i] == 15).any() and (x["semantics"][i + 1 :] != 15).all()

    # a sample without its done marker is not listed
    zarr.open_group(str(out), mode="a")["s0/done"][1] = False
    r = open_labels(out)
    assert len(r) == 2 and "s0_f002" not in r and r.read("s0", 1)["token"] == "s0_f002"


def test_refuses_other_stores(tmp_path):
    cache = box_cache(tmp_path)
    with pytest.raises(StoreError, match="no such store"):
        open_labels(tmp_path / "missing.zarr")
    with pytest.raises(StoreError, match="expected a 'labels' store"):
        open_labels(cache.path)
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX)
    with pytest.raises(StoreError, match="grid"):
        voxelize.run(cache.path, out, grid="occ3d", device="cpu", progress=False, **BOX)


def test_occ3d_export_round_trip(tmp_path):
    cache = box_cache(tmp_path, depth_m=3.7, cam_y=0.5)
    out = voxelize.run(
        cache.path,
        tmp_path / "l.zarr",
        device="cpu",
        progress=False,
        window=0,
        min_hits=1.0,
        edge_tol=0.0,
        tsdf=False,
    )
    gts = export_occ3d(out, tmp_path / "nuscenes")
    assert gts == tmp_path / "nuscenes" / "gts"
    (s,) = list(open_labels(out))
    path = gts / "s0" / "s0_f000" / "labels.npz"
    assert sorted(p.relative_to(gts).as_posix() for p in gts.rglob("*") if p.is_file()) == [
        "s0/s0_f000/labels.npz"
    ]
    # as the CVPR2023 challenge / BEVDet loaders read it
    occ = np.load(path)
    assert sorted(occ.files) == ["mask_camera", "mask_lidar", "semantics"]
    sem = occ["semantics"]
    assert sem.dtype == np.uint8 and sem.shape == (200, 200, 16) and np.array_equal(sem, s["semantics"])
    for k in ("mask_camera", "mask_lidar"):
        assert occ[k].dtype == np.uint8 and set(np.unique(occ[k])) <= {0, 1}
        assert np.array_equal(occ[k].astype(bool), s["mask_camera"])
    assert (sem != FREE).sum() == 3
    # as FlashOCC's LoadOccGTFromFile reads it (torch.from_numpy, flips for BEV augmentation)
    t = torch.from_numpy(occ["semantics"])
    assert t.dtype == torch.uint8 and torch.equal(torch.flip(t, [0]).flip([0]), t)
    # re-export replaces files in place; the index lists the samples
    export_occ3d(out, tmp_path / "nuscenes")
    assert np.array_equal(np.load(path)["semantics"], s["semantics"])
    assert (tmp_path / "nuscenes" / "occlabel_export.json").exists()


def test_export_refuses_other_grids(tmp_path):
    cache = box_cache(tmp_path)
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX)
    with pytest.raises(StoreError, match="not the Occ3D grid"):
        export_occ3d(out, tmp_path / "x")
    gts = export_occ3d(out, tmp_path / "x", allow_other_grid=True)
    assert np.load(gts / "s0" / "s0_f000" / "labels.npz")["semantics"].shape == BOX_GRID.shape
    assert GRIDS["occ3d"].shape == (200, 200, 16)


def test_example_dataset(tmp_path, capsys):
    cache = three_keyframes(tmp_path)
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX)
    path = Path(__file__).resolve().parents[1] / "examples" / "load_labels.py"
    spec = importlib.util.spec_from_file_location("load_labels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ds = mod.OccLabelDataset(str(out))
    assert len(ds) == 3
    item = ds[0]
    assert item["semantics"].dtype == torch.uint8 and item["semantics"].shape == (7, 6, 1)
    assert item["mask_camera"].dtype == torch.bool and item["confidence"].dtype == torch.float32
    assert mod.main([str(out)]) == 0
    assert "semantics" in capsys.readouterr().out


def test_class_sets_and_grid_poses(tmp_path):
    from occlabel.models.vocab import load_vocabulary, parse_vocabulary
    from occlabel.store.labels import OCC3D, SEMANTICKITTI, ClassSet, class_set_from_vocabulary

    assert OCC3D.free == 17 and OCC3D.size == 18 and len(OCC3D.names) == 17 and 4 in OCC3D.moving
    assert SEMANTICKITTI.free == 0 and SEMANTICKITTI.size == 20 and SEMANTICKITTI.names[13] == "building"
    assert SEMANTICKITTI.moving == tuple(range(1, 9)) and not SEMANTICKITTI.is_class()[0]
    for cs in (OCC3D, SEMANTICKITTI):
        assert ClassSet.from_dict(cs.to_dict()) == cs
    assert ClassSet.from_dict(None) == OCC3D  # stores written before class sets
    assert class_set_from_vocabulary(load_vocabulary("semantickitti")) == SEMANTICKITTI
    assert class_set_from_vocabulary(load_vocabulary("occ3d")) == OCC3D
    mine = parse_vocabulary(
        {"name": "mine", "classes": [{"id": 0, "name": "a"}, {"id": 3, "name": "b", "moving": True}]}
    )
    assert class_set_from_vocabulary(mine) == ClassSet("mine", {0: "a", 3: "b"}, 4, (3,))

    cache = three_keyframes(tmp_path)
    out = voxelize.run(cache.path, tmp_path / "l.zarr", grid=BOX_GRID, device="cpu", progress=False, **BOX)
    r = open_labels(out)
    assert r.classes == OCC3D and r.meta["classes"]["free"] == 17
    g = zarr.open_group(str(out), mode="r")["s0/T_ego_from_grid"]
    assert (
        g.shape == (3, 4, 4)
        and np.allclose(g[:], np.eye(4))
        and np.allclose(r[0]["T_ego_from_grid"], np.eye(4))
    )
    with pytest.raises(StoreError, match="classes"):  # a resumed store must keep its class set
        voxelize.run(
            cache.path, out, grid=BOX_GRID, device="cpu", progress=False, classes="semantickitti", **BOX
        )
