"""PSANet: Zhao, Zhang, Liu, Shi, Loy, Lin & Jia, "PSANet: Point-wise Spatial Attention Network for
Scene Parsing", ECCV 2018.

`psanet_resnet50`, `psanet_resnet101` follow the paper (Sec. 4, Fig. 4) and the authors' release
(hszhao/semseg `model/psanet.py`, psa_type=2 "bi-direction", compact=False):
- dilated ResNet at output stride 8 (layer3 dilation 2, layer4 dilation 4);
- the bi-directional PSA module on layer4 (`seglab.necks.psa.PointwiseSpatialAttention`): collect and
  distribute branches, each 1x1 reduce 2048 -> 512, over-completed map of mask_h * mask_w channels
  predicted by two 1x1 convs, cropped to the H x W window of each position; attention computed at
  half resolution (`shrink_factor=2`); outputs projected back to 2048 and concatenated with the
  input (4096 channels);
- `classifier`: 3x3 conv 4096 -> 512 + BN + ReLU + dropout 0.1 + 1x1 conv to the classes;
- `aux_classifier` on layer3 as in PSPNet: 3x3 conv 1024 -> 256 + BN + ReLU + dropout 0.1 + 1x1 conv,
  on by default and only run in training (loss weight 0.4 in seglab's criterion, as the release);
- logits upsampled bilinearly (align_corners=False) to the input size.

`mask_size` defaults to the release's 59 x 59: the over-completed (2h-1) x (2w-1) map for its
465 x 465 crops (feature 59 x 59, shrunk to 30 x 30); its Cityscapes setting (713 crops) is 89 x 89.
The mask size fixes the attention conv's width (512 * mask_h * mask_w parameters per branch), not the
input size: larger maps attend within the mask's window (see `seglab.necks.psa`).

Sizes at 21 classes: psanet_resnet50 53,050,730 parameters with aux, 50,685,525 without;
psanet_resnet101 72,042,858 with aux, 69,677,653 without (tests/models/test_psanet_ccnet.py).
No parameter count is published for PSANet. The release's network differs from this one only in
its deep stem (three 3x3 convs 3->64->64->128 instead of the 7x7 conv, which also widens layer1's
input to 128 channels; kept out so torchvision ImageNet checkpoints load, as in `pspnet`): 123,776
parameters more, 53,174,506 for its ResNet-50 layout with aux at 21 classes.

Width knobs for tiny builds: `width` (ResNet), `psa_channels` (512), `channels` (512),
`aux_channels` (256), `mask_size`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..layers import ConvNormAct, resize_to
from ..necks.psa import PointwiseSpatialAttention
from ..registry import register_model

__all__ = ["PSANet"]


def _conv_head(in_channels: int, channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    """3x3 conv + BN + ReLU + dropout + 1x1 classifier (the release's `cls` and `aux` heads)."""
    return nn.Sequential(ConvNormAct(in_channels, channels, 3), nn.Dropout2d(dropout),
                         nn.Conv2d(channels, num_classes, 1))


class PSANet(nn.Module):
    """Dilated backbone -> bi-directional PSA -> classifier; deep-supervision head on layer3."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, psa_channels: int = 512,
                 mask_size: Sequence[int] = (59, 59), shrink_factor: int = 2, channels: int = 512,
                 aux_loss: bool = True, aux_channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.psa = PointwiseSpatialAttention(backbone.out_channels[-1], psa_channels, mask_size=mask_size,
                                             shrink_factor=shrink_factor)
        self.classifier = _conv_head(self.psa.out_channels, channels, num_classes, dropout)
        self.aux_classifier = (_conv_head(backbone.out_channels[-2], aux_channels, num_classes, dropout)
                               if aux_loss else None)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.classifier(self.psa(feats[-1])), size)
        if self.aux_classifier is None or not self.training:
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _psanet(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, psa_channels,
            mask_size, shrink_factor, channels, aux_channels, dropout, kwargs) -> PSANet:
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return PSANet(backbone, num_classes, psa_channels=psa_channels, mask_size=mask_size,
                  shrink_factor=shrink_factor, channels=channels, aux_loss=aux_loss,
                  aux_channels=aux_channels, dropout=dropout)


@register_model
def psanet_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = True, output_stride: int = 8, psa_channels: int = 512,
                    mask_size: Sequence[int] = (59, 59), shrink_factor: int = 2, channels: int = 512,
                    aux_channels: int = 256, dropout: float = 0.1, **kwargs) -> PSANet:
    """PSANet on a dilated ResNet-50 (53.05M parameters with aux, 50.69M without, at 21 classes).
    kwargs go to the trunk (`width`, `multi_grid`)."""
    return _psanet("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                   psa_channels, mask_size, shrink_factor, channels, aux_channels, dropout, kwargs)


@register_model
def psanet_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                     aux_loss: bool = True, output_stride: int = 8, psa_channels: int = 512,
                     mask_size: Sequence[int] = (59, 59), shrink_factor: int = 2, channels: int = 512,
                     aux_channels: int = 256, dropout: float = 0.1, **kwargs) -> PSANet:
    """PSANet on a dilated ResNet-101 (72.04M parameters with aux, 69.68M without, at 21 classes).
    kwargs go to the trunk (`width`, `multi_grid`)."""
    return _psanet("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                   psa_channels, mask_size, shrink_factor, channels, aux_channels, dropout, kwargs)
