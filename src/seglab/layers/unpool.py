"""Max pooling that remembers where the maxima were, and max-unpooling with those indices
(Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image
Segmentation", TPAMI 2017, Sec. 3; the 'switches' of Zeiler & Fergus, ECCV 2014).

`IndexedMaxPool2d` returns `(pooled, indices, input_size)`; `MaxUnpool2d` puts every value back at
its recorded position of a map of `input_size` and leaves every other position zero.

Odd sizes: the pool uses `ceil_mode=True`, so a trailing row / column is pooled on its own (a 2x1
window) instead of being dropped, and unpooling is given the exact pre-pool size. Every input pixel is
therefore covered by one window, every window's argmax is a real pixel, and the decoder reproduces the
encoder's sizes exactly with no padding, no wasted compute and no border artefacts (padding the input
to a multiple of 32 and cropping would also work but runs the network on up to 31 made-up rows).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IndexedMaxPool2d(nn.Module):
    """2x2 stride-2 max pooling (ceil mode) returning `(y, indices, (H, W) of the input)`."""

    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride or kernel_size

    def forward(self, x: torch.Tensor):
        y, idx = F.max_pool2d(x, self.kernel_size, self.stride, ceil_mode=True, return_indices=True)
        return y, idx, tuple(x.shape[-2:])


class MaxUnpool2d(nn.Module):
    """Inverse of `IndexedMaxPool2d`: scatter `x` to `indices` in a zero map of `size` (H, W)."""

    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride or kernel_size

    def forward(self, x: torch.Tensor, indices: torch.Tensor, size) -> torch.Tensor:
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, output_size=tuple(size))
