"""Parameter counts (paper Table 2) and FLOPs of the VGG configurations.

GFLOPs are 2 x multiply-adds of the conv and FC layers at the crop size (VGG-16 at 224: ~30.9).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.vgg import CONFIGS, ModelConfig, build_model

__all__ = ["count_params", "count_flops", "weight_layers", "describe"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (weights and biases; BatchNorm's affine ones included)."""
    return sum(p.numel() for p in model.parameters())


def weight_layers(config: str) -> int:
    """Weight layers of a Table 1 column (convs + 3 FC)."""
    return sum(1 for x in CONFIGS[config] if x not in ("M", "LRN")) + 3


def count_flops(cfg: ModelConfig, size: int | None = None) -> int:
    """2 x multiply-adds of conv and FC layers on one ``size`` x ``size`` image (default: the crop)."""
    s = size or cfg.crop
    with torch.device("meta"):  # shapes only, no memory
        model = build_model(cfg)
    macs = 0
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            macs += m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * s * s
        elif isinstance(m, nn.MaxPool2d):
            s //= 2
    loc = max(1, s - cfg.feature_size + 1) ** 2  # dense positions of the FC head
    for m in model.classifier:
        if isinstance(m, nn.Linear):
            macs += m.in_features * m.out_features * loc
    return 2 * macs


def describe(cfg: ModelConfig) -> dict:
    """name, weight_layers, params, gflops of one configuration."""
    with torch.device("meta"):
        model = build_model(cfg)
    return {
        "name": cfg.config,
        "weight_layers": weight_layers(cfg.config),
        "params": count_params(model),
        "gflops": round(count_flops(cfg) / 1e9, 3),
        "crop": cfg.crop,
        "width": cfg.width,
        "fc_width": cfg.fc_width,
        "num_classes": cfg.num_classes,
        "batch_norm": cfg.batch_norm,
    }
