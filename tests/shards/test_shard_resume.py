"""Kill -9 the shard writer mid-run in a subprocess, rerun, and get exactly the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import webdataset as wds

from pipeline.shards import ShardConfig, run_shard, shard_paths

SCRIPT = """
import sys
from pipeline.shards import ShardConfig, run_shard
run_shard(ShardConfig(source=sys.argv[1], out=sys.argv[2], shard_count=8, workers=int(sys.argv[3]), progress=False))
"""


def _manifest_core(m: dict) -> dict:
    return {"splits": m["splits"], "skipped": m["skipped"], "fingerprint": m["fingerprint"], "classes": m["classes"]}


@pytest.mark.parametrize("workers,kill_after", [pytest.param(1, 3, marks=pytest.mark.slow), (2, 14)])
def test_killed_run_resumes_to_the_uninterrupted_result(fm_tree, tmp_path, workers, kill_after):
    ref = run_shard(
        ShardConfig(source=str(fm_tree), out=str(tmp_path / "ref"), shard_count=8, workers=1, progress=False)
    )
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(fm_tree), str(out), str(workers)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_dir() and len(list(out.glob("*.tar"))) >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)  # the writer and its worker processes, at once
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (out / "manifest.json").exists()  # killed mid-run: nothing claims to be complete
    partial = {p.name for p in out.glob("*.tar")}
    assert partial and len(partial) < sum(len(s["shards"]) for s in ref.manifest["splits"].values())
    res = run_shard(ShardConfig(source=str(fm_tree), out=str(out), shard_count=8, workers=workers, progress=False))
    assert res.resumed and not res.nothing_to_do
    assert _manifest_core(res.manifest) == _manifest_core(ref.manifest)  # same shards, same sha256
    for split in ("train", "val"):
        keys = [x["__key__"] for x in wds.WebDataset(shard_paths(out, split), shardshuffle=False, empty_check=False)]
        assert len(keys) == len(set(keys)) == ref.manifest["splits"][split]["count"]  # no duplicate, none missing
    assert not list(out.glob(".*.tmp")) and not (out / ".shard-state").exists()
    assert (out / "skipped.jsonl").read_text() == (tmp_path / "ref" / "skipped.jsonl").read_text()
    assert run_shard(ShardConfig(source=str(fm_tree), out=str(out), shard_count=8, progress=False)).nothing_to_do
