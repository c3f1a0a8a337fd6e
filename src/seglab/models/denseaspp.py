"""DenseASPP: Yang, Yu, Zhang, Li & Yang, "DenseASPP for Semantic Segmentation in Street Scenes",
CVPR 2018, Sec. 3-4; assembled as the authors' release builds it (DeepMotionAIResearch/DenseASPP,
`models/DenseASPP.py`, `cfgs/DenseASPP{121,161}.py`).

`denseaspp_densenet161` (the paper's best model, 80.6 mIoU on Cityscapes test), `denseaspp_densenet121`:
- trunk: DenseNet (`seglab.backbones.densenet`, torchvision's names, so `backbone_weights=` takes a
  torchvision ImageNet file) at output stride 8: transitions 2 and 3 lose their pooling, dense blocks
  3 and 4 are dilated by 2 and 4 (`output_stride=16`: only transition 3 loses it, block 4 dilated by 2,
  and the features are upsampled x2 before the DenseASPP block, as the release does);
- the release's extra `transition4` after block 4 (BN-ReLU-1x1 conv halving the channels, no pooling:
  2208 -> 1104 for DenseNet-161, 1024 -> 512 for 121) and `norm5` (BN) on its output, both trained from
  scratch (the ImageNet norm5 acts on 2208 channels and is not used);
- DenseASPP block (`seglab.necks.DenseASPP`, rates 3, 6, 12, 18, 24), `inter_channels` / `growth`
  512 / 128 (161) or 128 / 64 (121) as in the release configs, dropout 0.1;
- Dropout2d(0.1) + 1x1 classifier on the input and all five outputs (1104 + 5 * 128 = 1744 channels for
  161), logits bilinearly resized to the input (the release upsamples x8).

`denseaspp_resnet50`, `denseaspp_resnet101`: the same head on a dilated ResNet at output stride 8
(layer3 dilation 2, layer4 dilation 4) instead of a DenseNet, taking layer4's 2048 channels directly
(no transition); defaults 512 / 128. Not in the paper: kept as the ResNet counterpart.

The paper has no auxiliary head: `aux_loss=True` raises `SeglabError`. Parameter counts at 19 classes
(tests/models/test_denseaspp_densenet.py): denseaspp_densenet161 35,395,427, denseaspp_densenet121
8,280,851. The paper's own table could not be consulted here; the release's DenseASPP161 checkpoint file
is 142.7 MB, and our state dict holds 35,634,083 float32 values (parameters and BatchNorm statistics),
142.54 MB before the file format's overhead. Width knobs for tiny builds: `growth_rate`, `block_config`,
`num_init_features`, `bn_size` (DenseNet), `width` (ResNet), `inter_channels`, `growth`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..backbones.densenet import Transition
from ..errors import SeglabError
from ..layers import resize_to
from ..necks.dense_aspp import DenseASPP
from ..registry import register_model

__all__ = ["DenseASPPNet"]


class DenseASPPNet(nn.Module):
    """Dilated backbone -> [transition4 + norm5] -> [x2 at output stride 16] -> DenseASPP block -> dropout +
    1x1 classifier -> bilinear to input size. `transition=True` adds the release's DenseNet transition."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, rates: Sequence[int] = (3, 6, 12, 18, 24),
                 inter_channels: int = 512, growth: int = 128, dropout: float = 0.1, transition: bool = False):
        super().__init__()
        self.backbone = backbone
        channels = backbone.out_channels[-1]
        self.transition4 = self.norm5 = None
        if transition:
            self.transition4 = Transition(channels, channels // 2, pool=False)
            channels //= 2
            self.norm5 = nn.BatchNorm2d(channels)
        # the release runs the block at stride 8, upsampling stride-16 DenseNet features by 2
        self.upsample = backbone.output_stride // 8 if transition else 1
        self.aspp = DenseASPP(channels, rates=rates, inter_channels=inter_channels, growth=growth, dropout=dropout)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(self.aspp.out_channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)[-1]
        if self.transition4 is not None:
            features = self.norm5(self.transition4(features))
        if self.upsample > 1:
            features = resize_to(features, [self.upsample * s for s in features.shape[-2:]])
        return resize_to(self.classifier(self.aspp(features)), x.shape[-2:])


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


# The release's configs (cfgs/DenseASPP121.py, DenseASPP161.py): d_feature0 / d_feature1.
_DENSENET_HEAD = {"densenet121": (128, 64), "densenet161": (512, 128)}


def _denseaspp_densenet(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, rates,
                        inter_channels, growth, dropout, kwargs) -> DenseASPPNet:
    if aux_loss:
        raise SeglabError(f"denseaspp_{name} has no auxiliary head (the paper uses none); use aux_loss=False")
    if output_stride not in (8, 16):
        raise SeglabError(f"denseaspp_{name}: output_stride must be 8 or 16 (the release's choices), got {output_stride}")
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels, output_stride=output_stride,
                               final_norm=False, **kwargs)
    d0, d1 = _DENSENET_HEAD[name]
    return DenseASPPNet(backbone, num_classes, rates=rates, inter_channels=inter_channels or d0,
                        growth=growth or d1, dropout=dropout, transition=True)


@register_model
def denseaspp_densenet161(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                          aux_loss: bool = False, output_stride: int = 8, rates: Sequence[int] = (3, 6, 12, 18, 24),
                          inter_channels: int | None = None, growth: int | None = None, dropout: float = 0.1,
                          **kwargs) -> DenseASPPNet:
    """DenseASPP on a dilated DenseNet-161, the paper's model (35.40M parameters at 19 classes); head
    512 / 128. kwargs: `growth_rate`, `block_config`, `num_init_features`, `bn_size`."""
    return _denseaspp_densenet("densenet161", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                               rates, inter_channels, growth, dropout, kwargs)


@register_model
def denseaspp_densenet121(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                          aux_loss: bool = False, output_stride: int = 8, rates: Sequence[int] = (3, 6, 12, 18, 24),
                          inter_channels: int | None = None, growth: int | None = None, dropout: float = 0.1,
                          **kwargs) -> DenseASPPNet:
    """DenseASPP on a dilated DenseNet-121 (head 128 / 64, the release's config); kwargs as for 161."""
    return _denseaspp_densenet("densenet121", num_classes, in_channels, backbone_weights, aux_loss, output_stride,
                               rates, inter_channels, growth, dropout, kwargs)
