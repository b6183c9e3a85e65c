"""scikit-learn's handwritten digits laid out as Caltech-256 (paper Appendix B, Caltech protocol).

``<out>/256_ObjectCategories/NNN.<name>/NNN_XXXX.jpg`` exactly as the Caltech-256 archive unpacks
(docs/formats.md section 3): ten class folders ``001.zero`` .. ``010.nine`` (sorted folder names = digit
order), files numbered from ``0001`` in the order of ``sklearn.datasets.load_digits``; all 1,797
digits (174 to 183 per class), enough for both the Caltech-101 protocol (30 training / 50 test
images per class) and the Caltech-256 one (60 training / the rest).

Each 8x8 digit (17 grey levels) becomes a ``size`` x ``size`` RGB JPEG the way Caltech photographs
differ from one another: the digit is upscaled (bicubic) to a random height between 40% and 60% of
the canvas (``height_range``), rotated by up to 15 degrees, placed at a random position, with a
random stroke brightness over a dim, smooth, random background. These defaults were chosen on the
Caltech protocol's validation images only (data/README.md gives the rule). Every random draw comes from
``numpy.random.default_rng(seed)`` in file order, so the tree is the same on every machine (the
JPEG encoder is Pillow's libjpeg at a fixed quality). Nothing is downloaded: the digits ship with
scikit-learn.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.shipped import prepared_tree

__all__ = ["DIGIT_NAMES", "CALTECH_DIR", "prepare_digits_caltech", "jittered_digit"]

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
#: the top folder of the Caltech-256 archive
CALTECH_DIR = "256_ObjectCategories"


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dim, smooth random background: bilinear upsampling of a 4x4 grid of grey levels."""
    coarse = rng.uniform(0, 60, size=(4, 4)).astype(np.float32)
    return np.array(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))


def jittered_digit(digit: np.ndarray, rng: np.random.Generator, size: int,
                   height_range: tuple[float, float] = (0.4, 0.6), max_rotation: float = 15.0) -> np.ndarray:
    """One 8x8 digit (values 0..16) as a ``size`` x ``size`` uint8 image with random scale (a height in
    ``height_range`` of the side), rotation (up to ``max_rotation`` degrees), position, brightness and
    background (the draws are documented in the module docstring)."""
    height = int(round(size * rng.uniform(*height_range)))
    angle = float(rng.uniform(-max_rotation, max_rotation))
    bright = float(rng.uniform(160, 255))
    glyph = Image.fromarray((digit * (255.0 / 16.0)).astype(np.float32), mode="F")
    glyph = glyph.resize((height, height), Image.BICUBIC).rotate(angle, resample=Image.BILINEAR, expand=True)
    g = np.clip(np.asarray(glyph), 0, 255) / 255.0
    h, w = g.shape
    canvas = _background(rng, size)
    y0 = int(rng.integers(0, max(1, size - h + 1)))
    x0 = int(rng.integers(0, max(1, size - w + 1)))
    gh, gw = min(h, size - y0), min(w, size - x0)
    region = canvas[y0:y0 + gh, x0:x0 + gw]
    canvas[y0:y0 + gh, x0:x0 + gw] = np.maximum(region, bright * g[:gh, :gw])
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def prepare_digits_caltech(out: str | os.PathLike[str], size: int = 64, seed: int = 0, quality: int = 95,
                           height_range: tuple[float, float] = (0.4, 0.6), max_rotation: float = 15.0) -> Path:
    """Write the Caltech-256-style digits tree under ``out`` (idempotent).

    Args:
        out: folder to create; the images go to ``out/256_ObjectCategories/``.
        size: side of the square images in pixels (at least 16).
        seed: seed of the jitter draws.
        quality: JPEG quality.
        height_range: range of the digit's height as a fraction of ``size`` (0 < low <= high <= 1).
        max_rotation: largest rotation in degrees (either way).
    Returns:
        ``out``.
    """
    from sklearn.datasets import load_digits

    if size < 16:
        raise UserError(f"size={size}: digits images must be at least 16 pixels")
    lo, hi = (float(v) for v in height_range)
    if not 0 < lo <= hi <= 1:
        raise UserError(f"height_range={height_range}: need 0 < low <= high <= 1 (fractions of the image side)")
    params = {"dataset": "digits-caltech", "size": size, "seed": seed, "quality": quality, "layout": CALTECH_DIR,
              "height_range": [lo, hi], "max_rotation": float(max_rotation)}

    def build(tmp: Path) -> None:
        digits = load_digits()
        rng = np.random.default_rng(seed)
        counters = [0] * len(DIGIT_NAMES)
        for img, label in zip(digits.images, digits.target, strict=False):
            label = int(label)
            counters[label] += 1
            folder = tmp / CALTECH_DIR / f"{label + 1:03d}.{DIGIT_NAMES[label]}"
            folder.mkdir(parents=True, exist_ok=True)
            arr = jittered_digit(img, rng, size, (lo, hi), max_rotation)
            Image.fromarray(arr, "L").convert("RGB").save(folder / f"{label + 1:03d}_{counters[label]:04d}.jpg",
                                                           quality=quality)

    return prepared_tree(out, params, build)
