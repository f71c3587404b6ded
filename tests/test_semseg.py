"""The closed-set ``semseg`` backend: probabilities, the merge onto target classes, the label mapping, and
SegFormer / Mask2Former / OneFormer through the real loading code (tiny random weights, tests/tiny_semseg.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_semseg import (
    CITYSCAPES_LABELS,
    save_tiny_mask2former,
    save_tiny_oneformer,
    save_tiny_segformer,
)

from occlabel.conventions import SKY, UNLABELED
from occlabel.errors import OccLabelError
from occlabel.models.semantics.semseg import (
    SemSeg,
    load_mapping_table,
    merge_probabilities,
    resolve_mapping,
    semantic_probabilities,
    universal_probabilities,
)
from occlabel.models.vocab import load_vocabulary

OCC3D = load_vocabulary("occ3d")
KITTI = load_vocabulary("semantickitti")
BUILDERS = {
    "segformer": save_tiny_segformer,
    "mask2former": save_tiny_mask2former,
    "oneformer": save_tiny_oneformer,
}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The three tiny checkpoints (Cityscapes labels), built once for the module."""
    root = tmp_path_factory.mktemp("semseg")
    return {kind: build(root / kind) for kind, build in BUILDERS.items()}


def _batch(n: int = 2, h: int = 24, w: int = 40, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(n, 3, h, w, generator=g),
        "keys": [f"k{i}" for i in range(n)],
        "records": [None] * n,
    }


# ------------------------------------------------------------------------------------------------
# pure functions: merge, probabilities
# ------------------------------------------------------------------------------------------------


def test_merge_known_answer():
    # sources: 0 road -> 11, 1 building -> 15, 2 wall -> 15, 3 sky -> SKY, 4 bed -> UNLABELED
    targets = torch.tensor([11, 15, 15, SKY, UNLABELED])
    pixels = [
        [0.40, 0.30, 0.30, 0.00, 0.00],  # sum: manmade 0.6 beats road 0.4; max: road 0.4
        [0.10, 0.20, 0.10, 0.60, 0.00],  # sky either way
        [0.45, 0.25, 0.30, 0.00, 0.00],  # sum: manmade 0.55; max: road 0.45
        [0.05, 0.05, 0.10, 0.20, 0.60],  # the unmapped class wins: UNLABELED
    ]
    probs = torch.tensor(pixels).T.reshape(1, 5, 2, 2)
    labels, conf = merge_probabilities(probs, targets, "sum")
    assert labels.dtype == torch.uint8 and conf.dtype == torch.float32 and labels.shape == (1, 2, 2)
    assert labels.flatten().tolist() == [15, SKY, 15, UNLABELED]
    assert torch.allclose(conf.flatten(), torch.tensor([0.6, 0.6, 0.55, 0.6]))
    labels, conf = merge_probabilities(probs, targets, "max")
    assert labels.flatten().tolist() == [11, SKY, 11, UNLABELED]
    assert torch.allclose(conf.flatten(), torch.tensor([0.4, 0.6, 0.45, 0.6]))
    # max merge == the table applied to the source argmax
    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, 5, 6, 7, generator=g).softmax(1)
    assert torch.equal(merge_probabilities(p, targets, "max")[0], targets[p.argmax(1)].to(torch.uint8))
    with pytest.raises(ValueError):
        merge_probabilities(p, targets[:3])


def test_semantic_probabilities():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2] = 2.0
    p = semantic_probabilities(logits, (5, 7))
    assert p.shape == (1, 3, 5, 7) and torch.allclose(p.sum(1), torch.ones(1, 5, 7))
    e = torch.tensor([1.0, 1.0, float(np.exp(2.0))])
    assert torch.allclose(p[0, :, 3, 3], e / e.sum())


def test_universal_probabilities_known_answer():
    # 2 queries, 2 classes + "no object"; query 0 is class 0 (p 0.8), query 1 is mostly "no object"
    class_logits = torch.log(torch.tensor([[[0.8, 0.1, 0.1], [0.1, 0.2, 0.7]]]))
    mask_logits = torch.tensor([[[[4.0, -4.0]], [[-4.0, 4.0]]]])  # 1 x 2 queries x 1 x 2
    p = universal_probabilities(class_logits, mask_logits)
    m = torch.sigmoid(torch.tensor([[4.0, -4.0], [-4.0, 4.0]]))  # query x pixel
    c = torch.tensor([[0.8, 0.1], [0.1, 0.2]])  # query x class
    expected = (c.T @ m) / m.sum(0)  # class x pixel
    assert p.shape == (1, 2, 1, 2) and torch.allclose(p[0, :, 0], expected)
    assert bool((p.sum(1) <= 1 + 1e-6).all())
    # pixel 1: the covering query says "no object" 0.7 -> low confidence; its argmax is still class 1
    labels, conf = merge_probabilities(p, torch.tensor([4, 7]))
    assert labels.flatten().tolist() == [4, 7] and float(conf[0, 0, 1]) < 0.25


