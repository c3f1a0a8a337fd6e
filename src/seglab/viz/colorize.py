"""Label maps to pictures: colour look-up, blending over the image, and indexed ('P') PNG files.

The indexed PNG stores the class index as the pixel value and the colours in the file's palette, the
format of the PASCAL VOC ground truth (Everingham et al., IJCV 2010), so one file is both the exact
label map and a viewable picture.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..utils.io import save_image_atomic


def _labels_array(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an (H, W) integer array, got {labels.dtype} {labels.shape}")
    return labels


def _palette_array(palette) -> np.ndarray:
    pal = np.asarray(palette, dtype=np.int64)
    if pal.ndim == 1 and pal.size % 3 == 0:     # flat [r0, g0, b0, r1, ...] as PIL uses
        pal = pal.reshape(-1, 3)
    if pal.ndim != 2 or pal.shape[1] != 3 or pal.min(initial=0) < 0 or pal.max(initial=0) > 255:
        raise ValueError(f"palette must be (K, 3) RGB values in [0, 255], got shape {pal.shape}")
    return pal.astype(np.uint8)


def colorize(labels, palette, *, ignore_index: int | None = 255) -> Image.Image:
    """RGB image of an (H, W) label map: pixel of class c gets palette[c]; `ignore_index` is black."""
    labels, pal = _labels_array(labels), _palette_array(palette)
    keep = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
    kept = labels[keep]
    if kept.size and (kept.min() < 0 or kept.max() >= len(pal)):
        raise ValueError(f"labels in [{kept.min()}, {kept.max()}] but the palette has {len(pal)} colours")
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[keep] = pal[kept]
    return Image.fromarray(rgb)


def overlay(image, labels, palette, alpha: float = 0.5, *, ignore_index: int | None = 255) -> Image.Image:
    """(1 - alpha) * image + alpha * colorize(labels), rounded: alpha=0 is the image, 1 the colours."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    colors = np.asarray(colorize(labels, palette, ignore_index=ignore_index))
    if image.shape != colors.shape or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3) matching labels {colors.shape[:2]}, "
                         f"got {image.dtype} {image.shape}")
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colors.astype(np.float32)
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))


def label_image(labels, palette) -> Image.Image:
    """8-bit palette ('P') image whose pixel values are the class indices (255 stays 255)."""
    labels, pal = _labels_array(labels), _palette_array(palette)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"an 8-bit label PNG holds values 0..255, got [{labels.min()}, {labels.max()}]")
    if len(pal) > 256:
        raise ValueError(f"an 8-bit PNG palette holds at most 256 colours, got {len(pal)}")
    full = np.zeros((256, 3), np.uint8)     # unlisted indices (255 among them) are black
    full[: len(pal)] = pal
    img = Image.fromarray(labels.astype(np.uint8))      # mode 'L'
    img.putpalette(full.reshape(-1).tolist())           # 'L' -> 'P', pixel values unchanged
    return img


def save_label_png(path: str | os.PathLike, labels, palette) -> None:
    """Write `label_image(labels, palette)` as PNG atomically (no partial file on failure)."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"label maps must be saved losslessly as .png, got {path}")
    save_image_atomic(path, label_image(labels, palette))
