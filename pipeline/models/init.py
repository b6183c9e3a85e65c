"""Weight initialisation (paper Section 3.1).

- ``paper``: weights ~ N(0, std^2), biases 0. The paper's text says "10^-2 variance" (std 0.1),
  while the released Caffe definitions used std 1e-2; we default to **std = 1e-2** (the code the
  results came from) and make it a parameter (``init_std``).
- ``glorot``: Glorot & Bengio (2010) uniform, biases 0, which the paper notes works without
  pre-training.
- start from net A: the first four conv layers (conv1_1, conv2_1, conv3_1, conv3_2 by Caffe name,
  the layers A shares with every deeper config) and the three FC layers of a trained net A are
  copied into a deeper config; everything else is initialised fresh.
- start from net A into B-5x5 (Section 4.1's shallow control net): only the three FC layers are
  copied. Its conv layers are 5x5 and one per block, so none of them has the shape (or the place in
  the net) of an A layer: A's conv1_1 is 3x3, and B-5x5's conv3_1 replaces B's conv3_1 + conv3_2
  pair. Padding A's 3x3 kernels into 5x5 ones would smuggle A's filters into the control net the
  paper compares against, so we don't. The FC layers fit exactly (last conv block has 512 channels
  at the same crop/32 map). B-5x5 has 8 weight layers, fewer than A, so like A it trains from a
  random init (its presets do); the FC copy is what ``init.net_a`` does if asked.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.models.vgg import VGG

__all__ = ["InitName", "init_weights", "init_from_net_a", "net_a_layers", "NET_A_LAYERS"]

InitName = Literal["paper", "glorot"]

#: The layers of net A copied into deeper nets (paper 3.1: first four conv layers, three FC layers).
NET_A_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")
#: Section 4.1's B-5x5: its 5x5 conv layers cannot take A's 3x3 weights; only the FC layers are copied.
NET_A_LAYERS_5X5 = ("fc6", "fc7", "fc8")


def net_a_layers(config: str) -> tuple[str, ...]:
    """The layers of net A copied into ``config`` when it starts from a trained net A."""
    return NET_A_LAYERS_5X5 if config == "B-5x5" else NET_A_LAYERS


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


def init_from_net_a(model: VGG, net_a: VGG, layers: tuple[str, ...] | None = None) -> list[str]:
    """Copy the named layers (default: :func:`net_a_layers` of the model's config) of a trained net A into ``model``.

    Returns:
        The names of the copied layers.
    Raises:
        UserError: if ``net_a`` is not config A / A-LRN, or a layer's shape differs (another width,
            FC width, crop size or class count).
    """
    if net_a.cfg.config not in ("A", "A-LRN"):
        raise UserError(f"start-from-A needs a net A checkpoint, got config {net_a.cfg.config}")
    if model.cfg.batch_norm != net_a.cfg.batch_norm:
        raise UserError("start-from-A: batch_norm differs between net A and the target net")
    src, dst = net_a.named_weight_layers(), model.named_weight_layers()
    copied = []
    layers = net_a_layers(model.cfg.config) if layers is None else layers
    for name in layers:
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
