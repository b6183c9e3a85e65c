"""scikit-learn's handwritten digits laid out as Caltech-256 (paper Appendix B, Caltech protocol): all 1,797
digits as jittered JPEGs in ``256_ObjectCategories/NNN.<name>/``, every draw from ``default_rng(seed)`` in file
order; data/README.md "digits-Caltech" gives the layout, the draws and how they were chosen."""

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


def jittered_digit(digit: np.ndarray, rng: np.random.Generator, size: int,
                   height_range: tuple[float, float] = (0.4, 0.6), max_rotation: float = 15.0) -> np.ndarray:
    """One 8x8 digit (values 0..16) as a ``size`` x ``size`` uint8 image with a random height (fractions of the
    side), rotation (degrees, either way), position, brightness and background (data/README.md)."""
    height = int(round(size * rng.uniform(*height_range)))
    angle = float(rng.uniform(-max_rotation, max_rotation))
    bright = float(rng.uniform(160, 255))
    glyph = Image.fromarray((digit * (255.0 / 16.0)).astype(np.float32), mode="F")
    glyph = glyph.resize((height, height), Image.BICUBIC).rotate(angle, resample=Image.BILINEAR, expand=True)
    g = np.clip(np.asarray(glyph), 0, 255) / 255.0
    h, w = g.shape
    coarse = rng.uniform(0, 60, size=(4, 4)).astype(np.float32)  # a dim, smooth background: a 4x4 grid upsampled
    canvas = np.array(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))
    y0 = int(rng.integers(0, max(1, size - h + 1)))
    x0 = int(rng.integers(0, max(1, size - w + 1)))
    gh, gw = min(h, size - y0), min(w, size - x0)
    region = canvas[y0:y0 + gh, x0:x0 + gw]
    canvas[y0:y0 + gh, x0:x0 + gw] = np.maximum(region, bright * g[:gh, :gw])
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def prepare_digits_caltech(out: str | os.PathLike[str], size: int = 64, seed: int = 0, quality: int = 95,
                           height_range: tuple[float, float] = (0.4, 0.6), max_rotation: float = 15.0) -> Path:
    """Write the Caltech-256-style digits tree under ``out`` and return ``out`` (once: :func:`prepared_tree`);
    images of ``size`` x ``size`` pixels (at least 16), the jitter of :func:`jittered_digit`."""
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
