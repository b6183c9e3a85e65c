"""Appendix A's protocol pieces: FC-only fine-tuning, the blacklist, top-5 classes from saved posteriors.

The data is the ILSVRC-style set (``prepare_ilsvrc_loc``), read by the project's ILSVRC reader;
the nets are tiny and untrained (the checks are about which numbers go where, not accuracy), and
the classification posteriors come from the real evaluate stage.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.evaluate import EvaluateConfig, run_evaluate
from pipeline.localise import LocaliseEvalConfig, LocaliseTrainConfig, run_localise_evaluate, run_localise_train
from pipeline.localise.net import localisation_net
from pipeline.localise.selection import class_order, image_index, read_blacklist
from pipeline.models import load_model, save_checkpoint
from pipeline.shipped.fashion_mnist import CLASSES
from pipeline.shipped.ilsvrc_loc import WNIDS, prepare_ilsvrc_loc
from tests.helpers.localise import save_classifier


@pytest.fixture(scope="module")
def loc_set(tmp_path_factory):
    return prepare_ilsvrc_loc(tmp_path_factory.mktemp("ilsvrc") / "loc", train_per_class=2, val_per_class=2, seed=1)


@pytest.fixture(scope="module")
def nets(loc_set, tmp_path_factory):
    """A classifier over the set's wnids (glorot init, so its posteriors are far from ties) and a PCR net from it."""
    d = tmp_path_factory.mktemp("nets")
    cls_path = save_classifier(d / "cls.pt", WNIDS, seed=3, s=64, width=0.25, fc_width=32)
    cls, _ = load_model(cls_path)
    loc = save_checkpoint(d / "loc.pt", localisation_net(cls, "pcr", seed=0), meta={
        "classes": WNIDS, "localise": {"head": "pcr", "fine_tune": "all"}, "train_scale": {"s_min": 64, "s_max": 64},
        "normalization": {"mean": [40.0] * 3, "std": [50.0] * 3}})
    return cls_path, loc


def _dense(loc_set, nets, tmp_path, **over):
    cls_path, loc = nets
    base = dict(checkpoints=[str(loc)], classifier=str(cls_path), data=str(loc_set), split="val", protocol="dense",
                class_scales=[64], progress=False, runtime={"device": "cpu"})
    cfg = LocaliseEvalConfig(**{**base, **over})
    return run_localise_evaluate(cfg)


def _records(path):
    return [json.loads(line) for line in (path / "predictions.jsonl").read_text().splitlines()]


def test_fc_only_fine_tuning_leaves_the_conv_layers_bit_identical(loc_set, nets, tmp_path):
    cls_path, _ = nets
    res = run_localise_train(LocaliseTrainConfig(
        data=str(loc_set), classifier=str(cls_path), head="scr", fine_tune="fc", scale=64, epochs=2, batch_size=4,
        lr=0.01, out=str(tmp_path / "fc"), progress=False, runtime={"device": "cpu"}))
    tuned = torch.load(res["last"], weights_only=True)["state_dict"]
    start = torch.load(cls_path, weights_only=True)["state_dict"]
    convs = [k for k in tuned if k.startswith("features.")]
    assert convs and all(torch.equal(tuned[k], start[k]) for k in convs)
    # the FC layers did train (the check above could not pass by nothing training at all)
    assert not torch.equal(tuned["classifier.0.weight"], start["classifier.0.weight"])
    assert not torch.equal(tuned["classifier.3.weight"], start["classifier.3.weight"])
    assert tuned["classifier.6.weight"].shape[0] == 4


def test_the_blacklist_changes_only_the_denominator(loc_set, nets, tmp_path):
    blacklist = tmp_path / "ILSVRC2014_clsloc_validation_blacklist.txt"
    blacklist.write_text("2\n5\n\n11\n")
    plain = _dense(loc_set, nets, tmp_path, out=str(tmp_path / "plain"))
    black = _dense(loc_set, nets, tmp_path, out=str(tmp_path / "black"), blacklist=str(blacklist))
    a, b = _records(tmp_path / "plain"), _records(tmp_path / "black")
    # every image is evaluated as before, with the same guesses and errors; three are flagged
    assert [dict(r, blacklisted=None) for r in a] == [dict(r, blacklisted=None) for r in b]
    flagged = [r["key"] for r in b if r["blacklisted"]]
    assert flagged == ["ILSVRC2012_val_00000002", "ILSVRC2012_val_00000005", "ILSVRC2012_val_00000011"]
    assert black["images"]["blacklisted"] == 3 and black["images"]["localisation"] == len(b) - 3
    assert black["images"]["evaluated"] == plain["images"]["evaluated"] == len(a) == 20
    assert black["classification_error"] == plain["classification_error"]
    for row_a, row_b in zip(
        plain["rows"], black["rows"], strict=False
    ):  # each error: the kept images' errors over their count
        kept = [r["error"][row_b["name"]] for r in b if not r["blacklisted"]]
        assert row_b["error"] == pytest.approx(sum(kept) / (len(b) - 3))
        assert row_a["error"] == pytest.approx(np.mean([r["error"][row_a["name"]] for r in a]))
    assert "3 blacklisted images left out" in black["table"]
    assert "blacklisted" not in plain["table"]


def test_blacklist_file_format(tmp_path):
    f = tmp_path / "b.txt"
    f.write_text("1\n 7 \n# comment\n\n3\n")
    assert read_blacklist(f) == {1, 3, 7}
    f.write_text("1\nx\n")
    with pytest.raises(UserError, match="line 2"):
        read_blacklist(f)
    assert image_index("ILSVRC2012_val_00000042", 3) == 42 and image_index("000017", 3) == 3


