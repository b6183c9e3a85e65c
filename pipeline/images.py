"""Image decoding shared by every stage (paper 2.1: the nets take RGB images): by content, never by extension
(ImageNet holds a PNG named .JPEG and CMYK JPEGs), EXIF-oriented, any mode to 8-bit RGB, decompression bombs
refused; :class:`ImageError` carries the one-line reason that callers record as a skip."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "decode_rgb", "open_image", "decode_opened", "to_rgb", "DEFAULT_MAX_PIXELS", "BACKGROUND"]

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own default bomb limit (2x MAX_IMAGE_PIXELS warning)
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white


class ImageError(Exception):
    """An image that cannot be used; ``str(e)`` is a one-line reason."""


def to_rgb(img: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: transparency (RGBA, LA, P with a transparent index) composited on
    ``background``, 16-bit and float greyscale scaled to 8 bit, CMYK through Pillow's conversion."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(arr if arr.max() > 1.0 else arr * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


@contextlib.contextmanager
def _reasons() -> Iterator[None]:
    """Turn Pillow's exceptions (and bomb warnings) while opening or decoding into ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised content)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot decode: {e}") from None


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image's header: a lazy Pillow image (nothing decoded yet), identified by content, bomb-checked."""
    if not data:
        raise ImageError("empty file")
    with _reasons():
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError(f"too many pixels ({w}x{h} > {max_pixels}), possible decompression bomb")
    return img


def decode_opened(img: Image.Image, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image from :func:`open_image` to EXIF-oriented 8-bit RGB (optionally in JPEG draft mode)."""
    with _reasons():
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", draft_size)
        img.load()
    try:
        ImageOps.exif_transpose(img, in_place=True)  # no copy when there is nothing to rotate
    except Exception as e:  # noqa: BLE001 - broken EXIF must not lose the image
        warnings.warn(f"ignoring broken EXIF orientation: {e}", stacklevel=2)
    return to_rgb(img)


def decode_rgb(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Image bytes -> EXIF-oriented 8-bit RGB: :func:`open_image`, then :func:`decode_opened`.

    ``draft_size`` lets libjpeg downscale a JPEG in the DCT domain to no less than this (width,
    height) before decoding (draft mode). Raises :class:`ImageError` with a one-line reason.
    """
    return decode_opened(open_image(data, max_pixels=max_pixels), draft_size)
