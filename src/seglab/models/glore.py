"""GloRe segmentation network: Chen, Rohrbach, Yan, Yan, Feng & Kalantidis, "Graph-Based Global
Reasoning Networks", CVPR 2019, semantic segmentation experiments (Cityscapes: a GloRe unit on res5
of a dilated ResNet FCN).

`glore_resnet50`, `glore_resnet101`:
- dilated ResNet at output stride 8 (layer3 dilation 2, layer4 dilation 4), torchvision layout;
- `reduce`: 3x3 conv 2048 -> 512 + BN + ReLU;
- `glore`: one GloRe unit (`seglab.necks.graph_reasoning.GloRe`) on those 512 channels, with the
  release's sizes C' = C/2 = 256 states and N = C/4 = 128 nodes;
- `classifier`: dropout 0.1 + 1x1 conv to the classes (the FCN classifier);
- `aux_classifier` (aux_loss=True, default): torchvision's FCN head on layer3 (3x3 conv 1024 -> 256 +
  BN + ReLU + dropout 0.1 + 1x1 conv), training only, weighted 0.4 by seglab's criterion;
- logits upsampled bilinearly (align_corners=False) to the input size.
The paper states no parameter count for its segmentation network. At 21 classes glore_resnet50 has
35,733,226 parameters with the aux head, 33,368,021 without (the GloRe unit itself: 411,008);
glore_resnet101 54,725,354 / 52,360,149 (tests/models/test_graph_reasoning.py).

Width knobs for tiny builds: `width` (ResNet), `channels` (512; the GloRe unit follows it).
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import create_backbone
from ..layers import ConvNormAct, resize_to
from ..necks.graph_reasoning import GloRe
from ..registry import register_model
from .fcn import FCNHead

__all__ = ["GloReNet"]


class GloReNet(nn.Module):
    """Dilated backbone -> 3x3 reduce -> GloRe unit -> 1x1 classifier (+ FCN aux head on layer3)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, channels: int = 512, aux_loss: bool = True,
                 dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.reduce = ConvNormAct(backbone.out_channels[-1], channels, 3)
        self.glore = GloRe(channels)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))
        self.aux_classifier = FCNHead(backbone.out_channels[-2], num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.classifier(self.glore(self.reduce(feats[-1]))), size)
        if self.aux_classifier is None or not self.training:  # the aux head only serves training
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _glore(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels, dropout,
           kwargs) -> GloReNet:
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return GloReNet(backbone, num_classes, channels=channels, aux_loss=aux_loss, dropout=dropout)


@register_model
def glore_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                   aux_loss: bool = True, output_stride: int = 8, channels: int = 512, dropout: float = 0.1,
                   **kwargs) -> GloReNet:
    """GloRe FCN on a dilated ResNet-50 (35.73M parameters with aux, 33.37M without, at 21 classes).
    kwargs go to the trunk (`width`, `multi_grid`)."""
    return _glore("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                  dropout, kwargs)


@register_model
def glore_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = True, output_stride: int = 8, channels: int = 512, dropout: float = 0.1,
                    **kwargs) -> GloReNet:
    """GloRe FCN on a dilated ResNet-101 (54.73M parameters with aux, 52.36M without, at 21 classes).
    kwargs go to the trunk (`width`, `multi_grid`)."""
    return _glore("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                  dropout, kwargs)
