"""Reading images and label maps with one-line, file-naming errors.

Image files are read with Pillow. Label maps are single-channel: palette PNGs (the Pascal VOC
convention, Everingham et al., IJCV 2010) give their palette indices, grayscale PNGs ('L', 16-bit 'I;16'
/ 'I') give their values. Every user mistake (missing file, corrupt or truncated file, wrong channel
count, RGB colour label) raises `DataError` naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

# Pillow modes accepted as images: channel count after conversion, and the mode converted to.
_IMAGE_MODES = {"1": ("L", 1), "L": ("L", 1), "LA": ("LA", 2), "P": ("RGB", 3), "PA": ("RGBA", 4),
                "RGB": ("RGB", 3), "RGBA": ("RGBA", 4), "CMYK": ("RGB", 3), "YCbCr": ("RGB", 3),
                "LAB": ("RGB", 3), "HSV": ("RGB", 3)}
_LABEL_MODES = {"1", "L", "P", "I", "I;16", "I;16B", "I;16L"}


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found" if not p.exists() else f"{p}: not a file")
    try:
        img = Image.open(p)
        img.load()  # decode now: truncated / corrupt data raises here, not later
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{p}: cannot read {what} ({type(e).__name__}: {e})") from e
    return img


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with Image.open(p) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{p}: cannot read image ({type(e).__name__}: {e})") from e


def read_image(path: str | os.PathLike, in_channels: int = 3) -> np.ndarray:
    """An H x W x C uint8 array (RGB for C = 3). Palette images are colour images (converted to RGB);
    grayscale ('L') counts as one channel. A different channel count raises `DataError`."""
    img = _open(path, "image")
    mode = img.mode
    if mode in _IMAGE_MODES:
        mode_to, channels = _IMAGE_MODES[mode]
    else:
        raise DataError(f"{path}: image mode {mode} is not supported, expected an 8-bit image "
                        f"with {in_channels} channel{'s' if in_channels != 1 else ''}")
    if channels != in_channels:
        raise DataError(f"{path}: image has {channels} channel{'s' if channels != 1 else ''} ({mode}), "
                        f"expected {in_channels}")
    if img.mode != mode_to:
        img = img.convert(mode_to)
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """An H x W int64 label map: palette indices for 'P' PNGs, pixel values for grayscale ones."""
    img = _open(path, "label")
    if img.mode not in _LABEL_MODES:
        hint = ": convert colour-coded labels to class indices first" if img.mode.startswith("RGB") else ""
        raise DataError(f"{path}: label map has mode {img.mode}, expected a single-channel or palette "
                        f"label image (one class index per pixel){hint}")
    return np.asarray(img).astype(np.int64)
