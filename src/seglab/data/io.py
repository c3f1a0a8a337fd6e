"""Reading images and label maps with one-line, file-naming errors.

Image files are read with Pillow. Label maps are single-channel: palette PNGs (the Pascal VOC
convention, Everingham et al., IJCV 2010) give their palette indices, grayscale PNGs ('L', 16-bit 'I;16'
/ 'I') give their values. Every user mistake (missing file, corrupt or truncated file, wrong channel
count, RGB colour label) raises `DataError` naming the file.

Data sets read images as stored (`read_image`: the channel count must match, so an image and its label
map stay aligned). Prediction takes any photo (`read_photo` / `photo_array`): the EXIF orientation is
applied (a phone photo is upright) and RGBA, LA, palette, grayscale and 16-bit images are converted to
the model's RGB (or grayscale) input, with a one-line note saying what was done.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

# Pillow modes accepted as images: channel count after conversion, and the mode converted to.
_IMAGE_MODES = {"1": ("L", 1), "L": ("L", 1), "LA": ("LA", 2), "P": ("RGB", 3), "PA": ("RGBA", 4),
                "RGB": ("RGB", 3), "RGBA": ("RGBA", 4), "CMYK": ("RGB", 3), "YCbCr": ("RGB", 3),
                "LAB": ("RGB", 3), "HSV": ("RGB", 3)}
_LABEL_MODES = {"1", "L", "P", "I", "I;16", "I;16B", "I;16L"}


# Decompression bombs: a small file may declare a huge image (a 420 KB PNG of 12000 x 12000 pixels). The
# declared size is checked against this limit before any pixel is decoded. Default 2^27 pixels (e.g.
# 16384 x 8192; Cityscapes frames have 2 M); set SEGLAB_MAX_IMAGE_PIXELS or call set_max_image_pixels.
DEFAULT_MAX_IMAGE_PIXELS = 2 ** 27
_max_pixels: int | None = None


def max_image_pixels() -> int:
    """The largest image (width x height) seglab decodes: `set_max_image_pixels`, else the
    SEGLAB_MAX_IMAGE_PIXELS environment variable, else DEFAULT_MAX_IMAGE_PIXELS."""
    if _max_pixels is not None:
        return _max_pixels
    env = os.environ.get("SEGLAB_MAX_IMAGE_PIXELS")
    if env is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(env)
        if value <= 0:
            raise ValueError
    except ValueError:
        raise DataError(f"SEGLAB_MAX_IMAGE_PIXELS must be a positive integer, got {env!r}") from None
    return value


def set_max_image_pixels(limit: int | None) -> None:
    """Set the pixel limit for this process (None: back to the environment variable / default)."""
    global _max_pixels
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise ValueError(f"the pixel limit must be a positive integer, got {limit!r}")
    _max_pixels = limit


def open_image(path: str | os.PathLike, what: str = "image", *, decode: bool = True) -> Image.Image:
    """A Pillow image, its declared size checked against `max_image_pixels()` before decoding, decoded
    now (`decode`) so that truncated or corrupt data raises here; every problem is one DataError naming
    the file. Pillow's own bomb check is replaced by this one (the limit is seglab's)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found" if not p.exists() else f"{p}: not a file")
    limit = max_image_pixels()
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # seglab's check below
        img = Image.open(p)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{p}: cannot read {what} ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    w, h = img.size
    if w * h > limit:
        img.close()
        raise DataError(f"{p}: {what} declares {w}x{h} = {w * h} pixels, more than the limit of {limit} "
                        f"(a decompression bomb?); raise SEGLAB_MAX_IMAGE_PIXELS if the image is real")
    if decode:
        try:
            img.load()
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
            img.close()
            raise DataError(f"{p}: cannot read {what} ({type(e).__name__}: {e})") from None
    return img


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    return open_image(path, what)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    with open_image(path, "image", decode=False) as img:
        return img.size


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


def read_photo(path: str | os.PathLike, in_channels: int = 3) -> tuple[np.ndarray, str | None]:
    """(H x W x C uint8 array, note) for prediction: EXIF orientation applied, and any common mode
    converted to `in_channels` (3: RGB, 1: grayscale); `note` says what was converted (None when nothing
    was). Other channel counts (RGB-D models) read as `read_image` does."""
    if in_channels not in (1, 3):
        return read_image(path, in_channels), None
    array, note = photo_array(_open(path, "image"), in_channels)
    return array, (f"{path}: {note}" if note else None)


# 16-bit and 32-bit integer / float modes: scaled to 8 bits (a 16-bit value v becomes v / 257, so that
# 65535 -> 255); values already in 0..255 are kept.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def photo_array(img: Image.Image, in_channels: int = 3) -> tuple[np.ndarray, str | None]:
    """A Pillow image -> (H x W x in_channels uint8 array, note on the conversion or None), EXIF
    orientation applied. `in_channels` is 3 (RGB) or 1 (grayscale)."""
    try:
        if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            img = ImageOps.exif_transpose(img)  # a new image: the caller's is left as it is
    except (OSError, ValueError, SyntaxError, KeyError):  # a corrupt EXIF block: keep the pixels as stored
        pass
    mode, target = img.mode, ("RGB" if in_channels == 3 else "L")
    if mode == target:
        note = None
    else:
        what = {"P": "palette image", "1": "1-bit image", "L": "grayscale image"}.get(mode, f"{mode} image")
        if mode in _WIDE_MODES:
            wide = np.asarray(img, dtype=np.float64)
            scale = 257.0 if wide.size and wide.max() > 255 else 1.0
            img = Image.fromarray(np.clip(np.rint(wide / scale), 0, 255).astype(np.uint8), "L")
            what += " scaled to 8 bits (value / 257)," if scale > 1 else ","
        alpha = " (alpha dropped)" if mode in ("RGBA", "LA", "PA", "RGBa", "La") else ""
        note = f"{what} converted to {'RGB' if in_channels == 3 else 'grayscale'}{alpha}"
        img = img.convert(target) if mode != "PA" else img.convert("RGBA").convert(target)
    arr = np.array(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr), note


def read_label(path: str | os.PathLike) -> np.ndarray:
    """An H x W int64 label map: palette indices for 'P' PNGs, pixel values for grayscale ones."""
    img = _open(path, "label")
    if img.mode not in _LABEL_MODES:
        hint = (": colour-coded masks convert to class indices with seglab data convert SRC --out DST --palette "
                "camvid|voc|cityscapes|ade20k|FILE (docs/custom_data.md)") if img.mode.startswith("RGB") else ""
        raise DataError(f"{path}: label map has mode {img.mode}, expected a single-channel or palette "
                        f"label image (one class index per pixel){hint}")
    return np.asarray(img).astype(np.int64)
