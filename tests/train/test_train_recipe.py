"""The recipe's parts: plateau schedule (hand cases), batch split, top-k counts vs sklearn, init from A."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.models import ModelConfig, build_model, init_weights, save_checkpoint
from pipeline.train.classification import topk_correct
from pipeline.train.config import InitConfig, ScheduleConfig
from pipeline.train.recipe import PlateauSchedule, batch_split, initialise


def test_plateau_schedule_divides_three_times_then_stops():
    s = PlateauSchedule.from_config(1e-2, ScheduleConfig())
    events = [s.update(v, e) for e, v in enumerate([0.5, 0.6, 0.6, 0.7, 0.65, 0.7, 0.71, 0.70], 1)]
    assert events == ["improved", "improved", "drop", "improved", "drop", "drop", "improved", "stop"]
    assert s.lr == pytest.approx(1e-5) and s.drops == 3 and s.stopped
    assert s.best == 0.71 and s.best_epoch == 7


def test_plateau_patience_and_min_delta():
    s = PlateauSchedule(lr=0.1, lr_drops=1, patience=2, min_delta=0.01)
    assert [s.update(v, e) for e, v in enumerate([0.5, 0.505, 0.52, 0.52, 0.52, 0.52, 0.52], 1)] == \
        ["improved", "wait", "improved", "wait", "drop", "wait", "stop"]
    assert s.lr == pytest.approx(0.01)
    t = PlateauSchedule(lr=1.0)
    t.load_state_dict(s.state_dict())
    assert t == s


def test_batch_split():
    assert batch_split(256, 1, None) == (256, 256, 1)
    assert batch_split(256, 4, 32) == (64, 32, 2)
    with pytest.raises(UserError, match="does not divide among 3 ranks"):
        batch_split(256, 3, None)
    with pytest.raises(UserError, match="micro_batch"):
        batch_split(256, 2, 48)


def test_topk_counts_match_sklearn():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import top_k_accuracy_score

    x, y = load_digits(return_X_y=True)
    clf = LogisticRegression(max_iter=30).fit(x[:40] / 16, y[:40])
    scores = clf.decision_function(x[300:700] / 16)
    yt = y[300:700]
    c1, c5, c3 = topk_correct(torch.tensor(scores), torch.tensor(yt), ks=(1, 5, 3))
    assert c1 / len(yt) == pytest.approx(top_k_accuracy_score(yt, scores, k=1))
    assert c5 / len(yt) == pytest.approx(top_k_accuracy_score(yt, scores, k=5))
    assert c3 / len(yt) == pytest.approx(top_k_accuracy_score(yt, scores, k=3))
    assert c1 < c3 <= c5 <= len(yt) and c1 < len(yt) - 20  # a real, imperfect classifier
    two = torch.tensor(scores[:, :2])
    assert topk_correct(two, torch.zeros(len(yt), dtype=torch.long))[1] == len(yt)  # k capped at 2 classes


def _small(config: str, **kw) -> ModelConfig:
    return ModelConfig(config=config, num_classes=10, width=0.125, fc_width=32, crop=32, **kw)


def test_initialise_from_net_a_copies_the_papers_layers(tmp_path):
    a = init_weights(build_model(_small("A")), "glorot", seed=1)
    classes = [f"c{i}" for i in range(10)]
    save_checkpoint(tmp_path / "a.pt", a, meta={"classes": classes})
    d = build_model(_small("D"))
    info = initialise(d, InitConfig(method="glorot", seed=2, net_a=str(tmp_path / "a.pt")), classes)
    assert info["net_a"]["layers"] == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"]
    la, ld = a.named_weight_layers(), d.named_weight_layers()
    for name in info["net_a"]["layers"]:
        assert torch.equal(la[name].weight, ld[name].weight)
    assert not torch.equal(
        ld["conv1_2"].weight,
        init_weights(build_model(_small("D")), "glorot", seed=3).named_weight_layers()["conv1_2"].weight,
    )
    with pytest.raises(UserError, match="other classes"):
        initialise(build_model(_small("D")), InitConfig(net_a=str(tmp_path / "a.pt")), [f"x{i}" for i in range(10)])


def test_initialise_fine_tune_needs_same_architecture(tmp_path):
    a = init_weights(build_model(_small("A")), "glorot", seed=1)
    save_checkpoint(tmp_path / "a.pt", a, meta={})
    b = build_model(_small("A", dropout=0.0))
    initialise(b, InitConfig(checkpoint=str(tmp_path / "a.pt")), [])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=False))
    with pytest.raises(UserError, match="same architecture"):
        initialise(build_model(_small("B")), InitConfig(checkpoint=str(tmp_path / "a.pt")), [])
    with pytest.raises(ValueError):
        InitConfig(checkpoint="x", net_a="y")


def test_paper_init_statistics():
    m = init_weights(build_model(_small("A")), "paper", std=1e-2, seed=0)
    w = torch.cat([p.detach().flatten() for n, p in m.named_parameters() if n.endswith("weight")]).numpy()
    assert abs(w.std() - 1e-2) < 5e-4 and abs(w.mean()) < 5e-4
    assert all(float(p.abs().sum()) == 0 for n, p in m.named_parameters() if n.endswith("bias"))
    assert np.isfinite(w).all()
