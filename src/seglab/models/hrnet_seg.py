"""HRNetV2 for semantic segmentation: Wang et al., "Deep High-Resolution Representation Learning for
Visual Recognition", TPAMI 2020 (Sec. 3.3 'HRNetV2', Sec. 5 'Semantic segmentation'), as the official
HRNet-Semantic-Segmentation release builds `seg_hrnet`.

`hrnetv2_w18`, `hrnetv2_w48`: the HRNet-W18 / W48 backbone (`seglab.backbones.hrnet`), whose four
branch outputs (strides 4, 8, 16, 32) are bilinearly upsampled to the stride-4 branch's size and
concatenated (15C channels: 270 for W18, 720 for W48; the HRNetV2 representation), then the release's
`last_layer`: 1x1 conv (same channels, with bias as released) + BN + ReLU + 1x1 classifier; the
stride-4 logits are bilinearly upsampled to the input size (align_corners=False). The stem's stride-2
map is not used. The entrypoints are named after the representation (HRNetV2) so they do not collide
with the backbone names `hrnet_w18` / `hrnet_w48`. `backbone_weights` is a local official HRNet
ImageNet checkpoint (`hrnetv2_w18/w48_imagenet_pretrained.pth`; its classification head is dropped).

Parameters: 65.86M for HRNetV2-W48 at 19 classes (the paper's Cityscapes table and the release: 65.9M)
and 9.64M for HRNetV2-W18 (the full W18, not W18-Small). There is no auxiliary head.

Contract: eval `forward(images)` -> logits (N, num_classes, H, W); training returns the same Tensor.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import create_backbone
from ..backbones.hrnet import load_hrnet_imagenet_weights
from ..errors import SeglabError
from ..layers import resize_to
from ..registry import register_model

__all__ = ["HRNetV2"]


class HRNetV2(nn.Module):
    """HRNet backbone + concatenation of all resolutions + 1x1 conv head (the release's `last_layer`)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        channels = sum(backbone.out_channels[1:])
        self.last_layer = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = self.backbone(x)[1:]  # drop the stem's stride-2 map
        hi = feats[0].shape[-2:]
        y = torch.cat([feats[0], *[resize_to(f, hi) for f in feats[1:]]], dim=1)
        return resize_to(self.last_layer(y), size)


def _hrnetv2(name, num_classes, in_channels, backbone_weights, aux_loss, kwargs) -> HRNetV2:
    if aux_loss:
        raise SeglabError(f"hrnetv2_{name[-3:]} has no auxiliary head; use aux_loss=False")
    backbone = create_backbone(name, in_channels=in_channels, **kwargs)
    if backbone_weights is not None:
        load_hrnet_imagenet_weights(backbone, backbone_weights)
    return HRNetV2(backbone, num_classes)


@register_model
def hrnetv2_w18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                aux_loss: bool = False, **kwargs) -> HRNetV2:
    """HRNetV2-W18 (9.64M parameters at 19 classes). kwargs go to the backbone (`width`,
    `stem_channels`, `num_modules`, `num_blocks`)."""
    return _hrnetv2("hrnet_w18", num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model
def hrnetv2_w48(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                aux_loss: bool = False, **kwargs) -> HRNetV2:
    """HRNetV2-W48 (65.9M parameters at 19 classes, as in the paper). kwargs go to the backbone
    (`width`, `stem_channels`, `num_modules`, `num_blocks`)."""
    return _hrnetv2("hrnet_w48", num_classes, in_channels, backbone_weights, aux_loss, kwargs)
