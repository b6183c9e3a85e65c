"""Training-set augmentation and the centre-crop view of validation (paper 3.1).

"To obtain the fixed-size 224x224 ConvNet input images, they were randomly cropped from rescaled
training images (one crop per image per SGD iteration). To further augment the training set, the
crops underwent random horizontal flipping and random RGB colour shift." The training scale S is
fixed or drawn per image from [S_min, S_max] (scale jittering).

Each step is a small callable with keyword-only arguments that takes a PIL image and a numpy
``Generator``. The generator of a sample is derived from (seed, epoch, sample key) by
:func:`sample_rng`, so an image gets the same augmentation whatever process, loader worker or rank
reads it: a resumed run, or a run on more ranks, sees exactly the same crops.

Workers return uint8 crops plus the per-image colour offset; the offset is added and the mean RGB
subtracted on the training device (:func:`colour_shift_and_normalize`, which uses
:func:`pipeline.preprocess.normalize`), so only bytes travel between processes.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.errors import UserError
from pipeline.images import decode_rgb
from pipeline.preprocess import Normalization, TrainScale, isotropic_resize, normalize, pil_to_tensor

__all__ = [
    "sample_rng", "ScaleJitter", "RandomCrop", "CenterCrop", "RandomHorizontalFlip", "ColourShift",
    "TrainAugment", "CentreCropView", "colour_shift_and_normalize",
]


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The random generator of one sample in one epoch (independent of rank, worker and order)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, zlib.crc32(key.encode("utf-8"))])


class ScaleJitter:
    """Isotropic rescale so the smallest side is S: fixed, or S ~ U{s_min..s_max} per image."""

    def __init__(self, *, s_min: int, s_max: int) -> None:
        if s_max < s_min:
            raise UserError(f"scale jittering needs s_min <= s_max, got [{s_min}, {s_max}]")
        self.s_min, self.s_max = s_min, s_max

    def draw(self, rng: np.random.Generator) -> int:
        """The training scale S of one image."""
        return self.s_min if self.s_max == self.s_min else int(rng.integers(self.s_min, self.s_max + 1))

    def __call__(self, img: Image.Image, rng: np.random.Generator, s: int | None = None) -> Image.Image:
        return isotropic_resize(img, self.draw(rng) if s is None else s)


class RandomCrop:
    """A ``size`` x ``size`` crop at a uniformly random position (one crop per image per iteration)."""

    def __init__(self, *, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        w, h = img.size
        if w < self.size or h < self.size:
            raise UserError(f"image {w}x{h} is smaller than the crop {self.size} (S must be >= the crop size)")
        x = int(rng.integers(0, w - self.size + 1))
        y = int(rng.integers(0, h - self.size + 1))
        return img.crop((x, y, x + self.size, y + self.size))


class CenterCrop:
    """The central ``size`` x ``size`` crop (validation)."""

    def __init__(self, *, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        w, h = img.size
        x, y = (w - self.size) // 2, (h - self.size) // 2
        return img.crop((x, y, x + self.size, y + self.size))


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, *, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < self.p else img


class ColourShift:
    """AlexNet's PCA colour shift (docs/formats.md section 5): one RGB offset per image.

    ``offset = [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T`` with ``a_i ~ N(0, alpha_std^2)``, where p_i, l_i
    are the eigenvectors and eigenvalues of the training set's RGB covariance. The formula and
    its published constants are for pixels in [0, 1]; the manifest's statistics are on the 0-255
    scale (eigenvalues in 255^2 units), so on 0-255 pixels the offset is
    ``255 * P (a * l / 255^2) = P (a * l) / 255``. For ImageNet's first eigenvalue
    (0.2175 on [0, 1]) this is 0.1 * 55.5 = 5.5 grey levels, as in fb.resnet.torch.
    """

    def __init__(self, *, eigval: Sequence[float], eigvec: Sequence[Sequence[float]], alpha_std: float = 0.1) -> None:
        self.eigval = np.asarray(eigval, dtype=np.float64).reshape(3)
        self.eigvec = np.asarray(eigvec, dtype=np.float64).reshape(3, 3)  # columns are eigenvectors
        self.alpha_std = alpha_std

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any] | None, *, alpha_std: float = 0.1) -> ColourShift:
        """Build from ``manifest["stats"]``; clear error when the statistics are missing."""
        if not stats or "eigval" not in stats or "eigvec" not in stats:
            raise UserError("colour shift needs the dataset statistics: run `vgg stats SHARDS` first "
                            "(or set data.colour_shift=0)")
        return cls(eigval=stats["eigval"], eigvec=stats["eigvec"], alpha_std=alpha_std)

    def offset(self, rng: np.random.Generator) -> np.ndarray:
        """The RGB offset (float32, 3) of one image on the 0-255 scale."""
        alpha = rng.normal(0.0, self.alpha_std, size=3)
        return (self.eigvec @ (alpha * self.eigval) / 255.0).astype(np.float32)


class TrainAugment:
    """JPEG bytes -> (uint8 3 x crop x crop tensor, colour offset): decode, S, crop, flip, colour.

    With ``draft`` the JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 size when that still leaves
    the smallest side >= S (DCT-domain downscaling: much faster when S is well below the stored
    size, which is the case for S=256 on shards stored at 512).
    """

    def __init__(self, *, scale: TrainScale, crop: int, flip: bool = True,
                 colour: ColourShift | None = None, draft: bool = True) -> None:
        if scale.s_min < crop:
            raise UserError(f"training scale S_min={scale.s_min} is below the crop size {crop} (paper: S >= crop)")
        self.jitter = ScaleJitter(s_min=scale.s_min, s_max=scale.s_max)
        self.crop = RandomCrop(size=crop)
        self.flip = RandomHorizontalFlip(p=0.5) if flip else None
        self.colour = colour
        self.draft = draft

    def __call__(self, data: bytes, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        s = self.jitter.draw(rng)
        img = decode_rgb(data, draft_size=(s, s) if self.draft else None)
        img = self._rescaled_crop(img, s, rng)
        if self.flip is not None:
            img = self.flip(img, rng)
        offset = self.colour.offset(rng) if self.colour is not None else np.zeros(3, np.float32)
        return pil_to_tensor(img), offset


    def _rescaled_crop(self, img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
        """The random crop of the image rescaled to S, resampled from the source window alone.

        Same crop position and the same bilinear filter as rescaling the whole image to S and
        then cropping (:class:`ScaleJitter` + :class:`RandomCrop`), but only the crop's pixels are
        computed: 1.5-1.9x faster on ImageNet-size photos (benchmarks/bench_loader_photos.py).
        """
        w, h = img.size
        if min(w, h) == s:
            return self.crop(img, rng)
        r = s / min(w, h)
        big_w, big_h = max(s, int(round(w * r))), max(s, int(round(h * r)))  # isotropic_resize's size
        c = self.crop.size
        x = int(rng.integers(0, big_w - c + 1))
        y = int(rng.integers(0, big_h - c + 1))
        sx, sy = w / big_w, h / big_h
        return img.resize((c, c), Image.BILINEAR, box=(x * sx, y * sy, (x + c) * sx, (y + c) * sy))


class CentreCropView:
    """JPEG bytes -> uint8 centre crop at test scale Q (the training-time validation view)."""

    def __init__(self, *, q: int, crop: int, draft: bool = True) -> None:
        if q < crop:
            raise UserError(f"validation scale Q={q} is below the crop size {crop}")
        self.q, self.center, self.draft = q, CenterCrop(size=crop), draft

    def __call__(self, data: bytes) -> torch.Tensor:
        img = decode_rgb(data, draft_size=(self.q, self.q) if self.draft else None)
        return pil_to_tensor(self.center(isotropic_resize(img, self.q)))


def colour_shift_and_normalize(x: torch.Tensor, offsets: torch.Tensor | None, norm: Normalization) -> torch.Tensor:
    """uint8 batch (N, 3, H, W) + per-image RGB offsets (N, 3) -> float ``(x + offset - mean) / std``."""
    x = x.float()
    if offsets is not None:
        x = x + offsets.to(x.device, torch.float32)[:, :, None, None]
    return normalize(x, norm)
