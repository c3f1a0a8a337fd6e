"""Semantic FPN: the semantic segmentation branch of Kirillov, Girshick, He & Dollar, "Panoptic Feature
Pyramid Networks", CVPR 2019, Sec. 3 (Fig. 3), on the FPN of Lin et al., CVPR 2017.

`fpn_resnet50`, `fpn_resnet101`:
- ResNet at output stride 32 (no dilation); C2..C5 (strides 4..32) feed `seglab.necks.FeaturePyramidNetwork`
  with 256 channels (`fpn_channels`), giving P2..P5;
- from each level, stages of 3x3 conv 128 (`head_channels`) + GroupNorm(32) + ReLU + 2x bilinear
  upsampling until stride 4: P2 one conv and no upsampling, P3 one stage, P4 two, P5 three (Detectron2's
  `SemSegFPNHead`, which the paper's authors released);
- the four stride-4 maps are summed element-wise, a 1x1 conv gives the class logits, and a 4x bilinear
  upsampling (align_corners=False) brings them to the input size.
Odd input sizes: each "2x" upsampling resizes to the next finer pyramid level's exact size (the same as
2x when the input divides by 32, which Detectron2 requires by padding), and the last step resizes to the
input. GroupNorm uses gcd(32, channels) groups, i.e. 32 at full width. Convs before GroupNorm carry no
bias; head convs use He (fan-out) init, as Detectron2's `c2_msra_fill`.
The paper has no auxiliary head: `aux_loss=True` raises `SeglabError`.

Width knobs for tiny builds: `width` (ResNet), `fpn_channels`, `head_channels`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..layers import resize_to
from ..necks.fpn import FeaturePyramidNetwork
from ..registry import register_model

__all__ = ["SemanticFPN", "SemanticFPNHead"]


def _conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.GroupNorm(math.gcd(32, out_channels), out_channels), nn.ReLU(inplace=True))


class SemanticFPNHead(nn.Module):
    """Panoptic FPN's semantic branch: per-level conv + upsampling stages to the finest level, summed."""

    def __init__(self, in_channels: int, strides, num_classes: int, *, channels: int = 128):
        super().__init__()
        self.strides = list(strides)
        base = self.strides[0]
        self.scale_heads = nn.ModuleList()
        for s in self.strides:
            n = max(1, int(round(math.log2(s / base))))
            self.scale_heads.append(nn.ModuleList(
                _conv_gn_relu(in_channels if k == 0 else channels, channels) for k in range(n)))
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def branches(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each level's branch output at the finest level's size (before the sum)."""
        sizes = [p.shape[-2:] for p in pyramid]
        outs = []
        for i, (p, stages) in enumerate(zip(pyramid, self.scale_heads)):
            x = p
            for k, stage in enumerate(stages):
                x = stage(x)
                if i > 0:  # 2x bilinear up, to the next finer level's exact size
                    x = resize_to(x, sizes[max(i - 1 - k, 0)])
            outs.append(x)
        return outs

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return self.predictor(sum(self.branches(pyramid)))


class SemanticFPN(nn.Module):
    """ResNet (stride 32) -> FPN P2..P5 -> semantic branch -> logits at input size."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, fpn_channels: int = 256,
                 head_channels: int = 128):
        super().__init__()
        self.backbone = backbone
        self.fpn = FeaturePyramidNetwork(backbone.out_channels[1:], fpn_channels, in_strides=backbone.strides[1:])
        self.head = SemanticFPNHead(fpn_channels, self.fpn.strides, num_classes, channels=head_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.head(self.fpn(self.backbone(x)[1:])), x.shape[-2:])


def _fpn(name, num_classes, in_channels, backbone_weights, aux_loss, fpn_channels, head_channels,
         kwargs) -> SemanticFPN:
    if aux_loss:
        raise SeglabError(f"fpn_{name} has no auxiliary head (the paper uses none); use aux_loss=False")
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels, output_stride=32,
                               **kwargs)
    return SemanticFPN(backbone, num_classes, fpn_channels=fpn_channels, head_channels=head_channels)


@register_model
def fpn_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, fpn_channels: int = 256, head_channels: int = 128,
                 **kwargs) -> SemanticFPN:
    """Semantic FPN on ResNet-50 (28.48M parameters at 21 classes). kwargs go to the trunk (`width`)."""
    return _fpn("resnet50", num_classes, in_channels, backbone_weights, aux_loss, fpn_channels, head_channels,
                kwargs)


@register_model
def fpn_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                  aux_loss: bool = False, fpn_channels: int = 256, head_channels: int = 128,
                  **kwargs) -> SemanticFPN:
    """Semantic FPN on ResNet-101 (47.47M parameters at 21 classes). kwargs go to the trunk (`width`)."""
    return _fpn("resnet101", num_classes, in_channels, backbone_weights, aux_loss, fpn_channels, head_channels,
                kwargs)