def test_top5_from_posteriors_equals_the_dense_evaluation_they_came_from(loc_set, nets, tmp_path):
    cls_path, _ = nets
    run_evaluate(EvaluateConfig(checkpoints=[str(cls_path)], data=str(loc_set), split="val", method="dense",
                                scales=[64], flip=True, out=str(tmp_path / "eval"), progress=False,
                                runtime={"device": "cpu"}))
    own = _dense(loc_set, nets, tmp_path, out=str(tmp_path / "own"))
    saved = _dense(loc_set, nets, tmp_path, out=str(tmp_path / "saved"), posteriors=[str(tmp_path / "eval")],
                   posteriors_method="dense")
    a, b = _records(tmp_path / "own"), _records(tmp_path / "saved")
    assert [r["top"] for r in a] == [r["top"] for r in b]
    assert len({tuple(r["top"]) for r in a}) > 1  # not one constant list
    assert saved["classification_error"] == own["classification_error"]
    assert saved["top_classes_from"]["posteriors"]["method"] == "dense" and "posteriors" in saved["table"]
    # a fusion of the same result with itself chooses the same classes
    fused = _dense(loc_set, nets, tmp_path, out=str(tmp_path / "fused"),
                   posteriors=[str(tmp_path / "eval"), str(tmp_path / "eval" / "posteriors.npz")],
                   posteriors_method="dense")
    assert [r["top"] for r in _records(tmp_path / "fused")] == [r["top"] for r in a]
    assert fused["rows"] == saved["rows"]
    with pytest.raises(UserError, match="multicrop"):
        _dense(loc_set, nets, tmp_path, posteriors=[str(tmp_path / "eval")], posteriors_method="both")


def test_classes_match_by_name_when_the_data_names_its_wnids():
    named = list(reversed(CLASSES))  # a classifier listing Fashion-MNIST names in another order
    order = class_order("c", named, 10, WNIDS, CLASSES)
    assert [named[i] for i in order] == CLASSES
    with pytest.raises(UserError, match="differ"):
        class_order("c", named, 10, WNIDS)


def test_the_overfeat_merge_preset_sits_beside_the_iou_one():
    iou = load_config(LocaliseEvalConfig, "localise-eval-small", [], checkpoints=["x.pt"], data="d")
    ovf = load_config(LocaliseEvalConfig, "localise-eval-small-overfeat", [], checkpoints=["x.pt"], data="d")
    assert iou.merge.match == "iou" and ovf.merge.match == "overfeat" and ovf.merge.t == pytest.approx(0.1)
    assert ovf.model_dump(exclude={"merge"}) == iou.model_dump(exclude={"merge"})


def test_table9_rows_scales_fusion_of_chosen_rows_and_the_central_crop(loc_set, nets, tmp_path):
    cls_path, loc = nets
    s = _dense(loc_set, nets, tmp_path, checkpoints=[str(loc)] * 3, net_scales=[[64], [64, 96], [96]],
               fusion_nets=[0, 2])
    by = {r["name"]: r for r in s["rows"]}
    assert [by[f"net{i}"]["test"] for i in range(3)] == ["64", "64,96", "96"]
    assert by["fusion"]["train"] == "fusion: 64/64 and 64/96"
    # one central-crop row per checkpoint (listed three times here, at other scales: one row)
    assert {"net0 crop", "whole image", "centre quarter"} <= set(by) and "net1 crop" not in by
    with pytest.raises(UserError, match="fusion_nets"):
        _dense(loc_set, nets, tmp_path, fusion_nets=[0, 3])


def test_images_kept_in_memory_train_exactly_as_read_every_epoch(loc_set, nets, tmp_path):
    cls_path, _ = nets
    runs = {}
    for mb in (0, 64):
        runs[mb] = run_localise_train(LocaliseTrainConfig(
            data=str(loc_set), classifier=str(cls_path), head="pcr", fine_tune="all", scale=64, epochs=2, batch_size=4,
            lr=0.01, cache_mb=mb, out=str(tmp_path / f"mb{mb}"), progress=False, runtime={"device": "cpu"}))
    assert [h["train_loss"] for h in runs[0]["history"]] == [h["train_loss"] for h in runs[64]["history"]]
    assert runs[0]["history"][1]["images"] == runs[64]["history"][1]["images"] == 20
    a = torch.load(runs[0]["last"], weights_only=True)["state_dict"]
    b = torch.load(runs[64]["last"], weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fc_only_at_s_equal_crop_reuses_conv_features_and_resumes_exactly(loc_set, nets, tmp_path):
    cls_path, _ = nets
    base = dict(data=str(loc_set), classifier=str(cls_path), head="pcr", fine_tune="fc", scale=32, batch_size=4,
                lr=0.01, progress=False, runtime={"device": "cpu"})
    memo = run_localise_train(LocaliseTrainConfig(**base, epochs=2, out=str(tmp_path / "memo")))
    plain = run_localise_train(LocaliseTrainConfig(**base, epochs=2, cache_mb=0, out=str(tmp_path / "plain")))
    run_localise_train(LocaliseTrainConfig(**base, epochs=1, out=str(tmp_path / "resumed")))
    resumed = run_localise_train(LocaliseTrainConfig(**base, epochs=2, out=str(tmp_path / "resumed")))
    loss = [h["train_loss"] for h in memo["history"]]
    assert loss == pytest.approx([h["train_loss"] for h in plain["history"]], rel=1e-4)
    assert loss == [h["train_loss"] for h in resumed["history"]]
    start = torch.load(cls_path, weights_only=True)["state_dict"]
    for run in (memo, resumed):
        sd = torch.load(run["last"], weights_only=True)["state_dict"]
        assert all(torch.equal(sd[k], start[k]) for k in sd if k.startswith("features."))
        assert not torch.equal(sd["classifier.0.weight"], start["classifier.0.weight"])