# ------------------------------------------------------------------------------------------------
# mapping
# ------------------------------------------------------------------------------------------------


def test_builtin_cityscapes_mapping():
    targets, info = resolve_mapping(list(CITYSCAPES_LABELS), OCC3D, None, UNLABELED)
    assert info["kind"] == "builtin" and info["table"] == "cityscapes"
    named = dict(zip(CITYSCAPES_LABELS, targets, strict=True))
    assert named["road"] == 11 and named["sidewalk"] == 13 and named["sky"] == SKY and named["car"] == 4
    assert named["person"] == 7 and named["vegetation"] == 16 and named["train"] == 0 and named["pole"] == 15
    assert set(targets) <= set(OCC3D.ids()) | {SKY}
    kitti, info = resolve_mapping([n.title() for n in CITYSCAPES_LABELS], KITTI, None, UNLABELED)
    assert info["table"] == "cityscapes"  # case-insensitive
    assert kitti[:3] == [9, 11, 13] and kitti[CITYSCAPES_LABELS.index("rider")] == 7
    assert set(kitti) <= set(KITTI.ids()) | {SKY}


def test_builtin_ade20k_mapping():
    table = load_mapping_table("ade20k")
    assert len(table.labels) == 150 and set(table.targets) == {"occ3d", "semantickitti"}
    labels = list(table.labels)
    labels[7], labels[8] = "bed ", "windowpane, window"  # as some configs spell them
    targets, info = resolve_mapping(labels, OCC3D, None, UNLABELED)
    assert info["table"] == "ade20k"
    assert targets[:9] == [15, 15, SKY, 12, 16, 15, 11, UNLABELED, 15]  # wall ... bed (indoor) windowpane
    assert set(targets) <= set(OCC3D.ids()) | {SKY, UNLABELED}
    # unmapped classes become the "unmapped" target, e.g. occ3d others
    others, _ = resolve_mapping(labels, OCC3D, None, 0)
    assert others[7] == 0 and others[6] == 11
    kitti, _ = resolve_mapping(labels, KITTI, "ade20k", UNLABELED)
    assert kitti[6] == 9 and kitti[12] == 6 and set(kitti) <= set(KITTI.ids()) | {SKY, UNLABELED}


def test_name_matching_fallback():
    labels = ["Road", "Traffic_Sign", "tree", "sky", "unicorn", "person-riding-a-bicycle"]
    targets, info = resolve_mapping(labels, OCC3D, None, UNLABELED)
    assert info["kind"] == "names" and info["table"] is None
    assert targets == [11, 15, 16, SKY, UNLABELED, UNLABELED]
    kitti, _ = resolve_mapping(labels, KITTI, None, UNLABELED)
    assert kitti == [9, 19, UNLABELED, SKY, UNLABELED, 7]  # kitti's "tree" is no prompt; "tree foliage" is


def test_unmappable_labels_error():
    with pytest.raises(OccLabelError) as e:
        resolve_mapping(["LABEL_0", "LABEL_1"], OCC3D, None, UNLABELED)
    assert "\n" not in str(e.value) and "LABEL_0" in str(e.value) and "mapping=" in str(e.value)
    with pytest.raises(OccLabelError, match="none of"):
        resolve_mapping(["road", "car"], OCC3D, {"road": None}, UNLABELED)


