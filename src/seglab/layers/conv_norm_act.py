"""Convolution + batch norm + activation, the block every architecture here is built from."""
from __future__ import annotations

from torch import nn


class ConvNormAct(nn.Sequential):
    """`Conv2d -> BatchNorm2d -> ReLU` with 'same' padding for odd kernels (dilation included).

    Children are named `0`, `1`, `2` like `nn.Sequential`, which is also how torchvision names the
    layers of its segmentation heads, so converted checkpoints keep their keys.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1,
                 dilation: int = 1, groups: int = 1, norm: bool = True, act: bool = True):
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                             dilation=dilation, groups=groups, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SeparableConvNormAct(nn.Sequential):
    """Depthwise (optionally atrous) 3x3 conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU
    (Chollet, Xception, CVPR 2017; used in the ASPP and decoder of DeepLab v3+)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, dilation: int = 1):
        super().__init__(
            ConvNormAct(in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels),
            ConvNormAct(in_channels, out_channels, 1),
        )
