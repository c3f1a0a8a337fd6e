"""Atrous Spatial Pyramid Pooling (ASPP), the context module of the DeepLab line.

- `ASPP`: DeepLab v3 (Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic
  Image Segmentation", arXiv 2017, Sec. 3.3): parallel branches on the last feature map -- one 1x1 conv,
  three 3x3 atrous convs (rates 6/12/18 at output stride 16, doubled to 12/24/36 at output stride 8),
  and image-level features (global average pooling -> 1x1 conv -> BN -> ReLU -> bilinear upsampling,
  i.e. a spatially constant map) -- each with `out_channels` (256) filters and batch norm, concatenated
  and projected by a 1x1 conv (256) + BN + ReLU, then dropout (0.5, as torchvision). Child names
  (`convs.{i}`, `project.{0,1}`; the pooling branch `convs.4.{1,2}`) are torchvision's
  `torchvision.models.segmentation.deeplabv3.ASPP`, so its checkpoints load by name.
  `separable=True` makes the 3x3 branches atrous depthwise-separable convolutions (depthwise 3x3 + BN +
  ReLU, pointwise 1x1 + BN + ReLU), as in DeepLab v3+ (Chen et al., ECCV 2018, Sec. 3.2).
- `ASPPScores`: DeepLab v2's ASPP-L (Chen et al., "DeepLab: Semantic Image Segmentation with Deep
  Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018, Sec. 3.3 and Fig. 4;
  the ResNet-101 release): four parallel 3x3 atrous convs (rates 6/12/18/24), each mapping the features
  straight to class scores; the branch scores are summed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers import ConvNormAct, SeparableConvNormAct, resize_to

__all__ = ["ASPP", "ASPPPooling", "ASPPScores", "aspp_rates"]


def aspp_rates(output_stride: int, base: Sequence[int] = (6, 12, 18)) -> tuple[int, ...]:
    """DeepLab v3's ASPP rates for a backbone `output_stride`: (6, 12, 18) at 16, doubled at 8
    (12, 24, 36, also torchvision's setting), halved at 32."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    return tuple(r * 16 // output_stride for r in base)


class ASPPPooling(nn.Sequential):
    """Image-level features: global average pool -> 1x1 conv -> BN -> ReLU, broadcast back to the input
    size (bilinear upsampling of a 1x1 map, i.e. a constant map). Needs batch > 1 in training (BN over a
    1x1 map), like torchvision's."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for layer in self:
            x = layer(x)
        return resize_to(x, size)


class ASPP(nn.Module):
    """DeepLab v3 ASPP (see module docstring). Output: (N, out_channels, H, W) at the input's size."""

    def __init__(self, in_channels: int, out_channels: int = 256, atrous_rates: Sequence[int] = (12, 24, 36),
                 *, separable: bool = False, image_pooling: bool = True, dropout: float = 0.5):
        super().__init__()
        self.atrous_rates = tuple(int(r) for r in atrous_rates)
        branches: list[nn.Module] = [ConvNormAct(in_channels, out_channels, 1)]
        for r in self.atrous_rates:
            if separable:
                branches.append(SeparableConvNormAct(in_channels, out_channels, 3, dilation=r))
            else:
                branches.append(ConvNormAct(in_channels, out_channels, 3, dilation=r))
        if image_pooling:
            branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.image_pooling = image_pooling
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class ASPPScores(nn.Module):
    """DeepLab v2 ASPP-L: sum over rates of a 3x3 atrous conv from features straight to class scores."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.atrous_rates = tuple(int(r) for r in atrous_rates)
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in self.atrous_rates)
        for conv in self.branches:  # the release's fc1_* init: gaussian std 0.01, zero bias
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out
