"""OWLv2 + SAM / SAM2 with tiny random-weight checkpoints loaded through the real loading code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("transformers")

from tiny_detectors import save_tiny_owlv2, save_tiny_sam, save_tiny_sam2  # noqa: E402

from occlabel.conventions import SKY, UNLABELED  # noqa: E402
from occlabel.errors import OccLabelError  # noqa: E402
from occlabel.models.base import get_semantic_model  # noqa: E402
from occlabel.models.semantics.owlv2_sam import OWLv2SAM, owl_scores  # noqa: E402
from occlabel.models.vocab import load_vocabulary  # noqa: E402


def test_owl_scores_known_answer():
    logits = torch.tensor(
        [[[0.0, 2.0, -1.0], [-3.0, -2.0, -4.0], [1.0, 1.0, 0.5]]]
    )  # 1 image, 3 boxes, 3 prompts
    score, prompt, keep = owl_scores(logits, threshold=0.5)
    assert prompt[0].tolist() == [1, 1, 0]  # ties to the lower prompt index
    assert torch.allclose(score[0], torch.sigmoid(torch.tensor([2.0, -2.0, 1.0])))
    assert keep[0].tolist() == [True, False, True]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-owl")
    return {
        "detector": save_tiny_owlv2(root / "owlv2"),
        "sam": save_tiny_sam(root / "sam"),
        "sam2": save_tiny_sam2(root / "sam2"),
    }


def _model(dirs, segmenter="sam", **conf) -> OWLv2SAM:
    conf = {"detector": str(dirs["detector"]), "segmenter": str(dirs[segmenter]), **conf}
    return get_semantic_model("owlv2-sam", conf)  # through the registry, as the CLI builds it


@pytest.fixture(scope="module")
def model(dirs) -> OWLv2SAM:
    return _model(dirs)


def _images(b: int = 2, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_precomputed_queries_equal_the_model_forward(model, dirs):
    """Text embeddings computed once + image side per batch == Owlv2ForObjectDetection's own forward."""
    from transformers import AutoTokenizer

    assert isinstance(model, OWLv2SAM)
    assert model.queries[0] == "a photo of a barrier" and model._query_embeds.shape == (
        len(model.queries),
        32,
    )
    tokenizer = AutoTokenizer.from_pretrained(dirs["detector"])
    tokens = tokenizer(
        model.queries, padding="max_length", max_length=16, truncation=True, return_tensors="pt"
    )
    x = model.detector_input(_images(2))
    assert x.shape == (2, 3, 64, 64)
    with torch.inference_mode():
        logits, boxes = model.class_logits(x)
        out = model.model(
            input_ids=tokens["input_ids"].repeat(2, 1),
            attention_mask=tokens["attention_mask"].repeat(2, 1),
            pixel_values=x,
        )
    assert logits.shape == (2, 16, len(model.queries))
    assert torch.allclose(logits, out.logits, atol=1e-4) and torch.allclose(boxes, out.pred_boxes, atol=1e-5)
    assert 0.0 < float(logits.sigmoid().min()) and float(logits.sigmoid().max()) < 0.99


def test_detector_input_pads_to_a_square(model):
    image = torch.ones(1, 3, 16, 32)
    x = model.detector_input(image) * model._std + model._mean  # back to [0, 1]
    assert torch.allclose(x[0, :, :30], torch.ones(3, 30, 64), atol=1e-5)  # image rows (16 / 32 of 64)
    assert torch.allclose(x[0, :, 34:], torch.zeros(3, 30, 64), atol=1e-5)  # black padding below


def test_forward_shapes_determinism_batch(model):
    image = _images(2)
    labels, conf = model({"image": image})
    assert labels.shape == (2, 24, 32) and labels.dtype == torch.uint8 and conf.dtype == torch.float32
    allowed = set(load_vocabulary("occ3d").ids()) | {SKY, UNLABELED}
    assert set(labels.unique().tolist()) <= allowed and bool((labels != UNLABELED).any())
    assert float(conf.min()) >= 0 and float(conf.max()) <= 1
    assert bool((conf[labels == UNLABELED] == 0).all())
    labels2, conf2 = model({"image": image})
    assert torch.equal(labels, labels2) and torch.equal(conf, conf2)
    for i in range(2):
        li, ci = model({"image": image[i : i + 1]})
        assert torch.equal(li[0], labels[i]) and torch.allclose(ci[0], conf[i], atol=1e-5)
    prov = model.provenance()
    assert prov["detector"]["model_class"] == "Owlv2ForObjectDetection"
    assert prov["segmenter"]["model_class"] == "SamModel"
    assert prov["threshold"] == 0.1 and prov["vocab_hash"] == load_vocabulary("occ3d").content_hash()


def test_thresholds_and_sam2(dirs):
    image = _images(1, 20, 36)
    labels, conf = _model(dirs, threshold=0.99)({"image": image})
    assert bool((labels == UNLABELED).all()) and bool((conf == 0).all())
    m0 = _model(dirs, segmenter="sam2", threshold=0.0, max_boxes=5, nms_iou=1.0, vocab="semantickitti")
    _, _, _, valid = m0.candidates(image)
    assert valid.shape == (1, 5) and bool(valid.all())
    labels, conf = m0({"image": image})
    assert m0.segmenter.kind == "sam2" and bool((labels != UNLABELED).any())
    assert set(labels.unique().tolist()) <= set(load_vocabulary("semantickitti").ids()) | {SKY, UNLABELED}


def test_user_vocabulary(dirs, tmp_path):
    vocab = {
        "name": "mine",
        "sky": {"id": 254, "prompts": ["sky"]},
        "classes": [
            {"id": 3, "name": "car", "prompts": ["car", "van"]},
            {"id": 8, "name": "road", "prompts": ["road"]},
        ],
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(vocab))
    m = _model(dirs, vocab=str(path), threshold=0.0)
    assert m.queries == ["a photo of a car", "a photo of a van", "a photo of a road", "a photo of a sky"]
    labels, _ = m({"image": _images(1)})
    assert set(labels.unique().tolist()) <= {3, 8, SKY, UNLABELED} and bool((labels != UNLABELED).any())
    assert m.provenance()["vocab"] == "mine"


def test_bad_conf_and_missing_dirs(dirs, tmp_path):
    for conf, word in [
        ({"threshold": -1}, "threshold"),
        ({"prompt_template": "a photo"}, "prompt_template"),
        ({"max_boxes": 2.5}, "max_boxes"),
        ({"detector_size": 800}, "unknown option"),
    ]:
        with pytest.raises(OccLabelError) as e:
            OWLv2SAM("owlv2-sam", {"detector": "/no/such/owl", "segmenter": "/no/such/sam", **conf})
        assert word in str(e.value) and "\n" not in str(e.value), conf
    with pytest.raises(OccLabelError) as e:
        OWLv2SAM("owlv2-sam", {"detector": str(tmp_path / "nope"), "segmenter": str(dirs["sam"])})
    assert "does not exist" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OccLabelError) as e:  # a SAM directory is no OWLv2 detector
        OWLv2SAM("owlv2-sam", {"detector": str(dirs["sam"]), "segmenter": str(dirs["sam"])})
    assert "not an OWLv2 checkpoint (config model_type 'sam')" in str(e.value) and "\n" not in str(e.value)
