"""Vocabularies, the prompt -> class combination, and CLIPSeg through the real loading code (tiny weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_models import save_tiny_clipseg

from occlabel.conventions import OCC3D_CLASSES, SKY, UNLABELED
from occlabel.errors import OccLabelError
from occlabel.models.vocab import load_vocabulary

# ------------------------------------------------------------------------------------------------
# vocabularies
# ------------------------------------------------------------------------------------------------


def test_occ3d_vocab_matches_conventions():
    v = load_vocabulary("occ3d")
    expected = [(cid, name, rgb, moving) for cid, name, rgb, moving in OCC3D_CLASSES if cid <= 16]
    got = [(c.id, c.name, c.colour, c.moving) for c in v.classes]
    assert got == expected
    assert v.moving_ids() == tuple(c[0] for c in expected if c[3])
    assert v.sky_prompts == ("sky",)
    pairs = v.prompts()
    assert ("road", 11) in pairs and ("sky", SKY) in pairs and ("tree", 16) in pairs
    assert all(isinstance(p, str) and p for p, _ in pairs)
    assert not [p for p, c in pairs if c == 0]  # "others" has no prompts


def test_semantickitti_vocab():
    v = load_vocabulary("semantickitti")
    assert v.ids() == tuple(range(1, 20))
    names = v.names()
    assert names[1] == "car" and names[9] == "road" and names[19] == "traffic-sign"
    assert set(v.moving_ids()) == set(range(1, 9))
    assert v.classes[0].colour == (100, 150, 245)  # car, semantic-kitti BGR (245, 150, 100) as RGB
    assert all(c.prompts for c in v.classes)


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "vocab.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _base():
    return {
        "name": "mine",
        "version": 1,
        "sky": {"id": 254, "prompts": ["sky"]},
        "classes": [
            {"id": 0, "name": "road", "prompts": ["road"], "moving": False, "colour": [1, 2, 3]},
            {"id": 1, "name": "car", "prompts": ["car", "van"], "moving": True, "colour": [4, 5, 6]},
        ],
    }


def test_user_vocab_loads(tmp_path):
    v = load_vocabulary(str(_write(tmp_path, _base())))
    assert v.prompts() == [("road", 0), ("car", 1), ("van", 1), ("sky", SKY)]
    assert v.moving_ids() == (1,)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["classes"][1].update(id=0), "classes[1].id"),
        (lambda d: d["classes"][1].update(id=254), "classes[1].id"),
        (lambda d: d["classes"][0].pop("name"), "classes[0].name"),
        (lambda d: d["classes"][1].update(prompts="car"), "classes[1].prompts"),
        (lambda d: d["classes"][1].update(prompts=["car", 3]), "classes[1].prompts"),
        (lambda d: d["sky"].update(prompts=[None]), "sky.prompts"),
        (lambda d: d["classes"][0].update(colour=[1, 2]), "classes[0].colour"),
    ],
)
def test_bad_user_vocab(tmp_path, edit, field):
    d = _base()
    edit(d)
    path = _write(tmp_path, d)
    with pytest.raises(OccLabelError) as e:
        load_vocabulary(str(path))
    msg = str(e.value)
    assert "\n" not in msg and field in msg and str(path) in msg


def test_unknown_vocab():
    with pytest.raises(OccLabelError, match="built-in"):
        load_vocabulary("no-such-vocab")


def test_content_hash(tmp_path):
    a = load_vocabulary(str(_write(tmp_path, _base())))
    assert a.content_hash() == load_vocabulary(str(_write(tmp_path, _base()))).content_hash()
    d = _base()
    d["classes"][1]["prompts"] = ["car", "minivan"]
    b = load_vocabulary(str(_write(tmp_path, d)))
    assert len(a.content_hash()) == 64 and a.content_hash() != b.content_hash()
    assert load_vocabulary("occ3d").content_hash() != load_vocabulary("semantickitti").content_hash()


# ------------------------------------------------------------------------------------------------
# prompt -> class combination (known answer)
# ------------------------------------------------------------------------------------------------


def test_combine_prompt_logits_known_answer():
    from occlabel.models.semantics.clipseg import combine_prompt_logits

    # prompts: 0 -> class 11, 1 -> class 11, 2 -> class 4, 3 -> SKY ; 1 image, 1 x 4 pixels
    prompt_class = torch.tensor([11, 11, 4, SKY])
    class_ids = torch.tensor([4, 11, SKY])
    L = torch.tensor(
        [
            [2.0, -5.0, -5.0, -5.0],  # road prompt A
            [-5.0, 1.0, -5.0, -5.0],  # road prompt B
            [0.0, 3.0, -5.0, -5.0],  # car
            [-5.0, -5.0, 4.0, -5.0],  # sky
        ]
    ).view(1, 4, 1, 4)
    labels, conf = combine_prompt_logits(L, prompt_class, class_ids, threshold=0.3)
    assert labels.dtype == torch.uint8 and labels.shape == (1, 1, 4)
    assert labels[0, 0].tolist() == [11, 4, SKY, UNLABELED]
    s = torch.sigmoid(torch.tensor([2.0, 3.0, 4.0, -5.0]))
    assert torch.allclose(conf[0, 0], s)
    # the max over same-class prompts: prompt B alone beats car at pixel 1 when car is lower
    L2 = L.clone()
    L2[0, 2, 0, 1] = 0.5
    labels2, _ = combine_prompt_logits(L2, prompt_class, class_ids, threshold=0.3)
    assert labels2[0, 0].tolist() == [11, 11, SKY, UNLABELED]
    # threshold 0.99 -> everything but the sky pixel (0.982 < 0.99 too) unlabeled
    labels3, _ = combine_prompt_logits(L, prompt_class, class_ids, threshold=0.99)
    assert labels3[0, 0].tolist() == [UNLABELED] * 4
    # upsampling keeps a constant map constant
    const = torch.zeros(2, 4, 3, 3)
    const[:, 2] = 1.0
    lab, cf = combine_prompt_logits(const, prompt_class, class_ids, 0.3, size=(7, 5))
    assert lab.shape == (2, 7, 5) and bool((lab == 4).all())
    assert torch.allclose(cf, torch.full((2, 7, 5), float(torch.sigmoid(torch.tensor(1.0)))))


# ------------------------------------------------------------------------------------------------
# CLIPSeg backend with tiny random weights
# ------------------------------------------------------------------------------------------------


def test_clipseg_tiny(tmp_path):
    pytest.importorskip("transformers")
    from occlabel.models.semantics.clipseg import CLIPSeg

    model_dir = save_tiny_clipseg(tmp_path)
    m = CLIPSeg("clipseg", {"model": str(model_dir), "input_size": 64, "vocab": "occ3d"}, "cpu")
    vocab = load_vocabulary("occ3d")
    assert m._text_emb.shape == (len(vocab.prompts()), 32)
    prov = m.provenance()
    assert prov["vocab"] == "occ3d" and prov["vocab_hash"] == vocab.content_hash()

    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 40, 72, generator=g)
    batch = {"image": image, "keys": ["a", "b"], "records": [None, None]}
    labels, conf = m(batch)
    assert labels.shape == (2, 40, 72) and labels.dtype == torch.uint8
    assert conf.shape == (2, 40, 72) and conf.dtype == torch.float32
    allowed = set(vocab.ids()) | {SKY, UNLABELED}
    assert set(labels.unique().tolist()) <= allowed
    assert float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0
    labels2, conf2 = m(batch)
    assert torch.equal(labels, labels2) and torch.equal(conf, conf2)
    # vision once per image + decoder on images x prompts == the plain forward with the image repeated per
    # prompt; and per-image logits do not depend on the other images of the batch. (Labels are not compared:
    # the tiny tokenizer maps most words to one token, so random-weight classes nearly tie.)
    x = m.preprocess(image)
    with torch.inference_mode():
        logits = m.prompt_logits(x)
        alone = m.prompt_logits(x[1:])
        P = m._text_emb.shape[0]
        ref = m.model(pixel_values=x[1:].repeat(P, 1, 1, 1), conditional_embeddings=m._text_emb).logits
    assert logits.shape == (2, P, 64, 64)
    assert torch.allclose(logits[1], ref, atol=1e-4) and torch.allclose(alone[0], logits[1], atol=1e-4)
    # threshold 0 labels every pixel with a class; threshold 1 leaves all unlabeled
    m0 = CLIPSeg("clipseg", {"model": str(model_dir), "input_size": 64, "threshold": 0.0}, "cpu")
    assert not bool((m0(batch)[0] == UNLABELED).any())
    m1 = CLIPSeg("clipseg", {"model": str(model_dir), "input_size": 64, "threshold": 1.0}, "cpu")
    assert bool((m1(batch)[0] == UNLABELED).all())


def test_clipseg_bad_conf(tmp_path):
    from occlabel.models.semantics.clipseg import CLIPSeg

    with pytest.raises(OccLabelError, match="threshold"):
        CLIPSeg("clipseg", {"model": str(tmp_path), "threshold": 2.0}, "cpu")
    with pytest.raises(OccLabelError, match="unknown option"):
        CLIPSeg("clipseg", {"bogus": 1}, "cpu")


def test_extract_2d_cli_with_clipseg(tmp_path, tiny_folder, monkeypatch):
    """`--semantic-model clipseg --segmenter DIR --vocab occ3d` through the CLI, offline."""
    from click.testing import CliRunner

    from occlabel.cli import main
    from occlabel.store.cache import open_cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = save_tiny_clipseg(tmp_path / "clipseg")
    args = [
        "-q",
        "extract-2d",
        "--root",
        str(tiny_folder),
        "--out",
        str(tmp_path / "c.zarr"),
        "--depth-model",
        "oracle",
    ]
    r = CliRunner().invoke(
        main, [*args, "--semantic-model", "clipseg", "--segmenter", str(model_dir), "--vocab", "occ3d"]
    )
    assert r.exit_code == 0, r.output
    cache = open_cache(tmp_path / "c.zarr")
    assert cache.meta["default_semantics"] == "clipseg"
    labels, conf = cache.read_semantics("s0", "CAM_FRONT")
    assert labels.shape == (3, 24, 32) and set(np.unique(labels)) <= set(range(17)) | {254, 255}
    assert (conf >= 0).all() and (conf <= 1).all()
    prov = cache.meta["stages"]["extract_2d"]["semantic_model"]
    assert prov["conf"]["vocab"] == "occ3d" and len(prov["vocab_hash"]) == 64
    r = CliRunner().invoke(main, [*args, "--semantic-model", "oracle", "--vocab", "occ3d"])
    assert r.exit_code == 2 and "--vocab does not apply to --semantic-model oracle" in r.output


def test_clipseg_reduced_precision_runs(tmp_path):
    """dtype bfloat16: weights and inputs in bf16 (CPU has no fp16 autocast path to test; "auto" uses it on
    CUDA); labels stay valid ids and the confidence a probability."""
    from occlabel.models.semantics.clipseg import CLIPSeg

    model_dir = save_tiny_clipseg(tmp_path)
    m = CLIPSeg("clipseg", {"model": str(model_dir), "input_size": 64, "dtype": "bfloat16"}, "cpu")
    assert next(m.model.parameters()).dtype == torch.bfloat16
    labels, conf = m({"image": torch.rand(1, 3, 40, 72), "keys": ["a"], "records": [None]})
    assert labels.dtype == torch.uint8 and conf.dtype == torch.float32 and float(conf.max()) <= 1
    with pytest.raises(OccLabelError, match="dtype must be"):
        CLIPSeg("clipseg", {"model": str(model_dir), "dtype": "int8"}, "cpu")
