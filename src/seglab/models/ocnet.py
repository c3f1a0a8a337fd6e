"""OCNet: Yuan & Wang, "OCNet: Object Context Network for Scene Parsing", arXiv 1809.00916, 2018 (v1).

Three forms of the object context head (Sec. 3.3; compared on ADE20K val with a ResNet-50 in Table 4:
Base-OC 40.66, Pyramid-OC 42.28, ASP-OC 43.06 mIoU), built as the authors' release
(openseg-group/OCNet.pytorch, `network/resnet101_{base,pyramid,asp}_oc.py`) builds them:
- dilated ResNet at output stride 8 (layer3 dilation 2, layer4 dilation 4);
- `reduce`: 3x3 conv 2048 -> 512 + BN + ReLU on layer4;
- `context` (`seglab.necks.object_context`):
  `ocnet_base_*`: `BaseOC` (key 256, value 256, out 512, dropout 0.05);
  `ocnet_pyramid_*`: `PyramidOC` (cells 1/2/3/6, key 256, value 512, input widened 512 -> 2048,
  concatenation 4096 -> 512, dropout 0.05);
  `ocnet_asp_*`: `ASPOC` (branches 256 wide: object context on a 3x3 conv at half resolution with key 128
  and value 256, 1x1, rates 12/24/36; concatenation 1280 -> 512, dropout 0.1);
- `classifier`: 1x1 conv 512 -> classes; logits upsampled bilinearly (align_corners=False) to the input;
- deep supervision (`aux_classifier`, the release's `dsn`) on layer3: 3x3 conv 1024 -> 512 + BN + ReLU +
  dropout (0.05 Base/Pyramid, 0.1 ASP) + 1x1 conv; on by default, training only. The release weights
  its loss by 0.4, seglab's default `aux_weight`.

Deviations from the release: torchvision's 7x7-stem ResNet (so ImageNet checkpoints load) instead of
the release's deep stem (3x3 convs 3->64->64->128, which also widens layer1's input to 128); ReLU
instead of InPlaceABN's leaky ReLU; no conv bias before BN; the Pyramid-OC release has no activation
after its 2048 -> 512 reduction and its aux conv (plain BN there), we use BN + ReLU in every form.
The release publishes no parameter counts; tests/models/test_ocnet.py counts ours and converts them
to the release's layout (stem, layer1 input, biases).

Sizes at 21 classes, with aux / without: ocnet_base_resnet50 38,607,210 / 33,876,821,
ocnet_pyramid_resnet50 43,465,834 / 38,735,445, ocnet_asp_resnet50 43,426,666 / 38,696,277; on
ResNet-101 each is 18,992,128 more (the aux head alone is 4,730,389: its 512-wide 3x3 conv on 1024
channels). In the release's layout (deep stem, conv biases) the ResNet-101 models with aux would count
57,724,906 (Base), 62,586,346 (Pyramid) and 62,544,234 (ASP).

Width knobs for tiny builds: `width` (ResNet), `channels` (512: the reduction and the head's output;
key/value and ASP-OC's branch widths follow it in the release's ratios unless given), `aux_channels` (512).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..layers import ConvNormAct, resize_to
from ..necks.aspp import aspp_rates
from ..necks.object_context import ASPOC, BaseOC, PyramidOC
from ..registry import register_model

__all__ = ["OCNet"]


class OCNet(nn.Module):
    """Dilated backbone -> 3x3 reduction -> object context head -> 1x1 classifier (+ aux on layer3)."""

    def __init__(self, backbone: nn.Module, num_classes: int, context: nn.Module, *, channels: int = 512,
                 aux_loss: bool = True, aux_channels: int = 512, aux_dropout: float = 0.05):
        super().__init__()
        self.backbone = backbone
        self.reduce = ConvNormAct(backbone.out_channels[-1], channels, 3)
        self.context = context
        self.classifier = nn.Conv2d(context.out_channels, num_classes, 1)
        self.aux_classifier = (nn.Sequential(ConvNormAct(backbone.out_channels[-2], aux_channels, 3),
                                             nn.Dropout2d(aux_dropout), nn.Conv2d(aux_channels, num_classes, 1))
                               if aux_loss else None)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.classifier(self.context(self.reduce(feats[-1]))), size)
        if self.aux_classifier is None or not self.training:
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _backbone(name: str, in_channels: int, backbone_weights: str | None, output_stride: int, kwargs: dict):
    return create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                           output_stride=output_stride, **kwargs)


def _base(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels, key_channels,
          value_channels, aux_channels, dropout, kwargs) -> OCNet:
    backbone = _backbone(name, in_channels, backbone_weights, output_stride, kwargs)
    head = BaseOC(channels, channels, key_channels=key_channels or channels // 2,
                  value_channels=value_channels or channels // 2, dropout=dropout)
    return OCNet(backbone, num_classes, head, channels=channels, aux_loss=aux_loss, aux_channels=aux_channels,
                 aux_dropout=dropout)


def _pyramid(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels, grids,
             key_channels, value_channels, aux_channels, dropout, kwargs) -> OCNet:
    backbone = _backbone(name, in_channels, backbone_weights, output_stride, kwargs)
    head = PyramidOC(channels, channels, grids=grids, key_channels=key_channels, value_channels=value_channels,
                     dropout=dropout)
    return OCNet(backbone, num_classes, head, channels=channels, aux_loss=aux_loss, aux_channels=aux_channels,
                 aux_dropout=dropout)


def _asp(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels, branch_channels,
         atrous_rates, key_channels, value_channels, aux_channels, dropout, kwargs) -> OCNet:
    backbone = _backbone(name, in_channels, backbone_weights, output_stride, kwargs)
    rates = atrous_rates if atrous_rates is not None else aspp_rates(backbone.strides[-1])
    head = ASPOC(channels, branch_channels or channels // 2, channels, atrous_rates=rates,
                 key_channels=key_channels, value_channels=value_channels, dropout=dropout)
    return OCNet(backbone, num_classes, head, channels=channels, aux_loss=aux_loss, aux_channels=aux_channels,
                 aux_dropout=dropout)


@register_model
def ocnet_base_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                        aux_loss: bool = True, output_stride: int = 8, channels: int = 512,
                        key_channels: int | None = None, value_channels: int | None = None,
                        aux_channels: int = 512, dropout: float = 0.05, **kwargs) -> OCNet:
    """OCNet with Base-OC on a dilated ResNet-50 (38.61M parameters with aux, 33.88M without, at 21
    classes). kwargs go to the trunk (`width`, `multi_grid`)."""
    return _base("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                 key_channels, value_channels, aux_channels, dropout, kwargs)


@register_model
def ocnet_base_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                         aux_loss: bool = True, output_stride: int = 8, channels: int = 512,
                         key_channels: int | None = None, value_channels: int | None = None,
                         aux_channels: int = 512, dropout: float = 0.05, **kwargs) -> OCNet:
    """OCNet with Base-OC on a dilated ResNet-101 (57.60M parameters with aux, 52.87M without)."""
    return _base("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                 key_channels, value_channels, aux_channels, dropout, kwargs)


@register_model
def ocnet_pyramid_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                           aux_loss: bool = True, output_stride: int = 8, channels: int = 512,
                           grids: Sequence[int] = (1, 2, 3, 6), key_channels: int | None = None,
                           value_channels: int | None = None, aux_channels: int = 512, dropout: float = 0.05,
                           **kwargs) -> OCNet:
    """OCNet with Pyramid-OC on a dilated ResNet-50 (43.47M parameters with aux, 38.74M without)."""
    return _pyramid("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                    grids, key_channels, value_channels, aux_channels, dropout, kwargs)


@register_model
def ocnet_pyramid_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                            aux_loss: bool = True, output_stride: int = 8, channels: int = 512,
                            grids: Sequence[int] = (1, 2, 3, 6), key_channels: int | None = None,
                            value_channels: int | None = None, aux_channels: int = 512, dropout: float = 0.05,
                            **kwargs) -> OCNet:
    """OCNet with Pyramid-OC on a dilated ResNet-101 (62.46M parameters with aux, 57.73M without)."""
    return _pyramid("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                    grids, key_channels, value_channels, aux_channels, dropout, kwargs)


@register_model
def ocnet_asp_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                       aux_loss: bool = True, output_stride: int = 8, channels: int = 512,
                       branch_channels: int | None = None, atrous_rates: Sequence[int] | None = None,
                       key_channels: int | None = None, value_channels: int | None = None,
                       aux_channels: int = 512, dropout: float = 0.1, **kwargs) -> OCNet:
    """OCNet with ASP-OC on a dilated ResNet-50 (43.43M parameters with aux, 38.70M without).
    `branch_channels` (256) is the width of each ASP-OC branch; rates follow the output stride."""
    return _asp("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                branch_channels, atrous_rates, key_channels, value_channels, aux_channels, dropout, kwargs)


@register_model
def ocnet_asp_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                        aux_loss: bool = True, output_stride: int = 8, channels: int = 512,
                        branch_channels: int | None = None, atrous_rates: Sequence[int] | None = None,
                        key_channels: int | None = None, value_channels: int | None = None,
                        aux_channels: int = 512, dropout: float = 0.1, **kwargs) -> OCNet:
    """OCNet with ASP-OC on a dilated ResNet-101 (62.42M parameters with aux, 57.69M without)."""
    return _asp("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                branch_channels, atrous_rates, key_channels, value_channels, aux_channels, dropout, kwargs)
