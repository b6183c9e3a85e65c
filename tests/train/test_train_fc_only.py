"""FC-only fine-tuning (paper 4.4, ``init.trainable: fc``): conv layers frozen, in one process and under DDP."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import config_from, load_config
from pipeline.models import build_model, init_weights, save_checkpoint
from pipeline.train import TrainConfig, run_train
from pipeline.train.recipe import build_optimizer, freeze_conv
from tests.helpers.train import fmnist_samples, tiny_config, write_shards
from tests.train.test_train_distributed import torchrun

B, K = 16, 4  # global batch, SGD steps


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc")
    tr, va = fmnist_samples("train", 8), fmnist_samples("t10k", 2)
    return write_shards(root / "shards", {"train": [tr[:40], tr[40:]], "val": [va]})


def _start(path, batch_norm=False):
    """A checkpoint to fine-tune from (a tiny A, Glorot weights; BN statistics made non-trivial)."""
    m = init_weights(build_model(config="A", num_classes=10, width=0.125, fc_width=64, crop=32, dropout=0.0,
                                 batch_norm=batch_norm), "glorot", seed=5)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
    return save_checkpoint(path, m), m.state_dict()


def _cfg(shards, out, start, **over):
    return tiny_config(shards, out, **{"init.checkpoint": str(start), "init.trainable": "fc", "optim.batch_size": B,
                                       "optim.lr": 0.05, "optim.weight_decay": 5e-3, "schedule.max_steps": K,
                                       "data.epoch_images": B * K, **over})


def _check_frozen(before: dict, after: dict) -> None:
    conv = [k for k in before if k.startswith("features.")]
    fc = [k for k in before if k.startswith("classifier.")]
    assert conv and fc
    for k in conv:  # weights, biases and any BatchNorm buffers: bit-identical
        assert torch.equal(after[k], before[k]), k
    for k in fc:
        assert (after[k] - before[k]).abs().max() > 1e-4, k


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn"])
def test_fc_only_freezes_conv_in_one_process(shards, tmp_path, bn):
    start, before = _start(tmp_path / "start.pt", batch_norm=bn)
    over = {"model.batch_norm": bn, "runtime.channels_last": True}
    res = run_train(config_from(TrainConfig, _cfg(shards, tmp_path / "run", start, **over)))
    ck = torch.load(res["last"], weights_only=True)
    assert ck["position"]["step"] == K and ck["meta"]["init"]["trainable"] == "fc"
    _check_frozen(before, ck["state_dict"])
    # only the six FC tensors are in the optimiser (momentum buffers exist for them alone)
    assert len(ck["optimizer"]["param_groups"][0]["params"]) == 6 and len(ck["optimizer"]["state"]) == 6


def test_fc_only_under_two_gloo_processes(shards, tmp_path):
    start, before = _start(tmp_path / "start.pt")
    torch.set_num_threads(2)
    proc = torchrun(_cfg(shards, tmp_path / "ddp", start), tmp_path / "ddp.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["position"]["step"] == K
    _check_frozen(before, ck["state_dict"])


def test_trainable_all_trains_everything_and_freeze_is_explicit():
    m = build_model(config="A", num_classes=10, width=0.125, fc_width=64, crop=32)
    assert freeze_conv(m, "all") == [] and all(p.requires_grad for p in m.parameters())
    frozen = freeze_conv(m, "fc")
    assert frozen == [f"features.{n}" for n, _ in m.features.named_parameters()]
    opt = build_optimizer(m, TrainConfig.model_fields["optim"].default_factory(), 0.1)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(
        p.numel() for p in m.classifier.parameters())


def test_presets():
    fc = load_config(TrainConfig, "paper-d-s256-512-fc")
    assert fc.init.trainable == "fc" and fc.init.checkpoint and fc.model.config == "D"
    assert (fc.data.scale.s_min, fc.data.scale.s_max, fc.optim.lr) == (256, 512, 1e-3)
    assert load_config(TrainConfig, "paper-d-s256-512").init.trainable == "all"
    for name in ("paper-b-5x5-s256", "paper-b-5x5-s384", "paper-b-5x5-s256-512", "fmnist-b-5x5"):
        cfg = load_config(TrainConfig, name)
        assert cfg.model.config == "B-5x5" and cfg.init.net_a is None and cfg.init.trainable == "all"
        assert (cfg.init.checkpoint is None) == name.endswith(("s256", "fmnist-b-5x5"))
