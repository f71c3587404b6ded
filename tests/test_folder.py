"""The folder manifest: loading, round trip, and one clear error per kind of mistake."""

import json

import numpy as np
import pytest

from occlabel.datasets import open_dataset
from occlabel.datasets.base import load_depth_m
from occlabel.datasets.folder import load_folder, write_manifest
from occlabel.errors import DatasetError


def test_loads_records(tiny_folder):
    ds = open_dataset("folder", tiny_folder)
    assert ds.kind == "folder" and ds.names() == ["s0"]
    s = ds.scene("s0")
    assert len(s.frames) == 3 and s.cameras == ["CAM_FRONT"] and s.keyframe_indices == [0]
    im = s.frames[1].images["CAM_FRONT"]
    assert im.size() == (32, 24) and im.K.shape == (3, 3) and im.path.is_file()
    # camera pose = ego pose @ extrinsics; the camera looks along world +x
    T = s.frames[1].T_world_from_cam("CAM_FRONT")
    assert np.allclose(T[:3, 2], [1, 0, 0]) and np.allclose(T[:3, 3], [1.5, 0, 1.5])


def test_write_manifest_round_trip(tiny_folder):
    ds = load_folder(tiny_folder)
    before = (tiny_folder / "occlabel.json").read_text()
    write_manifest(tiny_folder, ds.scenes)
    ds2 = load_folder(tiny_folder)
    assert json.loads(before)["scenes"][0]["frames"][0]["token"] == ds2.scenes[0].frames[0].token
    for f1, f2 in zip(ds.scenes[0].frames, ds2.scenes[0].frames, strict=True):
        assert np.allclose(f1.T_world_from_ego, f2.T_world_from_ego)
        assert f1.images["CAM_FRONT"].depth_path == f2.images["CAM_FRONT"].depth_path


def _edit(root, fn):
    doc = json.loads((root / "occlabel.json").read_text())
    fn(doc)
    (root / "occlabel.json").write_text(json.dumps(doc))


def _frame(doc, i=1):
    return doc["scenes"][0]["frames"][i]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other/1"), "field 'format' must be 'occlabel.folder/1'"),
        (
            lambda d: _frame(d)["images"]["CAM_FRONT"].update(K=[[1, 0], [0, 1]]),
            "scene 's0', frame 'f001', field 'images.CAM_FRONT.K': expected shape 3x3, got 2x2",
        ),
        (
            lambda d: _frame(d).update(T_world_from_ego=(np.eye(4) * 2).tolist()),
            "frame 'f001', field 'T_world_from_ego': not a rigid transform",
        ),
        (
            lambda d: _frame(d)["images"]["CAM_FRONT"].update(path="images/nope.png"),
            "field 'images.CAM_FRONT.path': file not found",
        ),
        (
            lambda d: _frame(d)["images"]["CAM_FRONT"].pop("T_ego_from_cam"),
            "field 'images.CAM_FRONT.T_ego_from_cam': missing",
        ),
        (lambda d: _frame(d).update(token="f000"), "frame 'f000', field 'token': duplicate token"),
        (
            lambda d: _frame(d).update(timestamp=0.0),
            "field 'timestamp': frames must be in increasing time order",
        ),
        (lambda d: _frame(d, 0).update(keyframe=False), "scene 's0': no frame has \"keyframe\": true"),
        (
            lambda d: _frame(d)["images"]["CAM_FRONT"].update(depth="gt/missing.npy"),
            "field 'images.CAM_FRONT.depth': file not found",
        ),
    ],
)
def test_validation_errors_name_the_item(tiny_folder, mutate, message):
    _edit(tiny_folder, mutate)
    with pytest.raises(DatasetError) as e:
        load_folder(tiny_folder)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_json_and_missing_manifest(tmp_path, tiny_folder):
    with pytest.raises(DatasetError, match="no occlabel.json manifest"):
        load_folder(tmp_path / "empty")
    (tiny_folder / "occlabel.json").write_text('{"format": "occlabel.folder/1", "scenes": [}')
    with pytest.raises(DatasetError, match=r"invalid JSON at line 1 column"):
        load_folder(tiny_folder)


def test_depth_formats(tmp_path):
    from PIL import Image

    d = np.array([[0.0, 1.5], [np.nan, 80.0]], np.float32)
    np.save(tmp_path / "d.npy", d)
    Image.fromarray((np.nan_to_num(d) * 256).astype(np.uint16)).save(tmp_path / "d.png")
    for name in ("d.npy", "d.png"):
        out = load_depth_m(tmp_path / name)
        assert out.dtype == np.float32
        assert np.isnan(out[0, 0]) and np.isnan(out[1, 0])
        assert np.allclose(out[0, 1], 1.5) and np.allclose(out[1, 1], 80.0)
