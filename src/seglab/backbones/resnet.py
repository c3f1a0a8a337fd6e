"""ResNet backbones (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), with the
atrous variants of the DeepLab papers (Chen et al., DeepLab v2, TPAMI 2018, Sec. 3.1; DeepLab v3,
arXiv 2017, Sec. 3.2 'multi-grid').

Layout: `conv1, bn1, layer1..layer4` with blocks `conv1/bn1/conv2/bn2(/conv3/bn3)` and `downsample.0/1`,
the same parameter names as torchvision's ImageNet models, so their checkpoints load strictly once the
classifier `fc.*` is dropped (`seglab.convert`). Bottleneck blocks stride in the 3x3 conv (ResNet v1.5,
as torchvision does).

`output_stride` 32 (classification), 16 (layer4 dilated by 2) or 8 (layer3 by 2, layer4 by 4). As in
torchvision, the first block of a dilated stage keeps the previous dilation; the others use the new one.
`multi_grid` (e.g. (1, 2, 4)) multiplies the dilation of layer4's three blocks by those unit rates,
DeepLab v3's multi-grid.

`forward(x)` returns five feature maps with `.strides` (2, 4, 8, 16, 32 at output stride 32) and
`.out_channels`.

`norm="gn"` replaces every BatchNorm by GroupNorm (Wu & He, "Group Normalization", ECCV 2018; 32 groups,
fewer when a layer is narrower, keeping at least 4 channels per group), whose statistics do not depend
on the batch: He, Girshick & Dollar ("Rethinking ImageNet Pre-training", ICCV 2019) train detectors from
scratch with it at 2 images per GPU. The parameter names stay (`bn1` is then a GroupNorm); torchvision
checkpoints, which hold BatchNorm statistics, load only into the default `norm="bn"`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .base import register_backbone

NORMS = ("bn", "gn")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm2d ("bn") or GroupNorm ("gn": 32 groups, or channels // 4 when that is fewer)."""
    if kind == "gn":
        return nn.GroupNorm(math.gcd(channels, max(1, min(32, channels // 4))), channels)
    return nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm: str = "bn"):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm: str = "bn"):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm_layer(norm, planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_DILATE_STAGES = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


class ResNet(nn.Module):
    """ResNet trunk returning [stem, layer1, layer2, layer3, layer4] features."""

    def __init__(self, block: type[nn.Module], layers: Sequence[int], *, in_channels: int = 3,
                 output_stride: int = 32, multi_grid: Sequence[int] | None = None, width: int = 64,
                 norm: str = "bn"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        if output_stride not in _DILATE_STAGES:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if multi_grid is not None and len(multi_grid) != layers[3]:
            raise ValueError(f"multi_grid needs one rate per layer4 block ({layers[3]}), got {multi_grid}")
        self.inplanes, self.dilation = width, 1
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = norm_layer(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        dilate = _DILATE_STAGES[output_stride]
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2, dilate[0])
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2, dilate[1])
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2, dilate[2], multi_grid)
        e = block.expansion
        self.out_channels = [width, width * e, width * 2 * e, width * 4 * e, width * 8 * e]
        s = [2, 4, 8, 16, 32]
        self.strides = [min(v, output_stride) for v in s]
        self.output_stride = output_stride
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False,
                    multi_grid: Sequence[int] | None = None) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                norm_layer(self.norm, planes * block.expansion),
            )
        if multi_grid is not None:
            rates = [self.dilation * r for r in multi_grid]
        else:
            rates = [previous_dilation] + [self.dilation] * (blocks - 1)
        blocks_ = [block(self.inplanes, planes, stride, rates[0], downsample, self.norm)]
        self.inplanes = planes * block.expansion
        blocks_ += [block(self.inplanes, planes, 1, r, norm=self.norm) for r in rates[1:]]
        return nn.Sequential(*blocks_)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c1, c2, c3, c4, c5]


_SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def _make(name: str):
    def build(**kwargs) -> ResNet:
        block, layers = _SPECS[name]
        return ResNet(block, layers, **kwargs)

    build.__name__ = name
    build.__doc__ = f"{name} trunk (see module docstring for output_stride / multi_grid)."
    return register_backbone(build)


resnet18 = _make("resnet18")
resnet34 = _make("resnet34")
resnet50 = _make("resnet50")
resnet101 = _make("resnet101")
