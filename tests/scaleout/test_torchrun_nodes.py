"""Scale-out across "nodes": two torchrun launchers (``--nnodes 2 --node-rank 0/1``) meeting at a c10d
rendezvous on 127.0.0.1, one process each, as two machines would run them (paper 3.3).

* train: the two nodes' run equals one process (dropout off; the shards are laid out so that the
  two ranks' halves make up each global batch, as in tests/train/test_train_distributed.py);
* extract: the two nodes' parts merge into a store identical to one process's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.scaleout.conftest import child_env, free_port

pytestmark = pytest.mark.slow  # two launchers, two ranks and a one-process reference: about a minute each

B, K = 16, 4  # global batch, SGD steps


def two_nodes(args: list[str], cwd: Path, timeout: int = 420) -> list[subprocess.CompletedProcess]:
    """Run ``python -m pipeline <args>`` under two torchrun launchers, node ranks 0 and 1, c10d rendezvous."""
    endpoint = f"127.0.0.1:{free_port()}"
    procs = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
               "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
               "--rdzv-id", "vgg-scaleout", "-m", "pipeline", *args]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_train_on_two_nodes_equals_one_process(tmp_path):
    from pipeline.config import config_from
    from pipeline.models import build_model
    from pipeline.train import TrainConfig, run_train
    from pipeline.train.recipe import initialise
    from tests.helpers.train import chunks, fmnist_samples, tiny_config, write_shards

    samples = fmnist_samples("train", 7)[:B * K]
    batches = [samples[t * B:(t + 1) * B] for t in range(K)]
    val = chunks(fmnist_samples("t10k", 4), [23, 10, 7])
    one = write_shards(tmp_path / "one", {"train": [samples], "val": val})
    two = write_shards(tmp_path / "two", {"train": [[s for b in batches for s in b[:B // 2]],
                                                    [s for b in batches for s in b[B // 2:]]], "val": val})

    def cfg(shards, out):
        return tiny_config(shards, out, **{"optim.batch_size": B, "optim.lr": 0.003, "schedule.max_steps": K,
                                           "data.shardshuffle": False, "data.shuffle_buffer": 0,
                                           "data.epoch_images": B * K})

    run_train(config_from(TrainConfig, cfg(one, tmp_path / "out1")))
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(cfg(two, tmp_path / "out2")))
    procs = two_nodes(["train", "--config", str(tmp_path / "two.yaml")], tmp_path)
    for p in procs:
        assert p.returncode == 0, p.stderr[-3000:]
    a = torch.load(tmp_path / "out1" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "out2" / "checkpoints" / "last.pt", weights_only=True)
    assert b["position"]["step"] == a["position"]["step"] == K
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-4, atol=2e-6)
    # sensitive: training moved the weights far more than the tolerance
    c = config_from(TrainConfig, cfg(one, tmp_path / "x"))
    init = build_model(c.model)
    initialise(init, c.init, [])
    assert max((a["state_dict"][k] - v).abs().max().item() for k, v in init.state_dict().items()) > 1e-2
    assert b["meta"]["val"]["images"] == 40  # validation over both nodes counts every image once


def test_extract_on_two_nodes_equals_one_process(tmp_path, ckpt, fmnist, single_store):
    from tests.helpers.features import SCALES, assert_same_store

    out = tmp_path / "features.h5"
    procs = two_nodes(["extract", str(ckpt), "--data", str(fmnist), "--split", "val", "--out", str(out),
                       "--scales", ",".join(map(str, SCALES)), "--batch-size", "4", "--device", "cpu", "--json"],
                      tmp_path)
    for p in procs:
        assert p.returncode == 0, p.stderr[-3000:]
    assert any('"status": "merged"' in p.stdout for p in procs)
    assert any('"world": 2' in p.stdout for p in procs)
    assert not list(tmp_path.glob("features.h5.part-*")), "parts are removed after the merge"
    assert_same_store(out, single_store)
