"""The localisation stages end to end on real VOC-format data, and their bad-input handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import UserError
from pipeline.localise import LocaliseEvalConfig, LocaliseTrainConfig, run_localise_evaluate, run_localise_train
from pipeline.localise.boxes import iou_matrix
from pipeline.localise.net import load_localiser, localisation_net
from pipeline.models import load_model, save_checkpoint
from pipeline.sources.voc import VOC_CLASSES, parse_voc_xml
from tests.helpers.localise import save_classifier


def _train(voc_tree, classifier, out, **over):
    base = dict(data=str(voc_tree), classifier=str(classifier), out=str(out), epochs=1, batch_size=8, scale=64,
                val_split="val", progress=False, runtime={"device": "cpu"})
    return run_localise_train(LocaliseTrainConfig(**{**base, **over}))


@pytest.fixture(scope="module")
def trained(voc_tree, voc_classifier, tmp_path_factory):
    return _train(voc_tree, voc_classifier, tmp_path_factory.mktemp("loc") / "run")


def _whole_image_error_by_hand(voc_tree: Path, split: str) -> float:
    """The whole-image baseline with the GT classes, straight from the XML (1 - any IoU >= 0.5)."""
    voc = voc_tree / "VOCdevkit" / "VOC2007"
    errs = []
    for i in (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split():
        (w, h), boxes = parse_voc_xml((voc / "Annotations" / f"{i}.xml").read_bytes())
        classes = {b["name"] for b in boxes if not b["difficult"]}
        if not classes:
            continue
        whole = [0, 0, w - 1, h - 1]
        miss = 0
        for c in classes:
            gt = np.array(
                [[b["xmin"], b["ymin"], min(b["xmax"], w - 1), min(b["ymax"], h - 1)] for b in boxes if b["name"] == c]
            )
            miss += not (iou_matrix(whole, gt) >= 0.5).any()
        errs.append(miss / len(classes))
    return float(np.mean(errs))


def test_train_writes_a_localisation_checkpoint(trained):
    model, info = load_localiser(trained["best"])
    assert info.head == "pcr" and info.fine_tune == "all" and info.train_scale == 64
    assert info.classes == VOC_CLASSES and model.cfg.num_classes == 4 * 20
    h = trained["history"][0]
    assert h["images"] > 0 and np.isfinite(h["train_loss"]) and 0 <= h["val_crop_error"] <= 1
    out = Path(trained["out"])
    assert (out / "config.yaml").is_file() and (out / "metrics.jsonl").is_file() and (out / "train.json").is_file()


@pytest.mark.parametrize("protocol", ["crop", "dense"])
def test_both_protocols_write_a_table_and_a_summary(trained, voc_tree, voc_classifier, tmp_path, protocol):
    cfg = LocaliseEvalConfig(checkpoints=[trained["best"], trained["last"]], classifier=str(voc_classifier),
                             data=str(voc_tree), split="val", protocol=protocol, out=str(tmp_path), progress=False,
                             runtime={"device": "cpu"})
    s = run_localise_evaluate(cfg)
    saved = json.loads((tmp_path / "loc_eval.json").read_text())
    assert saved["rows"] == s["rows"]
    table = (tmp_path / "loc_table.md").read_text()
    assert ("Table 8" if protocol == "crop" else "Table 9") in table
    names = [r["name"] for r in s["rows"]]
    expect = ["net0", "net1"] + (["fusion", "net0 crop", "net1 crop"] if protocol == "dense" else []) \
        + ["whole image", "centre quarter"]
    assert names == expect
    preds = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == s["images"]["evaluated"] > 0
    for r in s["rows"]:
        assert 0 <= r["error"] <= 1
    if protocol == "crop":  # the baseline with the GT classes, recomputed from the XML files
        whole = next(r for r in s["rows"] if r["name"] == "whole image")
        assert whole["error"] == pytest.approx(_whole_image_error_by_hand(voc_tree, "val"))
    else:
        assert 0 <= s["classification_error"] <= 1 and all(len(p["top"]) == 5 for p in preds)
        # the two nets are the same weights here (one epoch: best = last): identical guesses
        assert all(p["guesses"]["net0"] == p["guesses"]["net1"] for p in preds)


def test_resumed_training_equals_an_uninterrupted_run(voc_tree, voc_classifier, tmp_path):
    over = dict(limit=6, val_split=None, head="scr", fine_tune="fc")
    whole = _train(voc_tree, voc_classifier, tmp_path / "a", **{**over, "epochs": 2})
    _train(voc_tree, voc_classifier, tmp_path / "b", **over)  # "killed" after epoch 1
    again = _train(voc_tree, voc_classifier, tmp_path / "b", **{**over, "epochs": 2})
    assert [h["train_loss"] for h in again["history"]] == [h["train_loss"] for h in whole["history"]]
    a = torch.load(whole["last"], weights_only=True)["state_dict"]
    b = torch.load(again["last"], weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # fine-tuning only the FC layers leaves the conv layers as the classifier had them
    c = torch.load(voc_classifier, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], c[k]) for k in a if k.startswith("features."))
    with pytest.raises(UserError, match="another config"):
        _train(voc_tree, voc_classifier, tmp_path / "b", **{**over, "head": "pcr"})


def _loc_net(path: Path, classes: list[str]) -> Path:
    """An untrained PCR localisation checkpoint for ``classes`` (scale 64)."""
    cls, _ = load_model(save_classifier(path.with_suffix(".cls.pt"), classes))
    return save_checkpoint(path, localisation_net(cls, "pcr", seed=0), meta={
        "classes": list(classes), "localise": {"head": "pcr", "fine_tune": "all"},
        "train_scale": {"s_min": 64, "s_max": 64}})


def test_data_without_boxes_is_an_error(tmp_path, photos):
    for c in ("aeroplane", "bicycle"):
        (tmp_path / "folder" / c).mkdir(parents=True)
        Image.fromarray(photos[0][:200, :300]).save(tmp_path / "folder" / c / "a.jpg")
    loc = _loc_net(tmp_path / "loc.pt", ["aeroplane", "bicycle"])
    with pytest.raises(UserError, match="no box annotations"):
        run_localise_evaluate(LocaliseEvalConfig(checkpoints=[str(loc)], data=str(tmp_path / "folder"), split=None,
                                                 protocol="crop", progress=False))


def test_a_classifier_of_another_class_count_is_an_error(trained, voc_tree, tmp_path):
    five = save_classifier(tmp_path / "five.pt", VOC_CLASSES[:5])
    with pytest.raises(UserError, match="has 5 classes but the data has 20"):
        _train(voc_tree, five, tmp_path / "run")
    with pytest.raises(UserError, match="has 5 classes but the data has 20"):
        run_localise_evaluate(LocaliseEvalConfig(checkpoints=[trained["best"]], classifier=str(five),
                                                 data=str(voc_tree), protocol="dense", progress=False))
    with pytest.raises(UserError, match="localisation net"):  # a localisation net is no classifier
        _train(voc_tree, trained["best"], tmp_path / "run2")


def test_bad_boxes_are_clipped_or_skipped_with_reasons(tmp_path, photos):
    """A JSONL manifest (single-label images with boxes, as ILSVRC) passes boxes through unrepaired."""
    img = Image.fromarray(photos[1]).resize((96, 64))
    img.save(tmp_path / "x.jpg")
    rows = [
        {"key": "ok", "path": "x.jpg", "label": "cat", "boxes": [
            {"xmin": 10, "ymin": 5, "xmax": 50, "ymax": 40, "name": "cat"},
            {"xmin": 60, "ymin": 40, "xmax": 140, "ymax": 90, "name": "cat"},     # partly outside: clipped
            {"xmin": 200, "ymin": 10, "xmax": 230, "ymax": 30, "name": "cat"}]},  # entirely outside: skipped
        {"key": "swapped", "path": "x.jpg", "label": "cat", "boxes": [
            {"xmin": 50, "ymin": 5, "xmax": 10, "ymax": 40, "name": "cat"}]},     # min > max: skipped
        {"key": "none", "path": "x.jpg", "label": "dog"},                         # no boxes at all
    ]
    (tmp_path / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loc = _loc_net(tmp_path / "loc.pt", ["cat", "dog"])
    s = run_localise_evaluate(LocaliseEvalConfig(checkpoints=[str(loc)], data=str(tmp_path / "list.jsonl"), split="all",
                                                 protocol="crop", progress=False, out=str(tmp_path / "ev")))
    assert s["images"] == {"seen": 3, "evaluated": 1, "localisation": 1, "blacklisted": 0, "skipped": 2}
    assert s["boxes"] == {"clipped": 1, "skipped": 2}
    reasons = s["skips"]["by_reason"]
    assert reasons["entirely outside the 96x64 image"] == 1 and reasons["min > max"] == 1
    assert reasons["no usable box"] == 1 and reasons["no box annotations"] == 1
    assert {x["key"] for x in s["skips"]["listed"]} == {"ok", "swapped", "none"}
