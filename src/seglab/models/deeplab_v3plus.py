"""DeepLab v3+: Chen, Zhu, Papandreou, Schroff & Adam, "Encoder-Decoder with Atrous Separable
Convolution for Semantic Image Segmentation", ECCV 2018.

Encoder-decoder (Sec. 3.1, Fig. 2), following the paper and its TensorFlow release:
- Encoder: backbone at `output_stride` 16 by default (8 also works: rates double), ASPP
  (`seglab.necks.aspp.ASPP`) with rates (6, 12, 18) at stride 16, image pooling, 256 channels, built
  from atrous depthwise-separable convolutions (Sec. 3.2; `separable=False` for plain 3x3 convs).
  Dropout after the ASPP projection is 0.1 (the release's keep_prob 0.9; the paper names no value).
- Decoder: the low-level feature at stride 4 (ResNet's layer1, 256 channels; found from the backbone's
  `.strides`) is reduced by a 1x1 conv to 48 channels + BN + ReLU (Sec. 4.1, Table 1); the encoder
  output is upsampled bilinearly to that size (x4 at stride 16), concatenated, refined by two 3x3 convs
  of 256 channels (depthwise-separable, `SeparableConvNormAct`, Table 2), scored by a 1x1 conv, and
  upsampled bilinearly (x4) to the input size.
- Optional `aux_classifier` (aux_loss=True, not in the paper): torchvision's FCN head on the
  second-to-last feature map, training only, as for DeepLab v3.
- Backbones: ResNet-50/101 (`width`, `multi_grid`), aligned Xception-65 (the paper's Sec. 3.3 trunk,
  `seglab.backbones.xception`; stride-4 tap = entry module 2's 256-channel map, the release's decoder
  end point) and MobileNetV2 (`seglab.backbones.mobilenet`; stride-4 tap = features.3, 24 channels --
  the TF release taps the 144-channel depthwise output inside that block, `layer_4/depthwise_output`,
  and trains its MobileNetV2 models without the atrous ASPP branches, which `atrous_rates=()` gives).
  `width_mult` shrinks the latter two for tests.

Sizes at 21 classes, output stride 16, no aux: deeplabv3plus_resnet50 26,696,133; deeplabv3plus_resnet101
45,688,261; deeplabv3plus_xception65 41,055,413; deeplabv3plus_mobilenetv2 2,719,813 (2,265,349 with
`atrous_rates=()`). The paper lists no parameter counts.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..layers import ConvNormAct, SeparableConvNormAct, resize_to
from ..necks.aspp import ASPP, aspp_rates
from ..registry import register_model
from .fcn import FCNHead

__all__ = ["DeepLabV3Plus", "DeepLabV3PlusDecoder"]


class DeepLabV3PlusDecoder(nn.Module):
    """Low-level 1x1 reduction (48) + upsampled encoder output -> two 3x3 convs (256) -> 1x1 classifier."""

    def __init__(self, low_channels: int, encoder_channels: int, num_classes: int, *, reduced: int = 48,
                 channels: int = 256, separable: bool = True):
        super().__init__()
        self.reduce = ConvNormAct(low_channels, reduced, 1)
        conv = SeparableConvNormAct if separable else ConvNormAct
        self.fuse = nn.Sequential(conv(encoder_channels + reduced, channels, 3), conv(channels, channels, 3))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, encoded: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.reduce(low)
        encoded = resize_to(encoded, low.shape[-2:])
        return self.classifier(self.fuse(torch.cat([encoded, low], dim=1)))


class DeepLabV3Plus(nn.Module):
    """Backbone -> ASPP on the last feature map -> decoder with the stride-4 feature -> upsampling."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, atrous_rates: Sequence[int] | None = None,
                 channels: int = 256, low_level_channels: int = 48, separable: bool = True,
                 dropout: float = 0.1, aux_loss: bool = False):
        super().__init__()
        self.backbone = backbone
        c = backbone.out_channels
        self.low_level_index = list(backbone.strides).index(4)
        rates = atrous_rates if atrous_rates is not None else aspp_rates(backbone.strides[-1])
        self.aspp = ASPP(c[-1], channels, rates, separable=separable, dropout=dropout)
        self.decoder = DeepLabV3PlusDecoder(c[self.low_level_index], channels, num_classes,
                                            reduced=low_level_channels, channels=channels, separable=separable)
        self.aux_classifier = FCNHead(c[-2], num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.decoder(self.aspp(feats[-1]), feats[self.low_level_index]), size)
        if self.aux_classifier is None or not self.training:
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _deeplabv3plus(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, kwargs):
    head = {k: kwargs.pop(k) for k in ("atrous_rates", "channels", "low_level_channels", "separable", "dropout")
            if k in kwargs}
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return DeepLabV3Plus(backbone, num_classes, aux_loss=aux_loss, **head)


@register_model
def deeplabv3plus_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                           aux_loss: bool = False, output_stride: int = 16, **kwargs) -> DeepLabV3Plus:
    """DeepLab v3+ on ResNet-50. Head kwargs: `atrous_rates`, `channels`, `low_level_channels`,
    `separable`, `dropout`; the rest go to the trunk (`width`, `multi_grid`)."""
    return _deeplabv3plus("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, kwargs)


@register_model
def deeplabv3plus_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                            aux_loss: bool = False, output_stride: int = 16, **kwargs) -> DeepLabV3Plus:
    """DeepLab v3+ on ResNet-101. Head kwargs: `atrous_rates`, `channels`, `low_level_channels`,
    `separable`, `dropout`; the rest go to the trunk (`width`, `multi_grid`)."""
    return _deeplabv3plus("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, kwargs)


@register_model
def deeplabv3plus_xception65(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                             aux_loss: bool = False, output_stride: int = 16, **kwargs) -> DeepLabV3Plus:
    """DeepLab v3+ on aligned Xception-65, the paper's main model. Head kwargs as for ResNet; the rest go
    to the trunk (`width_mult`, `multi_grid`, `relu_after_depthwise`)."""
    return _deeplabv3plus("xception65", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                          kwargs)


@register_model
def deeplabv3plus_mobilenetv2(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                              aux_loss: bool = False, output_stride: int = 16, **kwargs) -> DeepLabV3Plus:
    """DeepLab v3+ on MobileNetV2. Head kwargs as for ResNet (`atrous_rates=()` gives the release's
    1x1 + image-pooling ASPP for MobileNet); the rest go to the trunk (`width_mult`)."""
    return _deeplabv3plus("mobilenetv2", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                          kwargs)
