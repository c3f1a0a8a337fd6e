"""HRNet backbones: Wang, Sun, Cheng, Jiang, Deng, Zhao, Liu, Mu, Tan, Wang, Liu & Xiao, "Deep
High-Resolution Representation Learning for Visual Recognition", TPAMI 2020 (Sec. 3, Fig. 2-3).

`hrnet_w18` / `hrnet_w48` follow the official HRNet-Semantic-Segmentation configuration
(`seg_hrnet_w18/w48` experiments, full "W18", not W18-Small):
- stem: two 3x3 stride-2 convs (64 channels) with BN + ReLU -> stride 4;
- stage 1: 4 bottleneck blocks of width 64 (-> 256 channels);
- stages 2/3/4: 2/3/4 parallel branches of widths C, 2C, 4C, 8C (C = 18 or 48) at strides 4..32,
  made of 1/4/3 modules; each module runs 4 basic blocks per branch, then an exchange unit
  (multi-resolution fusion) whose output i sums every branch j: j > i via 1x1 conv + BN + bilinear
  upsampling (to branch i's exact size), j < i via (i - j) strided 3x3 convs (BN, ReLU between them,
  none after the last), then ReLU;
- transitions: a 3x3 conv + BN + ReLU where a branch's width changes, a strided 3x3 conv + BN + ReLU
  from the lowest-resolution branch to start each new branch.
Parameter names follow the official code (`conv1`, `bn1`, `conv2`, `bn2`, `layer1`, `transition1..3`,
`stage2..4.<m>.branches/fuse_layers`), so its ImageNet checkpoints map key by key once the
classification head (`incre_modules`, `downsamp_modules`, `final_layer`, `classifier`) is dropped
(`load_hrnet_imagenet_weights`; torchvision has no HRNet, so `create_backbone(weights=...)` does not apply).
Convs use PyTorch's default init (the release draws N(0, 0.001)); BN momentum 0.1 as released.

`forward(x)` returns five maps: the stem's stride-2 map (after conv1 + BN + ReLU, 64 channels), then
the four branch outputs of stage 4 (strides 4, 8, 16, 32; channels C, 2C, 4C, 8C), with `.strides` and
`.out_channels`. `width` (C), `stem_channels`, `num_modules` and `num_blocks` shrink it for tests.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import resize_to
from .base import register_backbone
from .resnet import BasicBlock, Bottleneck


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of basic blocks followed by the exchange unit connecting every pair."""

    def __init__(self, channels: Sequence[int], num_blocks: int):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c, c) for _ in range(num_blocks)]) for c in channels)
        fuse = []
        for i in range(n):
            row: list[nn.Module | None] = []
            for j in range(n):
                if j > i:    # lower resolution -> 1x1 conv + BN, upsampled in forward
                    row.append(_conv_bn(channels[j], channels[i], 1, relu=False))
                elif j == i:
                    row.append(None)
                else:        # higher resolution -> (i - j) strided 3x3 convs
                    steps = [_conv_bn(channels[j], channels[j], 3, 2) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse) if n > 1 else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j > i:
                    y = y + resize_to(layer(xs[j]), xs[i].shape[-2:])
                elif j < i:
                    y = y + layer(xs[j])
            out.append(self.relu(y))
        return out


def _transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Adapt existing branches whose width changes and start the new one from the lowest resolution."""
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(_conv_bn(pre[i], c, 3) if pre[i] != c else None)
        else:
            steps = [_conv_bn(pre[-1], pre[-1], 3, 2) for _ in range(i - len(pre))]
            steps.append(_conv_bn(pre[-1], c, 3, 2))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """HRNet trunk returning [stem (stride 2), branch 1..4 (strides 4, 8, 16, 32)]."""

    def __init__(self, *, width: int = 18, in_channels: int = 3, stem_channels: int = 64,
                 num_modules: Sequence[int] = (1, 4, 3), num_blocks: int = 4):
        super().__init__()
        if len(num_modules) != 3:
            raise ValueError(f"num_modules gives the module count of stages 2, 3, 4, got {num_modules}")
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        c1 = stem_channels * Bottleneck.expansion
        downsample = _conv_bn(stem_channels, c1, 1, relu=False)
        self.layer1 = nn.Sequential(Bottleneck(stem_channels, stem_channels, downsample=downsample),
                                    *[Bottleneck(c1, stem_channels) for _ in range(3)])
        widths = [width * 2 ** i for i in range(4)]
        pre = [c1]
        for s, modules in enumerate(num_modules, start=2):
            cur = widths[:s]
            setattr(self, f"transition{s - 1}", _transition(pre, cur))
            setattr(self, f"stage{s}", nn.Sequential(*[HighResolutionModule(cur, num_blocks)
                                                       for _ in range(modules)]))
            pre = cur
        self.out_channels = [stem_channels, *widths]
        self.strides = [2, 4, 8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        xs = [self.layer1(self.relu(self.bn2(self.conv2(stem))))]
        for s in (2, 3, 4):
            transition = getattr(self, f"transition{s - 1}")
            xs = [xs[min(i, len(xs) - 1)] if t is None else t(xs[min(i, len(xs) - 1)])
                  for i, t in enumerate(transition)]
            xs = getattr(self, f"stage{s}")(xs)
        return [stem, *xs]


# Keys of the official ImageNet classifier (HRNet-Image-Classification) that the trunk does not have.
_CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def load_hrnet_imagenet_weights(model: HRNet, path) -> None:
    """Load an official HRNet ImageNet checkpoint (e.g. `hrnetv2_w48_imagenet_pretrained.pth`) from a
    local file: the classification head is dropped, every other tensor must fit the trunk exactly."""
    from ..errors import SeglabError
    from ..utils.state_dict import read_state_dict

    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise SeglabError(f"{path}: not an HRNet checkpoint of this width (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}, shape mismatch {shapes[:3]})")
    model.load_state_dict(state, strict=True)


@register_backbone
def hrnet_w18(**kwargs) -> HRNet:
    """HRNet-W18 (C = 18; branch widths 18, 36, 72, 144). kwargs: `stem_channels`, `num_modules`, ..."""
    kwargs.setdefault("width", 18)
    return HRNet(**kwargs)


@register_backbone
def hrnet_w48(**kwargs) -> HRNet:
    """HRNet-W48 (C = 48; branch widths 48, 96, 192, 384). kwargs: `stem_channels`, `num_modules`, ..."""
    kwargs.setdefault("width", 48)
    return HRNet(**kwargs)
