"""Aligned Xception-65 (Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic
Image Segmentation" (DeepLab v3+), ECCV 2018, Sec. 3.3 "Modified Aligned Xception"; after Chollet,
"Xception", CVPR 2017, and the "aligned" Xception of Dai et al., Deformable ConvNets, ICCV 2017 / COCO
2017 challenge entry).

Layout, as in the official TensorFlow code (tensorflow/models research/deeplab/core/xception.py,
`xception_65`):
- stem: 3x3 conv 32 stride 2, 3x3 conv 64 (each conv + BN + ReLU);
- entry flow: three Xception modules of (128, 128, 128), (256, 256, 256), (728, 728, 728) channels, each
  striding 2 in its third separable conv (max-pooling replaced by strided separable convs) with a 1x1
  conv + BN shortcut;
- middle flow: 16 modules of (728, 728, 728) with identity shortcut;
- exit flow: (728, 1024, 1024) striding 2 with a 1x1 shortcut, then (1536, 1536, 2048) without shortcut.
A separable conv is depthwise 3x3 -> BN -> pointwise 1x1 -> BN (the extra BN after every depthwise conv
is the paper's point (3)). Activations follow the official code, not the paper's wording: in the
residual modules a ReLU comes *before* each separable conv (`activation_fn_in_separable_conv=False`),
so there is no ReLU between depthwise and pointwise conv; only the last exit-flow module has ReLU after
both the depthwise and the pointwise BN. `relu_after_depthwise=True` adds the ReLU after every
depthwise BN as the paper's text reads (same parameters; no released weights were trained that way).
BN uses eps 1e-3 like the TF code. Parameter names follow timm's port of the TF ImageNet checkpoint
(`stem.N.conv/bn`, `blocks.N.stack.convK.{conv_dw,bn_dw,conv_pw,bn_pw}`, `blocks.N.shortcut.conv/bn`),
so that checkpoint maps by dropping `head.*`.

`output_stride` 32, 16 or 8, with TF's `stack_blocks_dense` rule: once the target stride is reached, a
module that would stride runs at stride 1 with the current rate and later modules use the rate times
that stride. OS 16: exit module 1 rate 1 (stride removed), exit module 2 rate 2. OS 8: entry module 3
rate 1 (stride removed), middle flow and exit module 1 rate 2, exit module 2 rate 4. `multi_grid`
multiplies the rates of the last module's three separable convs (TF `unit_rate_list`).

`forward(x)` returns five maps at strides (2, 4, 8, 16, 32) (capped at `output_stride`): the output of
the second separable conv (pointwise BN, before the pre-activation ReLU) of entry modules 1, 2, 3 and
exit module 1 -- the last map at each stride, just before the strided conv -- and the final ReLU
output. The stride-4 map, used by DeepLab v3+'s decoder, is therefore entry module 2's 256-channel
map, the official decoder end point `entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise`
(not entry module 1's output, which is also at stride 4 but has 128 channels and one conv less);
strides 8 and 16 are also TF's end points. Channels at width 1: (128, 256, 728, 1024, 2048).
`width_mult` scales every channel count (for tiny tests).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import register_backbone


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class ConvBN(nn.Module):
    """`conv -> bn` (-> ReLU when `act`)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = _bn(cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (atrous) -> BN (-> ReLU) -> pointwise 1x1 -> BN (-> ReLU)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, *, act_dw: bool = False,
                 act_pw: bool = False):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, padding=dilation, dilation=dilation, groups=cin,
                                 bias=False)
        self.bn_dw = _bn(cin)
        self.act_dw = nn.ReLU(inplace=True) if act_dw else nn.Identity()
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_pw = _bn(cout)
        self.act_pw = nn.ReLU(inplace=True) if act_pw else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_pw(self.bn_pw(self.conv_pw(self.act_dw(self.bn_dw(self.conv_dw(x))))))


