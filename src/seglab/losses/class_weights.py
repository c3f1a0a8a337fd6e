"""Class weights for cross-entropy on imbalanced label sets.

- Median frequency balancing: Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels
  with a Common Multi-Scale Convolutional Architecture", ICCV 2015, Sec. 4.3, as SegNet uses it on
  CamVid (Badrinarayanan, Kendall, Cipolla, TPAMI 2017, Sec. 3.4).
- Inverse log frequency: Paszke et al., "ENet", arXiv 1606.02147, 2016, Sec. 5.2.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch


def _as_float64(x, name: str) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if arr.ndim != 1 or (arr < 0).any():
        raise ValueError(f"{name} must be a 1-D sequence of non-negative counts, got {arr!r}")
    return arr


def count_class_pixels(label_maps: Iterable, num_classes: int, ignore_index: int | None = 255):
    """`(pixel_counts, present_pixel_counts)` over label maps (arrays or tensors of class indices).

    pixel_counts[c]: pixels labelled c; present_pixel_counts[c]: labelled (non-ignored) pixels of the
    images in which c appears. Values outside [0, num_classes) other than `ignore_index` raise.
    """
    pixels = np.zeros(num_classes, np.int64)
    present = np.zeros(num_classes, np.int64)
    for labels in label_maps:
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
        if ignore_index is not None:
            labels = labels[labels != ignore_index]
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"label values outside [0, {num_classes}) (ignore_index={ignore_index})")
        counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
        pixels += counts
        present[counts > 0] += labels.size
    return pixels, present


def median_frequency_weights(pixel_counts, present_pixel_counts) -> torch.Tensor:
    """weight_c = median(freq) / freq_c with freq_c = pixel_counts_c / present_pixel_counts_c.

    present_pixel_counts_c is the total number of pixels in the images where class c appears
    (Eigen & Fergus). The median is taken over the classes that appear (the mean of the two middle
    values for an even number, as `numpy.median`); a class that never appears gets weight 0, which
    is harmless since it has no pixels to weight. Returns float32 of shape (C,).
    """
    pixels = _as_float64(pixel_counts, "pixel_counts")
    present = _as_float64(present_pixel_counts, "present_pixel_counts")
    if pixels.shape != present.shape:
        raise ValueError(f"pixel_counts has {pixels.size} classes, present_pixel_counts {present.size}")
    seen = (pixels > 0) & (present > 0)
    weights = np.zeros_like(pixels)
    if seen.any():
        freq = pixels[seen] / present[seen]
        weights[seen] = np.median(freq) / freq
    return torch.from_numpy(weights).float()


def inverse_log_frequency_weights(pixel_counts, c: float = 1.02) -> torch.Tensor:
    """ENet's weight_c = 1 / ln(c + p_c), p_c = pixel_counts_c / sum(pixel_counts), c = 1.02.

    Bounded in (1/ln(1 + c), 1/ln(c)], about (1.45, 50.5] for c = 1.02; a class with no pixels gets
    the largest weight, as the formula gives (it has nothing to weight). Returns float32 (C,).
    """
    pixels = _as_float64(pixel_counts, "pixel_counts")
    if c <= 1:
        raise ValueError(f"c must be > 1 so that every weight is positive and finite, got {c}")
    total = pixels.sum()
    prob = pixels / total if total > 0 else np.zeros_like(pixels)
    return torch.from_numpy(1.0 / np.log(c + prob)).float()
