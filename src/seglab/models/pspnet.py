"""PSPNet: Zhao, Shi, Qi, Wang & Jia, "Pyramid Scene Parsing Network", CVPR 2017.

`pspnet_resnet50`, `pspnet_resnet101` follow the paper (Sec. 3.2-3.3, 4) and the authors' PyTorch
release (hszhao/semseg) as mmsegmentation's `pspnet_r50-d8` reproduces it:
- dilated ResNet at output stride 8 (layer3 dilation 2, layer4 dilation 4);
- Pyramid Pooling Module (`seglab.necks.PyramidPoolingModule`) on layer4: bins 1, 2, 3, 6, each
  1x1 conv to C/4 = 512 + BN + ReLU, bilinear upsampling, concatenation with the input (2C = 4096);
- `classifier`: 3x3 conv 4096 -> 512 + BN + ReLU + dropout 0.1 + 1x1 conv to the classes;
- deep supervision (Sec. 3.3): `aux_classifier` on layer3 ("res4b22" in the paper's ResNet-101),
  3x3 conv 1024 -> 256 + BN + ReLU + dropout 0.1 + 1x1 conv, on by default (`aux_loss=True`) and
  only run in training. The paper weights its loss by 0.4; seglab's criterion
  (`seglab.losses.SegmentationLoss`, `aux_weight`) and the training config (`train.aux_weight`)
  both default to that 0.4, so the model only returns the logits, `{"out", "aux"}`;
- logits upsampled bilinearly (align_corners=False) to the input size.

Backbone deviation: the releases use a "deep stem" ResNet (mmseg's ResNetV1c: three 3x3 convs
3->32->32->64; semseg's goes 3->64->64->128, which also widens layer1's input); seglab uses
torchvision's 7x7-stem ResNet so torchvision ImageNet checkpoints load. Against mmseg's stem that is
19,232 parameters fewer (9,536 for 7x7 conv + BN vs 28,768 for the three convs + BNs). With that and
the class count (mmseg's 48.98M is at 19 Cityscapes classes; 21 classes add 2 * (512 + 1) +
2 * (256 + 1) = 1,540), pspnet_resnet50 with aux at 21 classes has 48,957,802 parameters; the same
head on a V1c stem at 19 classes counts 48,975,494 = 48.98M (tests/models/test_pspnet_denseaspp_fpn.py).

Width knobs for tiny builds: `width` (ResNet), `channels` (512), `aux_channels` (256).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..layers import ConvNormAct, resize_to
from ..necks.ppm import PyramidPoolingModule
from ..registry import register_model

__all__ = ["PSPNet"]


def _conv_head(in_channels: int, channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    """3x3 conv + BN + ReLU + dropout + 1x1 classifier (PSPNet's final and auxiliary heads)."""
    return nn.Sequential(ConvNormAct(in_channels, channels, 3), nn.Dropout2d(dropout),
                         nn.Conv2d(channels, num_classes, 1))


class PSPNet(nn.Module):
    """Dilated backbone -> PPM -> classifier; optional deep-supervision head on the stage before last."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, bins: Sequence[int] = (1, 2, 3, 6),
                 channels: int = 512, aux_loss: bool = True, aux_channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.ppm = PyramidPoolingModule(backbone.out_channels[-1], bins)
        self.classifier = _conv_head(self.ppm.out_channels, channels, num_classes, dropout)
        self.aux_classifier = (_conv_head(backbone.out_channels[-2], aux_channels, num_classes, dropout)
                               if aux_loss else None)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.classifier(self.ppm(feats[-1])), size)
        if self.aux_classifier is None or not self.training:
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _pspnet(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, bins, channels,
            aux_channels, dropout, kwargs) -> PSPNet:
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return PSPNet(backbone, num_classes, bins=bins, channels=channels, aux_loss=aux_loss,
                  aux_channels=aux_channels, dropout=dropout)


@register_model
def pspnet_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = True, output_stride: int = 8, bins: Sequence[int] = (1, 2, 3, 6),
                    channels: int = 512, aux_channels: int = 256, dropout: float = 0.1, **kwargs) -> PSPNet:
    """PSPNet on a dilated ResNet-50 (48.96M parameters with aux, 46.59M without, at 21 classes).
    kwargs go to the trunk (`width`, `multi_grid`)."""
    return _pspnet("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, bins,
                   channels, aux_channels, dropout, kwargs)


@register_model
def pspnet_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                     aux_loss: bool = True, output_stride: int = 8, bins: Sequence[int] = (1, 2, 3, 6),
                     channels: int = 512, aux_channels: int = 256, dropout: float = 0.1, **kwargs) -> PSPNet:
    """PSPNet on a dilated ResNet-101 (67.95M parameters with aux, 65.58M without, at 21 classes).
    kwargs go to the trunk (`width`, `multi_grid`)."""
    return _pspnet("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, bins,
                   channels, aux_channels, dropout, kwargs)
