"""DeepLab v3: Chen, Papandreou, Schroff & Adam, "Rethinking Atrous Convolution for Semantic Image
Segmentation", arXiv:1706.05587, 2017.

`deeplabv3_resnet50`, `deeplabv3_resnet101` follow the paper's ASPP variant (Sec. 3.3) as torchvision
builds it (`torchvision.models.segmentation.deeplabv3_resnet50/101`), so its checkpoints load strictly
and give the same logits:
- Dilated ResNet (`seglab.backbones.resnet`, torchvision names). `output_stride` defaults to 8,
  torchvision's setting (layer3 dilated by 2, layer4 by 4); the paper trains at 16 and evaluates at 8.
- ASPP rates derive from the output stride (Sec. 3.3): (6, 12, 18) at 16, doubled to (12, 24, 36) at 8
  (torchvision's rates at its output stride 8); `atrous_rates=` overrides them.
- `multi_grid` (Sec. 3.2, e.g. (1, 2, 4)) multiplies the dilation of layer4's three blocks; off by
  default, as in torchvision.
- `classifier` = [ASPP (1x1, three 3x3 atrous, image pooling; 256 channels + BN; concat -> 1x1 project
  256 + BN + ReLU + dropout 0.5), 3x3 conv 256 + BN + ReLU, 1x1 conv to classes]. The extra 3x3 conv
  before the classifier is torchvision's (the paper's Fig. 5 goes from the projection straight to the
  1x1 classifier); we keep it so the layouts match (keys `classifier.0.convs.*`, `classifier.0.project.*`,
  `classifier.1/2/4`).
- Optional `aux_classifier` (aux_loss=True): torchvision's FCN head on layer3 (3x3 conv C/4 + BN + ReLU +
  dropout 0.1 + 1x1 conv), used in training only.
- Logits are upsampled bilinearly (align_corners=False) to the input size.

Sizes at 21 classes: deeplabv3_resnet50 42,004,074 parameters with the aux head (torchvision's 42.0M),
39,638,869 without; deeplabv3_resnet101 60,996,202 with aux (torchvision: 61.0M), 58,630,997 without.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..layers import resize_to
from ..necks.aspp import ASPP, aspp_rates
from ..registry import register_model
from .fcn import FCNHead

__all__ = ["DeepLabHead", "DeepLabV3"]


class DeepLabHead(nn.Sequential):
    """torchvision's DeepLabHead: ASPP, 3x3 conv + BN + ReLU, 1x1 classifier (children 0..4)."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int] = (12, 24, 36), *,
                 channels: int = 256, dropout: float = 0.5):
        super().__init__(
            ASPP(in_channels, channels, atrous_rates, dropout=dropout),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )


class DeepLabV3(nn.Module):
    """Backbone -> DeepLabHead on the last feature map (+ FCN aux head on the one before)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, atrous_rates: Sequence[int] | None = None,
                 channels: int = 256, aux_loss: bool = False, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        rates = atrous_rates if atrous_rates is not None else aspp_rates(backbone.strides[-1])
        self.classifier = DeepLabHead(backbone.out_channels[-1], num_classes, rates, channels=channels,
                                      dropout=dropout)
        self.aux_classifier = FCNHead(backbone.out_channels[-2], num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.classifier(feats[-1]), size)
        if self.aux_classifier is None or not self.training:  # the aux head only serves training
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _deeplabv3(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, atrous_rates,
               channels, dropout, kwargs) -> DeepLabV3:
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return DeepLabV3(backbone, num_classes, atrous_rates=atrous_rates, channels=channels,
                     aux_loss=aux_loss, dropout=dropout)


@register_model
def deeplabv3_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                       aux_loss: bool = False, output_stride: int = 8, atrous_rates: Sequence[int] | None = None,
                       channels: int = 256, dropout: float = 0.5, **kwargs) -> DeepLabV3:
    """torchvision's deeplabv3_resnet50 (42.0M parameters with aux at 21 classes). kwargs go to the
    trunk (`width`, `multi_grid`); `channels` is the ASPP/head width."""
    return _deeplabv3("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                      atrous_rates, channels, dropout, kwargs)


@register_model
def deeplabv3_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                        aux_loss: bool = False, output_stride: int = 8, atrous_rates: Sequence[int] | None = None,
                        channels: int = 256, dropout: float = 0.5, **kwargs) -> DeepLabV3:
    """torchvision's deeplabv3_resnet101 (61.0M parameters with aux at 21 classes). kwargs go to the
    trunk (`width`, `multi_grid`); `channels` is the ASPP/head width."""
    return _deeplabv3("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                      atrous_rates, channels, dropout, kwargs)
