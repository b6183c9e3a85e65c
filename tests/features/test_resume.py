"""Reuse, refusal and resume: a killed extraction finishes into the same store as an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch

from pipeline.errors import UserError
from pipeline.features import ExtractConfig, FeatureStore, run_extract
from tests.helpers.features import SCALES, assert_same_store, make_checkpoint

DRIVER = """
import sys, time
from pipeline.features import ExtractConfig, run_extract
cfg = ExtractConfig.model_validate_json(sys.argv[1])
def report(done, total):
    print(f"progress {done} {total}", flush=True)
    time.sleep(0.05)
run_extract(cfg, on_progress=report)
print("finished", flush=True)
"""


def _cfg(ckpt, data, out, **kw) -> ExtractConfig:
    return ExtractConfig(checkpoints=[str(ckpt)], data=str(data), split="val", out=str(out), scales=SCALES,
                         batch_size=4, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ckpt, fmnist) -> Path:
    out = tmp_path_factory.mktemp("ref") / "features.h5"
    assert run_extract(_cfg(ckpt, fmnist, out))["status"] == "written"
    return out


def test_killed_extraction_resumes_to_the_same_store(tmp_path, ckpt, fmnist, reference):
    out = tmp_path / "features.h5"
    cfg = _cfg(ckpt, fmnist, out)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same summation order as this process
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, cfg.model_dump_json()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        for line in proc.stdout:
            if line.startswith("progress"):
                done = int(line.split()[1])
                if done >= 12:  # three batches of four flushed; kill during the next one
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            assert not line.startswith("finished"), "extraction finished before it could be killed"
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    with h5py.File(out, "r") as f:
        assert not bool(f.attrs["complete"])
        done = int(f["done"][:].sum())
    assert 12 <= done < 30
    with pytest.raises(UserError, match="incomplete"):
        FeatureStore(out)
    res = run_extract(cfg)
    assert res["status"] == "resumed" and res["described"] == 30 - done
    assert_same_store(out, reference)


def test_rerun_is_a_noop_naming_the_store(tmp_path, ckpt, fmnist, reference):
    out = tmp_path / "features.h5"
    shutil.copy(reference, out)
    before = out.stat().st_mtime_ns
    res = run_extract(_cfg(ckpt, fmnist, out))
    assert res["status"] == "exists" and res["path"] == str(out)
    assert out.stat().st_mtime_ns == before
    # another default aggregation is a read setting: still no re-extraction
    res = run_extract(_cfg(ckpt, fmnist, out, aggregate="stack"))
    assert res["status"] == "exists"
    with FeatureStore(out) as st:
        assert st.default_aggregate == "stack" and st.features().shape[1] == 64 * len(SCALES)


def test_other_inputs_are_refused_unless_overwrite(tmp_path, ckpt, fmnist, reference):
    out = tmp_path / "features.h5"
    shutil.copy(reference, out)
    other_ckpt = make_checkpoint(tmp_path / "other.pt", seed=7)
    with pytest.raises(UserError, match="other inputs.*another checkpoint"):
        run_extract(_cfg(other_ckpt, fmnist, out))
    with pytest.raises(UserError, match=r"other inputs.*scales \[32, 48, 64\] vs \[32, 64\]"):
        run_extract(_cfg(ckpt, fmnist, out).model_copy(update={"scales": [32, 64]}))
    with pytest.raises(UserError, match="other inputs.*dtype"):
        run_extract(_cfg(ckpt, fmnist, out, dtype="float16"))
    with pytest.raises(UserError, match="other inputs.*split"):
        run_extract(_cfg(ckpt, fmnist, out).model_copy(update={"split": "train"}))
    # the same layout with one more image is another dataset
    data = tmp_path / "fm"
    shutil.copytree(fmnist, data)
    extra = next((data / "val" / "bag").iterdir())
    shutil.copy(extra, extra.with_name("extra.png"))
    with pytest.raises(UserError, match="other inputs.*another dataset"):
        run_extract(_cfg(ckpt, data, out))
    assert_same_store(out, reference)  # untouched by the refusals
    res = run_extract(_cfg(ckpt, data, out, overwrite=True))
    assert res["status"] == "written"
    with FeatureStore(out) as st:
        assert st.n == 31


def test_store_from_another_tool_is_refused(tmp_path, ckpt, fmnist):
    out = tmp_path / "features.h5"
    with h5py.File(out, "w") as f:
        f["x"] = [1, 2, 3]
    with pytest.raises(UserError, match="not a feature store"):
        run_extract(_cfg(ckpt, fmnist, out))
    out.write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot be read as a feature store.*--overwrite"):
        run_extract(_cfg(ckpt, fmnist, out))
    assert run_extract(_cfg(ckpt, fmnist, out, overwrite=True))["status"] == "written"


def test_resume_keeps_recorded_failures(tmp_path, ckpt, photos_tree):
    """A failure logged before a kill is kept (not retried) and lands in failed/ when the store finishes."""
    from pipeline.features.store import StoreWriter, failed_log_path

    out = tmp_path / "p.h5"
    cfg = ExtractConfig(checkpoints=[str(ckpt)], data=str(photos_tree), out=str(out), scales=[32], batch_size=3)
    full = tmp_path / "full.h5"
    run_extract(cfg.model_copy(update={"out": str(full)}))
    # simulate a run killed after its first batch: copy the finished rows 0-2 into a fresh partial store
    run_extract(cfg)
    with h5py.File(out, "r+") as f:
        f.attrs.modify("complete", False)
        f["done"][3:] = False
        del f["failed"]
    failed_log_path(out).write_text(
        '{"row": 2, "id": "china__notes", "reason": "not an image (unrecognised content)"}\n{"row": 3, "id"'
    )
    w = StoreWriter(out)
    assert w.processed().tolist() == [True, True, True, False, False, False]
    w.close()
    res = run_extract(cfg)
    assert res["status"] == "resumed" and res["described"] == 2
    assert not failed_log_path(out).exists()
    assert_same_store(out, full)
