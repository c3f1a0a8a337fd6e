"""DenseASPP: Yang, Yu, Zhang, Li & Yang, "DenseASPP for Semantic Segmentation in Street Scenes",
CVPR 2018.

`denseaspp_resnet50`, `denseaspp_resnet101`: backbone at output stride 8 -> densely connected atrous
block (`seglab.necks.DenseASPP`, rates 3, 6, 12, 18, 24; 1x1 conv to `inter_channels`, 3x3 atrous conv
to `growth` channels, dropout 0.1 per layer) -> Dropout2d(0.1) + 1x1 classifier on the concatenation of
the input and all five layers' outputs (2048 + 5 * 128 = 2688 channels) -> bilinear upsampling of the
logits to the input size (the release upsamples by 8).

Deviation: the paper's backbones are DenseNet-121/161/169/201 with their last two transitions made
stride 1 and dilated. seglab has no DenseNet, so a dilated ResNet at output stride 8 stands in (layer3
dilation 2, layer4 dilation 4), same output stride and a 2048-channel input comparable to
DenseNet-161's 1104 / 2208. `inter_channels`=512, `growth`=128 are the release's DenseNet-161 settings
(`d_feature0`, `d_feature1`); DenseNet-121's 128 / 64 are one keyword away. The paper has no auxiliary
head: `aux_loss=True` raises `SeglabError`.

Width knobs for tiny builds: `width` (ResNet), `inter_channels`, `growth`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..layers import resize_to
from ..necks.dense_aspp import DenseASPP
from ..registry import register_model

__all__ = ["DenseASPPNet"]


class DenseASPPNet(nn.Module):
    """Dilated backbone -> DenseASPP block -> dropout + 1x1 classifier -> bilinear to input size."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, rates: Sequence[int] = (3, 6, 12, 18, 24),
                 inter_channels: int = 512, growth: int = 128, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.aspp = DenseASPP(backbone.out_channels[-1], rates=rates, inter_channels=inter_channels,
                              growth=growth, dropout=dropout)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(self.aspp.out_channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.classifier(self.aspp(self.backbone(x)[-1])), x.shape[-2:])


def _denseaspp(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, rates,
               inter_channels, growth, dropout, kwargs) -> DenseASPPNet:
    if aux_loss:
        raise SeglabError(f"denseaspp_{name} has no auxiliary head (the paper uses none); use aux_loss=False")
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return DenseASPPNet(backbone, num_classes, rates=rates, inter_channels=inter_channels, growth=growth,
                        dropout=dropout)


@register_model
def denseaspp_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                       aux_loss: bool = False, output_stride: int = 8, rates: Sequence[int] = (3, 6, 12, 18, 24),
                       inter_channels: int = 512, growth: int = 128, dropout: float = 0.1,
                       **kwargs) -> DenseASPPNet:
    """DenseASPP on a dilated ResNet-50 (32.44M parameters at 21 classes). kwargs: `width`, `multi_grid`."""
    return _denseaspp("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, rates,
                      inter_channels, growth, dropout, kwargs)


@register_model
def denseaspp_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                        aux_loss: bool = False, output_stride: int = 8, rates: Sequence[int] = (3, 6, 12, 18, 24),
                        inter_channels: int = 512, growth: int = 128, dropout: float = 0.1,
                        **kwargs) -> DenseASPPNet:
    """DenseASPP on a dilated ResNet-101 (51.43M parameters at 21 classes). kwargs: `width`, `multi_grid`."""
    return _denseaspp("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, rates,
                      inter_channels, growth, dropout, kwargs)
