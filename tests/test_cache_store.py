"""CACHE.zarr: schema, round trip, resume after a crash, refusal of wrong stores; extract-2d with oracles."""

import numpy as np
import pytest
import zarr

from occlabel.conventions import SKY
from occlabel.datasets import open_dataset
from occlabel.errors import StoreError
from occlabel.stages import extract_2d
from occlabel.store.cache import Cache, depth_from_relative, open_cache
from occlabel.store.common import store_kind


def test_round_trip_and_schema(tiny_folder, tmp_path):
    ds = open_dataset("folder", tiny_folder)
    cache = Cache.create(tmp_path / "c.zarr", ds)
    scene = ds.scenes[0]
    cache.init_scene(scene, {"CAM_FRONT": (16, 12)})
    cache.init_depth("s0", "CAM_FRONT", "m", {"space": "disparity"})
    cache.init_semantics("s0", "CAM_FRONT", "m", {})
    cache.update_meta(default_depth="m", default_semantics="m")
    d = np.random.default_rng(0).random((12, 16)).astype(np.float32)
    cache.write_depth("s0", "CAM_FRONT", "m", 1, d)
    lab = np.full((12, 16), 4, np.uint8)
    cache.write_semantics("s0", "CAM_FRONT", "m", 1, lab, np.full((12, 16), 255, np.uint8))

    c2 = open_cache(tmp_path / "c.zarr")
    assert store_kind(tmp_path / "c.zarr") == "cache"
    assert c2.scenes() == ["s0"] and c2.cameras("s0") == ["CAM_FRONT"]
    assert c2.depth_done("s0", "CAM_FRONT", "m").tolist() == [False, True, False]
    assert np.allclose(c2.read_depth("s0", "CAM_FRONT", None, 1), d, atol=1e-3)  # float16 storage
    assert np.isnan(c2.read_depth("s0", "CAM_FRONT", None, 0)).all()  # never written -> fill NaN
    labels, conf = c2.read_semantics("s0", "CAM_FRONT", None, 1)
    assert (labels == 4).all() and np.allclose(conf, 1.0)
    geo = c2.geometry("s0", "CAM_FRONT")
    # intrinsics scaled to the 16 x 12 working size, pixel centres preserved
    assert np.allclose(geo["K"][0], [[16, 0, 7.5], [0, 16, 5.5], [0, 0, 1]])
    assert np.allclose(geo["T_world_from_cam"][2], scene.frames[2].T_world_from_cam("CAM_FRONT"))
    # one frame per chunk, provenance recorded
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert g["s0/CAM_FRONT/depth/m/values"].chunks == (1, 12, 16)
    meta = c2.meta
    assert meta["kind"] == "cache" and meta["dataset"]["kind"] == "folder" and "version" in meta


def test_metric_depth_from_calibration(tiny_folder, tmp_path):
    ds = open_dataset("folder", tiny_folder)
    cache = Cache.create(tmp_path / "c.zarr", ds)
    cache.init_scene(ds.scenes[0], {"CAM_FRONT": (8, 6)})
    cache.init_depth("s0", "CAM_FRONT", "m", {"space": "disparity"})
    cache.init_semantics("s0", "CAM_FRONT", "m", {})
    cache.update_meta(default_depth="m", default_semantics="m")
    disp = np.full((6, 8), 2.0, np.float32)
    for t in range(3):
        cache.write_depth("s0", "CAM_FRONT", "m", t, disp)
        lab = np.zeros((6, 8), np.uint8)
        lab[0] = SKY
        cache.write_semantics("s0", "CAM_FRONT", "m", t, lab, np.zeros_like(lab))
    with pytest.raises(StoreError, match="not calibrated"):
        cache.metric_depth("s0", "CAM_FRONT", 0)
    T = 3
    cache.write_calibration(
        "s0",
        "CAM_FRONT",
        {
            "scale": np.full(T, 0.04),
            "shift": np.full(T, 0.02),
            "loss": np.zeros(T),
            "valid_frac": np.ones(T),
            "flags": np.zeros(T),
        },
        {"method": "test"},
    )
    z = cache.metric_depth("s0", "CAM_FRONT", 1)
    assert np.isnan(z[0]).all()  # sky
    assert np.allclose(z[1:], 10.0)  # 1 / (0.04 * 2 + 0.02)
    assert np.isnan(depth_from_relative(np.array([-1.0]), 1.0, 0.0, "disparity")).all()


def test_refuses_wrong_stores(tmp_path, tiny_folder):
    with pytest.raises(StoreError, match="no such store"):
        open_cache(tmp_path / "missing.zarr")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "precious.txt").write_text("x")
    ds = open_dataset("folder", tiny_folder)
    with pytest.raises(StoreError, match="not a Zarr store; refusing to delete"):
        Cache.create(tmp_path / "dir", ds, overwrite=True)
    assert (tmp_path / "dir" / "precious.txt").exists()


