"""Training-set augmentation and the centre-crop view of validation (paper 3.1).

Scale jittering, random crop, flip and colour shift drawn per sample from :func:`sample_rng`;
decoding routes and the crop plan: docs/training.md, "The training crop".
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

from pipeline.errors import UserError
from pipeline.images import DEFAULT_MAX_PIXELS, decode_opened, decode_rgb, open_image
from pipeline.preprocess import Normalization, TrainScale, isotropic_resize, normalize, pil_to_tensor, rescaled_size

__all__ = ["sample_rng", "ColourShift", "TrainAugment", "CentreCropView", "colour_shift_and_normalize", "CropPlan",
           "RawCrop", "apply_plan", "jpeg_to_tensor", "plain_jpeg_size"]


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The random generator of one sample in one epoch (independent of rank, worker and order)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, zlib.crc32(key.encode("utf-8"))])


class ColourShift:
    """AlexNet's PCA colour shift: one RGB offset per image, on the 0-255 scale (docs/formats.md 5.3)."""

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
        """The RGB offset (float32, 3) of one image: ``P (a * l) / 255``."""
        alpha = rng.normal(0.0, self.alpha_std, size=3)
        return (self.eigvec @ (alpha * self.eigval) / 255.0).astype(np.float32)


class CropPlan(NamedTuple):
    """One training crop: the source window ``box`` (x0, y0, x1, y1) of the decoded image, rescaled by
    1 / ``scale`` (source pixels per pixel at S) unless that is (1, 1), cropped at ``at`` (u, v), mirrored if ``flip``.
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


def apply_plan(x: torch.Tensor, plan: CropPlan, crop: int) -> torch.Tensor:
    """uint8 3 x H x W image (CPU or CUDA) -> its uint8 3 x crop x crop training crop.

    The rescale is antialiased bilinear, Pillow's filter (uint8 on the CPU, float then rounded on CUDA).
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
    """torchvision's CPU operator without its wrapper's logging; None where it refuses or disagrees on the size."""
    import torchvision.io as tvio  # registers torch.ops.image

    try:
        x = torch.ops.image.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                        tvio.ImageReadMode.RGB.value, False)
    except RuntimeError:
        return None
    return x if tuple(x.shape[1:]) == (size[1], size[0]) else None


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the markers of a plain JPEG (8-bit, 1 or 3 components, no EXIF block before the
    frame: it could rotate the image), which libjpeg decodes to RGB as it is; else None. Microseconds."""
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
    """JPEG bytes -> (uint8 3 x crop x crop tensor, colour offset): decode, S, crop, flip, colour (docs/training.md).

    With a ``decode_device`` the plain JPEGs come back undecoded, as :class:`RawCrop` for
    :func:`pipeline.train.gpu_decode.finish_on_device`.
    """

    def __init__(self, *, scale: TrainScale, crop: int, flip: bool = True,
                 colour: ColourShift | None = None, draft: bool = True, decode_device: str | None = None) -> None:
        if scale.s_max < scale.s_min:
            raise UserError(f"scale jittering needs s_min <= s_max, got [{scale.s_min}, {scale.s_max}]")
        if scale.s_min < crop:
            raise UserError(f"training scale S_min={scale.s_min} is below the crop size {crop} (paper: S >= crop)")
        self.scale = scale
        self.crop = crop
        self.flip = flip
        self.colour = colour
        self.draft = draft
        self.decode_device = decode_device

    @staticmethod
    def decode_device_for(option: str, device: torch.device | str) -> str | None:
        """The ``decode_device`` of ``data.decode`` (cpu, gpu, auto) when training on ``device``: a GPU or None."""
        from pipeline.runtime import is_usable_cuda

        cuda = option != "cpu" and is_usable_cuda(device)
        if option == "gpu" and not cuda:
            raise UserError(f"data.decode=gpu needs a CUDA training device (this run trains on {device}); "
                            "use data.decode=cpu or auto")
        return str(device) if cuda else None

    def __call__(self, data: bytes, rng: np.random.Generator) -> tuple[torch.Tensor | RawCrop, np.ndarray]:
        s = self.scale.draw(rng)
        size = plain_jpeg_size(data)
        if size is not None and (size[0] * size[1] > DEFAULT_MAX_PIXELS or self.draft and min(size) >= 2 * s):
            size = None  # a bomb (Pillow says so), or a JPEG that draft mode decodes at 1/2 or less
        pil = None
        if size is None:  # decoded (draft, EXIF rotation, any mode) before its size is used
            pil = decode_opened(open_image(data), (s, s) if self.draft else None)
        plan = self.plan(size or pil.size, s, rng)
        offset = self.colour.offset(rng) if self.colour is not None else np.zeros(3, np.float32)
        if pil is None and self.decode_device:
            return RawCrop(torch.frombuffer(bytearray(data), dtype=torch.uint8), plan), offset
        x = _decode_plain_jpeg(data, size) if pil is None else None
        if x is None:
            pil = decode_opened(open_image(data)) if pil is None else pil
            x = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
        return apply_plan(x, plan, self.crop), offset

    def plan(self, size: tuple[int, int], s: int, rng: np.random.Generator) -> CropPlan:
        """The crop of a w x h decoded image at scale S: draws the position and the flip."""
        w, h = size
        big_w, big_h = rescaled_size(w, h, s)
        c = self.crop
        x = int(rng.integers(0, big_w - c + 1))
        y = int(rng.integers(0, big_h - c + 1))
        flip = self.flip and rng.random() < 0.5
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
        self.q, self.crop, self.draft = q, crop, draft

    def __call__(self, data: bytes) -> torch.Tensor:
        img = isotropic_resize(decode_rgb(data, draft_size=(self.q, self.q) if self.draft else None), self.q)
        x, y = (img.size[0] - self.crop) // 2, (img.size[1] - self.crop) // 2
        return pil_to_tensor(img.crop((x, y, x + self.crop, y + self.crop)))


def colour_shift_and_normalize(x: torch.Tensor, offsets: torch.Tensor | None, norm: Normalization) -> torch.Tensor:
    """uint8 batch (N, 3, H, W) + per-image RGB offsets (N, 3) -> float ``(x + offset - mean) / std``."""
    x = x.float()
    if offsets is not None:
        x = x + offsets.to(x.device, torch.float32)[:, :, None, None]
    return normalize(x, norm)
