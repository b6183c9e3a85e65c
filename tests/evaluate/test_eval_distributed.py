"""Evaluation over two torch.distributed (gloo) processes gives the numbers of one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from pipeline.evaluate import EvaluateConfig, load_posteriors, run_evaluate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: dict, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    res = run_evaluate(EvaluateConfig(**cfg))
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as fh:
        json.dump(res.model_dump(mode="json"), fh)


def test_two_gloo_processes_equal_one(folder, ckpt, tmp_path):
    base = dict(checkpoints=[str(ckpt)], data=str(folder), method="both", scales=[40], batch_size=4)
    one = run_evaluate(EvaluateConfig(**base, out=str(tmp_path / "one")))
    # fork: the workers share the parent's imports (spawn would re-import torch in each, slow on a busy machine)
    mp.start_processes(_worker, args=(2, _free_port(), {**base, "out": str(tmp_path / "two")}, str(tmp_path)),
                       nprocs=2, start_method="fork")
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1  # every process returns the gathered result
    assert r0["processes"] == 2 and one["processes"] == 1
    # every image counted exactly once, failures included
    assert (r0["n_images"], r0["n_failed"]) == (one["n_images"], one["n_failed"]) == (11, 1)
    assert (r0["top1_error"], r0["top5_error"]) == (one["top1_error"], one["top5_error"])
    assert [r["top1_error_pct"] for r in r0["rows"]] == [r["top1_error_pct"] for r in one["rows"]]
    p1, p2 = load_posteriors(tmp_path / "one"), load_posteriors(tmp_path / "two")
    assert p1.ids == p2.ids and np.array_equal(p1.labels, p2.labels)
    assert sorted(p1.arrays) == sorted(p2.arrays)
    for key, arr in p1.arrays.items():
        np.testing.assert_allclose(p2.arrays[key], arr, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torchrun_cli_equals_one_process(folder, ckpt, tmp_path):
    """The real launcher: ``torchrun --nproc_per_node 2 -m pipeline evaluate ...`` (gloo on CPU)."""
    args = ["evaluate", str(ckpt), "--data", str(folder), "--scales", "32,40", "--threads", "1", "--json"]
    one = subprocess.run([sys.executable, "-m", "pipeline", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), "-m", "pipeline", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    r1, r2 = json.loads(one.stdout), json.loads(two.stdout)  # one JSON document: only process 0 prints
    assert r2["processes"] == 2 and (r2["n_images"], r2["n_failed"]) == (r1["n_images"], r1["n_failed"])
    assert (r2["top1_error"], r2["top5_error"]) == (r1["top1_error"], r1["top5_error"])
    p1, p2 = load_posteriors(tmp_path / "one"), load_posteriors(tmp_path / "two")
    assert p1.ids == p2.ids
    np.testing.assert_allclose(p2.select("dense"), p1.select("dense"), rtol=1e-5, atol=1e-6)
