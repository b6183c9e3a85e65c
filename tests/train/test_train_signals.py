"""Preemption (SIGTERM) and Ctrl-C (SIGINT) of a training run (paper 3.1 training, 3.3 multi-device).

Real subprocesses of ``vgg train`` and of ``torchrun`` on small Fashion-MNIST shards: the signal
arrives mid-epoch (once ``metrics.jsonl`` shows step 2), the run finishes that SGD step, saves
``last.pt`` there, prints one line and exits with 128 + the signal; the rerun with ``--resume``
ends with exactly the weights of an uninterrupted run. Loader workers ignore the signals their
process group receives (a terminal's Ctrl-C, torchrun's forwarding) and exit quietly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import signals
from tests.helpers.train import chunks, fmnist_samples, tiny_config, write_shards

STEPS = 60  # 3 epochs of 20 steps
LINE = re.compile(r"^stopped by (SIGTERM|SIGINT) at epoch (\d+) step (\d+); rerun to resume$")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sig")
    return write_shards(root / "shards", {"train": chunks(fmnist_samples("train", 32), [150, 100, 70]),
                                          "val": chunks(fmnist_samples("t10k", 6), [60])})


def _config(shards: Path, out: Path, workers: int) -> Path:
    cfg = tiny_config(shards, out, **{"schedule.max_epochs": 3, "model.dropout": 0.5, "data.workers": workers,
                                      "checkpoint_every": 0})
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(cmd: list[str]) -> subprocess.Popen:
    """A run in its own process group (as a shell starts a job), so the group can be signalled like Ctrl-C does."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _vgg_train(config: Path, *extra: str) -> subprocess.Popen:
    return _start([sys.executable, "-m", "pipeline", "train", "--config", str(config), *extra])


def _rows(out: Path) -> list[dict]:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return rows


def _stop_mid_epoch(proc: subprocess.Popen, out: Path, sig: int, group: bool) -> tuple[str, str, float]:
    """Wait until a training row beyond the first step, send ``sig``; (stdout, stderr, seconds to exit)."""
    deadline = time.monotonic() + 300
    while not any(r["kind"] == "train" and r["step"] >= 2 for r in _rows(out)):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no training row after 300 s"
        time.sleep(0.01)
    sent = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, sig)
    o, e = proc.communicate(timeout=120)
    return o, e, time.monotonic() - sent


def _the_line(stdout: str, stderr: str, name: str) -> tuple[int, int]:
    """The one stop line (the last of stderr, once), and no traceback anywhere; its (epoch, step)."""
    assert "Traceback" not in stdout + stderr and "internal error" not in stderr, stderr[-3000:]
    ours = [ln for ln in stderr.splitlines() if ln.startswith("stopped by")]
    assert len(ours) == 1 and stderr.splitlines()[-1] == ours[0], stderr[-3000:]
    m = LINE.match(ours[0])
    assert m and m.group(1) == name, ours
    return int(m.group(2)), int(m.group(3))


def _position(path: Path) -> dict:
    return torch.load(path, weights_only=True)["position"]


