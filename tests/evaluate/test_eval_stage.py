"""The evaluate stage on a real-image folder: outputs, recomputation, fusion, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pipeline.data import open_data
from pipeline.errors import UserError
from pipeline.evaluate import EvaluateConfig, classify, load_posteriors, run_evaluate, topk_error
from pipeline.models import load_model
from pipeline.preprocess import Normalization
from tests.helpers.evaluate import NORM, make_checkpoint


@pytest.fixture(scope="module")
def both_run(folder, ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return run_evaluate(EvaluateConfig(checkpoints=[str(ckpt)], data=str(folder), method="both", out=str(out))), out


def test_outputs_counts_and_posteriors(both_run, folder):
    res, out = both_run
    for name in ("posteriors.npz", "eval.json", "table.md", "table.csv", "config.yaml"):
        assert (out / name).is_file()
    assert json.loads((out / "eval.json").read_text())["top1_error"] == res["top1_error"]
    # 6 Fashion-MNIST images + 5 photos; the broken file is reported and left out of the counts
    assert res["n_images"] == 11 and res["n_failed"] == 1
    assert res["failed"][0]["key"].endswith("broken") and "not an image" in res["failed"][0]["reason"]
    assert res["scales"] == [[35, 40, 45]]  # fixed S=40, crop 32: {S-5, S, S+5} (32/224 of the paper's 32)
    post = load_posteriors(out)
    assert len(post.ids) == 11 and sorted(post.arrays) == sorted(
        (0, m, q) for m in ("dense", "multicrop") for q in (35, 40, 45))
    for arr in post.arrays.values():
        np.testing.assert_allclose(arr.sum(1), 1, atol=1e-5)
    # the reported errors are recomputed from the saved posteriors (average of dense and multi-crop)
    both = (post.select("dense") + post.select("multicrop")) / 2
    assert res["top1_error"] == topk_error(both, post.labels, 1)
    assert res["top5_error"] == topk_error(both, post.labels, 5)
    methods = [(r["test_Q"], r["method"]) for r in res["rows"]]
    assert ("35,40,45", "multi-crop & dense") in methods and ("40", "dense") in methods and len(methods) == 9
    md = (out / "table.md").read_text()
    assert "top-1 val. error (%)" in md and "multi-crop & dense" in md
    assert (out / "table.csv").read_text().splitlines()[0].startswith("config,train_S,test_Q,method")


def test_each_image_scores_as_if_alone(both_run, folder, ckpt):
    """Images are batched by size; each image's posteriors equal those of evaluating it alone."""
    _, out = both_run
    post = load_posteriors(out)
    net = load_model(ckpt)[0]
    norm = Normalization(**NORM)
    samples = {s.key: s for s in open_data(folder) if s.image is not None}
    first_of_size = {}
    for i, key in enumerate(post.ids):
        first_of_size.setdefault(samples[key].image.size, (i, key))
    assert len(first_of_size) == 6  # six different sizes are mixed in the run
    for i, key in first_of_size.values():
        alone = classify(net, samples[key].image, [35, 40, 45], norm, "both")
        np.testing.assert_allclose(post.select("both")[i], alone, rtol=1e-4, atol=1e-6)


def test_recompute_from_posteriors_and_subsets(both_run, tmp_path):
    res, out = both_run
    again = run_evaluate(EvaluateConfig(from_posteriors=[str(out)], method="both", out=str(tmp_path / "re")))
    assert again["top1_error"] == res["top1_error"] and again["rows"] == res["rows"]
    assert again["n_failed"] == res["n_failed"] == 1 and again["failed"] == res["failed"]
    dense40 = run_evaluate(EvaluateConfig(from_posteriors=[str(out / "posteriors.npz")], method="dense", scales=[40]))
    post = load_posteriors(out)
    assert dense40["top1_error"] == topk_error(post.arrays[(0, "dense", 40)], post.labels)
    assert dense40["scales"] == [[40]]
    with pytest.raises(UserError, match="no dense posteriors at Q"):
        run_evaluate(EvaluateConfig(from_posteriors=[str(out)], method="dense", scales=[50]))


def test_fusing_two_copies_equals_the_checkpoint(folder, ckpt, tmp_path):
    copy = tmp_path / "copy.pt"
    shutil.copy(ckpt, copy)
    kw = dict(data=str(folder), scales=[32, 40], limit=6)
    one = run_evaluate(EvaluateConfig(checkpoints=[str(ckpt)], out=str(tmp_path / "one"), **kw))
    two = run_evaluate(EvaluateConfig(checkpoints=[str(ckpt), str(copy)], out=str(tmp_path / "two"), **kw))
    p1, p2 = load_posteriors(tmp_path / "one"), load_posteriors(tmp_path / "two")
    np.testing.assert_allclose(p2.select("dense"), p1.select("dense"), rtol=1e-6)
    assert (two["top1_error"], two["top5_error"]) == (one["top1_error"], one["top5_error"])
    assert two["rows"][-1]["config"] == "(A/40/32,40), (A/40/32,40)"


