"""The decision rule: paired standard errors against McNemar's discordant counts, and each rule's cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.reproduce.findings import Comparison, decide, paired, unpaired
from pipeline.reproduce.plan import QUICK, RUNS, run_by_id, selected, train_settings
from pipeline.reproduce.runner import ReproduceConfig, resolve_budget
from pipeline.train.config import TrainConfig


def test_paired_se_matches_discordant_counts() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random(5000) < 0.12).astype(float)
    b = (rng.random(5000) < 0.10).astype(float)
    c = paired(a, b, "a - b")
    n = len(a)
    worse_only, better_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    mean = (worse_only - better_only) / n  # McNemar's discordant pairs give the paired difference and its variance
    var = (worse_only + better_only - n * mean**2) / (n - 1)
    assert c.diff == pytest.approx(mean)
    assert c.se == pytest.approx(math.sqrt(var / n))


def test_unpaired_se_is_binomial() -> None:
    c = unpaired(0.3, 0.2, 500, "x")
    assert c.diff == pytest.approx(0.1)
    assert c.se == pytest.approx(math.sqrt((0.3 * 0.7 + 0.2 * 0.8) / 500))


def test_rule_needs_more_than_two_se() -> None:
    assert Comparison("x", 0.0101, 0.005).holds()
    assert not Comparison("x", 0.0099, 0.005).holds()
    assert not Comparison("x", -0.05, 0.005).holds()
    assert Comparison("voc", 0.001, None).holds()  # no SE: the sign decides


def test_decide_cases() -> None:
    yes, no = Comparison("y", 0.02, 0.005), Comparison("n", 0.001, 0.005)
    assert decide("depth", [yes, yes], "")["reproduced"] is True
    assert decide("depth", [yes, no], "")["reproduced"] is False
    assert decide("depth", None, "")["reproduced"] is None
    # "no improvement": refuted only when the reverse ordering holds by 2 SE
    assert decide("lrn", [Comparison("lrn", -0.005, 0.005)], "", no_gain=True)["reproduced"] is True
    assert decide("lrn", [Comparison("lrn", -0.02, 0.005)], "", no_gain=True)["reproduced"] is False
    # scale jitter: every difference positive, two of three beyond 2 SE
    assert decide("scale-jitter", [yes, yes, no], "", need=2)["reproduced"] is True
    assert decide("scale-jitter", [yes, yes, Comparison("neg", -0.001, 0.005)], "", need=2)["reproduced"] is False


def test_only_adds_the_runs_needed() -> None:
    runs, exps = selected(["D-jitter"])
    assert [r.id for r in runs] == ["A-fixed", "D-jitter"] and exps == []
    runs, exps = selected(["transfer", "localisation"])
    assert [r.id for r in runs] == ["A-fixed", "D-fixed", "D-jitter", "E-jitter"]
    assert exps == ["localisation", "transfer"]
    with pytest.raises(UserError, match="unknown id"):
        selected(["F-fixed"])
    runs, _ = selected(["B-fixed"], seeds=3)  # repeats after the runs they repeat, from the same net A
    assert [r.id for r in runs] == ["A-fixed", "B-fixed", "A-fixed-seed1", "B-fixed-seed1", "A-fixed-seed2",
                                    "B-fixed-seed2"]
    assert runs[3].seed == 1 and runs[3].init_from == "A-fixed" and runs[3].base == "B-fixed"
    assert run_by_id("B-fixed-seed2") == runs[5] and run_by_id("B-fixed") == runs[1]
    s1 = train_settings(runs[3], QUICK)
    assert s1["seed"] == s1["init"]["seed"] == 1 and train_settings(runs[1], QUICK)["seed"] == 0


def test_every_run_is_a_valid_training_config(tmp_path) -> None:
    for run in RUNS:
        d = train_settings(run, QUICK)
        d["data"]["shards"], d["out"] = str(tmp_path), str(tmp_path / run.id)
        cfg = TrainConfig.model_validate(d)
        assert cfg.model.config == run.net and (cfg.data.scale.s_min, cfg.data.scale.s_max) == run.scale


def test_budget_overrides_keep_the_mode() -> None:
    b = resolve_budget(ReproduceConfig.model_validate({"quick": True, "budget": {"max_epochs": 3}}))
    assert b.max_epochs == 3 and b.train_per_class == QUICK.train_per_class


def test_records_reuse_refuse_and_never_half_written(tmp_path) -> None:
    from pipeline.reproduce.runner import Records

    book = Records(tmp_path / "records")
    calls = []
    rec = book.step("A-fixed", {"lr": 0.01}, lambda: calls.append(1) or {"top1": 0.1})
    assert rec["top1"] == 0.1 and book.step("A-fixed", {"lr": 0.01}, lambda: calls.append(1) or {}) == rec
    assert calls == [1]  # the second call reused the record
    with pytest.raises(UserError, match=r"other settings \(lr 0.01 vs 0.02\)"):
        book.step("A-fixed", {"lr": 0.02}, dict)

    def killed() -> dict:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        book.step("B-fixed", {}, killed)
    assert book.get("B-fixed") is None and sorted(p.name for p in book.folder.iterdir()) == ["A-fixed.json"]


def test_a_second_run_on_the_same_workdir_is_refused(tmp_path) -> None:
    from pipeline.locks import exclusive
    from pipeline.reproduce.runner import run_reproduce

    (tmp_path / "w").mkdir()
    with exclusive(tmp_path / "w" / ".lock", "test"), pytest.raises(UserError, match="another run"):
        run_reproduce(ReproduceConfig(workdir=str(tmp_path / "w"), quick=True, progress=False))
