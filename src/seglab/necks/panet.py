"""PANet's bottom-up path augmentation: Liu, Qi, Qin, Shi & Jia, "Path Aggregation Network for Instance
Segmentation", CVPR 2018, Sec. 3.1 and Fig. 2 (b).

An FPN carries the coarse levels' semantics down to the fine levels, but the fine levels' precise
localisation reaches the top only through the backbone's long path (over 100 layers in a ResNet). PANet
adds a short path back up: N2 = P2 and, for each level, "each feature map Ni first goes through a 3x3
convolutional layer with stride 2 to reduce the spatial size. Then each element of feature map Pi+1
and the down-sampled map are added through lateral connection. The fused feature map is then processed
by another 3x3 convolutional layer to generate Ni+1 for following sub-networks":

    N_{i+1} = ReLU(conv3x3(ReLU(conv3x3_stride2(N_i)) + P_{i+1}))

with 256 channels throughout and a ReLU after each conv, as the paper states. Choices not in the paper:
convs have biases and kaiming-uniform(a=1) init, like our FPN (the release, built on Detectron, has
no checkpoint to match); when the stride-2 output differs from P_{i+1} by a cell (odd sizes with a
floor-rounding backbone) it is bilinearly resized to P_{i+1}'s size; `extra_pool=True` appends
max-pool(kernel 1, stride 2) of N5, the stride-64 level an FPN-style RPN uses (torchvision's
`LastLevelMaxPool`, applied here to the augmented path).
Full size (256 channels, P2..P5): 3 x 2 x (256 * 256 * 9 + 256) = 3,540,480 parameters.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError
from ..layers import ConvNormAct, resize_to

__all__ = ["BottomUpPathAugmentation"]


class BottomUpPathAugmentation(nn.Module):
    """`forward([P2, ..., P5(, P6)])` -> `[N2, ..., N5(, N6)]`, every level with `channels` channels.

    `num_levels` counts the FPN levels that enter the path (P2..P5: 4); with `extra_pool=True` the input
    also carries the FPN's max-pooled P6, which is ignored and replaced by max-pool(N5).
    `in_strides` (default 4, 8, 16, ...) only sets the `.strides` attribute of the outputs.
    """

    def __init__(self, channels: int = 256, num_levels: int = 4, *, extra_pool: bool = False,
                 in_strides: Sequence[int] | None = None):
        super().__init__()
        if num_levels < 2:
            raise SeglabError(f"BottomUpPathAugmentation needs num_levels >= 2 (P2..P5 is 4), got {num_levels}")
        self.num_levels = num_levels
        self.extra_pool = extra_pool
        self.downsample_convs = nn.ModuleList(ConvNormAct(channels, channels, 3, stride=2, norm=False)
                                              for _ in range(num_levels - 1))
        self.fuse_convs = nn.ModuleList(ConvNormAct(channels, channels, 3, norm=False)
                                        for _ in range(num_levels - 1))
        strides = list(in_strides or [4 * 2 ** i for i in range(num_levels)])
        self.strides = strides + [strides[-1] * 2] if extra_pool else strides
        self.out_channels = [channels] * len(self.strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        expected = self.num_levels + int(self.extra_pool)
        if len(features) != expected:
            raise SeglabError(f"BottomUpPathAugmentation built for {expected} levels "
                              f"({self.num_levels} + {int(self.extra_pool)} pooled), got {len(features)}")
        outs = [features[0]]
        for down, fuse, lateral in zip(self.downsample_convs, self.fuse_convs, features[1:self.num_levels]):
            outs.append(fuse(resize_to(down(outs[-1]), lateral.shape[-2:]) + lateral))
        if self.extra_pool:
            outs.append(F.max_pool2d(outs[-1], 1, 2, 0))
        return outs
