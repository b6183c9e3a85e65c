"""Synchronous data parallelism (paper 3.3): two gloo processes under torchrun equal one process.

The shards are laid out so that the two ranks' batches partition each global batch exactly:
the one-process run reads global batch t from one shard; in the two-process run rank 0 reads its
first half from shard 0 and rank 1 its second half from shard 1. Augmentation depends only on
(seed, epoch, key), so it is the same in both runs and stays on; dropout is off.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from pipeline.config import config_from
from pipeline.models import build_model
from pipeline.train import TrainConfig, run_train
from pipeline.train.recipe import initialise
from tests.helpers.train import chunks, fmnist_samples, tiny_config, write_shards

B, K = 16, 4  # global batch, SGD steps


def torchrun(cfg: dict, path, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pipeline", "train", "--config", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    samples = fmnist_samples("train", 7)[:B * K]  # 64 images in file order
    batches = [samples[t * B:(t + 1) * B] for t in range(K)]
    val = chunks(fmnist_samples("t10k", 4), [23, 10, 7])  # uneven validation shards
    one = write_shards(root / "one", {"train": [samples], "val": val})
    two = write_shards(root / "two", {"train": [[s for b in batches for s in b[:B // 2]],
                                                [s for b in batches for s in b[B // 2:]]], "val": val})
    permuted = write_shards(root / "perm", {"train": [samples[::-1]], "val": val})
    return root, one, two, permuted


def _cfg(shards, out, **over):
    return tiny_config(shards, out, **{"optim.batch_size": B, "optim.lr": 0.003, "schedule.max_steps": K,
                                       "data.shardshuffle": False, "data.shuffle_buffer": 0,
                                       "data.epoch_images": B * K, "runtime.channels_last": True, **over})


def _weights(path):
    return torch.load(path, weights_only=True)


def test_two_gloo_processes_equal_one_process(layouts):
    root, one, two, permuted = layouts
    single = run_train(config_from(TrainConfig, _cfg(one, root / "out1")))
    torch.set_num_threads(2)
    proc = torchrun(_cfg(two, root / "out2"), root / "two.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(single["last"]), _weights(root / "out2" / "checkpoints" / "last.pt")
    assert b["position"]["step"] == a["position"]["step"] == K
    for k in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][k], a["state_dict"][k], rtol=1e-4, atol=2e-6)
    # the comparison is sensitive: training moved the weights far more than the tolerance, and the
    # same images in other batches give other weights
    cfg = config_from(TrainConfig, _cfg(one, root / "x"))
    init = build_model(cfg.model)
    initialise(init, cfg.init, [])
    moved = max((a["state_dict"][k] - v).abs().max().item() for k, v in init.state_dict().items())
    assert moved > 1e-2
    other = _weights(run_train(config_from(TrainConfig, _cfg(permuted, root / "out3")))["last"])
    diff = max((other["state_dict"][k] - v).abs().max().item() for k, v in a["state_dict"].items())
    assert diff > 1e-3
    # validation under DDP is exact: 40 images counted once over the ranks (30 on rank 0, 10 on rank 1)
    va, vb = a["meta"]["val"], b["meta"]["val"]
    assert va["images"] == vb["images"] == 40
    assert abs(va["top1"] - vb["top1"]) <= 1 / 40 and abs(va["top5"] - vb["top5"]) <= 1 / 40


def test_uneven_shards_finish_and_bad_batch_is_refused(layouts, tmp_path):
    root, one, two, _ = layouts
    uneven = write_shards(tmp_path / "uneven", {"train": chunks(fmnist_samples("train", 7)[:70], [50, 15, 5]),
                                                "val": chunks(fmnist_samples("t10k", 1), [10])})
    cfg = _cfg(
        uneven,
        tmp_path / "u",
        **{
            "schedule.max_steps": None,
            "schedule.max_epochs": 2,
            "data.shardshuffle": True,
            "data.shuffle_buffer": 16,
            "data.epoch_images": 64,
        },
    )
    proc = torchrun(cfg, tmp_path / "u.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = _weights(tmp_path / "u" / "checkpoints" / "last.pt")
    assert ck["position"]["step"] == 8 and ck["meta"]["val"]["images"] == 10  # 1 val shard < 2 ranks: split by sample
    bad = torchrun(_cfg(two, tmp_path / "b", **{"optim.batch_size": 15}), tmp_path / "b.yaml")
    assert bad.returncode != 0
    assert "error: the global batch 15 does not divide among 2 ranks" in bad.stderr
    assert not (tmp_path / "b" / "checkpoints" / "last.pt").exists()
