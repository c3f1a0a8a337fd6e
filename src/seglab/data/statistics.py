"""Class frequencies of a data set, for class-balanced losses.

Median frequency balancing (Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels
with a Common Multi-Scale Convolutional Architecture", ICCV 2015, Sec. 4.3; used by SegNet,
Badrinarayanan et al., TPAMI 2017, Sec. 3.4): the weight of class c is median_freq / freq(c), where
freq(c) is the number of pixels of class c divided by the total number of pixels (all pixels of
the image, ignored ones included) of the images in which c is present. The weights themselves are
`seglab.losses.median_frequency_weights(pixel_counts, present_pixel_counts)`.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from ..errors import SeglabError

IGNORE_INDEX = 255


def class_statistics(dataset, num_classes: int, *, ignore_index: int = IGNORE_INDEX,
                     progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_counts, present_pixel_counts), both LongTensor[num_classes]: the pixels of each class,
    and the total pixel count of the images in which each class is present. Reads raw label maps
    (`dataset.read_mask(i)` when it exists, else `dataset.read_raw(i)[1]`), no transforms; pixels with
    `ignore_index` are skipped. The progress bar shows only on a terminal unless `progress` is given."""
    if num_classes < 1:
        raise SeglabError(f"class_statistics: num_classes must be >= 1, got {num_classes}")
    counts = np.zeros(num_classes, dtype=np.int64)
    present = np.zeros(num_classes, dtype=np.int64)
    read = getattr(dataset, "read_mask", None) or (lambda i: dataset.read_raw(i)[1])
    show = sys.stderr.isatty() if progress is None else progress
    for i in tqdm(range(len(dataset)), desc="class statistics", unit="img", disable=not show):
        mask = np.asarray(read(i))
        valid = mask[mask != ignore_index].ravel()
        if valid.size and (valid.min() < 0 or valid.max() >= num_classes):
            bad = np.unique(valid[(valid < 0) | (valid >= num_classes)])
            raise SeglabError(f"class_statistics: sample {i} has label values {bad[:10].tolist()} outside "
                              f"[0, {num_classes})")
        c = np.bincount(valid, minlength=num_classes)
        counts += c
        present[c > 0] += mask.size
    return torch.from_numpy(counts), torch.from_numpy(present)
