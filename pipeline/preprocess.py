"""Pre-processing shared by training and every test protocol (paper 2.1, 3.1, 3.2): the mean RGB
on the 0-255 scale, the training scale S and the isotropic rescale (docs/formats.md 5.5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Normalization", "TORCHVISION_NORMALIZATION", "isotropic_resize", "rescaled_size", "pil_to_tensor",
           "normalize", "normalization_of", "train_scale_of", "TrainScale"]

IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)  # the VGG Caffe release's mean, RGB order, 0-255


class Normalization(BaseModel):
    """Per-channel ``(x - mean) / std`` on the 0-255 pixel scale (RGB order)."""

    model_config = ConfigDict(extra="forbid")
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN_RGB, description="mean RGB on 0-255 (training-set mean)")
    std: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="divisor per channel (1 = the paper)")


TORCHVISION_NORMALIZATION = Normalization(mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
                                          std=(0.229 * 255, 0.224 * 255, 0.225 * 255))


class TrainScale(BaseModel):
    """The training scale S: fixed (``s_min == s_max``) or jittered in [s_min, s_max] (paper 3.1)."""

    model_config = ConfigDict(extra="forbid")
    s_min: int = Field(256, ge=1, description="smallest S (= S for fixed-scale training)")
    s_max: int = Field(256, ge=1, description="largest S (> s_min: scale jittering)")

    @property
    def jittered(self) -> bool:
        return self.s_max > self.s_min

    def test_scales(self, crop: int = 224) -> list[int]:
        """Paper 4.2: fixed S -> {S-32, S, S+32} (the step scaled to a net's ``crop``: ``round(32 * crop / 224)``);
        jittered -> {min, mid, max}."""
        if self.jittered:
            return [self.s_min, (self.s_min + self.s_max) // 2, self.s_max]
        d = max(1, round(32 * crop / 224))
        return [self.s_min - d, self.s_min, self.s_min + d]

    def draw(self, rng: np.random.Generator) -> int:
        """The training scale S of one image: S ~ U{s_min..s_max} when jittered (no draw when fixed)."""
        return int(rng.integers(self.s_min, self.s_max + 1)) if self.jittered else self.s_min

    def single_test_scale(self) -> int:
        """Paper 4.1: Q = S for fixed S, Q = (S_min + S_max)/2 for jittered S."""
        return (self.s_min + self.s_max) // 2


def rescaled_size(w: int, h: int, s: int) -> tuple[int, int]:
    """The size of a w x h image rescaled isotropically to smallest side s."""
    if min(w, h) == s:
        return w, h
    r = s / min(w, h)
    return max(s, int(round(w * r))), max(s, int(round(h * r)))


def isotropic_resize(img: Image.Image, smallest_side: int, resample: int = Image.BILINEAR) -> Image.Image:
    """Rescale so the smaller side equals ``smallest_side`` (aspect ratio kept)."""
    size = rescaled_size(*img.size, smallest_side)
    return img if size == img.size else img.resize(size, resample)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor 3 x H x W."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def normalize(x: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """uint8 or float tensor (..., 3, H, W) on 0-255 -> float32 ``(x - mean) / std``."""
    mean = torch.tensor(norm.mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x.float() - mean) / std


def normalization_of(ckpt: dict[str, Any]) -> Normalization:
    """The normalisation a checkpoint was trained with (the paper's mean RGB if none recorded)."""
    n = (ckpt.get("meta") or {}).get("normalization")
    return Normalization(**n) if n else Normalization()


def train_scale_of(ckpt: dict[str, Any]) -> TrainScale | None:
    """The training scale recorded in a checkpoint, or None."""
    s = (ckpt.get("meta") or {}).get("train_scale")
    return TrainScale(**s) if s else None
