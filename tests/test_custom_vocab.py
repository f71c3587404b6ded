"""A user vocabulary whose ids differ from Occ3D's reaches every stage: extract-2d records it, calibrate-depth
takes its ground and movable classes from it, voxelize its class set.

Two runs on one synthetic scene: (A) label maps in Occ3D ids, (B) the same maps with every class id moved by
+100 under a user YAML vocabulary of the same names. Calibration must be identical and the labels identical
up to the id map. Before the vocabulary was read from the cache, run B used Occ3D's ids for the ground cue
(no road pixels: no ground fit) and for the movable-class masks.
"""

import numpy as np
import yaml
from conftest import cli

from occlabel.datasets import open_dataset
from occlabel.datasets.base import load_semantics
from occlabel.models.vocab import load_vocabulary
from occlabel.store.cache import open_cache
from occlabel.store.labels import open_labels

OFFSET = 100


def _write_maps(dataset, out, lut):
    for scene in dataset.scenes:
        for frame in scene.frames:
            for img in frame.images.values():
                path = (out / img.rel_path).with_suffix(".npy")
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, lut[load_semantics(img.semantics_path)])


def test_custom_vocabulary_ids_reach_every_stage(tmp_path):
    cli("synth", "--out", tmp_path / "ds", "--frames", 8, "--size", "160x96", "--seed", 3)
    dataset = open_dataset("folder", tmp_path / "ds")
    occ3d = load_vocabulary("occ3d").to_dict()
    mine = {**occ3d, "name": "mine", "classes": [{**c, "id": c["id"] + OFFSET} for c in occ3d["classes"]]}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))
    to_mine = np.arange(256, dtype=np.uint8)
    to_mine[:17] += OFFSET
    _write_maps(dataset, tmp_path / "occ3d_maps", np.arange(256, dtype=np.uint8))
    _write_maps(dataset, tmp_path / "mine_maps", to_mine)

    for run, maps, extra in (
        ("a", "occ3d_maps", []),
        ("b", "mine_maps", ["--semantic-option", f"vocab={tmp_path / 'mine.yaml'}"]),
    ):
        cache = tmp_path / f"{run}.zarr"
        cli("extract-2d", "--root", tmp_path / "ds", "--out", cache, "--device", "cpu", "--depth-model",
            "oracle", "--semantic-model", f"files:{tmp_path / maps}", *extra)  # fmt: skip
        cli("calibrate-depth", cache, "--device", "cpu")
        cli("voxelize", cache, "--out", tmp_path / f"{run}_labels.zarr", "--device", "cpu")

    a, b = open_cache(tmp_path / "a.zarr"), open_cache(tmp_path / "b.zarr")
    scene = a.scenes()[0]
    cam = a.cameras(scene)[0]
    assert a.vocabulary(scene, cam).name == "occ3d"
    vocab_b = b.vocabulary(scene, cam)
    assert vocab_b.name == "mine" and min(vocab_b.ids()) == OFFSET
    assert set(vocab_b.moving_ids()) == {i + OFFSET for i in load_vocabulary("occ3d").moving_ids()}

    cal_a, cal_b = a.read_calibration(scene, cam), b.read_calibration(scene, cam)
    assert np.isfinite(cal_a["ground_scale"]).any(), "the ground cue must take part for the test to mean much"
    for k in ("scale", "shift", "flags", "cue", "ground_scale", "ground_shift", "ground_inliers"):
        np.testing.assert_array_equal(cal_a[k], cal_b[k], err_msg=k)

    la, lb = open_labels(tmp_path / "a_labels.zarr"), open_labels(tmp_path / "b_labels.zarr")
    assert la.classes.free == 17 and lb.classes.free == 0  # mine has no id 0: SemanticKITTI's convention
    assert lb.classes.names[OFFSET + 11] == "driveable_surface"
    back = np.arange(256, dtype=np.uint8)
    back[OFFSET : OFFSET + 17] -= OFFSET
    back[0] = 17
    for i in range(len(la)):
        sa, sb = la[i], lb[i]
        np.testing.assert_array_equal(sa["mask_camera"], sb["mask_camera"])
        np.testing.assert_array_equal(sa["semantics"], back[sb["semantics"]])
