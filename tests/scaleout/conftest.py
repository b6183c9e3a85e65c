"""Scale-out with the real engines: a Dask cluster (scheduler + two workers) and two torchrun "nodes".

The helpers of the extract and train tests are reused (``tests/helpers``: same checkpoints, same
Fashion-MNIST tree, same shards).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def flows_module(name: str):
    """``pipeline.flows.<name>``, or the top-level ``flows.<name>`` of checkouts from before the move."""
    import importlib

    try:
        return importlib.import_module(f"pipeline.flows.{name}")
    except ModuleNotFoundError:
        return importlib.import_module(f"flows.{name}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of the processes we start: this checkout first on the path, one thread each."""
    path = os.pathsep.join([str(ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """A process in its own session (so that stopping it stops its children), output to ``log``."""
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a process we started (SIGTERM to its session, then SIGKILL), by its id."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def wait_for(pred, timeout: float, what: str, interval: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    from tests.helpers.features import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "a.pt", seed=0)


@pytest.fixture(scope="session")
def fmnist(tmp_path_factory) -> Path:
    """Fashion-MNIST as an ImageFolder tree (train/ and val/, 28x28 PNGs): 3 val images per class."""
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    return prepare_fashion_mnist(tmp_path_factory.mktemp("fm") / "fashion", train_per_class=1, val_per_class=3)


@pytest.fixture(scope="session")
def single_store(tmp_path_factory, ckpt, fmnist) -> Path:
    """The extract store written by one process with one thread (the reference of every scale-out run)."""
    from pipeline.features import ExtractConfig, run_extract
    from tests.helpers.features import SCALES, threads

    out = tmp_path_factory.mktemp("single") / "features.h5"
    with threads(1):
        run_extract(ExtractConfig(checkpoints=[str(ckpt)], data=str(fmnist), split="val", out=str(out), scales=SCALES,
                                  batch_size=4))
    return out
