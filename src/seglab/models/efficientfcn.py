"""EfficientFCN: Liu, He, Zhang, Ren & Li, "EfficientFCN: Holistically-guided Decoding for Semantic
Segmentation", ECCV 2020.

`efficientfcn_resnet50`, `efficientfcn_resnet101` follow the paper (Sec. 3) and the authors' release
(jianbo909/efficientFCN, `encoding/models/efficientFCN.py`):
- a dilation-free ResNet (output stride 32; the paper's point is to avoid dilated convolution, so
  other values are refused);
- the holistically-guided decoder (`seglab.necks.holistic_decoder`) on layer2/3/4 (OS 8/16/32):
  OS-16 and OS-32 maps reduced to 512 (`channels`), n = 256 codewords (`num_codewords`) of 1024
  dims (`codeword_channels`) from the OS-32 fused features, assembled at every OS-8 position by
  coefficients predicted from the OS-8 fused features, fused with the guide to 1024 channels;
- `classifier`: dropout 0.1 + 1x1 conv 1024 -> classes; logits upsampled bilinearly to the input.
- `aux_loss=True` adds an FCN head on layer3 (3x3 conv 1024 -> 256 + BN + ReLU + dropout + 1x1),
  training only. Off by default: the release has its aux layer commented out.

Deviations: the release's backbone is a ResNet-D (`resnetV2` with deep_stem=True, avg_down=True: a
three-conv stem and average-pooled shortcuts); we use torchvision's ResNet so its ImageNet
checkpoints load. The decoder resizes with align_corners=False (release: True).

Sizes at 21 classes (measured, tests/models/test_ginet_efficientfcn.py): efficientfcn_resnet50 has
31,141,973 parameters (33,507,178 with the aux head); efficientfcn_resnet101 50,134,101
(52,499,306). The decoder and classifier count 7,633,941, exactly the release's `HGDecoder` layout
(its formula is in the test). We found no published parameter count to compare the total with.

Width knobs for tiny builds: `width` (ResNet), `channels`, `codeword_channels`, `num_codewords`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import ConfigError
from ..layers import resize_to
from ..necks.holistic_decoder import HolisticallyGuidedDecoder
from ..registry import register_model
from .fcn import FCNHead

__all__ = ["EfficientFCN"]


class EfficientFCN(nn.Module):
    """Dilation-free backbone -> holistically-guided decoder (OS 8) -> classifier (+ optional aux head)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, channels: int = 512,
                 codeword_channels: int = 1024, num_codewords: int = 256, aux_loss: bool = False,
                 dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        c8, c16, c32 = backbone.out_channels[-3:]
        self.decoder = HolisticallyGuidedDecoder((c8, c16, c32), channels=channels,
                                                 codeword_channels=codeword_channels, num_codewords=num_codewords)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(self.decoder.out_channels, num_classes, 1))
        self.aux_classifier = FCNHead(c16, num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.classifier(self.decoder(feats[-3:])), size)
        if self.aux_classifier is None or not self.training:
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _efficientfcn(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                  codeword_channels, num_codewords, dropout, kwargs) -> EfficientFCN:
    if output_stride != 32:
        raise ConfigError(f"EfficientFCN uses a dilation-free backbone: output_stride must be 32, got {output_stride}")
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels, output_stride=32, **kwargs)
    return EfficientFCN(backbone, num_classes, channels=channels, codeword_channels=codeword_channels,
                        num_codewords=num_codewords, aux_loss=aux_loss, dropout=dropout)


@register_model
def efficientfcn_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                          aux_loss: bool = False, output_stride: int = 32, channels: int = 512,
                          codeword_channels: int = 1024, num_codewords: int = 256, dropout: float = 0.1,
                          **kwargs) -> EfficientFCN:
    """EfficientFCN on a plain ResNet-50 (31.14M parameters, 33.51M with aux, at 21 classes).
    kwargs go to the trunk (`width`)."""
    return _efficientfcn("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                         channels, codeword_channels, num_codewords, dropout, kwargs)


@register_model
def efficientfcn_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                           aux_loss: bool = False, output_stride: int = 32, channels: int = 512,
                           codeword_channels: int = 1024, num_codewords: int = 256, dropout: float = 0.1,
                           **kwargs) -> EfficientFCN:
    """EfficientFCN on a plain ResNet-101 (50.13M parameters, 52.50M with aux, at 21 classes).
    kwargs go to the trunk (`width`)."""
    return _efficientfcn("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                         channels, codeword_channels, num_codewords, dropout, kwargs)