def test_user_mapping_dict_and_files(tmp_path):
    labels = list(CITYSCAPES_LABELS)
    user = {"road": 11, 10: "sky", "13": "car", "Traffic Sign": "manmade", "rider": None}
    targets, info = resolve_mapping(labels, OCC3D, user, UNLABELED)
    assert info["kind"] == "user"
    expected = [UNLABELED] * 19
    expected[0], expected[10], expected[13], expected[7] = 11, SKY, 4, 15
    assert targets == expected
    yaml_path = tmp_path / "map.yaml"
    yaml_path.write_text(yaml.safe_dump({"road": 11, 10: "sky", "13": "car", "Traffic Sign": 15}))
    json_path = tmp_path / "map.json"
    json_path.write_text(json.dumps({"road": 11, "10": 254, "car": 4, "traffic sign": 15}))
    for path in (yaml_path, str(json_path)):
        assert resolve_mapping(labels, OCC3D, path, UNLABELED)[0] == expected
    bad = [
        ({"unicorn": 4}, "unicorn"),
        ({"road": 99}, "99"),
        ({"road": "spaceship"}, "spaceship"),
        ({25: 4}, "25"),
        ([1, 2], "dict"),
        (str(tmp_path / "missing.yaml"), "missing.yaml"),
    ]
    for mapping, needle in bad:
        with pytest.raises(OccLabelError) as e:
            resolve_mapping(labels, OCC3D, mapping, UNLABELED)
        assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OccLabelError, match="no table for vocabulary"):
        resolve_mapping(labels, load_vocabulary(_user_vocab(tmp_path)), "cityscapes", UNLABELED)


def _user_vocab(tmp_path: Path) -> str:
    p = tmp_path / "vocab.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "name": "mine",
                "classes": [{"id": 0, "name": "road", "prompts": ["road"]}, {"id": 1, "name": "car"}],
            }
        )
    )
    return str(p)


# ------------------------------------------------------------------------------------------------
# the backend with tiny random-weight checkpoints
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_semseg_backend(tiny_models, kind):
    m = SemSeg("semseg", {"model": str(tiny_models[kind]), "input_size": 64}, "cpu")
    assert m.universal == (kind != "segformer")
    assert m.mapping_info["kind"] == "builtin" and m.mapping_info["table"] == "cityscapes"
    prov = m.provenance()
    assert prov["vocab"] == "occ3d" and prov["vocab_hash"] == OCC3D.content_hash()
    assert prov["weights"]["model"] == str(tiny_models[kind]) and prov["mapping"]["targets"][0] == 11
    json.dumps(prov)  # recorded in the store

    batch = _batch()
    labels, conf = m(batch)
    assert labels.shape == (2, 24, 40) and labels.dtype == torch.uint8
    assert conf.shape == (2, 24, 40) and conf.dtype == torch.float32
    assert set(labels.unique().tolist()) <= set(OCC3D.ids()) | {SKY, UNLABELED}
    assert float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0
    probs = m.class_probabilities(batch["image"])
    assert probs.shape == (2, 19, 24, 40) and bool((probs.sum(1) <= 1 + 1e-5).all())
    # a batch gives what its images give one at a time
    for i in range(2):
        one = {"image": batch["image"][i : i + 1], "keys": batch["keys"][i : i + 1], "records": [None]}
        li, ci = m(one)
        assert torch.equal(li[0], labels[i]) and torch.allclose(ci[0], conf[i], atol=1e-5)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_combination_matches_processor(tiny_models, kind):
    """Our probabilities' argmax == the processor's post_process_semantic_segmentation on the same outputs."""
    from transformers import AutoImageProcessor

    m = SemSeg("semseg", {"model": str(tiny_models[kind]), "input_size": 64}, "cpu")
    processor = AutoImageProcessor.from_pretrained(tiny_models[kind])
    x = m.preprocess(_batch()["image"])
    kwargs = {} if m._task_inputs is None else {"task_inputs": m._task_inputs.expand(2, -1)}
    with torch.inference_mode():
        out = m.model(pixel_values=x, **kwargs)
    size = (30, 50)
    ref = torch.stack(processor.post_process_semantic_segmentation(out, target_sizes=[size] * 2))
    if kind == "segformer":
        probs = semantic_probabilities(out.logits, size)
    else:
        # the processors combine at (384, 384) (Mask2Former) or at the mask resolution (OneFormer)
        mask_size = (384, 384) if kind == "mask2former" else tuple(out.masks_queries_logits.shape[-2:])
        probs = universal_probabilities(out.class_queries_logits, out.masks_queries_logits, size, mask_size)
    assert torch.equal(probs.argmax(1), ref)


