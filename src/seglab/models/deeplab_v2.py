"""DeepLab v2: Chen, Papandreou, Kokkinos, Murphy & Yuille, "DeepLab: Semantic Image Segmentation with
Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018 (arXiv 2016).

`deeplabv2_resnet50`, `deeplabv2_resnet101` follow the paper's ResNet-101 model (Sec. 3.1, 3.3, 4.1)
and its Caffe release:
- Dilated ResNet at output stride 8 (res4 dilated by 2, res5 by 4), `seglab.backbones.resnet`.
  (The release's Caffe ResNet strides in the 1x1 conv; ours strides in the 3x3, torchvision's v1.5.)
- ASPP-L (`seglab.necks.aspp.ASPPScores`): four parallel 3x3 atrous convs with rates 6/12/18/24 on
  res5, each producing class scores directly (the release's `fc1_voc12_c0..c3`, gaussian init std
  0.01); the four score maps are SUMMED (Fig. 4, 'sum-fusion').
- Scores (stride 8) are upsampled bilinearly to the input size. The dense CRF (Sec. 3.2) is
  post-processing in `seglab.inference`, not part of the network; the multi-scale-input training (MSC,
  max over 3 scales) is left to the engine's augmentation.
- No auxiliary head (the paper has none): aux_loss=True raises.

Sizes at 21 classes: deeplabv2_resnet101 44,048,532 parameters (ResNet-101 trunk 42,500,160 + ASPP-L
4 x 387,093; the paper gives no count), deeplabv2_resnet50 25,056,404.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..layers import resize_to
from ..necks.aspp import ASPPScores
from ..registry import register_model

__all__ = ["DeepLabV2"]


class DeepLabV2(nn.Module):
    """Backbone -> ASPP-L summed scores on the last feature map -> bilinear upsampling."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, atrous_rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.backbone = backbone
        self.classifier = ASPPScores(backbone.out_channels[-1], num_classes, atrous_rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.classifier(self.backbone(x)[-1]), x.shape[-2:])


def _deeplabv2(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, atrous_rates,
               kwargs) -> DeepLabV2:
    if aux_loss:
        raise SeglabError(f"deeplabv2_{name} has no auxiliary head; use aux_loss=False")
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return DeepLabV2(backbone, num_classes, atrous_rates=atrous_rates)


@register_model
def deeplabv2_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                       aux_loss: bool = False, output_stride: int = 8,
                       atrous_rates: Sequence[int] = (6, 12, 18, 24), **kwargs) -> DeepLabV2:
    """DeepLab v2 (ASPP-L) on a dilated ResNet-50. kwargs go to the trunk (`width`, `multi_grid`)."""
    return _deeplabv2("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                      atrous_rates, kwargs)


@register_model
def deeplabv2_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                        aux_loss: bool = False, output_stride: int = 8,
                        atrous_rates: Sequence[int] = (6, 12, 18, 24), **kwargs) -> DeepLabV2:
    """DeepLab v2 (ASPP-L) on a dilated ResNet-101, the paper's model. kwargs: `width`, `multi_grid`."""
    return _deeplabv2("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                      atrous_rates, kwargs)
