"""A run killed with kill -9 and continued with --resume ends exactly as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.train import chunks, fmnist_samples, tiny_config, write_shards


def _start(cfg: dict, path, *extra: str) -> subprocess.Popen:
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([sys.executable, "-m", "pipeline", "train", "--config", str(path), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _step(path) -> int:
    try:
        return torch.load(path, weights_only=True)["position"]["step"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    shards = write_shards(tmp_path / "shards", {"train": chunks(fmnist_samples("train", 32), [150, 100, 70]),
                                                "val": chunks(fmnist_samples("t10k", 6), [60])})
    over = {"schedule.max_epochs": 3, "checkpoint_every": 2, "model.dropout": 0.5, "data.workers": 1}
    ref_cfg = tiny_config(shards, tmp_path / "ref", **over)
    killed_cfg = tiny_config(shards, tmp_path / "killed", **over)
    ref = _start(ref_cfg, tmp_path / "ref.yaml")
    run = _start(killed_cfg, tmp_path / "killed.yaml")
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while _step(last) < 24 and run.poll() is None and time.time() < deadline:  # mid-way through epoch 2
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL
    at_kill = _step(last)
    assert 0 < at_kill < 60  # 3 epochs of 20 steps: killed before the end
    resumed = _start(killed_cfg, tmp_path / "killed.yaml", "--resume", "--json")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    _, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err[-2000:]
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["position"]["step"] == b["position"]["step"] == 60
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k  # bit for bit: same data, augmentation, dropout
    rows = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    ra, rb = rows(tmp_path / "ref"), rows(tmp_path / "killed")
    assert [(r["kind"], r["step"]) for r in ra] == [(r["kind"], r["step"]) for r in rb]  # no duplicate, none missing
    assert [r.get("top1") for r in ra] == [r.get("top1") for r in rb]
    assert json.loads(out)["steps"] == 60


def test_raising_max_epochs_on_resume_continues_a_finished_run_as_if_never_stopped(tmp_path):
    from pipeline.config import config_from
    from pipeline.errors import UserError
    from pipeline.train import TrainConfig, run_train

    shards = write_shards(tmp_path / "shards", {"train": chunks(fmnist_samples("train", 12), [70, 50]),
                                                "val": chunks(fmnist_samples("t10k", 4), [40])})
    over = {"data.workers": 0, "schedule.patience": 5, "progress": False}
    ref = run_train(
        config_from(TrainConfig, tiny_config(shards, tmp_path / "ref", **over, **{"schedule.max_epochs": 2}))
    )
    short = config_from(TrainConfig, tiny_config(shards, tmp_path / "ext", **over, **{"schedule.max_epochs": 1}))
    assert run_train(short)["stop"] == "max_epochs 1"
    again = run_train(short.model_copy(update={"resume": True}))  # same limit: nothing more to do
    assert again["epochs"] == 1
    longer = config_from(TrainConfig, tiny_config(shards, tmp_path / "ext", **over,
                                                  **{"schedule.max_epochs": 2, "resume": True}))
    ext = run_train(longer)
    assert ext["epochs"] == ref["epochs"] == 2 and ext["steps"] == ref["steps"] and ext["stop"] == "max_epochs 2"
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ext" / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    other = tiny_config(shards, tmp_path / "ext", **over, **{"schedule.max_epochs": 3, "resume": True, "optim.lr": 0.5})
    try:
        run_train(config_from(TrainConfig, other))
    except UserError as e:  # other settings than the limits are still refused
        assert "optim.lr" in str(e)
    else:
        raise AssertionError("a resume with another learning rate was accepted")


def test_a_field_added_after_the_checkpoint_is_not_a_config_difference():
    """last.pt of an older version lacks a newer field (e.g. data.decode): its default is what the run used."""
    from pipeline import reuse
    from pipeline.errors import UserError
    from pipeline.train.checkpoints import run_identity

    old = {"data": {"shards": "s", "scale": {"s_min": 37}}, "optim": {"lr": 0.01}}
    new = {"data": {"shards": "s", "scale": {"s_min": 37}, "decode": "cpu"}, "optim": {"lr": 0.01}}

    def check(recorded: dict, config: dict, data: str = "fp") -> str:
        rec, ident = run_identity(recorded, "fp", config, data, free=set())
        from pipeline.train.engine import _RunFolder

        return reuse.check_reusable(_RunFolder(Path("last.pt"), rec, "dataset"), ident)

    assert check(old, new) == "reuse"
    with pytest.raises(UserError, match=r"config\.optim\.lr 0\.01 vs 0\.02"):
        check(old, {**new, "optim": {"lr": 0.02}})
    with pytest.raises(UserError, match=r"config\.data\.decode 'cpu' vs None"):  # a recorded setting now absent
        check(new, old)
    with pytest.raises(UserError, match=r"dataset fingerprint 'fp' vs 'other'"):
        check(old, new, data="other")