def test_user_mapping_and_unmapped_in_backend(tiny_models, tmp_path):
    model = str(tiny_models["segformer"])
    m = SemSeg("semseg", {"model": model, "input_size": 64, "mapping": {"road": 11, "sky": "sky"}}, "cpu")
    assert set(m(_batch())[0].unique().tolist()) <= {11, SKY, UNLABELED}
    assert m.mapping_info["kind"] == "user"
    m = SemSeg(
        "semseg", {"model": model, "input_size": 64, "mapping": {"road": 11}, "unmapped": "others"}, "cpu"
    )
    assert m.mapping_info["unmapped"] == 0 and set(m(_batch())[0].unique().tolist()) <= {0, 11}
    # default input size: the label set's training scale (Cityscapes: 1024), else the processor's (64 here)
    assert SemSeg("semseg", {"model": model}, "cpu").conf["input_size"] == 1024
    other = save_tiny_segformer(tmp_path / "other", labels=["road", "car", "tree", "sky", "unicorn"])
    m = SemSeg("semseg", {"model": str(other), "vocab": "semantickitti", "merge": "max"}, "cpu")
    assert m.conf["input_size"] == 64 and m.mapping_info["kind"] == "names"
    assert m.mapping_info["targets"] == [9, 1, UNLABELED, SKY, UNLABELED]
    assert set(m(_batch())[0].unique().tolist()) <= set(KITTI.ids()) | {SKY, UNLABELED}


def test_oneformer_loads_without_class_info(tiny_models, tmp_path, monkeypatch):
    """Real OneFormer processors name a hub dataset for their class info; loading must not need it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "oneformer"
    shutil.copytree(tiny_models["oneformer"], d)
    cfg = json.loads((d / "processor_config.json").read_text())
    cfg["image_processor"].update(repo_path="shi-labs/oneformer_demo", class_info_file="not_here.json")
    (d / "processor_config.json").write_text(json.dumps(cfg))
    m = SemSeg("semseg", {"model": str(d), "input_size": 64}, "cpu")
    # the task tokens are what OneFormerProcessor feeds the model
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models["oneformer"])
    ref = processor(images=[np.zeros((8, 8, 3), np.uint8)], task_inputs=["semantic"], return_tensors="pt")
    assert torch.equal(m._task_inputs, ref["task_inputs"]) and int((m._task_inputs != 0).sum()) == 5


def test_missing_model_and_bad_conf(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for model in (str(tmp_path / "no-such-dir"), "nobody/no-such-segmenter"):
        with pytest.raises(OccLabelError) as e:
            SemSeg("semseg", {"model": model}, "cpu")
        assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OccLabelError, match="cannot load"):
        SemSeg("semseg", {"model": str(tmp_path / "empty")}, "cpu")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    with pytest.raises(OccLabelError, match="not a semantic segmentation model"):
        SemSeg("semseg", {"model": str(tmp_path / "bert")}, "cpu")
    for conf, needle in [
        ({"merge": "mean"}, "merge"),
        ({"input_size": 8}, "input_size"),
        ({"dtype": "int8"}, "dtype"),
        ({"unmapped": 99}, "unmapped"),
        ({"vocab": "nope"}, "nope"),
        ({"bogus": 1}, "unknown option"),
    ]:
        with pytest.raises(OccLabelError, match=needle):
            SemSeg("semseg", {"model": str(tmp_path / "empty"), **conf}, "cpu")


def test_extract_2d_cli_with_semseg(tmp_path, tiny_folder, tiny_models, monkeypatch):
    """`--semantic-model semseg --segmenter DIR --vocab occ3d` through the CLI, offline."""
    from click.testing import CliRunner

    from occlabel.cli import main
    from occlabel.store.cache import open_cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["-q", "extract-2d", "--root", str(tiny_folder), "--out", str(tmp_path / "c.zarr")]
    args += ["--depth-model", "oracle", "--semantic-model", "semseg"]
    r = CliRunner().invoke(
        main,
        [
            *args,
            "--segmenter",
            str(tiny_models["mask2former"]),
            "--vocab",
            "occ3d",
            "--semantic-option",
            "input_size=64",
        ],
    )
    assert r.exit_code == 0, r.output
    cache = open_cache(tmp_path / "c.zarr")
    assert cache.meta["default_semantics"] == "semseg"
    labels, conf = cache.read_semantics("s0", "CAM_FRONT")
    assert labels.shape == (3, 24, 32) and set(np.unique(labels)) <= set(range(17)) | {SKY, UNLABELED}
    assert (conf >= 0).all() and (conf <= 1).all()
    prov = cache.meta["stages"]["extract_2d"]["semantic_model"]
    assert prov["conf"]["vocab"] == "occ3d" and len(prov["vocab_hash"]) == 64
    assert prov["mapping"]["table"] == "cityscapes" and prov["weights"]["model_class"].startswith(
        "Mask2Former"
    )