class XceptionModule(nn.Module):
    """Three separable convs (the third may stride) plus a shortcut; `forward` returns
    `(output, tap)` with `tap` the second separable conv's output (before the third conv's ReLU)."""

    def __init__(self, cin: int, couts: Sequence[int], stride: int = 1, dilation: int = 1, *,
                 skip: str = "conv", start_with_relu: bool = True, relu_after_depthwise: bool = False,
                 unit_rates: Sequence[int] = (1, 1, 1)):
        super().__init__()
        if skip not in ("conv", "sum", "none"):
            raise ValueError(f"skip must be 'conv', 'sum' or 'none', got {skip!r}")
        if skip == "sum" and (cin != couts[-1] or stride != 1):
            raise ValueError("an identity shortcut needs equal channels and stride 1")
        self.skip = skip
        self.out_channels = couts[-1]
        self.shortcut = ConvBN(cin, couts[-1], 1, stride, act=False) if skip == "conv" else None
        self.stack = nn.Sequential()
        for i in range(3):
            if start_with_relu:  # pre-activation; act1 keeps the input intact for the shortcut and
                # act3 keeps the tap intact, so only act2 works in place
                self.stack.add_module(f"act{i + 1}", nn.ReLU(inplace=i == 1))
            self.stack.add_module(f"conv{i + 1}", SeparableConv2d(
                cin, couts[i], stride if i == 2 else 1, dilation * unit_rates[i],
                act_dw=relu_after_depthwise or not start_with_relu, act_pw=not start_with_relu))
            cin = couts[i]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x
        tap = x
        for name, layer in self.stack.named_children():
            y = layer(y)
            if name == "conv2":
                tap = y
        if self.skip == "conv":
            y = y + self.shortcut(x)
        elif self.skip == "sum":
            y = y + x
        return y, tap


_STRIDES = (2, 2, 2) + (1,) * 16 + (2, 1)  # the 21 modules: entry 3, middle 16, exit 2


class Xception65(nn.Module):
    """Aligned Xception-65 trunk returning five feature maps (see the module docstring)."""

    def __init__(self, *, in_channels: int = 3, output_stride: int = 32, width_mult: float = 1.0,
                 multi_grid: Sequence[int] | None = None, relu_after_depthwise: bool = False):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if multi_grid is not None and len(multi_grid) != 3:
            raise ValueError(f"multi_grid needs 3 rates (the last module's separable convs), got {multi_grid}")

        def ch(c: int) -> int:
            return max(1, int(round(c * width_mult)))

        self.stem = nn.Sequential(ConvBN(in_channels, ch(32), 3, 2), ConvBN(ch(32), ch(64), 3, 1))
        depths = ([(128,) * 3, (256,) * 3, (728,) * 3] + [(728,) * 3] * 16
                  + [(728, 1024, 1024), (1536, 1536, 2048)])
        current, rate, cin = 2, 1, ch(64)
        self.blocks = nn.Sequential()
        self.tap_blocks: list[int] = []
        strides = []
        for i, (depth, stride) in enumerate(zip(depths, _STRIDES)):
            if stride > 1:
                self.tap_blocks.append(i)
                strides.append(current)
            if current == output_stride:  # target reached: stride becomes dilation for later modules
                dilation, rate, stride = rate, rate * stride, 1
            else:
                dilation, current = 1, current * stride
            last = i == len(depths) - 1
            couts = [ch(d) for d in depth]
            skip = "none" if last else ("sum" if 3 <= i < 19 else "conv")  # TF: middle flow sums
            self.blocks.add_module(str(i), XceptionModule(
                cin, couts, stride, dilation, skip=skip, start_with_relu=not last,
                relu_after_depthwise=relu_after_depthwise,
                unit_rates=tuple(multi_grid) if (last and multi_grid is not None) else (1, 1, 1)))
            cin = couts[-1]
        self.strides = strides + [current]
        self.out_channels = [ch(128), ch(256), ch(728), ch(1024), ch(2048)]
        self.output_stride = output_stride
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x, tap = block(x)
            if i in self.tap_blocks:
                feats.append(tap)
        return feats + [x]


@register_backbone
def xception65(**kwargs) -> Xception65:
    """Aligned Xception-65 (DeepLab v3+); kwargs: output_stride, width_mult, multi_grid, in_channels."""
    return Xception65(**kwargs)
