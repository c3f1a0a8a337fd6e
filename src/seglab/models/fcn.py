"""FCN: Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015
(journal version: Shelhamer, Long & Darrell, TPAMI 2017).

`fcn32s_vgg16`, `fcn16s_vgg16`, `fcn8s_vgg16` follow the paper (Sec. 3.1-4.2) and its Caffe release:
- VGG-16 "convolutionalized": fc6 a 7x7 conv, fc7 a 1x1 conv (4096 channels), both with dropout.
- 1x1 score layers on fc7 (`score_fr`), pool4 (`score_pool4`) and pool3 (`score_pool3`), initialised
  to zero (Sec. 4.1: random init gave neither better results nor faster convergence).
- Coarse scores are upsampled 2x by a learnable transposed conv initialised to bilinear (`upscore2`,
  `upscore_pool4`), cropped to the finer skip's size and fused by summation; the sum is upsampled
  32x/16x/8x to the input (`upscore`, also initialised to bilinear; the release freezes this last one,
  we leave it learnable, which starts from the same function).
- Skip scaling: the release's "at-once" FCN-8s (TPAMI Sec. 4.2, `voc-fcn8s-atonce`) multiplies pool4
  by 0.01 and pool3 by 0.0001 before scoring, so the skips start small next to fc7's scores. seglab
  trains every net at once (no staged 32s -> 16s -> 8s), so `skip_scale=True` (default) applies those
  fixed factors to FCN-16s too; `skip_scale=False` gives the unscaled staged-release net.
- Instead of the release's 100-pixel input padding and crop offsets, the backbone pools use ceil mode
  so each upsampled map covers its target, and maps are cropped top-left (`center_crop_to`): a k-x
  bilinear transposed conv with padding k/2 puts input pixel i at (i + 0.5) * k - 0.5, the same centre
  convention as the pooled features, so the top-left crop is aligned. Any input size works.

`fcn_resnet18/34/50/101`: the ResNet variant as torchvision builds it (`torchvision.models.segmentation
.fcn_resnet50`): dilated ResNet at output stride 8, `classifier` = 3x3 conv (C -> C/4) + BN + ReLU +
dropout 0.1 + 1x1 conv, an optional `aux_classifier` of the same form on layer3, and bilinear
(align_corners=False) upsampling of the logits. Attribute names match torchvision's, so its
fcn_resnet50/101 checkpoints load as they are (`seglab.convert.torchvision`).

Contract: eval `forward(images)` -> logits (N, num_classes, H, W); training with an aux head ->
`{"out": logits, "aux": aux_logits}`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..layers import BilinearConvTranspose2d, center_crop_to, resize_to
from ..registry import register_model

__all__ = ["FCN", "FCNHead", "FCNResNet"]


class FCN(nn.Module):
    """FCN-32s / 16s / 8s on a VGG trunk returning [pool1, pool2, pool3, pool4, fc7]."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, stride: int = 8, skip_scale: bool = True):
        super().__init__()
        if stride not in (8, 16, 32):
            raise ValueError(f"FCN stride must be 8, 16 or 32, got {stride}")
        self.backbone = backbone
        add_skip_scores(self, backbone.out_channels, num_classes, stride=stride, skip_scale=skip_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fuse_skip_scores(self, self.backbone(x), x.shape[-2:])


def add_skip_scores(module: nn.Module, channels, num_classes: int, *, stride: int, skip_scale: bool) -> None:
    """Give `module` FCN's scoring layers for VGG features [pool1, pool2, pool3, pool4, fc7] (channels
    per level): score_fr, and for 16s / 8s the pool4 / pool3 skips with their 2x upsamplers, plus the
    final `stride`x upsampler; score layers start at zero as in the release. Attribute names are the
    release's, so FCN and the joint model share checkpoint keys."""
    module.stride = stride
    module.score_fr = nn.Conv2d(channels[4], num_classes, 1)
    scores = [module.score_fr]
    if stride <= 16:
        module.upscore2 = BilinearConvTranspose2d(num_classes, 2)
        module.score_pool4 = nn.Conv2d(channels[3], num_classes, 1)
        scores.append(module.score_pool4)
    if stride == 8:
        module.upscore_pool4 = BilinearConvTranspose2d(num_classes, 2)
        module.score_pool3 = nn.Conv2d(channels[2], num_classes, 1)
        scores.append(module.score_pool3)
    module.upscore = BilinearConvTranspose2d(num_classes, stride)
    # Fixed (not learned) factors of the at-once release; see the module docstring.
    module.pool4_scale, module.pool3_scale = (0.01, 1e-4) if skip_scale else (1.0, 1.0)
    for conv in scores:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)


