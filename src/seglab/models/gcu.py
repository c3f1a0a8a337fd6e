"""GCU network: Li & Gupta, "Beyond Grids: Learning Graph Representations for Visual Recognition",
NeurIPS 2018, segmentation experiments (ADE20K: graph convolutional units on res5 of a dilated ResNet).

`gcu_resnet50`, `gcu_resnet101`:
- dilated ResNet at output stride 8 (layer3 dilation 2, layer4 dilation 4), torchvision layout;
- `gcus`: four GCUs (`seglab.necks.graph_reasoning.GraphConvolutionalUnit`) with |V| = 2, 4, 8, 32
  nodes run in parallel on layer4 ("res5"), their outputs concatenated with the input features;
- `classifier`: 3x3 conv to 512 + BN + ReLU + dropout 0.1 + 1x1 conv to the classes;
- `aux_classifier` (aux_loss=True, default): torchvision's FCN head on layer3 (3x3 conv 1024 -> 256 +
  BN + ReLU + dropout 0.1 + 1x1 conv), training only, weighted 0.4 by seglab's criterion;
- logits upsampled bilinearly (align_corners=False) to the input size.
Interpretation: the GCUs take the place of PSPNet's pyramid pooling (the paper's baseline), so each
unit outputs C/4 = 512 channels like a PPM branch (`gcu_channels`), the concatenation has 2C = 4096
channels and the head is PSPNet's. The output width per GCU is our choice, not a figure from the paper.
No parameter count is published. At 21 classes gcu_resnet50 has 49,142,122 parameters with the aux
head, 46,776,917 without (the four GCUs: 4,382,720); gcu_resnet101 68,134,250 / 65,769,045
(tests/models/test_graph_reasoning.py).

Width knobs for tiny builds: `width` (ResNet), `gcu_channels` (512), `channels` (512);
`node_counts` sets the GCUs' vertex counts.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..layers import ConvNormAct, resize_to
from ..necks.graph_reasoning import ParallelGCU
from ..registry import register_model
from .fcn import FCNHead

__all__ = ["GCUNet"]


class GCUNet(nn.Module):
    """Dilated backbone -> [x, GCU_2(x), GCU_4(x), ...] -> classifier (+ FCN aux head on layer3)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, node_counts: Sequence[int] = (2, 4, 8, 32),
                 gcu_channels: int = 512, channels: int = 512, aux_loss: bool = True, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.gcus = ParallelGCU(backbone.out_channels[-1], gcu_channels, node_counts)
        self.classifier = nn.Sequential(ConvNormAct(self.gcus.out_channels, channels, 3), nn.Dropout2d(dropout),
                                        nn.Conv2d(channels, num_classes, 1))
        self.aux_classifier = FCNHead(backbone.out_channels[-2], num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.classifier(self.gcus(feats[-1])), size)
        if self.aux_classifier is None or not self.training:  # the aux head only serves training
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _gcu(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, node_counts, gcu_channels,
         channels, dropout, kwargs) -> GCUNet:
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return GCUNet(backbone, num_classes, node_counts=node_counts, gcu_channels=gcu_channels, channels=channels,
                  aux_loss=aux_loss, dropout=dropout)


@register_model
def gcu_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = True, output_stride: int = 8, node_counts: Sequence[int] = (2, 4, 8, 32),
                 gcu_channels: int = 512, channels: int = 512, dropout: float = 0.1, **kwargs) -> GCUNet:
    """GCUs (|V| = 2, 4, 8, 32) on a dilated ResNet-50 (49.14M parameters with aux, 46.78M without, at
    21 classes). kwargs go to the trunk (`width`, `multi_grid`)."""
    return _gcu("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, node_counts,
                gcu_channels, channels, dropout, kwargs)


@register_model
def gcu_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                  aux_loss: bool = True, output_stride: int = 8, node_counts: Sequence[int] = (2, 4, 8, 32),
                  gcu_channels: int = 512, channels: int = 512, dropout: float = 0.1, **kwargs) -> GCUNet:
    """GCUs (|V| = 2, 4, 8, 32) on a dilated ResNet-101 (68.13M parameters with aux, 65.77M without, at
    21 classes). kwargs go to the trunk (`width`, `multi_grid`)."""
    return _gcu("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, node_counts,
                gcu_channels, channels, dropout, kwargs)
