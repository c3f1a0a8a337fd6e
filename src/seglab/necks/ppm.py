"""Pyramid Pooling Module: Zhao, Shi, Qi, Wang & Jia, "Pyramid Scene Parsing Network", CVPR 2017, Sec. 3.2.

The feature map (C channels) is average-pooled to `bins` x `bins` grids (paper: 1, 2, 3, 6, adaptive
pooling so any input size works); each pooled map goes through a 1x1 conv reducing it to C / N channels
(N = number of pyramid levels, so 512 for C = 2048 and four levels) + BN + ReLU, is upsampled bilinearly
back to the feature's size, and everything is concatenated with the input: C + N * C/N = 2C channels.

Concatenation order is `[input, bin 1, bin 2, bin 3, bin 6]`, as in the authors' PyTorch release
(hszhao/semseg). Upsampling uses `align_corners=False` (semseg uses True, mmseg False).
Note: in training, the 1x1 bin's BN sees one value per channel per image, so a batch of one image
cannot be trained (as in every implementation of the module).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvNormAct, resize_to

__all__ = ["PyramidPoolingModule"]


class PyramidPoolingModule(nn.Module):
    """`forward(x)` -> `cat([x, up(conv(pool_b(x))) for b in bins])` with `out_channels` channels."""

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6), *,
                 reduction_channels: int | None = None):
        super().__init__()
        self.bins = tuple(int(b) for b in bins)
        reduction = reduction_channels or in_channels // len(self.bins)
        self.stages = nn.ModuleList(ConvNormAct(in_channels, reduction, 1) for _ in self.bins)
        self.out_channels = in_channels + reduction * len(self.bins)

    def pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The reduced, not yet upsampled pyramid: one (N, C/N, b, b) map per bin."""
        return [stage(F.adaptive_avg_pool2d(x, b)) for b, stage in zip(self.bins, self.stages)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(resize_to(p, size) for p in self.pooled(x))], dim=1)
