"""Decoding image files safely, with one set of rules for datasets, captions and dashboard uploads.

An image is decoded fully (a truncated file fails here, not in the middle of a batch) and converted to
8-bit RGB, scaling high-bit-depth pixels (16-bit PNG and TIFF, 32-bit integer and float images) instead
of clipping them to white. What cannot be decoded safely raises `ImageDecodeError` naming the file and
the reason, so an explain run records it and skips the image:

- unreadable, truncated or not an image;
- larger than Pillow's decompression-bomb limit, or than `MAX_IMAGE_PIXELS` decoded pixels (50 MP by
  default; set TEXPLAIN_MAX_IMAGE_PIXELS to change it). A JPEG above the cap is decoded at 1/2, 1/4 or
  1/8 scale instead, which its format does for free; other formats would take their full size in memory;
- smaller than `MIN_IMAGE_SIDE` pixels on a side: nothing a classifier can read.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import ImageDecodeError

MIN_IMAGE_SIDE = 8  # pixels; a classifier resizes to ~224, so anything smaller is not a photo
MAX_IMAGE_PIXELS = int(os.environ.get("TEXPLAIN_MAX_IMAGE_PIXELS", 50_000_000))  # decoded pixels per image

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def load_rgb(path: str | Path, max_pixels: int | None = None, min_side: int | None = None) -> Image.Image:
    """An image file as 8-bit RGB; ImageDecodeError (a DatasetError) when it cannot be decoded safely."""
    try:
        with open(path, "rb") as f:
            return _decode(f, f"image {path}", max_pixels, min_side)
    except FileNotFoundError:
        raise ImageDecodeError(f"image file not found: {path}") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"cannot read image {path}: it is a folder") from None
    except PermissionError as exc:
        raise ImageDecodeError(f"cannot read image {path}: {exc.strerror}") from None


def decode_rgb(data: bytes, name: str = "the image", max_pixels: int | None = None,
               min_side: int | None = None) -> Image.Image:
    """Bytes of an image file as 8-bit RGB, with the same rules as `load_rgb`."""
    return _decode(io.BytesIO(data), name, max_pixels, min_side)


def _decode(fp, name: str, max_pixels: int | None, min_side: int | None) -> Image.Image:
    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    min_side = MIN_IMAGE_SIDE if min_side is None else min_side
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; the cap below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                w, h = im.size
                if w * h > max_pixels:
                    _reduce_or_refuse(im, name, max_pixels)
                im.load()
                image = to_rgb(im)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"cannot read {name}: it is too large to decode safely ({exc})") from None
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"cannot read {name}: {exc}") from exc
    if min(image.size) < min_side:
        raise ImageDecodeError(f"{name} is only {image.size[0]}×{image.size[1]} pixels; images must be at least "
                               f"{min_side} pixels on each side")
    return image


def _reduce_or_refuse(im: Image.Image, name: str, max_pixels: int) -> None:
    w, h = im.size
    if im.format == "JPEG":
        for k in (2, 4, 8):  # the scales a JPEG decoder gives for free
            if (w // k) * (h // k) <= max_pixels:
                im.draft(im.mode, (-(-w // k), -(-h // k)))
                return
    raise ImageDecodeError(f"cannot read {name}: it is {w}×{h} pixels ({w * h / 1e6:.0f} MP), more than the "
                           f"{max_pixels / 1e6:g} MP an image may decode to (TEXPLAIN_MAX_IMAGE_PIXELS)")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB, scaling 16-bit, 32-bit and float pixels to 0..255 (Pillow's own
    convert clips them: a 16-bit PNG would come out almost all white)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        hi = float(a.max()) if a.size else 0.0
        if mode == "F" and hi <= 1.0:
            scale = 255.0  # float images in [0, 1]
        elif mode.startswith("I;16") or 255 < hi <= 65535:
            scale = 255.0 / 65535.0  # 16 bits per sample
        elif hi <= 255:
            scale = 1.0  # 8-bit values stored in a wider type
        else:
            scale = 255.0 / hi  # beyond 16 bits: no fixed range, stretch the observed one
        a = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    return im.convert("RGB")