def fuse_skip_scores(module: nn.Module, feats: list[torch.Tensor], size) -> torch.Tensor:
    """FCN-32s/16s/8s scoring with the layers `add_skip_scores` gave `module`; logits at `size`."""
    _, _, pool3, pool4, fc7 = feats
    score = module.score_fr(fc7)
    if module.stride <= 16:
        skip = module.score_pool4(pool4 * module.pool4_scale)
        score = center_crop_to(module.upscore2(score), skip.shape[-2:]) + skip
    if module.stride == 8:
        skip = module.score_pool3(pool3 * module.pool3_scale)
        score = center_crop_to(module.upscore_pool4(score), skip.shape[-2:]) + skip
    return center_crop_to(module.upscore(score), size)


class FCNHead(nn.Sequential):
    """torchvision's FCN head; children 0..4 give its checkpoint keys (`classifier.0.weight`, ...)."""

    def __init__(self, in_channels: int, num_classes: int):
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )


class FCNResNet(nn.Module):
    """Dilated ResNet + FCNHead on the last stage (+ aux FCNHead on the one before), torchvision layout."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, aux_loss: bool = False):
        super().__init__()
        self.backbone = backbone
        self.classifier = FCNHead(backbone.out_channels[-1], num_classes)
        self.aux_classifier = FCNHead(backbone.out_channels[-2], num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = resize_to(self.classifier(feats[-1]), size)
        if self.aux_classifier is None or not self.training:  # aux head only costs time in training
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


def _fcn_vgg(stride, num_classes, in_channels, backbone_weights, aux_loss, skip_scale, kwargs) -> FCN:
    if aux_loss:
        raise SeglabError(f"fcn{stride}s_vgg16 has no auxiliary head; use aux_loss=False")
    backbone = create_backbone("vgg16", weights=backbone_weights, in_channels=in_channels, **kwargs)
    return FCN(backbone, num_classes, stride=stride, skip_scale=skip_scale)


@register_model
def fcn32s_vgg16(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, skip_scale: bool = True, **kwargs) -> FCN:
    """FCN-32s. kwargs go to the VGG-16 trunk (`width_div`, `fc_channels`, `dropout`)."""
    return _fcn_vgg(32, num_classes, in_channels, backbone_weights, aux_loss, skip_scale, kwargs)


@register_model
def fcn16s_vgg16(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, skip_scale: bool = True, **kwargs) -> FCN:
    """FCN-16s (fc7 + pool4). kwargs go to the VGG-16 trunk (`width_div`, `fc_channels`, `dropout`)."""
    return _fcn_vgg(16, num_classes, in_channels, backbone_weights, aux_loss, skip_scale, kwargs)


@register_model
def fcn8s_vgg16(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                aux_loss: bool = False, skip_scale: bool = True, **kwargs) -> FCN:
    """FCN-8s (fc7 + pool4 + pool3). kwargs go to the VGG-16 trunk (`width_div`, `fc_channels`, `dropout`)."""
    return _fcn_vgg(8, num_classes, in_channels, backbone_weights, aux_loss, skip_scale, kwargs)


def _fcn_resnet(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, kwargs) -> FCNResNet:
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return FCNResNet(backbone, num_classes, aux_loss=aux_loss)


@register_model
def fcn_resnet18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, output_stride: int = 8, **kwargs) -> FCNResNet:
    """FCN head on a dilated ResNet-18. kwargs go to the trunk (`width`, `multi_grid`)."""
    return _fcn_resnet("resnet18", num_classes, in_channels, backbone_weights, aux_loss, output_stride, kwargs)


@register_model
def fcn_resnet34(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, output_stride: int = 8, **kwargs) -> FCNResNet:
    """FCN head on a dilated ResNet-34. kwargs go to the trunk (`width`, `multi_grid`)."""
    return _fcn_resnet("resnet34", num_classes, in_channels, backbone_weights, aux_loss, output_stride, kwargs)


@register_model
def fcn_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, output_stride: int = 8, **kwargs) -> FCNResNet:
    """torchvision's fcn_resnet50 (35.3M parameters with aux at 21 classes). kwargs: `width`, `multi_grid`."""
    return _fcn_resnet("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, kwargs)


@register_model
def fcn_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                  aux_loss: bool = False, output_stride: int = 8, **kwargs) -> FCNResNet:
    """torchvision's fcn_resnet101 (54.3M parameters with aux at 21 classes). kwargs: `width`, `multi_grid`."""
    return _fcn_resnet("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, kwargs)
