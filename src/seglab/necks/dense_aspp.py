"""DenseASPP: Yang, Yu, Zhang, Li & Yang, "DenseASPP for Semantic Segmentation in Street Scenes",
CVPR 2018, Sec. 3.

A cascade of atrous 3x3 convolutions with growing rates (3, 6, 12, 18, 24), densely connected: layer k
sees the concatenation of the input feature and the outputs of layers 0..k-1, so it has
`in_channels + k * growth` input channels, and the block returns the input plus every layer's output
(`in_channels + len(rates) * growth` channels). Stacking the rates makes the largest receptive field
1 + 2 * (3 + 6 + 12 + 18 + 24) = 127 feature pixels along each axis, and the dense links give
every scale in between.

Each layer follows the authors' release (DeepMotionAIResearch/DenseASPP, `_DenseAsppBlock`), a
DenseNet-style pre-activation unit: BN + ReLU + 1x1 conv to `inter_channels` (the release's
`d_feature0`) + BN + ReLU + 3x3 conv with dilation r to `growth` channels (`d_feature1`) + dropout 0.1
(channel-wise). As in the release the first layer skips the leading BN (its input is the
backbone's normalised output) but rectifies its input, and the convs carry biases.
Release settings: DenseNet-121 (512-channel input) 128 / 64; DenseNet-161 (1104-channel input)
512 / 128; the defaults here (512 / 128) are the DenseNet-161 ones, the paper's best model.
Concatenation order is `[input, layer 0, ..., layer 4]` (the release prepends each new output; the
order does not change the function).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DenseASPP", "DenseASPPLayer"]


class DenseASPPLayer(nn.Sequential):
    """[BN + ReLU +] 1x1 conv + BN + ReLU + 3x3 atrous conv + Dropout2d."""

    def __init__(self, in_channels: int, inter_channels: int, growth: int, dilation: int, *,
                 dropout: float = 0.1, pre_act: bool = True):
        layers: list[nn.Module] = [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)] if pre_act else []
        layers += [nn.Conv2d(in_channels, inter_channels, 1), nn.BatchNorm2d(inter_channels),
                   nn.ReLU(inplace=True),
                   nn.Conv2d(inter_channels, growth, 3, padding=dilation, dilation=dilation),
                   nn.Dropout2d(dropout)]
        super().__init__(*layers)
        self.in_channels, self.dilation = in_channels, dilation


class DenseASPP(nn.Module):
    """`forward(x)` -> `cat([x, y0, ..., y4])`, `y_k = layer_k(cat([x, y0, ..., y_{k-1}]))`."""

    def __init__(self, in_channels: int, *, rates: Sequence[int] = (3, 6, 12, 18, 24),
                 inter_channels: int = 512, growth: int = 128, dropout: float = 0.1):
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        self.growth = growth
        self.layers = nn.ModuleList(
            DenseASPPLayer(in_channels + k * growth, inter_channels, growth, r, dropout=dropout, pre_act=k > 0)
            for k, r in enumerate(self.rates))
        self.out_channels = in_channels + len(self.rates) * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            # The leading ReLU (inplace) acts on the BN's output, never on the stored features. The
            # release's first layer has a ReLU but no BN: applied here, it changes nothing on a ResNet's
            # (already rectified) output and rectifies a DenseNet's norm5 output, which is concatenated as is.
            features.append(layer(torch.cat(features, dim=1) if len(features) > 1 else torch.relu(x)))
        return torch.cat(features, dim=1)
