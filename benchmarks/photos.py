"""Deterministic photo-like JPEGs for the loader benchmarks (paper 3.1: training on ImageNet-size photos).

Nothing is downloaded: every image is drawn from ``numpy.random.default_rng(seed)``, so the same
files come out on every machine. An image is a *scene* (smooth random colour fields at two
scales, 6-15 filled shapes with sharp edges, thin lines, smooth shading, and a grey-dominant
fine texture over about half the area, like foliage or fabric), upscaled when the image is larger
than ``scene_side``, plus fine sensor noise at full resolution. That gives JPEGs whose size and
decoding cost behave like photos': most bytes go to the luminance texture, chroma is smooth.

Two sets, as in the loader benchmark:

- :data:`IMAGENET`: smaller side 400-500 px, aspect 4:3 / 3:2 / 5:4 (a quarter portrait); the JPEG
  quality of each image is searched so its file lands at a seeded target in 85-145 KB (ImageNet
  training JPEGs average about 110 KB).
- :data:`CAMERA`: 4032 x 3024 (12.2 MP, a quarter portrait), quality 92, about 3-3.4 MB, like a
  phone camera's file; the scene is drawn at 1000 px and upscaled, as camera pictures are smooth
  at the pixel level.

Run: ``python benchmarks/photos.py OUT [--set imagenet|camera] [-n N]`` writes an ImageFolder tree.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

__all__ = ["CAMERA", "IMAGENET", "PhotoSpec", "draw_jpeg", "encode_near", "photo", "write_photo_tree"]


@dataclass(frozen=True)
class PhotoSpec:
    """How one set of photos is drawn."""

    name: str
    short: tuple[int, int]  # smaller side range (inclusive)
    aspects: tuple[float, ...]  # longer / smaller side, one drawn per image
    portrait: float  # probability that the longer side is the height
    kb: tuple[int, int] | None  # file size window searched by JPEG quality; None: fixed quality
    quality: int  # the fixed quality, or the start of the search
    detail: float = 90.0  # texture amplitude (grey levels)
    noise: float = 3.0  # sensor noise (grey levels)
    scene_side: int = 1000  # the scene is drawn with its smaller side at most this, then upscaled


IMAGENET = PhotoSpec(
    "imagenet", short=(400, 500), aspects=(4 / 3, 3 / 2, 5 / 4), portrait=0.25, kb=(85, 145), quality=90
)
CAMERA = PhotoSpec("camera", short=(3024, 3024), aspects=(4 / 3,), portrait=0.25, kb=None, quality=92, noise=4.0)


def _field(rng: np.random.Generator, w: int, h: int, cell: int, mode: str = "RGB") -> Image.Image:
    """A smooth random field: uniform noise on a grid of ``cell``-pixel cells, bicubic-interpolated."""
    cell = max(2, cell)
    a = rng.integers(0, 256, size=(h // cell + 3, w // cell + 3, 3 if mode == "RGB" else 1), dtype=np.uint8)
    im = Image.fromarray(a if mode == "RGB" else a[..., 0])
    return im.resize((w, h), Image.BICUBIC, box=(1, 1, 1 + w / cell, 1 + h / cell))


def _tiled(tile: Image.Image, w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """``tile`` repeated over a w x h image from a random phase."""
    out = Image.new(tile.mode, (w, h))
    tw, th = tile.size
    ox, oy = int(rng.integers(tw)), int(rng.integers(th))
    for y in range(-oy, h, th):
        for x in range(-ox, w, tw):
            out.paste(tile, (x, y))
    return out


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(0, 256, 3))
    return r, g, b


def _shapes(img: Image.Image, rng: np.random.Generator) -> None:
    """Filled ellipses, rectangles and polygons (object edges) and thin lines (branches, wires)."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        sw, sh = rng.uniform(0.05, 0.5) * w, rng.uniform(0.05, 0.5) * h
        kind = int(rng.integers(3))
        if kind == 0:
            d.ellipse((x0, y0, x0 + sw, y0 + sh), fill=_colour(rng))
        elif kind == 1:
            d.rectangle((x0, y0, x0 + sw, y0 + sh), fill=_colour(rng))
        else:
            pts = [(x0 + rng.uniform(0, sw), y0 + rng.uniform(0, sh)) for _ in range(int(rng.integers(3, 7)))]
            d.polygon(pts, fill=_colour(rng))
    lw = max(1, min(w, h) // 400)
    for _ in range(int(rng.integers(5, 30))):
        pts = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(int(rng.integers(2, 5)))]
        d.line(pts, fill=_colour(rng), width=int(rng.integers(lw, 3 * lw + 1)))


