"""Feature Pyramid Network: Lin, Dollar, Girshick, He, Hariharan & Belongie, "Feature Pyramid Networks
for Object Detection", CVPR 2017, Sec. 3.

Given backbone stages C2..C5 (strides 4, 8, 16, 32), each gets a lateral 1x1 conv to `out_channels`
(256 in the paper); the top-down pathway upsamples the coarser merged map by nearest neighbour (to the
finer map's exact size, so odd input sizes work) and adds it to the lateral; a 3x3 conv on each merged
map gives P2..P5. `extra_pool=True` appends P6 = max-pool(kernel 1, stride 2) of P5, as Mask R-CNN's
RPN uses (torchvision's `LastLevelMaxPool`, Detectron's FPN).

Layout matches torchvision's `FeaturePyramidNetwork` (`inner_blocks.{i}.0`, `layer_blocks.{i}.0`,
convs with bias, kaiming-uniform(a=1) init), so the FPN of its detection checkpoints maps key for key.
Full size on ResNet-50 (256/512/1024/2048 -> 256): 3,344,384 parameters.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvNormAct

__all__ = ["FeaturePyramidNetwork"]


class FeaturePyramidNetwork(nn.Module):
    """`forward([C2, ..., C5])` -> `[P2, ..., P5(, P6)]`, each with `out_channels` channels.

    `in_strides` (default 4, 8, 16, 32) only sets the `.strides` attribute of the outputs.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, *, extra_pool: bool = False,
                 in_strides: Sequence[int] | None = None):
        super().__init__()
        self.inner_blocks = nn.ModuleList(ConvNormAct(c, out_channels, 1, norm=False, act=False)
                                          for c in in_channels)
        self.layer_blocks = nn.ModuleList(ConvNormAct(out_channels, out_channels, 3, norm=False, act=False)
                                          for _ in in_channels)
        self.extra_pool = extra_pool
        strides = list(in_strides or [4 * 2 ** i for i in range(len(in_channels))])
        self.strides = strides + [strides[-1] * 2] if extra_pool else strides
        self.out_channels = [out_channels] * len(self.strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.inner_blocks):
            raise ValueError(f"FPN built for {len(self.inner_blocks)} levels, got {len(features)} features")
        last = self.inner_blocks[-1](features[-1])
        outs = [self.layer_blocks[-1](last)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[i](features[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.layer_blocks[i](last))
        if self.extra_pool:
            outs.append(F.max_pool2d(outs[-1], 1, 2, 0))
        return outs
