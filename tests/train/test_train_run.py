"""``run_train`` end to end on real Fashion-MNIST shards: learning, outputs, schedule, bad input, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import config_from, load_config
from pipeline.errors import UserError
from pipeline.models import load_model
from pipeline.results import TrainResult
from pipeline.train import TrainConfig, run_train
from tests.helpers.train import chunks, fmnist_samples, tiny_config, write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """400 training images in three uneven shards, 200 validation images in two, with statistics."""
    root = tmp_path_factory.mktemp("fm")
    tr, va = fmnist_samples("train", 40), fmnist_samples("t10k", 20)
    return write_shards(root / "shards", {"train": chunks(tr, [200, 120, 80]), "val": chunks(va, [120, 80])})


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    """A finished three-epoch run (shared by several tests)."""
    out = tmp_path_factory.mktemp("run") / "a"
    cfg = config_from(TrainConfig, tiny_config(shards, out, **{"schedule.max_epochs": 3}))
    return cfg, run_train(cfg)


def _rows(out, kind):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_a_small_net_learns_fashion_mnist(trained):
    cfg, res = trained
    val = _rows(Path(res["out"]), "val")
    assert [r["epoch"] for r in val] == [1, 2, 3]
    assert res["best_top1"] == max(r["top1"] for r in val) and res["final"]["images"] == 200
    assert res["best_top1"] > 0.35, val  # chance is 0.10
    train = _rows(Path(res["out"]), "train")
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    assert res["steps"] == 3 * (400 // 16) and res["stop"] == "max_epochs 3"
    text = res.summary()  # what `vgg train` prints (--json: the result)
    assert text.startswith(f"{res.out}: 3 epochs, {res.steps} SGD steps") and "stopped: max_epochs 3" in text
    assert f"best val top-1 error {100 * (1 - res.best_top1):.2f}% (epoch {res.best_epoch})" in text
    assert f"best: {res.best}" in text and f"last: {res.last}" in text


def test_outputs_and_checkpoint_meta(trained, shards):
    cfg, res = trained
    out = Path(res.out)
    # the result names the run's files, and train.json holds the same result (the train flow reads it)
    assert (res.last, res.best, res.metrics, res.config) == tuple(
        str(out / p) for p in ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "config.yaml"))
    assert TrainResult.model_validate_json(Path(res.result_json).read_text()) == res
    assert config_from(TrainConfig, yaml.safe_load((out / "config.yaml").read_text())) == cfg
    man = json.loads((shards / "manifest.json").read_text())
    model, ck = load_model(out / "checkpoints" / "best.pt")
    meta = ck["meta"]
    assert meta["normalization"]["mean"] == pytest.approx(man["stats"]["mean"])
    assert meta["normalization"]["std"] == [1.0, 1.0, 1.0]
    assert meta["train_scale"] == {"s_min": 32, "s_max": 40}
    assert meta["classes"] == man["classes"] and meta["dataset_fingerprint"] == man["fingerprint"]
    assert meta["config"] == cfg.model_dump(mode="json") and meta["val"]["top1"] == res["best_top1"]
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert {"optimizer", "schedule", "position", "rng"} <= set(last)
    assert last["position"]["finished"] and last["position"]["epoch"] == 3
    # evaluating the best checkpoint's centre crops by hand gives the recorded top-1
    from pipeline.preprocess import normalization_of, normalize
    from pipeline.shards import iter_samples
    from pipeline.transforms import CentreCropView

    view = CentreCropView(q=36, crop=32)
    xs, ys = zip(*[(view(s["jpg"]), s["cls"]) for s in iter_samples(shards, "val")], strict=False)
    with torch.no_grad():
        pred = model(normalize(torch.stack(xs), normalization_of(ck))).argmax(1)
    assert (pred == torch.tensor(ys)).float().mean().item() == pytest.approx(meta["val"]["top1"])


def test_plateau_schedule_drops_lr_then_stops(shards, tmp_path):
    # min_delta 1.0: only the first epoch counts as an improvement, so: improved, drop, stop
    cfg = config_from(TrainConfig, tiny_config(shards, tmp_path / "p", **{
        "schedule.max_epochs": 10, "schedule.lr_drops": 1, "schedule.min_delta": 1.0, "data.epoch_images": 64}))
    res = run_train(cfg)
    val = _rows(tmp_path / "p", "val")
    assert [r["event"] for r in val] == ["improved", "drop", "stop"]
    assert [r["lr"] for r in val] == pytest.approx([0.003, 0.003, 0.0003]) and res["lr_drops"] == 1
    assert res["epochs"] == 3 and "stopped improving" in res["stop"]
    assert [r["lr"] for r in _rows(tmp_path / "p", "train") if r["epoch"] == 3] == pytest.approx([0.0003] * 2)


def test_gradient_accumulation_equals_the_whole_batch(shards, tmp_path):
    common = {"schedule.max_steps": 3, "data.val_split": None}
    a = run_train(config_from(TrainConfig, tiny_config(shards, tmp_path / "whole", **common)))
    b = run_train(config_from(TrainConfig, tiny_config(shards, tmp_path / "acc", **common, **{"optim.micro_batch": 8})))
    assert a["steps"] == b["steps"] == 3
    wa = torch.load(a["last"], weights_only=True)["state_dict"]
    wb = torch.load(b["last"], weights_only=True)["state_dict"]
    w0 = torch.load(a["last"], weights_only=True)
    assert w0["position"]["step"] == 3
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def _bad(shards, tmp_path, **over):
    out = tmp_path / "bad"
    cfg = config_from(TrainConfig, tiny_config(shards, out, **over))
    with pytest.raises(UserError) as e:
        run_train(cfg)
    assert not (out / "checkpoints" / "last.pt").exists() and not (out / "metrics.jsonl").exists()
    return str(e.value)


def test_bad_input_is_refused_before_any_step(shards, tmp_path, trained):
    assert "manifest" in _bad(shards, tmp_path, **{"data.shards": str(tmp_path / "nowhere")})
    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    (broken / "train-000001.tar").unlink()
    assert "missing" in _bad(broken, tmp_path)
    nostats = tmp_path / "nostats"
    shutil.copytree(shards, nostats)
    man = json.loads((nostats / "manifest.json").read_text())
    del man["stats"]
    (nostats / "manifest.json").write_text(json.dumps(man))
    assert "vgg stats" in _bad(nostats, tmp_path, **{"data.mean": [73.0, 73.0, 73.0]})
    assert "vgg stats" in _bad(nostats, tmp_path, **{"data.colour_shift": 0.0})
    assert "num_classes" in _bad(shards, tmp_path, **{"model.num_classes": 7})
    assert "must divide" in _bad(shards, tmp_path, **{"optim.micro_batch": 12})
    assert "below the crop" in _bad(shards, tmp_path, **{"data.scale": {"s_min": 28, "s_max": 40}})
    assert "not found" in _bad(shards, tmp_path, **{"init.net_a": str(tmp_path / "a.pt")})
    # a net A trained on other classes
    _, res = trained
    other = tmp_path / "other"
    shutil.copytree(shards, other)
    man = json.loads((other / "manifest.json").read_text())
    man["classes"] = [c.upper() for c in man["classes"]]
    (other / "manifest.json").write_text(json.dumps(man))
    assert "other classes" in _bad(other, tmp_path, **{"init.net_a": res["best"], "model.config": "B"})


def test_resume_refuses_another_config_or_other_shards(shards, tmp_path):
    first = tiny_config(shards, tmp_path / "r", **{"schedule.max_steps": 2, "data.val_split": None})
    run_train(config_from(TrainConfig, first))
    with pytest.raises(UserError, match="already holds a training run"):
        run_train(config_from(TrainConfig, first))
    with pytest.raises(UserError, match=r"another config or data \(config\.optim\.lr "):
        run_train(config_from(TrainConfig, {**first, "resume": True, "optim": {"lr": 0.5, "batch_size": 16}}))
    rebuilt = tmp_path / "rebuilt"  # same folder layout, other images: another fingerprint
    write_shards(rebuilt, {"train": chunks(fmnist_samples("train", 40, start=40), [200, 200])}, source="other")
    with pytest.raises(UserError, match=r"another config or data \(shards fingerprint "):
        run_train(
            config_from(TrainConfig, {**first, "resume": True, "data": {**first["data"], "shards": str(rebuilt)}})
        )
    # moved shards (same fingerprint, another path) resume fine
    moved = tmp_path / "moved"
    shutil.copytree(shards, moved)
    res = run_train(
        config_from(TrainConfig, {**first, "resume": True, "data": {**first["data"], "shards": str(moved)}})
    )
    assert res["steps"] == 2 and "max_steps" in res["stop"]
    # so does a moved run folder: its finished run is returned, from where it now is
    shutil.copytree(tmp_path / "r", tmp_path / "r2")
    res = run_train(config_from(TrainConfig, {**first, "resume": True, "out": str(tmp_path / "r2")}))
    assert res["steps"] == 2 and res["last"] == str(tmp_path / "r2" / "checkpoints" / "last.pt")


def test_cli_prints_one_line_errors(shards, tmp_path, capsys):
    from pipeline.cli import main

    cfg = tiny_config(shards, tmp_path / "cli", **{"data.shards": str(tmp_path / "missing")})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", str(tmp_path / "c.yaml")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "manifest" in err and "\n" not in err
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "c.yaml"), "--set", "optim.momentum=2"])
    assert "optim.momentum" in capsys.readouterr().err


PRESETS = ["fmnist-a", "fmnist-d", "fmnist-demo-a", "fmnist-demo-d"] + [
    f"paper-{c}-{s}" for c in ("a", "a-lrn", "b", "c", "d", "e") for s in ("s256", "s384", "s256-512")]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    cfg = load_config(TrainConfig, name)
    if name.startswith("paper"):
        assert cfg.optim.batch_size == 256 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4
        assert (
            cfg.model.dropout == 0.5 and cfg.model.crop == 224 and cfg.model.width == 1 and cfg.model.fc_width == 4096
        )
        assert cfg.schedule.lr_drops == 3 and cfg.data.colour_shift == 0.1 and cfg.data.std == (1.0, 1.0, 1.0)
        s = name.rsplit("-", 1)[-1] if not name.endswith("512") else "s256-512"
        want = {"s256": (256, 256, 1e-2), "s384": (384, 384, 1e-3), "s256-512": (256, 512, 1e-3)}[s]
        assert (cfg.data.scale.s_min, cfg.data.scale.s_max, cfg.optim.lr) == pytest.approx(want)
        if s == "s256":
            assert (cfg.init.net_a is None) == (cfg.model.config in ("A", "A-LRN"))
        else:
            assert cfg.init.checkpoint and cfg.init.net_a is None
    else:
        # the small A presets train at a fixed S (like the paper's A), the D presets jitter
        assert (cfg.data.scale.s_max > cfg.data.scale.s_min) == name.endswith("-d")
        assert cfg.runtime.channels_last and cfg.runtime.bf16 == "auto"
        if name.endswith("-d"):
            assert cfg.init.net_a and cfg.model.config == "D"
