"""SIGTERM / Ctrl-C stop ``vgg shard`` (paper 3.1 training data) in one line; the rerun ends as an uninterrupted run.

A real ``vgg shard`` subprocess with two worker processes, signalled once some shards are complete:
exit 143 (SIGTERM to the writer) or 130 (SIGINT to the whole process group, as a terminal's Ctrl-C:
the pool workers ignore it), one ``stopped by`` line and no traceback; nothing looks finished (no
``manifest.json``); the rerun resumes and writes exactly the reference shards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import webdataset as wds

from pipeline.shards import ShardConfig, run_shard, shard_paths


def _core(m: dict) -> dict:
    return {"splits": m["splits"], "skipped": m["skipped"], "fingerprint": m["fingerprint"], "classes": m["classes"]}


def _shard_cli(src, out) -> list[str]:
    return [sys.executable, "-m", "pipeline", "shard", str(src), str(out), "--shard-count", "8", "--workers", "2"]


@pytest.mark.parametrize("sig,group", [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["sigterm", "ctrl-c"])
def test_stopped_shard_run_is_one_line_and_resumes_to_the_uninterrupted_result(fm_tree, tmp_path, sig, group):
    ref = run_shard(ShardConfig(source=str(fm_tree), out=str(tmp_path / "ref"), shard_count=8, workers=1,
                                progress=False))
    out = tmp_path / "s"
    proc = subprocess.Popen(_shard_cli(fm_tree, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.tar"))) < 8:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.002)
    sent = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, sig)
    o, e = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert proc.returncode == 128 + sig, e[-3000:]
    assert "Traceback" not in o + e and "internal error" not in e, e[-3000:]
    lines = e.strip().splitlines()
    assert lines[-1] == f"stopped by {signal.Signals(sig).name}; rerun to resume"
    assert sum(ln.startswith("stopped by") for ln in lines) == 1, e
    assert not (out / "manifest.json").exists()  # nothing claims to be complete
    total = sum(len(s["shards"]) for s in ref.manifest["splits"].values())
    assert 0 < len(list(out.glob("*.tar"))) < total
    for _ in range(200):  # the pool's workers are gone with the writer
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("worker processes left behind")
    rerun = subprocess.run(_shard_cli(fm_tree, out), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    res = run_shard(ShardConfig(source=str(fm_tree), out=str(out), shard_count=8, progress=False))
    assert res.nothing_to_do and _core(res.manifest) == _core(ref.manifest)  # the same shards, the same sha256
    for split in ("train", "val"):
        keys = [x["__key__"] for x in wds.WebDataset(shard_paths(out, split), shardshuffle=False, empty_check=False)]
        assert len(keys) == len(set(keys)) == ref.manifest["splits"][split]["count"]
    assert not list(out.glob(".*.tmp")) and not (out / ".shard-state").exists()
    assert (out / "skipped.jsonl").read_text() == (tmp_path / "ref" / "skipped.jsonl").read_text()