def _scene(rng: np.random.Generator, w: int, h: int, detail: float) -> Image.Image:
    side = max(w, h)
    img = Image.blend(_field(rng, w, h, side // 3), _field(rng, w, h, side // 25), 0.4)
    _shapes(img, rng)
    shade = _field(rng, w, h, side // 3, "L").point(lambda v: 140 + v * 115 // 255)
    img = ImageChops.multiply(img, Image.merge("RGB", [shade] * 3))
    grain = rng.normal(0, detail, size=(128, 128, 1)) + rng.normal(0, detail / 4, size=(128, 128, 3))
    tile = Image.fromarray((128 + grain).clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    mask = _field(rng, w, h, side // 8, "L").point(lambda v: max(0, min(255, (v - 50) * 3)))
    img = Image.composite(ImageChops.add(img, _tiled(tile, w, h, rng), 1.0, -128), img, mask)
    return img.filter(ImageFilter.BoxBlur(0.5))


def photo(rng: np.random.Generator, w: int, h: int, *, detail: float = 90.0, noise: float = 3.0,
          scene_side: int = 1000) -> Image.Image:
    """One photo-like RGB image of w x h pixels drawn from ``rng``."""
    s = min(1.0, scene_side / min(w, h))
    img = _scene(rng, max(16, round(w * s)), max(16, round(h * s)), detail)
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    nt = Image.fromarray(rng.normal(128, noise, size=(127, 131, 3)).clip(0, 255).astype(np.uint8))
    return ImageChops.add(img, _tiled(nt, w, h, rng), 1.0, -128)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_near(img: Image.Image, target: int, lo: int = 70, hi: int = 97) -> tuple[bytes, int]:
    """(JPEG bytes, quality): the quality in [lo, hi] whose file size is closest to ``target`` bytes (bisection)."""
    best: tuple[int, bytes, int] | None = None
    while lo <= hi:
        q = (lo + hi) // 2
        data = _jpeg(img, q)
        if best is None or abs(len(data) - target) < best[0]:
            best = (abs(len(data) - target), data, q)
        if len(data) < target:
            lo = q + 1
        else:
            hi = q - 1
    assert best is not None
    return best[1], best[2]


def draw_jpeg(rng: np.random.Generator, spec: PhotoSpec) -> tuple[bytes, tuple[int, int], int]:
    """(JPEG bytes, (w, h), quality) of one photo of ``spec``."""
    short = int(rng.integers(spec.short[0], spec.short[1] + 1))
    long = round(short * float(rng.choice(spec.aspects)))
    w, h = (short, long) if rng.random() < spec.portrait else (long, short)
    img = photo(rng, w, h, detail=spec.detail, noise=spec.noise, scene_side=spec.scene_side)
    if spec.kb is None:
        return _jpeg(img, spec.quality), (w, h), spec.quality
    data, q = encode_near(img, int(rng.integers(spec.kb[0], spec.kb[1] + 1)) * 1000)
    return data, (w, h), q


def _draw_one(spec: PhotoSpec, seed: int, i: int) -> bytes:
    return draw_jpeg(np.random.default_rng([seed, sum(spec.name.encode()), i]), spec)[0]


def write_photo_tree(root: str | Path, spec: PhotoSpec, n: int, *, classes: int = 4, seed: int = 0,
                     workers: int = 0) -> list[Path]:
    """``n`` photos as an ImageFolder tree ``root/train/class{k}/{spec.name}_{i}.jpg``; their paths in order.

    Photo ``i`` is drawn from its own generator (seed, set, i), so the files do not depend on
    ``workers`` (processes; 0: all cores, 1: this process).
    """
    import functools
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.io import atomic_write_bytes
    from pipeline.runtime import cpu_count

    workers = min(n, workers or cpu_count())
    draw = functools.partial(_draw_one, spec, seed)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            blobs = list(pool.map(draw, range(n)))
    else:
        blobs = [draw(i) for i in range(n)]
    paths = []
    for i, data in enumerate(blobs):
        p = Path(root) / "train" / f"class{i % classes}" / f"{spec.name}_{i:05d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(p, data)
        paths.append(p)
    return paths


def scaled(spec: PhotoSpec, factor: float) -> PhotoSpec:
    """``spec`` with its sides multiplied by ``factor`` (small camera-like sets for tests)."""
    lo, hi = (max(16, round(s * factor)) for s in spec.short)
    return replace(spec, short=(lo, hi), scene_side=max(16, round(spec.scene_side * factor)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--set", choices=["imagenet", "camera"], default="imagenet")
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    paths = write_photo_tree(args.out, IMAGENET if args.set == "imagenet" else CAMERA, args.n, seed=args.seed)
    sizes = [p.stat().st_size / 1000 for p in paths]
    print(f"{len(paths)} JPEGs under {args.out}: {min(sizes):.0f}-{max(sizes):.0f} KB, mean {np.mean(sizes):.0f} KB")


if __name__ == "__main__":
    main()
