"""SIGTERM / Ctrl-C stop ``vgg extract`` (paper Appendix B) in one line; the rerun ends as an uninterrupted run.

A real ``vgg extract`` subprocess, signalled once its store exists (extraction under way): exit 143
(SIGTERM) or 130 (SIGINT to the process group, as Ctrl-C), one ``stopped by`` line, no traceback;
the store is not marked ``complete``; the rerun resumes and writes the store an uninterrupted run
writes, array for array.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import pytest

from tests.helpers.features import assert_same_store

SCALES = "64,96,128"  # large enough for the extraction to take seconds (400 images, tiny net)


@pytest.fixture(scope="module")
def fm400(tmp_path_factory):
    """Fashion-MNIST as an ImageFolder tree with 40 val images per class."""
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    return prepare_fashion_mnist(tmp_path_factory.mktemp("fm400") / "fashion", train_per_class=1, val_per_class=40)


def _extract(ckpt, data, out) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipeline", "extract", str(ckpt), "--data", str(data), "--split", "val",
           "--out", str(out), "--scales", SCALES, "--batch-size", "4"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("sig,group", [(signal.SIGTERM, False), pytest.param(signal.SIGINT, True,
                                                                             marks=pytest.mark.slow)],
                         ids=["sigterm", "ctrl-c"])
def test_stopped_extraction_is_one_line_and_resumes_to_the_uninterrupted_store(tmp_path, ckpt, fm400, sig, group):
    ref = _extract(ckpt, fm400, tmp_path / "ref.h5")
    out = tmp_path / "features.h5"
    proc = _extract(ckpt, fm400, out)
    deadline = time.monotonic() + 120
    while not out.exists():  # created (atomically) once the nets and the data are loaded
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    sent = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, sig)
    o, e = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert proc.returncode == 128 + sig, e[-3000:]
    assert "Traceback" not in o + e and "internal error" not in e, e[-3000:]
    assert o == "" and e.strip().splitlines() == [f"stopped by {signal.Signals(sig).name}; rerun to resume"]
    with h5py.File(out, "r") as f:
        assert not bool(f.attrs["complete"])  # nothing looks finished
        done = int(f["done"][:].sum())
    assert done < 400
    assert not list(tmp_path.glob(".*.tmp"))
    rerun = _extract(ckpt, fm400, out)
    ro, re_ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, re_[-3000:]
    assert ro.startswith(f"resumed and finished {out}: 400 images") and f"{400 - done} described in this run" in ro
    _, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err[-3000:]
    assert_same_store(out, tmp_path / "ref.h5")
