"""Depth Anything backend, loaded through the real loading code from tiny random-weight checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tiny_models import save_tiny_depth_anything  # noqa: E402

from occlabel.errors import OccLabelError  # noqa: E402
from occlabel.models.depth.depth_anything import PRESETS, DepthAnything, network_size  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_depth_anything(tmp_path_factory.mktemp("da_tiny"))


@pytest.fixture(scope="module")
def model(tiny_dir) -> DepthAnything:
    return DepthAnything("depth-anything-v2-small", {"model": str(tiny_dir), "input_size": 56}, "cpu")


def _images(b: int, h: int = 40, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


def test_presets_and_default_model(model, tiny_dir):
    assert PRESETS["depth-anything-v2-small"] == "depth-anything/Depth-Anything-V2-Small-hf"
    assert PRESETS["depth-anything-v1-small"] == "LiheYoung/depth-anything-small-hf"
    assert model.space == "disparity"
    assert DepthAnything.space == "disparity"
    prov = model.provenance()
    assert prov["name"] == "depth-anything-v2-small"
    assert prov["weights"]["model"] == str(tiny_dir)
    assert prov["weights"]["revision"] is None
    assert prov["weights"]["model_class"] == "DepthAnythingForDepthEstimation"
    assert prov["weights"]["depth_estimation_type"] == "relative"
    assert not model.model.training


def test_network_size():
    assert network_size(518, 518, 518) == (518, 518)
    assert network_size(900, 1600, 518) == (518, 924)
    h, w = network_size(40, 64, 56)
    assert (h % 14, w % 14) == (0, 0) and h == 56


def test_forward_shape_dtype_finite_deterministic(model):
    img = _images(2)
    out = model({"image": img, "keys": ["a", "b"]})
    assert out.shape == (2, 40, 64)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.std() > 0  # not a constant map (the random head is not dead)
    again = model({"image": img, "keys": ["a", "b"]})
    assert torch.equal(out, again)


def test_batch_equals_singles(model):
    img = _images(2, 48, 36, seed=1)
    both = model({"image": img, "keys": ["a", "b"]})
    one = torch.cat([model({"image": img[i : i + 1], "keys": ["x"]}) for i in range(2)])
    torch.testing.assert_close(both, one, atol=1e-5, rtol=1e-5)


def test_torch_normalisation_matches_processor(model, tiny_dir):
    from transformers import DPTImageProcessor

    processor = DPTImageProcessor.from_pretrained(tiny_dir)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(56, 84, 3), dtype=np.uint8)  # exactly the network size: no resize
    ref = processor(images=rgb, return_tensors="pt")["pixel_values"]
    ours = model.preprocess(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0)
    assert ref.shape == ours.shape == (1, 3, 56, 84)
    torch.testing.assert_close(ours, ref.float(), atol=1e-4, rtol=0)


def test_metric_checkpoint_is_depth_m(tmp_path):
    d = save_tiny_depth_anything(tmp_path / "metric", depth_estimation_type="metric", max_depth=80)
    m = DepthAnything("depth-anything", {"model": str(d), "input_size": 28}, "cpu")
    assert m.space == "depth_m"
    assert m.provenance()["weights"]["depth_estimation_type"] == "metric"
    out = m({"image": _images(1, 30, 30), "keys": ["a"]})
    assert out.shape == (1, 30, 30) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["nobody/does-not-exist", "/nonexistent/occlabel/model-dir"])
def test_missing_model_is_one_line_error(monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OccLabelError) as err:
        DepthAnything(name, {"input_size": 56}, "cpu")
    msg = str(err.value)
    assert "\n" not in msg
    assert "huggingface-cli download" in msg
    assert name in msg


def test_preset_not_cached_offline(monkeypatch):
    from occlabel.models import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_cached_snapshot", lambda repo_id: None)  # whatever this machine has cached
    with pytest.raises(OccLabelError, match="depth-anything/Depth-Anything-V2-Small-hf"):
        DepthAnything("depth-anything-v2-small", None, "cpu")


def test_bad_options(tiny_dir):
    with pytest.raises(OccLabelError, match="input_size"):
        DepthAnything("depth-anything", {"model": str(tiny_dir), "input_size": 50}, "cpu")
    with pytest.raises(OccLabelError, match="dtype"):
        DepthAnything("depth-anything", {"model": str(tiny_dir), "dtype": "int8"}, "cpu")
    with pytest.raises(OccLabelError, match="unknown option"):
        DepthAnything("depth-anything", {"model": str(tiny_dir), "bogus": 1}, "cpu")


def test_loaded_from_hf_cache_records_snapshot_revision(monkeypatch, tmp_path):
    from occlabel.models import hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = save_tiny_depth_anything(tmp_path / "models--someone--tiny-da" / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(
        hub, "_cached_snapshot", lambda repo_id: snap if repo_id == "someone/tiny-da" else None
    )
    m = DepthAnything("someone/tiny-da", {"input_size": 28}, "cpu")
    w = m.provenance()["weights"]
    assert (w["model"], w["revision"]) == ("someone/tiny-da", commit)
    # a snapshot folder passed as a directory records the same revision
    assert (
        DepthAnything("depth-anything", {"model": str(snap), "input_size": 28}).weights["revision"] == commit
    )


def test_extract_2d_cli_with_a_local_model_directory(tiny_dir, tiny_folder, tmp_path, monkeypatch):
    """`--depth-model DIR` loads through the registry's generic path; the directory's name keys the cache."""
    from click.testing import CliRunner

    from occlabel.cli import main
    from occlabel.store.cache import open_cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = CliRunner().invoke(
        main,
        [
            "-q",
            "extract-2d",
            "--root",
            str(tiny_folder),
            "--out",
            str(tmp_path / "c.zarr"),
            "--depth-model",
            str(tiny_dir),
            "--semantic-model",
            "oracle",
        ],
    )
    assert r.exit_code == 0, r.output
    cache = open_cache(tmp_path / "c.zarr")
    key = tiny_dir.resolve().name
    assert cache.meta["default_depth"] == key and cache.depth_keys("s0", "CAM_FRONT") == [key]
    assert cache.depth_attrs("s0", "CAM_FRONT")["space"] == "disparity"
    d = cache.read_depth("s0", "CAM_FRONT")
    assert d.shape == (3, 24, 32) and np.isfinite(d).all()


def test_network_input_comes_from_the_native_image(model):
    """A network input larger than the working resolution is resized from the native image, not upsampled
    from the (blurrier) working image: with a fine checkerboard the two differ, and the native one keeps it."""
    import torch.nn.functional as F

    from occlabel.models.base import network_input

    yy, xx = torch.meshgrid(torch.arange(120), torch.arange(200), indexing="ij")
    native = ((yy // 2 + xx // 2) % 2).float().expand(1, 3, 120, 200).contiguous()  # 2-px checkerboard
    working = F.interpolate(native, size=(30, 50), mode="bilinear", antialias=True)  # detail averaged away
    batch = {"image": working, "image_native": native}
    x = network_input(batch, (60, 100))
    assert x.shape == (1, 3, 60, 100) and float(x.std()) > 0.1  # 1-px checker at half size: still contrast
    assert float(network_input({"image": working}, (60, 100)).std()) < 0.05  # upsampled working image: flat
    assert torch.equal(network_input({"image": native}, (120, 200)), native)
    # the depth model's input follows the working aspect ratio, but its pixels come from the native image
    pre = model.preprocess(batch)
    assert pre.shape[-2:] == network_size(30, 50, 56)
    assert not torch.allclose(pre, model.preprocess({"image": working}))


def test_directory_without_a_model_is_one_line_error(tmp_path):
    """An existing directory that holds no checkpoint: one line naming it and what it must hold (no hub hint)."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(OccLabelError) as err:
        DepthAnything("depth-anything", {"model": str(tmp_path / "empty")}, "cpu")
    msg = str(err.value)
    assert "\n" not in msg and "cannot load directory" in msg and str(tmp_path / "empty") in msg
    assert "save_pretrained" in msg and "fetch it once" not in msg
