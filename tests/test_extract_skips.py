"""extract-2d continues past images it cannot read: the others are written, the bad ones are reported
(one line each, exit code 3) and left not done, so a rerun after fixing them fills them in."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_tiny_folder
from PIL import Image

from occlabel.cli import main
from occlabel.datasets import open_dataset
from occlabel.errors import SkippedItemsError
from occlabel.stages import extract_2d
from occlabel.store.cache import open_cache


def _break(root):
    """Frame 1: corrupt JPEG bytes; frame 3: a different size than the camera's other images."""
    good1 = root / "images" / "001.png"
    shutil.copy(good1, root / "good1.png")
    good1.write_bytes(b"\x89PNG not really")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "images" / "003.png")


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_images_are_skipped_reported_and_filled_in_later(tmp_path, workers):
    root = write_tiny_folder(tmp_path / "ds", n_frames=5)
    _break(root)
    ds = open_dataset("folder", root)
    out = tmp_path / "c.zarr"
    kw = dict(
        depth_model="oracle", semantic_model="oracle", progress=False, batch_size=2, num_workers=workers
    )
    with pytest.raises(SkippedItemsError) as err:
        extract_2d.run(ds, out, **kw)
    keys = [k for k, _ in err.value.skipped]
    assert keys == ["s0/CAM_FRONT/f001", "s0/CAM_FRONT/f003"]
    assert "cannot read image" in err.value.skipped[0][1] and "is 10x10" in err.value.skipped[1][1]
    assert "2 image(s) skipped" in str(err.value) and "\n" not in str(err.value)
    cache = open_cache(out)
    assert cache.depth_done("s0", "CAM_FRONT", "oracle").tolist() == [True, False, True, False, True]
    assert cache.meta["stages"]["extract_2d"]["images_processed"] == 3
    assert len(cache.meta["stages"]["extract_2d"]["skipped"]) == 2

    # fixed: the rerun does exactly the two missing frames and succeeds
    shutil.copy(root / "good1.png", root / "images" / "001.png")
    shutil.copy(root / "good1.png", root / "images" / "003.png")
    extract_2d.run(ds, out, **kw)
    cache = open_cache(out)
    assert cache.depth_done("s0", "CAM_FRONT", "oracle").all()
    assert cache.meta["stages"]["extract_2d"]["images_processed"] == 2


def test_cli_exit_code_3_and_one_line_per_skipped_image(tmp_path):
    root = write_tiny_folder(tmp_path / "ds", n_frames=5)
    _break(root)
    args = ["-q", "extract-2d", "--root", str(root), "--out", str(tmp_path / "c.zarr"), "--num-workers", "0",
            "--depth-model", "oracle", "--semantic-model", "oracle"]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 3, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in r.output
    assert lines[0].startswith("skipped: s0/CAM_FRONT/f003") and lines[1].startswith(
        "error: extract-2d: 2 image(s)"
    )


def test_corrupt_first_image_is_skipped_like_the_others(tmp_path):
    """The camera's size comes from its first readable image, so a corrupt first frame is one skipped
    image, not a failed run; a camera with no readable image at all is a one-line DatasetError."""
    from occlabel.errors import DatasetError

    root = write_tiny_folder(tmp_path / "ds", n_frames=3)
    (root / "images" / "000.png").write_bytes(b"\x89PNG not really")
    ds = open_dataset("folder", root)
    kw = dict(depth_model="oracle", semantic_model="oracle", progress=False, num_workers=0)
    with pytest.raises(SkippedItemsError) as err:
        extract_2d.run(ds, tmp_path / "c.zarr", **kw)
    assert [k for k, _ in err.value.skipped] == ["s0/CAM_FRONT/f000"]
    assert open_cache(tmp_path / "c.zarr").depth_done("s0", "CAM_FRONT", "oracle").tolist() == [
        False,
        True,
        True,
    ]
    for name in ("001.png", "002.png"):
        (root / "images" / name).write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="no readable image of camera 'CAM_FRONT'"):
        extract_2d.run(open_dataset("folder", root), tmp_path / "d.zarr", **kw)
