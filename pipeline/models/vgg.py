"""The VGG ConvNets of Table 1 (paper Section 2) and Section 4.1's B-5x5, and their dense form (Section 3.2).

:data:`NETS` is the one table of the nets; docs/models.md explains the layout, the dense form and the centring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from pipeline.errors import UserError

__all__ = ["NETS", "NetSpec", "CONFIGS", "ConfigName", "ModelConfig", "VGG", "make_layers", "build_model",
           "kernel_and_channels", "NET_A_LAYERS"]

Layer = int | tuple[str, int] | str

#: The layers of net A copied into deeper nets (paper 3.1: first four conv layers, three FC layers).
NET_A_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")


@dataclass(frozen=True)
class NetSpec:
    """One net: its layers (int = conv3-<c>; ("1x1", c) = conv1-<c>; ("5x5", c) = conv5-<c>; "M" = 2x2
    max-pool; "LRN"), the layers it copies from a trained net A, torchvision's builder (same parameter
    names), and whether it is a net A that deeper nets start from."""

    layers: tuple[Layer, ...]
    from_a: tuple[str, ...] = NET_A_LAYERS
    torchvision: str | None = None
    is_a: bool = False

    @property
    def conv_names(self) -> list[str]:
        """Caffe-style names (conv1_1, conv1_2, conv2_1, ...) of the conv layers, in order."""
        names, block, idx = [], 1, 0
        for item in self.layers:
            if item == "M":
                block, idx = block + 1, 0
            elif item != "LRN":
                idx += 1
                names.append(f"conv{block}_{idx}")
        return names

    @property
    def weight_layers(self) -> int:
        """Conv layers + the three FC layers (Table 1's depth)."""
        return len(self.conv_names) + 3


NETS: dict[str, NetSpec] = {
    "A": NetSpec((64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"), torchvision="vgg11", is_a=True),
    "A-LRN": NetSpec((64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"), is_a=True),
    "B": NetSpec((64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"), torchvision="vgg13"),
    "C": NetSpec((64, 64, "M", 128, 128, "M", 256, 256, ("1x1", 256), "M", 512, 512, ("1x1", 512), "M",
                  512, 512, ("1x1", 512), "M")),
    "D": NetSpec((64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
                 torchvision="vgg16"),
    "E": NetSpec((64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                  512, 512, 512, 512, "M"), torchvision="vgg19"),
    # its 5x5 convs cannot take A's 3x3 weights: only the FC layers start from A (docs/models.md)
    "B-5x5": NetSpec((("5x5", 64), "M", ("5x5", 128), "M", ("5x5", 256), "M", ("5x5", 512), "M", ("5x5", 512), "M"),
                     from_a=("fc6", "fc7", "fc8")),
}
#: each net's layer list (torchvision's ``cfgs``)
CONFIGS: dict[str, list[Layer]] = {name: list(spec.layers) for name, spec in NETS.items()}
ConfigName = Literal[tuple(NETS)]

# Krizhevsky et al. (2012) LRN: n=5, alpha=1e-4, beta=0.75, k=2. PyTorch's LocalResponseNorm, like
# Caffe (in which the paper's nets were trained), divides alpha by n inside the sum.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


class ChannelLRN(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` (A-LRN's layer), with its channel-window sum taken as a sum of shifted
    squares instead of torch's 3-D average pooling: the same function (equal to float rounding), and
    on the CPU several times faster forward and backward, which made A-LRN train at half A's speed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        c, n = x.shape[1], self.size
        sq = F.pad(x * x, (0, 0, 0, 0, n // 2, (n - 1) // 2))
        s = sq[:, 0:c]
        for i in range(1, n):
            s = s + sq[:, i:i + c]
        return x / (s * (self.alpha / n) + self.k).pow(self.beta)


class ModelConfig(BaseModel):
    """Everything needed to rebuild a VGG net; saved in every checkpoint. Defaults = the paper."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    config: ConfigName = Field("D", description=f"the net (Table 1, Section 4.1): {', '.join(NETS)}")
    num_classes: int = Field(1000, ge=1, description="outputs of the last FC layer")
    width: float = Field(1.0, gt=0, description="width multiplier on the conv channels 64..512")
    fc_width: int = Field(4096, ge=1, description="channels of FC1 and FC2")
    crop: int = Field(224, ge=32, description="training crop size; a multiple of 32 (FC1 sees crop/32 x crop/32)")
    batch_norm: bool = Field(False, description="BatchNorm after each conv (to load torchvision's *_bn weights)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout after FC1 and FC2")

    @field_validator("crop")
    @classmethod
    def _crop_multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"crop must be a multiple of 32 (five 2x2 poolings), got {v}")
        return v

    @model_validator(mode="after")
    def _channels_positive(self) -> ModelConfig:
        if scaled_channels(64, self.width) < 1:  # the narrowest layer
            raise ValueError(f"width {self.width} gives zero channels for conv-64")
        return self

    @property
    def feature_size(self) -> int:
        """Spatial size of the last conv map at the crop size (7 at 224)."""
        return self.crop // 32

    @property
    def channels(self) -> int:
        """Channels of the last conv block (512 at width 1)."""
        return scaled_channels(512, self.width)


def scaled_channels(c: int, width: float) -> int:
    """Channels of a conv layer of nominal width ``c`` under the width multiplier."""
    return int(round(c * width))


def kernel_and_channels(item: Layer) -> tuple[int, int]:
    """(kernel size, nominal channels) of a conv entry of a config list: 3 for ints, else its tag."""
    if isinstance(item, tuple):
        return int(item[0].split("x")[0]), int(item[1])
    return 3, int(item)


def make_layers(cfg: Sequence[Layer], width: float = 1.0, batch_norm: bool = False) -> nn.Sequential:
    """Build the conv part of Table 1 in torchvision's layout (conv, [bn], relu, ..., maxpool)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif item == "LRN":
            layers.append(ChannelLRN(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K))
        else:
            k, c = kernel_and_channels(item)
            out = scaled_channels(c, width)
            layers.append(nn.Conv2d(in_ch, out, kernel_size=k, stride=1, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            in_ch = out
    return nn.Sequential(*layers)


#: total stride of the five max-pooling layers of every configuration
STRIDE = 32


def stride_origin(h: int, w: int, stride: int = STRIDE) -> tuple[int, int]:
    """(x, y) of the first pixel the dense forms use in an h x w input (:func:`centre_on_stride`)."""
    return (w % stride) // 2, (h % stride) // 2


def centre_on_stride(x: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """``x`` (... x H x W) with the ``H mod stride`` rows and ``W mod stride`` columns cut evenly from both sides."""
    h, w = x.shape[-2:]
    if h % stride == 0 and w % stride == 0:
        return x
    ox, oy = stride_origin(h, w, stride)
    return x[..., oy: oy + h - h % stride, ox: ox + w - w % stride]


class VGG(nn.Module):
    """A VGG net of Table 1 with its FC head usable as FC layers (``forward``, crop-sized inputs) or as
    convolutions (``forward_dense``, Section 3.2); ``forward_features``: FC7 after ReLU (Appendix B)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.features = make_layers(NETS[cfg.config].layers, cfg.width, cfg.batch_norm)
        flat = cfg.channels * cfg.feature_size**2
        self.classifier = nn.Sequential(
            nn.Linear(flat, cfg.fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(p=cfg.dropout),
            nn.Linear(cfg.fc_width, cfg.fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(p=cfg.dropout),
            nn.Linear(cfg.fc_width, cfg.num_classes),
        )

    def named_weight_layers(self) -> dict[str, nn.Module]:
        """Weight layers by paper name: conv1_1 ... and fc6, fc7, fc8 (in order)."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        out: dict[str, nn.Module] = dict(zip(NETS[self.cfg.config].conv_names, convs, strict=False))
        out.update(fc6=self.classifier[0], fc7=self.classifier[3], fc8=self.classifier[6])
        return out

    def _check_input(self, x: torch.Tensor, exact: bool) -> None:
        c = self.cfg.crop
        h, w = x.shape[-2:]
        if exact and (h, w) != (c, c):
            raise UserError(f"the FC form takes {c}x{c} inputs, got {h}x{w}; use forward_dense for other sizes")
        if h < c or w < c:
            raise UserError(f"input {h}x{w} is smaller than the crop size {c}")

    def _head(self, x: torch.Tensor, dense: bool, upto: int) -> torch.Tensor:
        if not dense:
            x = torch.flatten(x, 1)
        for i in range(upto):
            layer = self.classifier[i]
            if isinstance(layer, nn.Linear) and dense:  # the FC layer as a convolution (fc6: k = crop/32)
                k = self.cfg.feature_size if i == 0 else 1
                x = F.conv2d(x, layer.weight.view(layer.out_features, -1, k, k), layer.bias)
            else:
                x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N x classes) of crop-sized inputs."""
        self._check_input(x, exact=True)
        return self._head(self.features(x), dense=False, upto=7)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Class score map (N x classes x h x w) of inputs at least crop-sized (Section 3.2)."""
        self._check_input(x, exact=False)
        return self._head(self.features(centre_on_stride(x)), dense=True, upto=7)

    def forward_features(self, x: torch.Tensor, dense: bool = False) -> torch.Tensor:
        """Penultimate activations, FC7 after ReLU: N x fc (crop inputs) or N x fc x h x w (dense)."""
        self._check_input(x, exact=not dense)
        return self._head(self.features(centre_on_stride(x) if dense else x), dense=dense, upto=5)


def build_model(cfg: ModelConfig | dict | None = None, **kwargs) -> VGG:
    """Build a VGG from a ModelConfig, a dict, or keyword arguments (weights not initialised here)."""
    if not isinstance(cfg, ModelConfig):
        cfg = ModelConfig(**{**(cfg or {}), **kwargs})
    elif kwargs:
        cfg = cfg.model_copy(update=kwargs)
    return VGG(cfg)
