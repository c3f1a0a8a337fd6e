"""BiSeNet V2 (Yu, Gao, Wang, Yu, Shen, Sang, "BiSeNet V2: Bilateral Network with Guided Aggregation
for Real-time Semantic Segmentation", IJCV 2021, Sec. 4 and Tables 1-2, Fig. 4-7).

- Detail Branch (Table 1): three stages of plain 3x3 conv-BN-ReLU, 64-64-128 channels; stage S1 has
  2 convs, S2 and S3 have 3; the first conv of each stage has stride 2 (strides 2 / 4 / 8).
- Semantic Branch (Table 1, lambda = 1/4 of the detail widths): Stem block (Fig. 4a: 3x3 s2 conv, then
  a 1x1 + 3x3 s2 conv path beside a 3x3 s2 max pool, concatenated and fused by a 3x3 conv; 16 channels,
  stride 4); Gather-and-Expansion layers (Fig. 5b/c, expansion ratio 6): S3 = GE(s2) + GE, 32 channels,
  stride 8; S4 = GE(s2) + GE, 64, stride 16; S5 = GE(s2) + 3 GE, 128, stride 32; then the Context
  Embedding block (Fig. 4b: global average pool, BN, 1x1 conv-BN-ReLU, broadcast add, 3x3 conv).
  Its two BNs act on one value per channel and image, so with a training batch of one image they use
  their running statistics (PyTorch's BN would raise); any batch of two or more is the paper's BN.
- Bilateral Guided Aggregation (Fig. 6): detail (stride 8) and semantic (stride 32) features gate each
  other through sigmoids at both resolutions, are summed at stride 8 and fused by a 3x3 conv.
- Segmentation head (Fig. 7): 3x3 conv-BN-ReLU to `head_channels` (1024 in the paper's Cityscapes
  model), dropout, 1x1 classifier, bilinear upsampling (8x) to the input size.
- Booster training (Sec. 4.4): auxiliary heads of the same form (`aux_channels`, 128) on the semantic
  branch's stem (stride 4), S3 (8), S4 (16) and S5 before the CE block (32); with `aux_loss=True` (the
  default) training-mode `forward` returns `{"out": logits, "aux": [four aux logits]}`, the aux logits at
  their heads' own strides (the loss takes the labels at the cells' centres; the paper does not say,
  the reference implementations upsample, which costs a quarter of a CamVid training step); in eval
  they are skipped, so they cost nothing at inference.

Where the paper is silent we follow the widely used public implementations (CoinCheung/BiSeNet,
MMSegmentation): ReLU after the depthwise convs of the GE layers, conv-BN-ReLU for the CE block's last
3x3 conv and after the BGA fusion, a 3x3 s2 conv + BN + 3x3 s2 average pool on BGA's detail-to-semantic
path, dropout 0.1 in the heads, and the last BN of each GE layer's residual branch initialised to zero.
Resizing inside BGA is bilinear to the detail map's exact size rather than a fixed 4x, so odd input
sizes (all convs pad, so sizes are ceil(H / stride)) work. At 19 classes the inference network has 3.36M
parameters (the ~3.4M of the reference implementations); the four training-only aux heads add 0.29M
(3.65M with `aux_loss=True`).

`width_mult` scales every channel width (tiny test models).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError
from ..layers import ConvNormAct, resize_to
from ..registry import register_model


def _bn_conv(in_ch: int, out_ch: int, k: int, *, stride: int = 1, groups: int = 1, act: bool = False) -> list:
    """Conv + BN (+ ReLU) as a flat list, so a Sequential of them has no extra nesting."""
    layers = [nn.Conv2d(in_ch, out_ch, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(out_ch)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return layers


class DetailBranch(nn.Module):
    def __init__(self, in_channels: int, widths=(64, 64, 128)):
        super().__init__()
        c1, c2, c3 = widths
        self.s1 = nn.Sequential(ConvNormAct(in_channels, c1, 3, stride=2), ConvNormAct(c1, c1, 3))
        self.s2 = nn.Sequential(ConvNormAct(c1, c2, 3, stride=2), ConvNormAct(c2, c2, 3), ConvNormAct(c2, c2, 3))
        self.s3 = nn.Sequential(ConvNormAct(c2, c3, 3, stride=2), ConvNormAct(c3, c3, 3), ConvNormAct(c3, c3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s3(self.s2(self.s1(x)))


class StemBlock(nn.Module):
    """Fig. 4a: fast downsampling to stride 4 with two complementary paths."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvNormAct(in_channels, out_channels, 3, stride=2)
        self.left = nn.Sequential(ConvNormAct(out_channels, max(1, out_channels // 2), 1),
                                  ConvNormAct(max(1, out_channels // 2), out_channels, 3, stride=2))
        self.right = nn.MaxPool2d(3, 2, 1)
        self.fuse = ConvNormAct(2 * out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class GatherExpansion(nn.Module):
    """Gather-and-Expansion layer (Fig. 5b stride 1, Fig. 5c stride 2): 3x3 conv gathers, a depthwise
    3x3 conv expands by `expansion` (two depthwise convs when striding), a 1x1 conv projects back;
    residual shortcut (depthwise s2 + 1x1 projection when striding)."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1, expansion: int = 6):
        super().__init__()
        mid = in_ch * expansion
        self.conv1 = ConvNormAct(in_ch, in_ch, 3)
        if stride == 1:
            dw = _bn_conv(in_ch, mid, 3, groups=in_ch, act=True)
        else:
            dw = _bn_conv(in_ch, mid, 3, stride=2, groups=in_ch) + _bn_conv(mid, mid, 3, groups=mid, act=True)
        self.dwconv = nn.Sequential(*dw)
        self.conv2 = nn.Sequential(*_bn_conv(mid, out_ch, 1))
        if stride == 1 and in_ch == out_ch:
            self.shortcut = None
        else:
            self.shortcut = nn.Sequential(*_bn_conv(in_ch, in_ch, 3, stride=stride, groups=in_ch),
                                          *_bn_conv(in_ch, out_ch, 1))
        self.relu = nn.ReLU(inplace=True)
        # Zero-init the last BN of the residual branch, as the reference implementation does: each GE
        # layer starts as (nearly) its shortcut, which helps the deep stride-32 stage train.
        nn.init.zeros_(self.conv2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.dwconv(self.conv1(x)))
        y = y + (x if self.shortcut is None else self.shortcut(x))
        return self.relu(y)


class ContextEmbedding(nn.Module):
    """Fig. 4b: global average pooling -> BN -> 1x1 conv-BN-ReLU, broadcast-added, then 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv_gap = ConvNormAct(channels, channels, 1)
        self.conv_last = ConvNormAct(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn2, act = self.conv_gap
        g = x.mean(dim=(2, 3), keepdim=True)
        g = act(_norm_pooled(bn2, conv(_norm_pooled(self.bn, g))))
        return self.conv_last(x + g)


def _norm_pooled(bn: nn.BatchNorm2d, g: torch.Tensor) -> torch.Tensor:
    """BN of a pooled (N, C, 1, 1) map. A training batch of one image has a single value per channel,
    no variance to normalise by (PyTorch raises); then the running statistics are used, unchanged."""
    if bn.training and g.shape[0] == 1:
        return F.batch_norm(g, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return bn(g)


class SemanticBranch(nn.Module):
    def __init__(self, in_channels: int, widths=(16, 32, 64, 128), expansion: int = 6):
        super().__init__()
        c2, c3, c4, c5 = widths
        self.stem = StemBlock(in_channels, c2)
        self.s3 = nn.Sequential(GatherExpansion(c2, c3, stride=2, expansion=expansion),
                                GatherExpansion(c3, c3, expansion=expansion))
        self.s4 = nn.Sequential(GatherExpansion(c3, c4, stride=2, expansion=expansion),
                                GatherExpansion(c4, c4, expansion=expansion))
        self.s5 = nn.Sequential(GatherExpansion(c4, c5, stride=2, expansion=expansion),
                                *(GatherExpansion(c5, c5, expansion=expansion) for _ in range(3)))
        self.ce = ContextEmbedding(c5)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[stem (s4), S3 (s8), S4 (s16), S5 before CE (s32), CE output (s32)]."""
        f2 = self.stem(x)
        f3 = self.s3(f2)
        f4 = self.s4(f3)
        f5 = self.s5(f4)
        return [f2, f3, f4, f5, self.ce(f5)]


class BilateralGuidedAggregation(nn.Module):
    """Fig. 6: detail and semantic features guide each other at stride 8 and stride 32."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.detail_keep = nn.Sequential(*_bn_conv(c, c, 3, groups=c), nn.Conv2d(c, c, 1, bias=False))
        self.detail_down = nn.Sequential(*_bn_conv(c, c, 3, stride=2), nn.AvgPool2d(3, 2, 1))
        self.semantic_up = nn.Sequential(*_bn_conv(c, c, 3))
        self.semantic_keep = nn.Sequential(*_bn_conv(c, c, 3, groups=c), nn.Conv2d(c, c, 1, bias=False))
        self.fuse = ConvNormAct(c, c, 3)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        size = detail.shape[-2:]
        high = self.detail_keep(detail) * torch.sigmoid(resize_to(self.semantic_up(semantic), size))
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.fuse(high + resize_to(low, size))


class SegmentHead(nn.Sequential):
    """Fig. 7: 3x3 conv-BN-ReLU, dropout, 1x1 classifier (upsampled by the caller)."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int, dropout: float = 0.1):
        super().__init__(ConvNormAct(in_ch, mid_ch, 3), nn.Dropout(dropout), nn.Conv2d(mid_ch, num_classes, 1))


def _scale(c: int, mult: float) -> int:
    return max(2, int(round(c * mult)))


class BiSeNetV2(nn.Module):
    # No ImageNet backbone: the two branches are the trunk that fine-tuning freezes or slows down
    # (`train.freeze: [backbone]`, `train.backbone_lr_mult`, seglab.finetune).
    backbone_modules = ("detail", "semantic")

    def __init__(self, num_classes: int, *, in_channels: int = 3, width_mult: float = 1.0,
                 head_channels: int = 1024, aux_channels: int = 128, aux_loss: bool = True,
                 expansion: int = 6):
        super().__init__()
        if width_mult <= 0:
            raise SeglabError(f"bisenetv2: width_mult must be positive, got {width_mult}")
        detail = [_scale(c, width_mult) for c in (64, 64, 128)]
        semantic = [_scale(c, width_mult) for c in (16, 32, 64)] + [detail[-1]]  # BGA needs equal widths
        self.detail = DetailBranch(in_channels, detail)
        self.semantic = SemanticBranch(in_channels, semantic, expansion=expansion)
        self.bga = BilateralGuidedAggregation(detail[-1])
        self.head = SegmentHead(detail[-1], head_channels, num_classes)
        self.aux_loss = aux_loss
        self.aux_heads = nn.ModuleList(
            SegmentHead(c, aux_channels, num_classes) for c in semantic) if aux_loss else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        d = self.detail(x)
        f2, f3, f4, f5, ce = self.semantic(x)
        out = resize_to(self.head(self.bga(d, ce)), size)
        if not (self.training and self.aux_heads is not None):
            return out
        # The booster heads' logits stay at their own strides (4-32): the loss takes the labels there
        # (SegmentationLoss) instead of upsampling 4 maps to full size and back-propagating through that.
        aux = [h(f) for h, f in zip(self.aux_heads, (f2, f3, f4, f5))]
        return {"out": out, "aux": aux}


@register_model
def bisenetv2(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
              width_mult: float = 1.0, head_channels: int = 1024, aux_channels: int = 128,
              aux_loss: bool = True) -> BiSeNetV2:
    """BiSeNet V2, trained from scratch as in the paper (no ImageNet backbone)."""
    if backbone_weights is not None:
        raise SeglabError("bisenetv2 is trained from scratch; backbone_weights is not supported")
    return BiSeNetV2(num_classes, in_channels=in_channels, width_mult=width_mult,
                     head_channels=head_channels, aux_channels=aux_channels, aux_loss=aux_loss)
