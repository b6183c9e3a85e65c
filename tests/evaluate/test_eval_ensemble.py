"""Table 6 (paper 4.4) rebuilt by `vgg table ensemble` from saved evaluation runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.evaluate import EvaluateConfig, load_posteriors, run_evaluate
from pipeline.evaluate.ensemble import EnsembleConfig, run_ensemble


def _independent(npz_paths, method):
    """Fused top-1/top-5 error (%) straight from the npz arrays: mean over Q, then methods, then nets."""
    per_net, labels = [], None
    for path in npz_paths:
        with np.load(path) as z:
            labels = z["labels"]
            nets = sorted({k.split(".")[1] for k in z.files if k.startswith("p.")})
            for net in nets:
                def avg(m, net=net):
                    return np.mean([z[k].astype(np.float64) for k in z.files if k.startswith(f"p.{net}.{m}.")], 0)
                per_net.append(avg("dense") if method == "dense" else (avg("dense") + avg("multicrop")) / 2)
    fused = np.mean(per_net, 0)
    order = np.argsort(-fused, 1)
    top1 = 100 * np.mean(order[:, 0] != labels)
    top5 = 100 * np.mean([lab not in row[:5] for lab, row in zip(labels, order, strict=False)])
    return round(float(top1), 2), round(float(top5), 2)


@pytest.fixture(scope="module")
def runs(folder, ckpt, ckpt_b, tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    kw = dict(data=str(folder), limit=10, method="both", scales=[32, 40])
    joint = run_evaluate(EvaluateConfig(checkpoints=[str(ckpt), str(ckpt_b)], out=str(root / "joint"), **kw))
    run_evaluate(EvaluateConfig(checkpoints=[str(ckpt)], out=str(root / "a"), **kw))
    run_evaluate(EvaluateConfig(checkpoints=[str(ckpt_b)], out=str(root / "b"), **kw))
    return root, joint


def test_table_ensemble_reproduces_the_fusion_rows(runs, capsys):
    root, joint = runs
    with pytest.raises(SystemExit) as e:
        main(["table", "ensemble", str(root / "a"), str(root / "b" / "posteriors.npz"), "--json"])
    assert e.value.code in (0, None)
    res = json.loads(capsys.readouterr().out)
    rows = res["rows"]
    assert [r["method"] for r in rows] == ["dense", "multi-crop", "multi-crop & dense"]
    fusion = joint["rows"][-3:]  # what `vgg evaluate` printed for the two nets evaluated together
    for mine, theirs in zip(rows, fusion, strict=False):
        assert mine["models"] == theirs["config"] == "(A/40/32,40), (B/[32;64]/32,40)"
        assert (mine["top1_error_pct"], mine["top5_error_pct"], mine["n_images"]) == \
            (theirs["top1_error_pct"], theirs["top5_error_pct"], theirs["n_images"])
    npz = [root / "a" / "posteriors.npz", root / "b" / "posteriors.npz"]
    assert (rows[0]["top1_error_pct"], rows[0]["top5_error_pct"]) == _independent(npz, "dense")
    assert (rows[2]["top1_error_pct"], rows[2]["top5_error_pct"]) == _independent(npz, "both")
    assert [n["label"] for n in res["nets"]] == ["A", "B"]


def test_groups_methods_markdown_and_errors(runs, tmp_path):
    root, joint = runs
    res = run_ensemble(EnsembleConfig(runs=[str(root / "joint"), str(root / "b")], groups=[[0, 1], [1, 2]],
                                      methods=["dense"], out=str(tmp_path / "t6.md")))
    assert [r["nets"] for r in res["rows"]] == [[0, 1], [1, 2]]
    assert res["rows"][0]["top1_error_pct"] == joint["rows"][-3]["top1_error_pct"]
    md = (tmp_path / "t6.md").read_text()
    assert md.startswith("**Table 6") and "| (A/40/32,40), (B/[32;64]/32,40) | dense |" in md
    with pytest.raises(UserError, match="numbered 0..2"):
        run_ensemble(EnsembleConfig(runs=[str(root / "joint"), str(root / "b")], groups=[[0, 3]]))
    post = load_posteriors(root / "a")
    post.arrays = {k: v for k, v in post.arrays.items() if k[1] == "dense"}
    post.save(tmp_path / "dense.npz")
    res = run_ensemble(EnsembleConfig(runs=[str(tmp_path / "dense.npz"), str(root / "b")]))
    assert [r["method"] for r in res["rows"]] == ["dense"]  # only what every net has
    with pytest.raises(UserError, match="net 0 \\(A\\) has no multicrop posteriors"):
        run_ensemble(EnsembleConfig(runs=[str(tmp_path / "dense.npz"), str(root / "b")], methods=["both"]))
    with pytest.raises(UserError, match="not found"):
        run_ensemble(EnsembleConfig(runs=[str(tmp_path / "nothing")]))
