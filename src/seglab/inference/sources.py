"""Any input of the Python API as uint8 H x W x C arrays: file paths, folders (images in subfolders
included, sorted), PIL images, numpy arrays and tensors, or a list of them.

Conventions: numpy arrays are RGB (OpenCV's `cv2.imread` gives BGR: reverse the last axis first), H x W
or H x W x C uint8 (C = 1, 3, or 4 with the alpha dropped); tensors are (C, H, W) or (N, C, H, W), uint8 or
floats in [0, 1] (the layout of `torchvision.io.read_image` and `ToTensor`). Files are read as `seglab
predict` reads them (`seglab.data.io.read_photo`: EXIF orientation, conversions with a note, logged to
the `seglab` logger).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import SeglabError

log_note = logging.getLogger("seglab").info


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _from_channels(array: np.ndarray, in_channels: int, what: str) -> np.ndarray:
    """H x W x C uint8 -> H x W x in_channels (grayscale repeated to RGB, RGB averaged to gray, alpha
    dropped)."""
    c = array.shape[2]
    if c == in_channels:  # a copy when read-only (np.asarray of a PIL image): torch wants to own its memory
        return np.ascontiguousarray(array) if array.flags.writeable else array.copy()
    if c == 4 and in_channels == 3:
        return np.ascontiguousarray(array[:, :, :3])
    if c in (1, 2) and in_channels == 3:
        return np.ascontiguousarray(np.repeat(array[:, :, :1], 3, axis=2))
    if c in (3, 4) and in_channels == 1:
        gray = array[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[:, :, None]
    raise SeglabError(f"{what}: has {c} channels, the model takes {in_channels}")


def as_array(image, in_channels: int = 3, *, log: Callable[[str], None] | None = None) -> np.ndarray:
    """One image (path, PIL image, array or (C, H, W) tensor) -> H x W x in_channels uint8."""
    from PIL import Image

    from ..data.io import photo_array, read_photo

    if _is_path(image):
        array, note = read_photo(image, in_channels)
        if note:
            (log or log_note)(f"note: {note}")
        return array
    if isinstance(image, Image.Image):
        if in_channels not in (1, 3):
            return _from_channels(np.asarray(image), in_channels, "PIL image")
        return photo_array(image, in_channels)[0]
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3:
            raise SeglabError(f"an image tensor must be (C, H, W) (or a batch (N, C, H, W)), got shape {tuple(t.shape)}")
        if t.is_floating_point():
            t = (t.float().clamp(0, 1) * 255).round()
        elif t.dtype != torch.uint8:
            raise SeglabError(f"an image tensor must be uint8 or float in [0, 1], got {t.dtype}")
        return _from_channels(t.to(torch.uint8).permute(1, 2, 0).numpy(), in_channels, "tensor")
    if isinstance(image, np.ndarray):
        a = image
        if a.dtype != np.uint8:
            raise SeglabError(f"an image array must be uint8 (H, W) or (H, W, C) RGB, got {a.dtype} {a.shape}")
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3:
            raise SeglabError(f"an image array must be (H, W) or (H, W, C), got shape {a.shape}")
        return _from_channels(a, in_channels, "array")
    raise SeglabError(f"cannot predict a {type(image).__name__}: give a path, a folder, a PIL image, a "
                      f"uint8 array or a tensor (or a list of them)")


def load_sources(source, in_channels: int = 3, *, log: Callable[[str], None] | None = None
                 ) -> tuple[list[np.ndarray], list[str | None], bool]:
    """(arrays, their paths or None, whether `source` was a single image)."""
    from .inputs import VIDEO_SUFFIXES, collect_inputs

    if _is_path(source) and Path(source).is_dir():
        items = [i for i in collect_inputs([source]) if not i.is_video]
        if not items:
            raise SeglabError(f"{source}: folder has no images (videos: use seglab.engine.predict_to_folder)")
        return [as_array(i.path, in_channels, log=log) for i in items], [str(i.path) for i in items], False
    if _is_path(source):
        if Path(source).suffix.lower() in VIDEO_SUFFIXES:
            raise SeglabError(f"{source}: a video; predict it with seglab predict or "
                              f"seglab.engine.predict_to_folder (a video of overlays, label PNGs per frame)")
        return [as_array(source, in_channels, log=log)], [str(source)], True
    if isinstance(source, torch.Tensor) and source.dim() == 4:
        return [as_array(t, in_channels) for t in source], [None] * len(source), False
    if isinstance(source, np.ndarray) and source.ndim == 4:
        return [as_array(a, in_channels) for a in source], [None] * len(source), False
    if isinstance(source, (list, tuple)):
        arrays, paths = [], []
        for item in source:
            a, p, _ = load_sources(item, in_channels, log=log)
            arrays += a
            paths += p
        return arrays, paths, False
    return [as_array(source, in_channels, log=log)], [None], True
