"""Parameter counts (paper Table 2), FLOPs (2 x multiply-adds; VGG-16 at 224: ~30.9 G) and receptive fields
(Section 2.3: the input window one unit of the last conv layer sees) of the nets; docs/models.md."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.vgg import NETS, ModelConfig, build_model, kernel_and_channels

__all__ = ["count_params", "count_flops", "net_complexity", "receptive_field", "STACK_NOTE"]

#: Section 2.3: three stacked 3x3 layers (C channels in and out) see 7x7 with 3(3^2 C^2) weights, one 7x7 layer 7^2 C^2.
STACK_NOTE = ("Section 2.3: a stack of three 3x3 conv layers sees 7x7 with 27C^2 weights (C channels in and out), "
              "one 7x7 layer needs 49C^2 (81% more); two 3x3 see 5x5 with 18C^2 vs 25C^2 (B vs B-5x5).")


def count_params(model: nn.Module) -> int:
    """Number of parameters (weights and biases; BatchNorm's affine ones included)."""
    return sum(p.numel() for p in model.parameters())


def receptive_field(config: str) -> int:
    """Side (pixels) of the input window seen by one unit of the config's last conv layer."""
    rf, stride, last = 1, 1, 1
    for item in NETS[config].layers:
        if item == "M":
            rf, stride = rf + stride, stride * 2
        elif item != "LRN":
            rf += (kernel_and_channels(item)[0] - 1) * stride
            last = rf
    return last


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


def net_complexity(cfg: ModelConfig) -> dict:
    """name, weight_layers, params, gflops, receptive_field (of the last conv layer) of one configuration."""
    with torch.device("meta"):
        model = build_model(cfg)
    return {"name": cfg.config, "weight_layers": NETS[cfg.config].weight_layers, "params": count_params(model),
            "gflops": round(count_flops(cfg) / 1e9, 3), "receptive_field": receptive_field(cfg.config),
            "crop": cfg.crop, "width": cfg.width, "fc_width": cfg.fc_width, "num_classes": cfg.num_classes,
            "batch_norm": cfg.batch_norm}
