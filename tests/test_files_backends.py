"""The ``files:DIR`` depth and semantic backends: formats, resizing, mapping LUT, errors, naming."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from occlabel.conventions import UNLABELED
from occlabel.datasets.base import CameraImage
from occlabel.errors import OccLabelError
from occlabel.models.depth.files import FilesDepth, read_pfm, resize_valued
from occlabel.models.semantics.files import FilesSemantics, build_lut

REL = "images/CAM_FRONT/0001.jpg"


def record(rel_path: str = REL) -> CameraImage:
    return CameraImage(
        camera="CAM_FRONT",
        path=Path("/nonexistent") / rel_path,
        rel_path=rel_path,
        K=np.eye(3),
        T_ego_from_cam=np.eye(4),
    )


def batch_for(h: int, w: int, rels=(REL,)) -> dict:
    return {
        "image": torch.zeros(len(rels), 3, h, w),
        "records": [record(r) for r in rels],
        "keys": [f"scene/CAM_FRONT/{i}" for i in range(len(rels))],
    }


def target(root: Path, ext: str, rel: str = REL) -> Path:
    p = root / Path(rel).with_suffix(ext)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def write_pfm(path: Path, arr: np.ndarray, little_endian: bool) -> None:
    h, w = arr.shape[:2]
    magic = b"PF" if arr.ndim == 3 else b"Pf"
    scale = -1.0 if little_endian else 1.0
    dtype = "<f4" if little_endian else ">f4"
    with open(path, "wb") as f:
        f.write(magic + b"\n" + f"{w} {h}\n{scale}\n".encode())
        f.write(np.ascontiguousarray(arr[::-1]).astype(dtype).tobytes())


# ------------------------------------------------------------------------------------------------ depth


def test_depth_npy_roundtrip_and_name_parsing(tmp_path):
    d = np.arange(1, 13, dtype=np.float64).reshape(3, 4) * 0.5
    np.save(target(tmp_path, ".npy"), d)
    m = FilesDepth(f"files:{tmp_path}", None, "cpu")
    assert m.space == "disparity"
    assert m.key == f"files-{tmp_path.name}" and "/" not in m.key
    out = m(batch_for(3, 4))
    assert out.dtype == torch.float32 and out.shape == (1, 3, 4)
    np.testing.assert_array_equal(out[0].numpy(), d.astype(np.float32))


def test_depth_kind_depth_png_kitti(tmp_path):
    raw = np.array([[0, 256, 512], [1000, 65535, 128]], dtype=np.uint16)
    Image.fromarray(raw).save(target(tmp_path, ".png"))
    m = FilesDepth(f"files:{tmp_path}", {"kind": "depth"}, "cpu")
    assert m.space == "depth_m"
    out = m(batch_for(2, 3))[0].numpy()
    expected = raw.astype(np.float32) / 256.0
    expected[0, 0] = np.nan  # 0 = no value
    np.testing.assert_array_equal(out, expected)


def test_disparity_png_raw_values(tmp_path):
    raw = np.array([[7, 300], [65535, 1]], dtype=np.uint16)
    Image.fromarray(raw).save(target(tmp_path, ".png"))
    out = FilesDepth(f"files:{tmp_path}", {"kind": "disparity"}, "cpu")(batch_for(2, 2))[0].numpy()
    np.testing.assert_array_equal(out, raw.astype(np.float32))


@pytest.mark.parametrize("little_endian", [True, False])
def test_depth_pfm_both_endiannesses(tmp_path, little_endian):
    d = (np.arange(20, dtype=np.float32).reshape(4, 5) + 1) * 1.25  # asymmetric: catches a missing flip
    write_pfm(target(tmp_path, ".pfm"), d, little_endian)
    np.testing.assert_array_equal(read_pfm(target(tmp_path, ".pfm")), d)
    out = FilesDepth(f"files:{tmp_path}", {"kind": "depth"}, "cpu")(batch_for(4, 5))[0].numpy()
    np.testing.assert_array_equal(out, d)


def test_pfm_colour_first_channel(tmp_path):
    d = np.random.default_rng(0).random((3, 4, 3)).astype(np.float32) + 0.1
    write_pfm(target(tmp_path, ".pfm"), d, True)
    out = FilesDepth(f"files:{tmp_path}", None, "cpu")(batch_for(3, 4))[0].numpy()
    np.testing.assert_array_equal(out, d[..., 0])


def test_extension_order_and_conf_dir(tmp_path):
    np.save(target(tmp_path, ".npy"), np.full((2, 2), 3.0))
    Image.fromarray(np.full((2, 2), 5, np.uint16)).save(target(tmp_path, ".png"))
    m = FilesDepth("files:ignored", {"dir": str(tmp_path), "extensions": ["png", "npy"]}, "cpu")
    assert float(m(batch_for(2, 2))[0, 0, 0]) == 5.0
    m = FilesDepth("files:", {"dir": str(tmp_path)}, "cpu")
    assert float(m(batch_for(2, 2))[0, 0, 0]) == 3.0


def test_resize_nan_and_zero_handling(tmp_path):
    d = np.full((8, 8), 3.0, np.float32)
    d[0:4, 0:4] = np.nan  # a fully invalid quadrant
    d[4:8, 4:8] = 0.0  # 0 = no value, too
    np.save(target(tmp_path, ".npy"), d)
    m = FilesDepth(f"files:{tmp_path}", None, "cpu")
    for size in (4, 16):  # down (antialiased) and up
        out = m(batch_for(size, size))[0].numpy()
        q = size // 2
        # invalid quadrants stay NaN, valid ones stay valid, and no invalid value (NaN, 0) ever blends in
        assert np.isnan(out[: q // 2, : q // 2]).all() and np.isnan(out[q + q // 2 :, q + q // 2 :]).all()
        assert np.isfinite(out[q:, :q]).all() and np.isfinite(out[:q, q:]).all()
        np.testing.assert_allclose(out[np.isfinite(out)], 3.0, rtol=0, atol=1e-6)
        assert not (out == 0).any()
    # two valid values: results stay within their range
    d2 = np.where(np.arange(8)[None, :] < 4, 2.0, 4.0).repeat(8, 0).astype(np.float32)
    d2[:4, :4] = np.nan
    np.save(target(tmp_path, ".npy"), d2)
    out = m(batch_for(16, 16))[0].numpy()
    fin = out[np.isfinite(out)]
    assert fin.min() >= 2.0 - 1e-6 and fin.max() <= 4.0 + 1e-6 and np.isnan(out[:6, :6]).all()


def test_resize_valued_same_size_marks_nan():
    x = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])
    out = resize_valued(x, (2, 2))
    assert out[0, 0] == 1.0 and out[1, 1] == 2.0 and math.isnan(out[0, 1]) and math.isnan(out[1, 0])


def test_depth_batch_of_two_images(tmp_path):
    rels = ("images/CAM_FRONT/a.jpg", "images/CAM_FRONT/b.png")
    np.save(target(tmp_path, ".npy", rels[0]), np.full((6, 8), 1.5))
    np.save(target(tmp_path, ".npy", rels[1]), np.full((3, 4), 2.5))  # different native sizes
    out = FilesDepth(f"files:{tmp_path}", None, "cpu")(batch_for(3, 4, rels))
    assert out.shape == (2, 3, 4)
    np.testing.assert_allclose(out[0].numpy(), 1.5)
    np.testing.assert_allclose(out[1].numpy(), 2.5)


def test_missing_file_error(tmp_path):
    m = FilesDepth(f"files:{tmp_path}", None, "cpu")
    with pytest.raises(OccLabelError) as e:
        m(batch_for(2, 2))
    msg = str(e.value)
    assert "\n" not in msg and REL in msg
    for ext in (".npy", ".png", ".pfm"):
        assert str(tmp_path / "images" / "CAM_FRONT" / f"0001{ext}") in msg
    s = FilesSemantics(f"files:{tmp_path}", None, "cpu")
    with pytest.raises(OccLabelError, match=r"0001\.bin"):
        s(batch_for(2, 2))


def test_bad_options(tmp_path):
    with pytest.raises(OccLabelError, match="kind"):
        FilesDepth(f"files:{tmp_path}", {"kind": "metric"}, "cpu")
    with pytest.raises(OccLabelError, match="does not exist"):
        FilesDepth(f"files:{tmp_path / 'nope'}", None, "cpu")
    with pytest.raises(OccLabelError, match="unknown option"):
        FilesSemantics(f"files:{tmp_path}", {"vocabulary": "occ3d"}, "cpu")
    np.save(target(tmp_path, ".npy"), np.ones((2, 2)))
    with pytest.raises(OccLabelError, match="records"):
        FilesDepth(f"files:{tmp_path}", None, "cpu")({"image": torch.zeros(1, 3, 2, 2), "keys": ["k"]})


# -------------------------------------------------------------------------------------------- semantics


def test_semantics_png_and_npy_identity(tmp_path):
    s = np.array([[0, 4, 11], [254, 255, 16]], dtype=np.uint8)
    Image.fromarray(s).save(target(tmp_path, ".png"))
    m = FilesSemantics(f"files:{tmp_path}", None, "cpu")
    assert m.key == f"files-{tmp_path.name}"
    labels, conf = m(batch_for(2, 3))
    assert labels.dtype == torch.uint8
    np.testing.assert_array_equal(labels[0].numpy(), s)
    np.testing.assert_array_equal(conf[0].numpy(), (s != UNLABELED).astype(np.float32))
    other = tmp_path / "npy"
    np.save(target(other, ".npy"), s)
    labels, _ = FilesSemantics(f"files:{other}", None, "cpu")(batch_for(2, 3))
    np.testing.assert_array_equal(labels[0].numpy(), s)


def test_mapping_lut():
    lut = build_lut({0: 11, "3": 4, -1: 254, 255: 7})
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    assert (lut[0], lut[3], lut[255]) == (11, 4, 7)  # 255 also names int8 -1; the later entry wins
    assert lut[1] == UNLABELED and lut[200] == UNLABELED
    lut = build_lut({5: 0}, identity_unmapped=True)
    assert lut[5] == 0 and lut[6] == 6 and lut[255] == 255
    np.testing.assert_array_equal(build_lut(None), np.arange(256))
    with pytest.raises(OccLabelError, match="target id"):
        build_lut({1: 300})
    with pytest.raises(OccLabelError, match="not an integer"):
        build_lut({"car": 4})


def test_mapping_from_yaml_and_json_files(tmp_path):
    (tmp_path / "m.yaml").write_text("1: 4\n2: 11\n")
    (tmp_path / "m.json").write_text(json.dumps({"1": 4, "2": 11}))
    for f in ("m.yaml", "m.json"):
        lut = build_lut(str(tmp_path / f))
        assert (lut[1], lut[2], lut[3]) == (4, 11, UNLABELED)


def test_semantics_bin_int8_with_mapping(tmp_path):
    h, w = 6, 10
    ids = np.zeros((h, w), np.int8)
    ids[:2] = -1  # e.g. "no class" in the source
    ids[2:4] = 3
    ids[4:, :5] = 7
    ids[4:, 5:] = 9  # not in the mapping -> UNLABELED
    ids.tofile(target(tmp_path, ".bin"))
    conf = {"bin_shape": (h, w), "mapping": {-1: 254, 3: 11, 7: 4}}
    labels, confidence = FilesSemantics(f"files:{tmp_path}", conf, "cpu")(batch_for(h, w))
    expected = np.full((h, w), UNLABELED, np.uint8)
    expected[:2] = 254
    expected[2:4] = 11
    expected[4:, :5] = 4
    np.testing.assert_array_equal(labels[0].numpy(), expected)
    np.testing.assert_array_equal(confidence[0].numpy(), (expected != UNLABELED).astype(np.float32))
    with pytest.raises(OccLabelError, match="bin_shape"):
        FilesSemantics(f"files:{tmp_path}", {"bin_shape": (5, 10)}, "cpu")(batch_for(h, w))


def test_semantics_nearest_exact_resize(tmp_path):
    s = np.repeat(np.repeat(np.array([[1, 2], [3, 4]], np.uint8), 4, 0), 4, 1)  # 8x8 blocks of 4x4
    np.save(target(tmp_path, ".npy"), s)
    labels, _ = FilesSemantics(f"files:{tmp_path}", None, "cpu")(batch_for(2, 2))
    np.testing.assert_array_equal(labels[0].numpy(), [[1, 2], [3, 4]])
    labels, _ = FilesSemantics(f"files:{tmp_path}", None, "cpu")(batch_for(16, 16))
    np.testing.assert_array_equal(labels[0].numpy(), np.repeat(np.repeat(s, 2, 0), 2, 1))


# ------------------------------------------------------------------------------------- registry routing


def test_registry_routes_files_names(tmp_path):
    from occlabel.models import base

    if not hasattr(base, "FILES_PREFIX"):
        pytest.skip("registry routing for files:DIR not applied yet (models/base.py)")
    d = base.get_depth_model(f"files:{tmp_path}", {"kind": "depth"}, "cpu")
    s = base.get_semantic_model(f"files:{tmp_path}", None, "cpu")
    assert isinstance(d, FilesDepth) and isinstance(s, FilesSemantics)
    assert d.space == "depth_m" and d.key == s.key == f"files-{tmp_path.name}"
    assert d.conf["dir"] == str(tmp_path.resolve())