def _same_weights(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True)["state_dict"], torch.load(b, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k  # bit for bit


def _group_gone(pgid: int, timeout: float = 20.0) -> bool:
    """No process (loader workers included) is left in the run's process group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _check_stop_and_resume(shards: Path, tmp_path: Path, workers: int, group: bool) -> None:
    ref = _vgg_train(_config(shards, tmp_path / "ref", workers), "--json")
    cfg = _config(shards, tmp_path / "run", workers)
    run = _vgg_train(cfg)
    out, err, seconds = _stop_mid_epoch(run, tmp_path / "run", signal.SIGTERM, group)
    assert run.returncode == 143, err[-3000:]
    assert seconds < 30
    assert out == ""  # no result: the run is not finished
    epoch, step = _the_line(out, err, "SIGTERM")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    pos = _position(last)
    assert pos["step"] == step >= 2 and step < STEPS and not pos["finished"]
    assert pos["epoch"] + 1 == epoch and pos["step_in_epoch"] == step - 20 * pos["epoch"]
    assert _group_gone(run.pid)
    resumed = _vgg_train(cfg, "--resume", "--json")
    rout, rerr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, rerr[-3000:]
    assert f"resuming after epoch {pos['epoch']}, step {step}" in rerr
    rout_ref, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err[-3000:]
    assert json.loads(rout)["steps"] == json.loads(rout_ref)["steps"] == STEPS
    _same_weights(tmp_path / "ref" / "checkpoints" / "last.pt", last)
    # the same metrics rows at the same steps: none lost, none twice
    assert [(r["kind"], r["step"]) for r in _rows(tmp_path / "ref")] == [(r["kind"], r["step"])
                                                                          for r in _rows(tmp_path / "run")]


def test_sigterm_mid_epoch_saves_that_step_and_the_rerun_is_bit_identical(shards, tmp_path):
    _check_stop_and_resume(shards, tmp_path, workers=0, group=False)


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_two_loader_workers(shards, tmp_path):
    """The workers receive the SIGTERM too (as under a scheduler or torchrun): they ignore it, the main process
    stops after the step and shuts them down."""
    _check_stop_and_resume(shards, tmp_path, workers=2, group=True)


def test_ctrl_c_with_loader_workers_is_one_line_and_exit_130(shards, tmp_path):
    """Ctrl-C: SIGINT to the whole foreground process group, the two loader workers included."""
    run = _vgg_train(_config(shards, tmp_path / "run", workers=2))
    out, err, seconds = _stop_mid_epoch(run, tmp_path / "run", signal.SIGINT, group=True)
    assert run.returncode == 130, err[-3000:]
    assert seconds < 30
    _, step = _the_line(out, err, "SIGINT")
    assert "interrupted" not in err and "KeyboardInterrupt" not in err
    assert _position(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == step
    assert _group_gone(run.pid)


def _torchrun(config: Path, *extra: str) -> subprocess.Popen:
    return _start([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "pipeline", "train", "--config", str(config), *extra])


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_and_the_rerun_is_bit_identical(shards, tmp_path):
    """torchrun forwards SIGTERM to each rank's process group; the ranks agree on the step (a max over ranks)."""
    ref = _torchrun(_config(shards, tmp_path / "ref", 0))
    cfg = _config(shards, tmp_path / "run", 0)
    run = _torchrun(cfg)
    out, err, seconds = _stop_mid_epoch(run, tmp_path / "run", signal.SIGTERM, group=False)
    assert seconds < 30
    # torch 2.x: the agent logs that it forwards the signal, then torchrun ends with its own SignalException
    # traceback (exit 1); none of it comes from our processes
    assert run.returncode in (1, 143, -signal.SIGTERM), err[-3000:]
    assert "Traceback" not in out and "internal error" not in err
    frames = re.findall(r'File "([^"]+)"', err)
    assert all(f.startswith("<frozen") or "torch" in Path(f).parts for f in frames), err[-3000:]
    ours = [ln for ln in err.splitlines() if ln.startswith("stopped by")]
    assert len(ours) == 1, err[-3000:]  # rank 0 only
    m = LINE.match(ours[0])
    assert m and m.group(1) == "SIGTERM"
    step = int(m.group(3))
    assert _position(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == step < STEPS
    resumed = _torchrun(cfg, "--resume")
    _, rerr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, rerr[-3000:]
    _, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err[-3000:]
    assert _position(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == STEPS
    _same_weights(tmp_path / "ref" / "checkpoints" / "last.pt", tmp_path / "run" / "checkpoints" / "last.pt")


# -- the signal machinery itself, in this process -------------------------------------------------------------

def test_first_signal_raises_stopped_and_a_deferring_block_only_records_it():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(signals.Stopped) as e, signals.stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs on the next bytecode; never reached
    assert (e.value.exit_code, e.value.name, str(e.value)) == (143, "SIGTERM", "stopped by SIGTERM; rerun to resume")
    with pytest.raises(signals.Stopped) as e, signals.stop_on_signals():
        with signals.stop_on_signals(defer=True):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # handlers run between bytecodes: give it a few
                if signals.requested() is not None:
                    break
                time.sleep(0.01)
            assert signals.requested() == signal.SIGINT  # recorded, not raised
            reached = True
    assert reached and e.value.exit_code == 130  # delivered on leaving the deferring block
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handlers restored
    assert signals.requested() is None