def test_extract_2d_oracle_and_resume(tiny_folder, tmp_path):
    ds = open_dataset("folder", tiny_folder)
    out = extract_2d.run(
        ds,
        tmp_path / "c.zarr",
        depth_model="oracle",
        semantic_model="oracle",
        device="cpu",
        progress=False,
        batch_size=2,
    )
    cache = open_cache(out)
    assert (
        cache.meta["default_depth"] == "oracle"
        and cache.meta["stages"]["extract_2d"]["images_processed"] == 3
    )
    d = cache.read_depth("s0", "CAM_FRONT")
    lab, conf = cache.read_semantics("s0", "CAM_FRONT")
    assert d.shape == (3, 24, 32) and np.isfinite(d).all()
    assert set(np.unique(lab)) <= {15, SKY}
    # the oracle disparity is affine in 1/depth per image, with a different affine per image
    ground = lab[0] == 15
    assert np.std(d[0][ground]) < 0.1 * abs(np.mean(d[0][ground])) + 1e-6
    assert not np.allclose(d[0][ground].mean(), d[1][ground].mean(), rtol=1e-2)

    # simulate a crash after frame 1's data but before its done marker: the rerun redoes exactly that frame
    g = zarr.open_group(str(out), mode="a")
    g["s0/CAM_FRONT/depth/oracle/done"][1] = False
    g["s0/CAM_FRONT/depth/oracle/values"][1] = np.zeros((24, 32), np.float16)
    extract_2d.run(ds, out, depth_model="oracle", semantic_model="oracle", device="cpu", progress=False)
    cache = open_cache(out)
    assert cache.meta["stages"]["extract_2d"]["images_processed"] == 1
    assert np.allclose(cache.read_depth("s0", "CAM_FRONT"), d)  # deterministic per image


def test_round_mantissa_known_answers():
    from occlabel.store.cache import round_mantissa

    x = np.array(
        [1.0, 1 + 2**-10, 1 + 3 * 2**-10, 1 + 2**-9, 2 - 2**-10, 65504, np.nan, np.inf, -3.0], np.float16
    )
    r = round_mantissa(x, 8)
    # 8 of 10 mantissa bits: steps of 2^-8 on [1, 2); a quarter step rounds down, halves up in magnitude; the carry into the
    # exponent is exact (2 - 2^-10 -> 2); the largest finite value would overflow: kept
    expected = [1.0, 1.0, 1 + 2**-8, 1 + 2**-8, 2.0, 65504, np.nan, np.inf, -3.0]
    np.testing.assert_array_equal(r, np.array(expected, np.float16))
    np.testing.assert_array_equal(round_mantissa(x, 10), x)
    # relative error bound 2^-(bits+1) over all finite positive float16 values
    allv = np.arange(0x0400, 0x7C00, dtype=np.uint16).view(np.float16)  # normal numbers
    for bits in (4, 7, 8):
        rr = round_mantissa(allv, bits).astype(np.float64)
        ok = np.isfinite(rr)
        rel = np.abs(rr[ok] - allv[ok].astype(np.float64)) / allv[ok].astype(np.float64)
        assert rel.max() <= 2.0 ** -(bits + 1) + 1e-12
        low = rr[rr < 32768].astype(np.float16).view(np.uint16) & ((1 << (10 - bits)) - 1)
        assert (low == 0).all()  # (the top binade may keep its values to avoid overflowing to inf)
    with pytest.raises(ValueError, match="1..10"):
        round_mantissa(x, 0)


def test_extract_2d_depth_bits_and_changed_settings_refused(tiny_folder, tmp_path):
    ds = open_dataset("folder", tiny_folder)
    exact = open_cache(
        extract_2d.run(
            ds,
            tmp_path / "a.zarr",
            depth_model="oracle",
            semantic_model="oracle",
            progress=False,
            depth_bits=10,
        )
    )
    out = extract_2d.run(
        ds, tmp_path / "b.zarr", depth_model="oracle", semantic_model="oracle", progress=False
    )  # default: 7 bits
    rounded = open_cache(out)
    a, b = exact.read_depth("s0", "CAM_FRONT"), rounded.read_depth("s0", "CAM_FRONT")
    assert rounded.depth_attrs("s0", "CAM_FRONT")["mantissa_bits"] == extract_2d.DEFAULT_DEPTH_BITS == 7
    assert not np.array_equal(a, b) and np.allclose(a, b, rtol=2**-8, atol=0)
    # resuming a group with other settings would mix two kinds of output in one array: refused
    with pytest.raises(StoreError, match="written with other settings .*mantissa_bits"):
        extract_2d.run(ds, out, depth_model="oracle", semantic_model="oracle", progress=False, depth_bits=10)
    with pytest.raises(StoreError, match="differs in model"):
        extract_2d.run(ds, out, depth_model="oracle", semantic_model="oracle", progress=False, seed=3)
    extract_2d.run(
        ds, out, depth_model="oracle", semantic_model="oracle", progress=False, seed=3, overwrite=True
    )  # --overwrite starts afresh


def test_resume_with_other_dataset_options_is_refused(tiny_folder, tmp_path):
    """Later stages reopen the dataset with the options recorded at creation: a cache cannot mix two."""
    from dataclasses import replace

    ds = open_dataset("folder", tiny_folder)
    a, b = replace(ds, options={"cameras": ["cam2"]}), replace(ds, options={"cameras": "cam3"})
    Cache.create(tmp_path / "c.zarr", a)
    Cache.create(tmp_path / "c.zarr", a)  # the same dataset and options: resume
    Cache.create(tmp_path / "c.zarr", replace(ds, options={"cameras": ("cam2",)}))  # (as JSON: a list)
    with pytest.raises(StoreError, match="options"):
        Cache.create(tmp_path / "c.zarr", b)
    with pytest.raises(StoreError, match="options"):
        Cache.create(tmp_path / "c.zarr", replace(a, kind="kitti"))
    Cache.create(tmp_path / "c.zarr", b, overwrite=True)
    assert open_cache(tmp_path / "c.zarr").meta["dataset"]["options"] == {"cameras": "cam3"}