def test_fusion_of_two_nets_and_of_two_runs(folder, ckpt, ckpt_b, tmp_path):
    joint = run_evaluate(EvaluateConfig(checkpoints=[str(ckpt), str(ckpt_b)], data=str(folder), limit=8,
                                        out=str(tmp_path / "joint")))
    assert joint["scales"] == [[35, 40, 45], [32, 48, 64]]  # B: jittered [32, 64] -> {min, mid, max}
    run_evaluate(EvaluateConfig(checkpoints=[str(ckpt_b)], data=str(folder), limit=8, out=str(tmp_path / "b")))
    pa = load_posteriors(tmp_path / "joint")
    merged = run_evaluate(EvaluateConfig(from_posteriors=[str(tmp_path / "joint"), str(tmp_path / "b")], nets=[0, 2]))
    assert merged["top1_error"] == joint["top1_error"]
    fused = (pa.select("dense", nets=[0]) + pa.select("dense", nets=[1])) / 2
    np.testing.assert_allclose(pa.select("dense"), fused)
    assert joint["top1_error"] == topk_error(fused, pa.labels)


def test_bad_input_is_a_clear_error(folder, ckpt, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(load_model(ckpt)[0].state_dict(), plain)
    with pytest.raises(UserError, match="no recorded model config"):
        run_evaluate(EvaluateConfig(checkpoints=[str(plain)], data=str(folder)))
    five = make_checkpoint(tmp_path / "five.pt", num_classes=5)
    with pytest.raises(UserError, match="predicts 5 classes but the data has 10"):
        run_evaluate(EvaluateConfig(checkpoints=[str(five)], data=str(folder)))
    with pytest.raises(UserError, match=r"test scales \[24\] are below the crop size 32"):
        run_evaluate(EvaluateConfig(checkpoints=[str(ckpt)], data=str(folder), scales=[24, 40]))
    with pytest.raises(UserError, match="not both or neither"):
        run_evaluate(EvaluateConfig(data=str(folder)))
    with pytest.raises(UserError, match="only_rgb"):
        run_evaluate(EvaluateConfig(checkpoints=[str(ckpt)], data=str(folder), split="only_rgb"))


def test_cli_json_and_one_line_errors(folder, ckpt, tmp_path, capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as ok:  # typer exits 0 on success
        main(["evaluate", str(ckpt), "--data", str(folder), "--scales", "single", "--limit", "6",
              "--out", str(tmp_path / "cli"), "--json"])
    assert ok.value.code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["method"] == "dense" and res["scales"] == [[40]] and res["n_images"] + res["n_failed"] == 6
    assert {"top1_error", "top5_error", "n_images"} <= set(res)
    with pytest.raises(SystemExit):  # without --json: the paper-format table and the errors, for people
        main(["evaluate", str(ckpt), "--data", str(folder), "--scales", "single", "--limit", "6",
              "--out", str(tmp_path / "cli")])
    text = capsys.readouterr().out
    assert "| ConvNet config. | train (S) | test (Q) | method | top-1 val. error (%) |" in text
    assert f"top-1 error {100 * res['top1_error']:.2f}%" in text and text.rstrip().endswith("eval.json")
    again = run_evaluate(EvaluateConfig(from_posteriors=[str(tmp_path / "cli")]))
    assert again["top1_error"] == res["top1_error"]
    with pytest.raises(UserError, match="has no multicrop posteriors"):
        run_evaluate(EvaluateConfig(from_posteriors=[str(tmp_path / "cli")], method="both"))
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(ckpt), "--data", str(folder), "--scales", "16"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "below the crop size" in err


def test_a_net_trained_on_other_classes_is_refused(tmp_path, folder):
    other = make_checkpoint(tmp_path / "other.pt", classes=[f"c{i}" for i in range(10)])
    with pytest.raises(UserError, match="trained on other classes than the data"):
        run_evaluate(EvaluateConfig(checkpoints=[str(other)], data=str(folder)))


def test_channels_last_and_bf16_switches(folder, ckpt, tmp_path):
    """The speed switches run the same protocol: channels-last equals float32 up to rounding,
    bf16 autocast is close (and off by default)."""
    kw = dict(checkpoints=[str(ckpt)], data=str(folder), method="both", scales=[40], limit=7)
    posts = {}
    for name, opts in (("ref", {}), ("cl", {"runtime": {"channels_last": True}}),
                       ("bf", {"runtime": {"channels_last": True, "bf16": True}})):
        res = run_evaluate(EvaluateConfig(**kw, **opts, out=str(tmp_path / name)))
        assert res["n_images"] == 6
        posts[name] = load_posteriors(tmp_path / name).select("both")
    np.testing.assert_allclose(posts["cl"], posts["ref"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(posts["bf"], posts["ref"], atol=0.05)
    assert not np.array_equal(posts["bf"], posts["ref"])  # bf16 really ran


def test_identical_rerun_returns_the_saved_result(both_run):
    res, out = both_run
    cfg = EvaluateConfig(**{**res["config"], "out": str(out)})
    again = run_evaluate(cfg)
    assert again["status"] == "exists" and again["top1_error"] == res["top1_error"]
    other = run_evaluate(cfg.model_copy(update={"limit": 2, "out": str(out.parent / "other")}))
    assert "status" not in other and other["n_images"] <= 2
