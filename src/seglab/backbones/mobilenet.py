"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018),
with the atrous output strides of DeepLab v3 / v3+ (Chen et al., arXiv 2017 and ECCV 2018).

Table 2 of the paper: a 3x3 conv 32 stride 2, then inverted residual blocks (expansion t, channels c,
repeats n, first stride s) = (1,16,1,1), (6,24,2,2), (6,32,3,2), (6,64,4,2), (6,96,3,1), (6,160,3,2),
(6,320,1,1); each block is 1x1 expand + BN + ReLU6 (absent when t = 1), 3x3 depthwise + BN + ReLU6,
1x1 linear projection + BN, with a residual when stride is 1 and channels match. The final 1x1 conv to
1280 channels and the classifier are dropped: DeepLab v3+'s and torchvision's segmentation models take
the 320-channel features, so the 1280 conv (412,160 parameters) would be dead weight.

Parameter names follow torchvision's `mobilenet_v2` (`features.0.{0,1}` = conv, bn; `features.N.conv`
= `[Conv2dNormActivation(expand)], Conv2dNormActivation(depthwise), Conv2d(project), BatchNorm2d`), so
an ImageNet checkpoint loads once `features.18.*` and `classifier.*` are dropped. `width_mult` rounds
channels to multiples of 8 with the reference code's `_make_divisible` (never below 90% of the scaled
value); the hidden width is `round(in * t)`.

`output_stride` 32, 16 or 8 with the rule of TF DeepLab's MobileNet (and seglab's ResNet): once the
target stride is reached, a block that would stride runs at stride 1 with the current rate and later
blocks' depthwise convs use the rate times that stride. OS 16: features.14 rate 1 (stride removed),
features.15-17 rate 2. OS 8: features.7 rate 1, features.8-13 rate 2, features.14 rate 2, features.15-17
rate 4.

`forward(x)` returns the output of the last block at each stride: features.1, 3, 6, 13, 17 (16, 24, 32,
96, 320 channels at width 1) at strides (2, 4, 8, 16, 32), capped at `output_stride`.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import register_backbone

# (t, c, n, s) of Table 2, without the final 1x1 conv to 1280
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1))


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """The paper's reference rounding: nearest multiple of `divisor`, not less than 90% of `v`."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """conv -> BN -> ReLU6, children `0, 1, 2` like torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation=dilation, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, dilation: int = 1):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, 1))
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, dilation, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 trunk `features.0 .. features.17` returning five feature maps."""

    def __init__(self, *, in_channels: int = 3, output_stride: int = 32, width_mult: float = 1.0,
                 round_nearest: int = 8):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        cin = _make_divisible(32 * width_mult, round_nearest)
        layers: list[nn.Module] = [ConvBNReLU6(in_channels, cin, 3, 2)]
        current, rate = 2, 1
        strides: list[int] = [2]  # stride of each features.N output
        for t, c, n, s in _SETTINGS:
            cout = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                stride = s if i == 0 else 1
                if current == output_stride:  # target reached: stride becomes dilation
                    dilation, rate, stride = rate, rate * stride, 1
                else:
                    dilation, current = rate, current * stride
                layers.append(InvertedResidual(cin, cout, stride, t, dilation))
                strides.append(current)
                cin = cout
        self.features = nn.Sequential(*layers)
        # the last block at each nominal stride 2, 4, 8, 16, 32
        self.tap_indices = [1, 3, 6, 13, 17]
        self.strides = [strides[i] for i in self.tap_indices]
        self.out_channels = [self.features[i].out_channels for i in self.tap_indices]
        self.output_stride = output_stride
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.tap_indices:
                feats.append(x)
        return feats


@register_backbone
def mobilenetv2(**kwargs) -> MobileNetV2:
    """MobileNetV2 trunk without the 1280 conv; kwargs: output_stride, width_mult, in_channels."""
    return MobileNetV2(**kwargs)
