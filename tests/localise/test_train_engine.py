"""Localisation training on the shared training engine: a killed run continues as if never stopped, a finished
run is reused, another config in the same folder is refused (as in classification training)."""

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

from pipeline.errors import UserError
from pipeline.localise import LocaliseTrainConfig, run_localise_train

_OVER = dict(epochs=4, batch_size=2, scale=64, val_split="val", val_limit=2, progress=False)


def _argv(voc_tree: Path, classifier: Path, out: Path, **over) -> list[str]:
    sets = [x for k, v in {**_OVER, **over}.items() for x in ("--set", f"{k}={str(v).lower()}")]
    return [sys.executable, "-m", "pipeline", "localise", "train", "--data", str(voc_tree), "--classifier",
            str(classifier), "--out", str(out), *sets]


def _epoch(last: Path) -> int:
    try:
        return int(torch.load(last, weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def _rows(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"}
            for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_kill_9_then_rerun_equals_an_uninterrupted_run(voc_tree, voc_classifier, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(_argv(voc_tree, voc_classifier, tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while _epoch(last) < 1 and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    at_kill = _epoch(last)
    assert run.returncode == -signal.SIGKILL and 0 < at_kill < _OVER["epochs"]
    # what a kill during the next epoch end may leave: its metrics row (or part of it), a half-written checkpoint
    with open(tmp_path / "killed" / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": at_kill + 1, "lr": 1.0, "train_loss": 9.0}) + '\n{"epoch": ')
    stale = last.parent / ".last.pt.killed.tmp"
    stale.write_bytes(last.read_bytes()[:1000])
    again = subprocess.Popen(_argv(voc_tree, voc_classifier, tmp_path / "killed"), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    ref = dict(data=str(voc_tree), classifier=str(voc_classifier), out=str(tmp_path / "ref"))
    run_localise_train(LocaliseTrainConfig(**ref, runtime={"device": "cpu", "threads": 1}, **_OVER))
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert not stale.exists()
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["epoch"] == b["epoch"] == _OVER["epochs"] and a["stop"] == b["stop"] == "max_epochs 4"
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())  # bit for bit
    assert _rows(tmp_path / "ref") == _rows(tmp_path / "killed")  # each epoch once: none missing, none doubled
    hist = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert hist(a["history"]) == hist(b["history"]) == _rows(tmp_path / "ref")


def test_a_finished_run_is_reused_and_another_config_refused(voc_tree, voc_classifier, tmp_path):
    base = dict(data=str(voc_tree), classifier=str(voc_classifier), out=str(tmp_path / "run"), epochs=1,
                batch_size=8, scale=64, limit=6, val_split=None, head="scr", fine_tune="fc", progress=False,
                runtime={"device": "cpu"})
    first = run_localise_train(LocaliseTrainConfig(**base))
    assert first["stop"] == "max_epochs 1"
    saved = {p: p.read_bytes() for p in (Path(first.last), Path(first.best), Path(first.metrics))}
    again = run_localise_train(LocaliseTrainConfig(**{**base, "progress": True}))  # progress: resume-free
    assert again == first.model_copy(update={"config": again["config"]})  # its result, without training
    assert all(p.read_bytes() == b for p, b in saved.items())
    assert json.loads(Path(again.result_json).read_text())["stop"] == "max_epochs 1"
    with pytest.raises(UserError, match=r"another config or data \(config\.lr "):
        run_localise_train(LocaliseTrainConfig(**{**base, "lr": 0.5}))
