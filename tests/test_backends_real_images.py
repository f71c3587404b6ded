"""Every extract-2d backend through the real CLI, with tiny random-weight models, on the real images in
../shared/data (nuScenes keyframe: six 1600x900 colour cameras; KITTI 06: 1226x370 greyscale) and on a
synthetic scene. Random weights say nothing about quality; these runs check that real-size, real-format
images flow through each backend's decoding, resizing, batching and storage, with sane outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from real_data import kitti06_folder, nuscenes_keyframe_folder

pytest.importorskip("transformers")

from occlabel.cli import main  # noqa: E402
from occlabel.conventions import SKY, UNLABELED  # noqa: E402
from occlabel.datasets import open_dataset  # noqa: E402
from occlabel.models.vocab import load_vocabulary  # noqa: E402
from occlabel.store.cache import open_cache  # noqa: E402

WIDTH = 96  # working width: small, the networks still see their own input sizes


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from tiny_detectors import save_tiny_grounding_dino, save_tiny_owlv2, save_tiny_sam, save_tiny_sam2
    from tiny_models import save_tiny_clipseg, save_tiny_depth_anything
    from tiny_semseg import save_tiny_segformer

    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "depth": save_tiny_depth_anything(root / "depth"),
        "clipseg": save_tiny_clipseg(root / "clipseg"),
        "gdino": save_tiny_grounding_dino(root / "gdino"),
        "owlv2": save_tiny_owlv2(root / "owlv2"),
        "sam": save_tiny_sam(root / "sam"),
        "sam2": save_tiny_sam2(root / "sam2"),
        "segformer": save_tiny_segformer(root / "segformer"),
    }


def _synthetic(root: Path) -> Path:
    from occlabel.datasets.synthetic import synth

    return synth(root, scenes=1, frames=2, rig="front", size=(160, 96), seed=0, progress=False)


DATASETS = {"nuscenes": nuscenes_keyframe_folder, "kitti06": kitti06_folder, "synthetic": _synthetic}


@pytest.fixture(scope="module", params=list(DATASETS))
def dataset_root(request, tmp_path_factory) -> Path:
    return DATASETS[request.param](tmp_path_factory.mktemp(request.param) / "ds")


def _label_files(root: Path, out: Path) -> Path:
    """Per-image label PNGs (ids of a pretend source model) laid out like the images, for files:DIR."""
    ds = open_dataset("folder", root)
    for scene in ds.scenes:
        for frame in scene.frames:
            for im in frame.images.values():
                W, H = im.size()
                lab = np.zeros((H, W), np.uint8)
                lab[H // 2 :] = 1  # lower half road, upper half sky in the pretend model's ids
                dst = out / Path(im.rel_path).with_suffix(".png")
                dst.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(lab).save(dst)
    mapping = out / "mapping.yaml"
    mapping.write_text("0: 254\n1: 11\n")
    return out


SEMANTIC_RUNS = {
    "clipseg": lambda m: ["--semantic-model", "clipseg", "--segmenter", str(m["clipseg"]), "--semantic-option", "input_size=64"],
    "grounded-sam": lambda m: ["--semantic-model", "grounded-sam", "--detector", str(m["gdino"]), "--segmenter", str(m["sam"])],
    "grounded-sam2-single-pass": lambda m: [
        "--semantic-model", "grounded-sam", "--detector", str(m["gdino"]), "--segmenter", str(m["sam2"]),
        "--semantic-option", "mode=single-pass",
    ],
    "owlv2-sam": lambda m: ["--semantic-model", "owlv2-sam", "--detector", str(m["owlv2"]), "--segmenter", str(m["sam"])],
    "semseg": lambda m: ["--semantic-model", "semseg", "--segmenter", str(m["segformer"])],
    "none": lambda m: ["--semantic-model", "none"],
}  # fmt: skip


@pytest.mark.parametrize("semantic", list(SEMANTIC_RUNS))
def test_backend_runs_on_real_images(semantic, models, dataset_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "cache.zarr"
    args = [
        "-q", "extract-2d", "--root", str(dataset_root), "--out", str(out), "--depth-model", str(models["depth"]),
        "--depth-option", "input_size=56", "--width", str(WIDTH), "--batch-size", "4", "--num-workers", "0",
        *SEMANTIC_RUNS[semantic](models),
    ]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    _check_cache(out, dataset_root, semantic)


def test_files_backends_on_real_images(dataset_root, tmp_path):
    files = _label_files(dataset_root, tmp_path / "labels")
    ds = open_dataset("folder", dataset_root)
    depth_dir = tmp_path / "depth"
    for scene in ds.scenes:
        for frame in scene.frames:
            for im in frame.images.values():
                W, H = im.size()
                dst = depth_dir / Path(im.rel_path).with_suffix(".npy")
                dst.parent.mkdir(parents=True, exist_ok=True)
                np.save(dst, np.linspace(2.0, 50.0, H, dtype=np.float32)[:, None].repeat(W, 1))
    out = tmp_path / "cache.zarr"
    r = CliRunner().invoke(
        main,
        [
            "-q", "extract-2d", "--root", str(dataset_root), "--out", str(out), "--width", str(WIDTH),
            "--depth-model", f"files:{depth_dir}", "--depth-kind", "depth", "--semantic-model", f"files:{files}",
            "--semantic-option", f"mapping={files / 'mapping.yaml'}", "--num-workers", "0",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cache = _check_cache(out, dataset_root, "files")
    scene = ds.scenes[0]
    cam = scene.cameras[0]
    labels, _ = cache.read_semantics(scene.name, cam)
    h = labels.shape[1]
    assert (labels[:, : h // 2 - 1] == SKY).all() and (labels[:, h // 2 + 1 :] == 11).all()
    depth = cache.read_depth(scene.name, cam)
    assert cache.depth_attrs(scene.name, cam)["space"] == "depth_m"
    # a vertical ramp 2 -> 50 m at native size, resized: row centres map back to native rows
    H0 = next(f.images[cam] for f in scene.frames if cam in f.images).size()[1]
    rows = (np.arange(h) + 0.5) * H0 / h - 0.5
    expected = 2.0 + 48.0 * rows / (H0 - 1)
    assert np.allclose(depth[:, 1:-1, 0], expected[None, 1:-1], rtol=0.02, atol=0.05)  # (edge rows: filter)


def _check_cache(out: Path, root: Path, semantic: str):
    cache = open_cache(out)
    ds = open_dataset("folder", root)
    allowed = set(load_vocabulary("occ3d").ids()) | {SKY, UNLABELED}
    n_images = 0
    for scene in ds.scenes:
        for cam in scene.cameras:
            meta = cache.camera_meta(scene.name, cam)
            W0, H0 = next(f.images[cam] for f in scene.frames if cam in f.images).size()
            assert meta["width"] == WIDTH and abs(meta["height"] - H0 * WIDTH / W0) <= 0.5
            key = cache.meta["default_depth"]
            assert cache.depth_done(scene.name, cam, key).all()
            d = cache.read_depth(scene.name, cam)
            assert d.shape[1:] == (meta["height"], meta["width"]) and np.isfinite(d).all()
            n_images += len(d)
            if semantic == "none":
                assert cache.semantic_keys(scene.name, cam) == []
                continue
            labels, conf = cache.read_semantics(scene.name, cam)
            assert labels.dtype == np.uint8 and labels.shape == d.shape and conf.shape == d.shape
            assert conf.min() >= 0 and conf.max() <= 1  # stored as uint8, read back as 0..1
            assert set(np.unique(labels).tolist()) <= allowed
    stage = cache.meta["stages"]["extract_2d"]
    assert stage["images_processed"] == n_images
    if semantic not in ("none", "files"):
        assert len(stage["semantic_model"]["vocab_hash"]) == 64
    return cache
