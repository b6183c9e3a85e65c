"""Weight initialisation (paper Section 3.1): ``paper`` N(0, 1e-2^2) or ``glorot`` (Glorot & Bengio 2010) uniform,
biases 0, and the start from a trained net A (the layers :attr:`NetSpec.from_a` names); docs/models.md."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.models.vgg import NETS, VGG

__all__ = ["InitName", "init_weights", "init_from_net_a"]

InitName = Literal["paper", "glorot"]


def init_weights(model: nn.Module, method: InitName = "paper", std: float = 1e-2, seed: int | None = None) -> nn.Module:
    """Initialise conv and linear layers in place; BatchNorm to identity. Returns the model."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                if method == "paper":
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                elif method == "glorot":
                    fan_in = m.weight[0].numel()
                    fan_out = m.weight.shape[0] * (m.weight[0, 0].numel() if m.weight.dim() > 2 else 1)
                    bound = (6.0 / (fan_in + fan_out)) ** 0.5
                    m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
                else:
                    raise UserError(f"unknown init {method!r} (paper, glorot)")
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def init_from_net_a(model: VGG, net_a: VGG) -> list[str]:
    """Copy the layers the model's :attr:`NetSpec.from_a` names from a trained net A into ``model``; returns their
    names. UserError: ``net_a`` is not a net A, or a layer's shape differs (width, FC width, crop or classes)."""
    if not NETS[net_a.cfg.config].is_a:
        nets_a = ", ".join(n for n, s in NETS.items() if s.is_a)
        raise UserError(f"start-from-A needs a net A checkpoint ({nets_a}), got config {net_a.cfg.config}")
    if model.cfg.batch_norm != net_a.cfg.batch_norm:
        raise UserError("start-from-A: batch_norm differs between net A and the target net")
    src, dst = net_a.named_weight_layers(), model.named_weight_layers()
    copied = []
    for name in NETS[model.cfg.config].from_a:
        a, b = src[name], dst[name]
        if a.weight.shape != b.weight.shape:
            raise UserError(
                f"start-from-A: layer {name} has shape {tuple(a.weight.shape)} in net A but "
                f"{tuple(b.weight.shape)} in config {model.cfg.config} (width, fc_width, crop or num_classes differ)"
            )
        with torch.no_grad():
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        copied.append(name)
    return copied
