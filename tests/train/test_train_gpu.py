"""The training stage on a CUDA device (run with ``pytest -m gpu`` on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from pipeline.bench import load_benchmark
from pipeline.config import config_from
from pipeline.train import TrainConfig, run_train
from tests.helpers.train import chunks, fmnist_samples, tiny_config, write_shards

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_train_on_gpu_with_bf16_and_channels_last_learns(tmp_path):
    shards = write_shards(tmp_path / "s", {"train": chunks(fmnist_samples("train", 40), [250, 150]),
                                           "val": chunks(fmnist_samples("t10k", 20), [200])})
    cfg = config_from(TrainConfig, tiny_config(shards, tmp_path / "out", **{
        "runtime": {"device": "cuda", "bf16": "auto", "channels_last": True, "pin_memory": True},
        "data.workers": 2, "schedule.max_epochs": 4}))
    res = run_train(cfg)
    assert res["bf16"] is True and res["steps"] == 4 * 25
    assert res["best_top1"] > 0.35


def test_gpu_benchmark_reports_mfu():
    rows = load_benchmark("bench_train.py").gpu_rows(quick=True)
    ips, mfu = rows[0]["ours"], rows[1]["ours"]
    assert ips > 0 and 0.02 < mfu < 1.0, rows
