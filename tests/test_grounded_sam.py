"""Grounded-SAM (Grounding DINO + SAM / SAM2): known-answer tests of the pure parts, then the backend with tiny
random-weight checkpoints loaded through the real loading code, and one run through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from tiny_detectors import save_tiny_grounding_dino, save_tiny_sam, save_tiny_sam2  # noqa: E402

from occlabel.conventions import SKY, UNLABELED  # noqa: E402
from occlabel.errors import OccLabelError  # noqa: E402
from occlabel.models.semantics.box_sam import (  # noqa: E402
    box_iou,
    combine_masks,
    resample_masks,
    select_boxes,
)
from occlabel.models.semantics.grounded_sam import (  # noqa: E402
    GroundedSAM,
    build_captions,
    detector_size,
    grounding_scores,
)
from occlabel.models.vocab import load_vocabulary  # noqa: E402

# ------------------------------------------------------------------------------------------------
# pure functions, known answers
# ------------------------------------------------------------------------------------------------


def test_combine_masks_known_answer():
    # one image of 2 x 3 pixels, four masks (the last one padding)
    m = torch.zeros(1, 4, 2, 3, dtype=torch.bool)
    m[0, 0] = torch.tensor([[1, 1, 0], [0, 0, 0]])  # class 4, score 0.6
    m[0, 1] = torch.tensor([[0, 1, 1], [0, 0, 0]])  # class 11, score 0.8: wins the shared pixel (0, 1)
    m[0, 2] = torch.tensor([[0, 0, 0], [1, 0, 0]])  # SKY, score 1.7 -> confidence clamped to 1
    m[0, 3] = torch.ones(2, 3, dtype=torch.bool)  # invalid: covers nothing
    scores = torch.tensor([[0.6, 0.8, 1.7, 5.0]])
    classes = torch.tensor([[4, 11, SKY, 7]])
    valid = torch.tensor([[True, True, True, False]])
    labels, conf = combine_masks(m, scores, classes, valid)
    assert labels.dtype == torch.uint8 and conf.dtype == torch.float32
    assert labels[0].tolist() == [[4, 11, 11], [SKY, UNLABELED, UNLABELED]]
    assert torch.allclose(conf[0], torch.tensor([[0.6, 0.8, 0.8], [1.0, 0.0, 0.0]]))
    # logits instead of bools (covered where > 0), and no valid mask: the padding mask now counts
    logits = torch.where(m, 3.0, -3.0)
    labels2, conf2 = combine_masks(logits, scores, classes)
    assert labels2[0].tolist() == [[7, 7, 7], [7, 7, 7]] and bool((conf2 == 1).all())
    # ties go to the lower mask index
    labels3, _ = combine_masks(m[:, :2], torch.tensor([[0.5, 0.5]]), classes[:, :2])
    assert labels3[0, 0].tolist() == [4, 4, 11]
    # no masks at all
    labels4, conf4 = combine_masks(m[:, :0], scores[:, :0], classes[:, :0])
    assert bool((labels4 == UNLABELED).all()) and bool((conf4 == 0).all())


def test_grounding_scores_known_answer():
    # caption "[CLS] red car . road . [SEP]" -> prompt 0 = tokens 1-2, prompt 1 = token 4; 8 token slots
    token_map = torch.zeros(2, 8, dtype=torch.bool)
    token_map[0, 1:3] = True
    token_map[1, 4] = True
    probs = torch.tensor(
        [
            [
                [0.1, 0.3, 0.5, 0.0, 0.2, 0.0, 0.0, 0.0],  # car (max of its tokens 0.5)
                [0.1, 0.1, 0.1, 0.0, 0.4, 0.0, 0.0, 0.0],  # road 0.4
                [0.9, 0.1, 0.15, 0.0, 0.1, 0.0, 0.0, 0.0],  # best token is [CLS]: kept, best prompt car 0.15
                [0.1, 0.1, 0.1, 0.0, 0.1, 0.0, 0.0, 0.0],  # nothing reaches 0.2
            ]
        ]
    )
    score, prompt, keep = grounding_scores(probs, token_map, box_threshold=0.2, text_threshold=0.2)
    assert torch.allclose(score[0], torch.tensor([0.5, 0.4, 0.15, 0.1]))
    assert prompt[0].tolist() == [0, 1, 0, 0]
    assert keep[0].tolist() == [True, True, False, False]  # query 2: no prompt above text_threshold
    _, _, keep = grounding_scores(probs, token_map, box_threshold=0.2, text_threshold=0.1)
    assert keep[0].tolist() == [True, True, True, False]
    _, _, keep = grounding_scores(probs, token_map, box_threshold=0.45, text_threshold=0.0)
    assert keep[0].tolist() == [True, False, True, False]
    # a per-row map gives the same; overlapping prompts are refused
    s2, p2, _ = grounding_scores(probs, token_map[None], 0.2, 0.2)
    assert torch.equal(s2, score) and torch.equal(p2, prompt)
    with pytest.raises(ValueError, match="more than one prompt"):
        grounding_scores(probs, torch.ones(2, 8, dtype=torch.bool), 0.2, 0.2)


def test_select_boxes_known_answer():
    boxes = torch.tensor(
        [
            [
                [0, 0, 10, 10],  # a: class 4, 0.9
                [1, 0, 11, 10],  # b: class 4, 0.8, IoU(a, b) = 0.82 -> suppressed
                [1, 0, 11, 10],  # c: class 10, 0.7, same box as b, other class -> kept
                [20, 20, 30, 30],  # d: class 4, 0.6
                [0, 0, 10, 10],  # e: not kept by the detector
                [40, 40, 50, 50],  # f: class 11, 0.5
            ]
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.99, 0.5]])
    classes = torch.tensor([[4, 4, 10, 4, 4, 11]])
    keep = torch.tensor([[True, True, True, True, False, True]])
    assert box_iou(boxes[0, :1], boxes[0, 1:2]).item() == pytest.approx(90 / 110)
    b, s, c, v = select_boxes(boxes, scores, classes, keep, max_boxes=3, nms_iou=0.5)
    assert b.shape == (1, 3, 4) and v.tolist() == [[True, True, True]]
    assert s[0].tolist() == pytest.approx([0.9, 0.7, 0.6]) and c[0].tolist() == [4, 10, 4]
    assert torch.equal(b[0, 2], boxes[0, 3])
    # no NMS: the 3 best kept; more room than boxes: padding rows invalid with score 0
    _, s, c, v = select_boxes(boxes, scores, classes, keep, max_boxes=3, nms_iou=1.0)
    assert s[0].tolist() == pytest.approx([0.9, 0.8, 0.7])
    _, s, c, v = select_boxes(boxes, scores, classes, keep, max_boxes=10, nms_iou=0.5)
    assert v[0].tolist() == [True] * 4 + [False] * 2 and s[0, 4:].tolist() == [0, 0]
    assert c[0, :4].tolist() == [4, 10, 4, 11]


def test_resample_masks_geometry():
    m = 8
    left = torch.where(torch.arange(m) < m // 2, 1.0, -1.0).expand(m, m)[
        None, None
    ]  # left half of the square
    top = left.transpose(-1, -2)  # top half of the square
    # SAM2 (image fills the square): left half of the square -> left half of the image
    out = resample_masks(left, (1.0, 1.0), (6, 10))
    assert out.shape == (1, 1, 6, 10) and out.dtype == torch.float32
    assert ((out[0, 0] > 0) == (torch.arange(10) < 5).expand(6, 10)).all()
    # SAM with a wide image occupying the top half of the padded square: the top half covers the whole image
    out = resample_masks(top, (0.5, 1.0), (4, 10))
    assert bool((out > 0).all())
    # ... and a mask of the square's top quarter covers the image's top half
    quarter = torch.where(torch.arange(m) < m // 4, 1.0, -1.0)[:, None].expand(m, m)[None, None]
    out = resample_masks(quarter, (0.5, 1.0), (4, 10))
    assert ((out[0, 0] > 0) == (torch.arange(4) < 2)[:, None].expand(4, 10)).all()


def test_detector_size():
    assert detector_size(900, 1600, 800, 1333) == (750, 1333)  # long side capped
    assert detector_size(480, 640, 800, 1333) == (800, 1067)
    assert detector_size(24, 32, 128, 224) == (128, 171)  # small images are upsampled


def test_build_captions_packs_and_maps_tokens():
    ids = [[11], [12, 13], [14], [15, 16, 17]]
    caps = build_captions(ids, [[0, 1, 2, 3]], cls_id=1, sep_id=2, dot_id=9, max_len=100)
    assert len(caps) == 1
    assert caps[0].input_ids == (1, 11, 9, 12, 13, 9, 14, 9, 15, 16, 17, 9, 2)
    assert caps[0].token_prompt == (-1, 0, -1, 1, 1, -1, 2, -1, 3, 3, 3, -1, -1)
    # [CLS] 11 . 12 13 . [SEP] is 7 tokens (+ "14 ." would make 9); [CLS] 14 . 15 16 17 . [SEP] is 8
    caps = build_captions(ids, [[0, 1, 2, 3]], 1, 2, 9, max_len=8)
    assert [c.prompts for c in caps] == [(0, 1), (2, 3)]
    caps = build_captions(ids, [[0, 1, 2, 3]], 1, 2, 9, max_len=7)
    assert [c.prompts for c in caps] == [(0, 1), (2,), (3,)]
    caps = build_captions(ids, [[0, 2], [1], [3]], 1, 2, 9, max_len=100)
    assert [c.prompts for c in caps] == [(0, 2), (1,), (3,)]
    with pytest.raises(ValueError, match="prompt 3"):
        build_captions(ids, [[3]], 1, 2, 9, max_len=5)


# ------------------------------------------------------------------------------------------------
# the backend with tiny random weights
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-detectors")
    return {
        "detector": save_tiny_grounding_dino(root / "gdino"),
        "sam": save_tiny_sam(root / "sam"),
        "sam2": save_tiny_sam2(root / "sam2"),
    }


def _model(dirs, segmenter="sam", **conf) -> GroundedSAM:
    # detector_batch 64: all images x captions of a test batch in one detector call (fewer calls, faster tests)
    conf = {
        "detector": str(dirs["detector"]),
        "segmenter": str(dirs[segmenter]),
        "detector_batch": 64,
        **conf,
    }
    return GroundedSAM("grounded-sam", conf)


@pytest.fixture(scope="module")
def model(dirs) -> GroundedSAM:
    return _model(dirs)


def _batch(b: int = 2, h: int = 24, w: int = 32, seed: int = 0) -> dict:
    image = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))
    return {"image": image, "keys": [f"k{i}" for i in range(b)], "records": [None] * b}


def _check_output(labels, conf, shape, vocab="occ3d"):
    assert labels.shape == shape and labels.dtype == torch.uint8
    assert conf.shape == shape and conf.dtype == torch.float32
    allowed = set(load_vocabulary(vocab).ids()) | {SKY, UNLABELED}
    assert set(labels.unique().tolist()) <= allowed
    assert float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0
    assert bool((conf[labels == UNLABELED] == 0).all())


def test_captions_are_the_tokenised_caption(model, dirs):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(dirs["detector"])
    vocab = load_vocabulary("occ3d")
    assert len(model.captions) == len({c for _, c in vocab.prompts()})  # per-class: one caption per class
    for cap in model.captions:
        text = " . ".join(model.prompt_texts[p] for p in cap.prompts) + " ."
        assert list(cap.input_ids) == tokenizer(text)["input_ids"]
        classes = {int(model.prompt_class[p]) for p in cap.prompts}
        assert len(classes) == 1
        for tok, owner in zip(cap.input_ids, cap.token_prompt, strict=True):
            assert (owner == -1) == (tok in (101, 102, 1012))  # [CLS] [SEP] . belong to no prompt
    # single-pass: the ~130-token caption is split to fit the tiny model's 64 tokens
    single = _model(dirs, mode="single-pass")
    assert 1 < len(single.captions) < len(model.captions)
    assert all(len(c.input_ids) <= 64 for c in single.captions)
    assert sorted(p for c in single.captions for p in c.prompts) == list(range(len(model.prompt_texts)))


def test_forward_shapes_determinism_and_batch(model):
    batch = _batch(2)
    labels, conf = model(batch)
    _check_output(labels, conf, (2, 24, 32))
    assert bool((labels != UNLABELED).any())
    labels2, conf2 = model(batch)
    assert torch.equal(labels, labels2) and torch.equal(conf, conf2)
    for i in range(2):
        single = {"image": batch["image"][i : i + 1]}
        li, ci = model(single)
        assert torch.equal(li[0], labels[i]) and torch.allclose(ci[0], conf[i], atol=1e-5)
    prov = model.provenance()
    vocab = load_vocabulary("occ3d")
    assert prov["vocab"] == "occ3d" and prov["vocab_hash"] == vocab.content_hash()
    assert prov["detector"]["model_class"] == "GroundingDinoForObjectDetection"
    assert prov["segmenter"]["model_class"] == "SamModel" and prov["segmenter"]["kind"] == "sam"
    assert prov["mode"] == "per-class" and prov["box_threshold"] == 0.2 and prov["text_threshold"] == 0.2
    assert prov["conf"]["detector"] == model.conf["detector"]


def test_detector_batching_and_shared_backbone(model):
    x = model.detector_input(_batch(2)["image"])
    assert x.shape == (2, 3, 128, 171)  # 24 x 32 upsampled to the detector's short side
    with torch.inference_mode():
        shared = model.run_detector(x, 0, 3, share=True)
        plain = model.run_detector(x, 0, 3, share=False)
        assert torch.allclose(shared.logits, plain.logits, atol=1e-4, equal_nan=True)
        assert torch.allclose(shared.pred_boxes, plain.pred_boxes, atol=1e-5)
        # rows are image-major: row 1 is image 0 with caption 1
        alone = model.run_detector(x[:1], 1, 2)
        assert torch.allclose(alone.logits, shared.logits[1:2], atol=1e-4, equal_nan=True)
        # one caption per call and one image per call give the same candidates
        small = _model_like(model, detector_batch=1)
        ref = model.candidates(_batch(2)["image"])
        got = small.candidates(_batch(2)["image"])
    for a, b in zip(ref, got, strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def _model_like(model: GroundedSAM, **conf) -> GroundedSAM:
    return GroundedSAM("grounded-sam", {**model.conf, **conf})


def test_single_pass_and_semantickitti(dirs):
    m = _model(dirs, mode="single-pass", vocab="semantickitti", max_boxes=5, nms_iou=1.0)
    labels, conf = m(_batch(1, 40, 30))
    _check_output(labels, conf, (1, 40, 30), vocab="semantickitti")
    assert m.provenance()["n_captions"] == len(m.captions) >= 2


def test_thresholds(model, dirs):
    batch = _batch(2)
    with torch.inference_mode():
        x = model.detector_input(batch["image"])
        probs = model.run_detector(x, 0, len(model.captions)).logits.float().sigmoid()
    assert float(probs.max()) < 0.99  # the tiny model's scores stay below the thresholds tried next
    for conf in ({"box_threshold": 1.0}, {"box_threshold": 0.99}, {"text_threshold": 0.99}):
        labels, confidence = _model(dirs, **conf)(batch)
        assert bool((labels == UNLABELED).all()) and bool((confidence == 0).all())
    m0 = _model(dirs, box_threshold=0.0, text_threshold=0.0, max_boxes=7)
    boxes, scores, classes, valid = m0.candidates(batch["image"])
    assert valid.shape == (2, 7) and bool(valid.all())
    assert bool((m0(batch)[0] != UNLABELED).any())


def test_sam2_segmenter(dirs):
    m = _model(dirs, segmenter="sam2", mode="single-pass")
    assert m.segmenter.kind == "sam2" and m.provenance()["segmenter"]["model_class"] == "Sam2Model"
    labels, conf = m(_batch(2, 30, 20))
    _check_output(labels, conf, (2, 30, 20))
    assert bool((labels != UNLABELED).any())


def test_autocast_path(dirs):
    """The fp16-autocast branch (CUDA with dtype "auto"), run with CPU autocast standing in."""
    m = _model(dirs, mode="single-pass")
    assert m._autocast is False  # CPU: fp32
    m._autocast = True
    labels, conf = m(_batch(1))
    _check_output(labels, conf, (1, 24, 32))


def test_sam_preprocessing_matches_processor(model, dirs):
    from transformers import SamImageProcessorPil

    image = _batch(1, 24, 40)["image"]
    x = model.segmenter.preprocess(image)
    assert x.shape == (1, 3, 64, 64)
    assert model.segmenter.geometry(24, 40) == ((38, 64), (38 / 64, 1.0))
    assert bool((x[:, :, 38:] == 0).all())  # padding rows
    processor = SamImageProcessorPil.from_pretrained(dirs["sam"])
    ref = processor((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), return_tensors="pt")
    ref = ref["pixel_values"]
    assert ref.shape == x.shape
    assert float((ref - x).abs().mean()) < 0.1  # PIL vs torch resampling of a uint8 image


def test_bad_conf_is_one_line_error():
    cases = [
        ({"mode": "both"}, "mode"),
        ({"box_threshold": 1.5}, "box_threshold"),
        ({"text_threshold": "high"}, "text_threshold"),
        ({"max_boxes": 0}, "max_boxes"),
        ({"nms_iou": -0.1}, "nms_iou"),
        ({"detector_size": 16}, "detector_size"),
        ({"detector_batch": 0}, "detector_batch"),
        ({"dtype": "float8"}, "dtype"),
        ({"vocab": "no-such-vocab"}, "built-in"),
        ({"bogus": 1}, "unknown option"),
    ]
    for conf, word in cases:
        # options are checked before any model is loaded: missing model directories are not reached
        with pytest.raises(OccLabelError) as e:
            GroundedSAM("grounded-sam", {"detector": "/no/such/gdino", "segmenter": "/no/such/sam", **conf})
        assert word in str(e.value) and "\n" not in str(e.value), conf


def test_missing_or_wrong_model_dirs(dirs, tmp_path):
    for key in ("detector", "segmenter"):
        with pytest.raises(OccLabelError) as e:
            GroundedSAM("grounded-sam", {**_model_conf(dirs), key: str(tmp_path / "nope")})
        assert "does not exist" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OccLabelError) as e:  # a Grounding DINO directory is not a SAM checkpoint
        GroundedSAM("grounded-sam", {**_model_conf(dirs), "segmenter": str(dirs["detector"])})
    assert "not a SAM or SAM2 checkpoint" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OccLabelError) as e:  # nor a SAM directory a Grounding DINO one
        GroundedSAM("grounded-sam", {**_model_conf(dirs), "detector": str(dirs["sam"])})
    assert "not a Grounding DINO checkpoint" in str(e.value) and "\n" not in str(e.value)


def _model_conf(dirs) -> dict:
    return {"detector": str(dirs["detector"]), "segmenter": str(dirs["sam"])}


def test_extract_2d_cli_with_grounded_sam(dirs, tmp_path, tiny_folder, monkeypatch):
    """`--semantic-model grounded-sam --detector DIR --segmenter DIR --vocab occ3d` through the CLI, offline."""
    from click.testing import CliRunner

    from occlabel.cli import main
    from occlabel.store.cache import open_cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["-q", "extract-2d", "--root", str(tiny_folder), "--out", str(tmp_path / "c.zarr")]
    args += [
        "--depth-model",
        "oracle",
        "--semantic-model",
        "grounded-sam",
        "--detector",
        str(dirs["detector"]),
    ]
    args += ["--segmenter", str(dirs["sam"]), "--vocab", "occ3d", "--semantic-option", "detector_batch=64"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    cache = open_cache(tmp_path / "c.zarr")
    assert cache.meta["default_semantics"] == "grounded-sam"
    labels, conf = cache.read_semantics("s0", "CAM_FRONT")
    assert labels.shape == (3, 24, 32) and set(np.unique(labels)) <= set(range(17)) | {254, 255}
    assert (conf >= 0).all() and (conf <= 1).all()
    prov = cache.meta["stages"]["extract_2d"]["semantic_model"]
    assert prov["conf"]["vocab"] == "occ3d" and prov["conf"]["mode"] == "per-class"
    assert prov["conf"]["detector_batch"] == 64  # --semantic-option values are read as YAML
    assert prov["vocab_hash"] == load_vocabulary("occ3d").content_hash()
    assert prov["detector"]["model_class"] == "GroundingDinoForObjectDetection"


def test_networks_see_the_native_image(model, monkeypatch):
    """With ``image_native`` in the batch, Grounding DINO and SAM inputs are resized from it (not from the
    working image), and labels come out at the working resolution."""
    import torch.nn.functional as F

    native = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    working = F.interpolate(native, size=(24, 32), mode="bilinear", antialias=True)
    seen = {}
    det_input, sam_pre = model.detector_input, model.segmenter.preprocess

    def spy_det(image, hw=None):
        seen["detector"] = (tuple(image.shape[-2:]), hw)
        return det_input(image, hw)

    def spy_sam(image, hw=None):
        seen["sam"] = (tuple(image.shape[-2:]), hw)
        return sam_pre(image, hw)

    monkeypatch.setattr(model, "detector_input", spy_det)
    monkeypatch.setattr(model.segmenter, "preprocess", spy_sam)
    monkeypatch.setattr(model, "box_threshold", 0.0)  # boxes for sure, so SAM runs
    labels, conf = model({"image": working, "image_native": native})
    _check_output(labels, conf, (1, 24, 32))
    assert seen["detector"] == ((96, 128), (24, 32)) and seen["sam"] == ((96, 128), (24, 32))
    # the detector input has the size it would have for the working image, its pixels from the native one
    assert det_input(native, (24, 32)).shape == det_input(working).shape
    assert not torch.allclose(det_input(native, (24, 32)), det_input(working))
