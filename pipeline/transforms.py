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

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.errors import UserError
from pipeline.images import DEFAULT_MAX_PIXELS, decode_opened, decode_rgb, open_image
from pipeline.preprocess import Normalization, TrainScale, isotropic_resize, normalize, pil_to_tensor

__all__ = [
    "sample_rng", "ScaleJitter", "RandomCrop", "CenterCrop", "RandomHorizontalFlip", "ColourShift",
    "TrainAugment", "CentreCropView", "colour_shift_and_normalize", "CropPlan", "RawCrop", "apply_plan",
    "jpeg_to_tensor", "plain_jpeg_size", "rescaled_size",
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


class CropPlan(NamedTuple):
    """Where one training crop comes from in the decoded image (see :meth:`TrainAugment.plan`).

    ``box`` is the source window (x0, y0, x1, y1) in pixels of the decoded image; when ``scale``
    (source pixels per pixel at S) is not (1, 1) the window is rescaled by 1 / scale and the crop
    taken at ``at`` (u, v) in it; then mirrored if ``flip``.
    """

    box: tuple[int, int, int, int]
    scale: tuple[float, float]
    at: tuple[int, int]
    flip: bool

    @property
    def lands_at(self) -> tuple[float, float]:
        """Where the crop lies in the image rescaled to S (within a pixel of the drawn position)."""
        return self.at[0] + self.box[0] / self.scale[0], self.at[1] + self.box[1] / self.scale[1]


class RawCrop(NamedTuple):
    """A training sample left for the GPU to decode: the JPEG bytes (uint8 tensor) and its crop plan."""

    data: torch.Tensor
    plan: CropPlan


def rescaled_size(w: int, h: int, s: int) -> tuple[int, int]:
    """The size :func:`pipeline.preprocess.isotropic_resize` gives a w x h image for smallest side s."""
    if min(w, h) == s:
        return w, h
    r = s / min(w, h)
    return max(s, int(round(w * r))), max(s, int(round(h * r)))


def apply_plan(x: torch.Tensor, plan: CropPlan, crop: int) -> torch.Tensor:
    """uint8 3 x H x W image (CPU or CUDA) -> its uint8 3 x crop x crop training crop.

    The rescale is antialiased bilinear, Pillow's filter (torch's uint8 AVX2 kernel on the CPU;
    float then rounded on CUDA, where there is no uint8 kernel).
    """
    x0, y0, x1, y1 = plan.box
    win = x[:, y0:y1, x0:x1]
    if plan.scale != (1.0, 1.0):
        factor = (1.0 / plan.scale[1], 1.0 / plan.scale[0])
        z = win[None] if x.device.type == "cpu" else win[None].float()
        z = F.interpolate(z, scale_factor=factor, mode="bilinear", antialias=True, recompute_scale_factor=False)[0]
        win = z if z.dtype == torch.uint8 else z.round_().clamp_(0, 255).to(torch.uint8)
    u, v = plan.at
    out = win[:, v:v + crop, u:u + crop]
    if out.shape[1:] != (crop, crop):
        raise AssertionError(f"crop plan {plan} gave {tuple(out.shape)}")  # a bug, not a data error
    return out.flip(2) if plan.flip else out


def jpeg_to_tensor(data: torch.Tensor | list[torch.Tensor], device: str = "cpu") -> torch.Tensor | list[torch.Tensor]:
    """torchvision's libjpeg-turbo (CPU) or nvJPEG (CUDA) decode to RGB, without its deprecation warning."""
    import torchvision.io as tvio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB, device=device)


