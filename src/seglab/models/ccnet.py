"""CCNet: Huang, Wang, Huang, Huang, Wei & Liu, "CCNet: Criss-Cross Attention for Semantic
Segmentation", ICCV 2019.

`ccnet_resnet50`, `ccnet_resnet101` follow the paper (Sec. 3.1, Fig. 2) and the authors' release
(speedinghzl/CCNet `networks/ccnet.py`, `RCCAModule`):
- dilated ResNet at output stride 8 (layer3 dilation 2, layer4 dilation 4);
- RCCA head on layer4 (`RCCAHead`): 3x3 conv 2048 -> 512 (C/4) + BN + ReLU; criss-cross attention
  (`seglab.necks.criss_cross`, query/key 512 -> 64, value 512 -> 512, gamma starting at 0) applied
  R = 2 times with shared weights; 3x3 conv 512 -> 512 + BN + ReLU; concatenation with the layer4
  features (2560); bottleneck 3x3 conv 2560 -> 512 + BN + ReLU, dropout 0.1, 1x1 conv to the classes;
- `aux_classifier` on layer3 (the release's `dsn`): 3x3 conv 1024 -> 512 + BN + ReLU, dropout 0.1,
  1x1 conv; on by default, run only in training (the release weights its loss by 0.4, seglab's
  criterion default);
- logits upsampled bilinearly (align_corners=False) to the input size.

Deviations: the release's normalisation is InPlace-ABN (BN + leaky ReLU, slope 0.01); we use BN + ReLU
as mmsegmentation's `ccnet_r50-d8` does. The release's `dsn` conv has a bias in front of its BN (512
redundant parameters); ours has none. The release uses a deep-stem ResNet (three 3x3 convs
3->64->64->128, layer1 input 128 channels); seglab keeps torchvision's 7x7 stem so its ImageNet
checkpoints load (as in `pspnet`). mmsegmentation's aux head is narrower (256 channels); pass
`aux_channels=256` for that layout.

Sizes at 21 classes: ccnet_resnet50 52,173,547 parameters with aux, 47,443,158 without;
ccnet_resnet101 71,165,675 with aux, 66,435,286 without (tests/models/test_psanet_ccnet.py). The
paper gives no parameter counts (it compares GFLOPs and memory with the non-local block); the
release's layout (deep stem +123,776, `dsn` bias +512) counts 52,297,835 for ResNet-50 with aux.

Width knobs for tiny builds: `width` (ResNet), `inter_channels` (512), `channels` (512),
`aux_channels` (512).
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import create_backbone
from ..layers import ConvNormAct, resize_to
from ..necks.criss_cross import RecurrentCrissCross
from ..registry import register_model

__all__ = ["CCNet", "RCCAHead"]


def _conv_head(in_channels: int, channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    """3x3 conv + BN + ReLU + dropout + 1x1 classifier (the release's bottleneck and `dsn`)."""
    return nn.Sequential(ConvNormAct(in_channels, channels, 3), nn.Dropout2d(dropout),
                         nn.Conv2d(channels, num_classes, 1))


class RCCAHead(nn.Module):
    """Reduce -> criss-cross attention x R -> 3x3 conv -> concat with the input -> classifier."""

    def __init__(self, in_channels: int, num_classes: int, *, inter_channels: int | None = None,
                 channels: int = 512, recurrence: int = 2, dropout: float = 0.1):
        super().__init__()
        inter = inter_channels or in_channels // 4
        self.reduce = ConvNormAct(in_channels, inter, 3)
        self.rcca = RecurrentCrissCross(inter, recurrence=recurrence)
        self.refine = ConvNormAct(inter, inter, 3)
        self.classifier = _conv_head(in_channels + inter, channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.refine(self.rcca(self.reduce(x)))
        return self.classifier(torch.cat([x, context], dim=1))


class CCNet(nn.Module):
    """Dilated backbone -> RCCA head; deep-supervision head on layer3."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, inter_channels: int | None = None,
                 channels: int = 512, recurrence: int = 2, aux_loss: bool = True, aux_channels: int = 512,
                 dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.head = RCCAHead(backbone.out_channels[-1], num_classes, inter_channels=inter_channels,
                             channels=channels, recurrence=recurrence, dropout=dropout)
        self.aux_classifier = (_conv_head(backbone.out_channels[-2], aux_channels, num_classes, dropout)
                               if aux_loss else None)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.head(feats[-1]), size)
        if self.aux_classifier is None or not self.training:
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _ccnet(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, inter_channels,
           channels, recurrence, aux_channels, dropout, kwargs) -> CCNet:
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return CCNet(backbone, num_classes, inter_channels=inter_channels, channels=channels,
                 recurrence=recurrence, aux_loss=aux_loss, aux_channels=aux_channels, dropout=dropout)


@register_model
def ccnet_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                   aux_loss: bool = True, output_stride: int = 8, inter_channels: int | None = None,
                   channels: int = 512, recurrence: int = 2, aux_channels: int = 512, dropout: float = 0.1,
                   **kwargs) -> CCNet:
    """CCNet (R = 2) on a dilated ResNet-50 (52.17M parameters with aux, 47.44M without, at 21 classes).
    kwargs go to the trunk (`width`, `multi_grid`)."""
    return _ccnet("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                  inter_channels, channels, recurrence, aux_channels, dropout, kwargs)


@register_model
def ccnet_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = True, output_stride: int = 8, inter_channels: int | None = None,
                    channels: int = 512, recurrence: int = 2, aux_channels: int = 512, dropout: float = 0.1,
                    **kwargs) -> CCNet:
    """CCNet (R = 2) on a dilated ResNet-101 (71.17M parameters with aux, 66.44M without, at 21 classes).
    kwargs go to the trunk (`width`, `multi_grid`)."""
    return _ccnet("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                  inter_channels, channels, recurrence, aux_channels, dropout, kwargs)