def _decode_plain_jpeg(data: bytes, size: tuple[int, int]) -> torch.Tensor | None:
    """libjpeg-turbo straight into a 3 x H x W tensor; None where it refuses or disagrees (Pillow then decides).

    torchvision's operator itself (what :func:`jpeg_to_tensor` calls on the CPU), without the
    wrapper's usage logging and deprecation warning: tens of microseconds an image.
    """
    import torchvision.io as tvio  # registers torch.ops.image

    try:
        x = torch.ops.image.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                        tvio.ImageReadMode.RGB.value, False)
    except RuntimeError:
        return None
    return x if tuple(x.shape[1:]) == (size[1], size[0]) else None


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG that libjpeg decodes to RGB as it is, read from its markers; else None.

    Plain: 8-bit, one (grey) or three components, no EXIF block (which could rotate it). CMYK,
    EXIF-tagged and anything that is not a well-formed JPEG header return None and go through
    Pillow (:func:`pipeline.images.decode_opened`), which applies orientation and explains errors.
    A few microseconds: Pillow's ``Image.open`` parses far more.
    """
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0xE1 and data[i + 4:i + 10] == b"Exif\x00\x00" or m == 0xDA:  # EXIF, or a scan before a frame
            return None
        if m in _SOF:
            if i + 10 > n or data[i + 4] != 8 or data[i + 9] not in (1, 3):
                return None
            h, w = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return (w, h) if w > 0 and h > 0 else None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


class TrainAugment:
    """JPEG bytes -> (uint8 3 x crop x crop tensor, colour offset): decode, S, crop, flip, colour.

    Draws per image, in this order: S, the crop position in the image rescaled to S, the flip,
    the colour offset. Only the crop's source window is rescaled (antialiased bilinear, as
    Pillow's ``isotropic_resize``), so the crop is that of the image rescaled to S, at a position
    within a pixel of the drawn one (the window's pixel grid lies at a fraction of a pixel of the
    full image's). The colour offset is returned, not added: it is applied to the whole batch on
    the training device (:func:`colour_shift_and_normalize`).

    Decoding: upright RGB/grey JPEGs go straight into a tensor by libjpeg-turbo (torchvision),
    faster than Pillow's decode into its own image; with ``draft`` a JPEG whose smallest side is
    at least 2 S is decoded by Pillow at 1/2, 1/4 or 1/8 size in the DCT domain; everything else
    (other formats, CMYK, EXIF-rotated) through :func:`pipeline.images.decode_opened`. With a
    ``decode_device`` the plain JPEGs are not decoded here but returned as :class:`RawCrop` (bytes
    and plan) for :func:`pipeline.train.gpu_decode.finish_on_device` on that device.
    """

    def __init__(self, *, scale: TrainScale, crop: int, flip: bool = True,
                 colour: ColourShift | None = None, draft: bool = True, decode_device: str | None = None) -> None:
        if scale.s_min < crop:
            raise UserError(f"training scale S_min={scale.s_min} is below the crop size {crop} (paper: S >= crop)")
        self.jitter = ScaleJitter(s_min=scale.s_min, s_max=scale.s_max)
        self.crop = RandomCrop(size=crop)
        self.flip = RandomHorizontalFlip(p=0.5) if flip else None
        self.colour = colour
        self.draft = draft
        self.decode_device = decode_device

    @staticmethod
    def decode_device_for(option: str, device: torch.device | str) -> str | None:
        """The ``decode_device`` of ``data.decode`` (cpu, gpu, auto) when training on ``device``: a GPU or None."""
        from pipeline.runtime import is_usable_cuda

        cuda = is_usable_cuda(device)
        if option == "cpu":
            return None
        if option == "gpu" and not cuda:
            raise UserError(f"data.decode=gpu needs a CUDA training device (this run trains on {device}); "
                            "use data.decode=cpu or auto")
        if option not in ("gpu", "auto"):
            raise UserError(f"data.decode must be cpu, gpu or auto, got {option!r}")
        return str(device) if cuda else None

    def __call__(self, data: bytes, rng: np.random.Generator) -> tuple[torch.Tensor | RawCrop, np.ndarray]:
        s = self.jitter.draw(rng)
        size = plain_jpeg_size(data)
        if size is not None and (size[0] * size[1] > DEFAULT_MAX_PIXELS or self.draft and min(size) >= 2 * s):
            size = None  # a bomb (Pillow says so), or a JPEG that draft mode decodes at 1/2 or less
        pil = None
        if size is None:  # decoded (draft, EXIF rotation, any mode) before its size is used
            img = open_image(data)
            pil = decode_opened(img, (s, s) if self.draft else None)
        plan = self.plan(size or pil.size, s, rng)
        offset = self.colour.offset(rng) if self.colour is not None else np.zeros(3, np.float32)
        if pil is None and self.decode_device:
            return RawCrop(torch.frombuffer(bytearray(data), dtype=torch.uint8), plan), offset
        x = _decode_plain_jpeg(data, size) if pil is None else None
        if x is None:
            pil = decode_opened(open_image(data)) if pil is None else pil
            x = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
        return apply_plan(x, plan, self.crop.size), offset

    def plan(self, size: tuple[int, int], s: int, rng: np.random.Generator) -> CropPlan:
        """The crop of a w x h decoded image at scale S: draws the position and the flip."""
        w, h = size
        big_w, big_h = rescaled_size(w, h, s)
        c = self.crop.size
        if c > min(big_w, big_h):
            raise UserError(f"image rescaled to {big_w}x{big_h} is smaller than the crop {c}")
        x = int(rng.integers(0, big_w - c + 1))
        y = int(rng.integers(0, big_h - c + 1))
        flip = self.flip is not None and rng.random() < self.flip.p
        if (big_w, big_h) == (w, h):
            return CropPlan((x, y, x + c, y + c), (1.0, 1.0), (0, 0), flip)
        sx, sy = w / big_w, h / big_h
        m = math.ceil(max(sx, sy)) + 1  # the filter's support in source pixels, and one for rounding
        x0, y0 = max(0, int(x * sx) - m), max(0, int(y * sy) - m)
        x1, y1 = min(w, math.ceil((x + c) * sx) + m), min(h, math.ceil((y + c) * sy) + m)
        zw, zh = math.floor((x1 - x0) / sx), math.floor((y1 - y0) / sy)  # F.interpolate's output size
        u, v = min(round(x - x0 / sx), zw - c), min(round(y - y0 / sy), zh - c)
        return CropPlan((x0, y0, x1, y1), (sx, sy), (max(0, u), max(0, v)), flip)


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
