"""DenseNet-121/161 (Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017, Sec. 3 and Table 1: DenseNet-BC, bottleneck layers and compression 0.5), with the dilated
variant DenseASPP uses (Yang et al., CVPR 2018, Sec. 4 and the authors' release).

Layout and parameter names are torchvision's (`torchvision/models/densenet.py`), so an ImageNet
checkpoint loads strictly once its classifier is dropped (`seglab.convert.torchvision` also renames the
`denselayerN.norm.1`-style keys that the published `densenet121-a639ec97.pth` / `densenet161-8d451a50.pth`
files still carry, as torchvision's own loader does):
- `features.conv0` 7x7 stride-2 conv (no bias), `norm0`, `relu0`, `pool0` 3x3 stride-2 max pool;
- `features.denseblock{1..4}.denselayer{j}`: BN-ReLU-1x1 conv to `bn_size * growth_rate` (4k) -
  BN-ReLU-3x3 conv to `growth_rate` (k), each layer's output concatenated to its input;
- `features.transition{1..3}`: BN-ReLU-1x1 conv halving the channels (compression 0.5) - 2x2 average pool;
- `features.norm5` (BN after the last block; torchvision's classifier applies ReLU, pooling, `classifier`).
DenseNet-121: k = 32, 64 stem channels, blocks (6, 12, 24, 16); DenseNet-161: k = 48, 96 stem
channels, blocks (6, 12, 36, 24). With their ImageNet classifiers these have 7,978,856 and 28,681,000
parameters, torchvision's published counts (tests/backbones/test_densenet.py); the trunks here, without
the classifier, 6,953,856 and 26,472,000.

`output_stride` as DenseASPP's release sets it (`DenseASPP.py`: `feature_size = output_stride / 8`):
32 is the classifier; 16 drops transition3's pooling and dilates block 4's 3x3 convs by 2; 8 also drops
transition2's pooling and dilates block 3 by 2 and block 4 by 4. Average pools hold no parameters, so
the same ImageNet checkpoint loads at every output stride.

`forward(x)` -> [stem (after relu0), block 1, block 2, block 3, last] at strides (2, 4, 8, 16, 32) (or
capped at the output stride), each block's output taken before its transition; the last entry is
ReLU(norm5(block 4)), what torchvision's classifier sees, or the raw block-4 output when
`final_norm=False` (DenseASPP's head puts its own transition and norm there; norm5 is then not built).
`.out_channels` (121): 64, 256, 512, 1024, 1024; (161): 96, 384, 768, 2112, 2208.
`growth_rate`, `block_config`, `num_init_features`, `bn_size` make tiny builds.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import register_backbone

# stride -> (transition2 pools, transition3 pools, block 3 dilation, block 4 dilation)
_DILATION = {32: (True, True, 1, 1), 16: (True, False, 1, 2), 8: (False, False, 2, 4)}


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * growth) - BN-ReLU-3x3 conv (growth, dilated); returns only the new maps."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, dilation: int = 1):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=dilation, dilation=dilation,
                               bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        # relu1 is in place on norm1's fresh output, never on the stored features
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    """`denselayer1..N`; layer j sees the block input and every earlier layer's output."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int, dilation: int = 1):
        super().__init__()
        for j in range(num_layers):
            self[f"denselayer{j + 1}"] = DenseLayer(in_channels + j * growth_rate, growth_rate, bn_size, dilation)
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (`out_channels`) and, when `pool`, a 2x2 stride-2 average pool."""

    def __init__(self, in_channels: int, out_channels: int, *, pool: bool = True):
        layers = [("norm", nn.BatchNorm2d(in_channels)), ("relu", nn.ReLU(inplace=True)),
                  ("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False))]
        if pool:
            layers.append(("pool", nn.AvgPool2d(2, 2)))
        super().__init__(OrderedDict(layers))


class DenseNet(nn.Module):
    """DenseNet-BC trunk with torchvision's `features.*` names; `forward(x)` -> five feature maps."""

    def __init__(self, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16), *,
                 num_init_features: int = 64, bn_size: int = 4, in_channels: int = 3, output_stride: int = 32,
                 final_norm: bool = True):
        super().__init__()
        if output_stride not in _DILATION:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if len(block_config) != 4:
            raise ValueError(f"block_config needs four block sizes, got {block_config}")
        pool2, pool3, dil3, dil4 = _DILATION[output_stride]
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, num_init_features, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]))
        c, self.out_channels = num_init_features, [num_init_features]
        pools, dilations = (True, pool2, pool3), (1, 1, dil3, dil4)
        for i, layers in enumerate(block_config):
            block = DenseBlock(layers, c, growth_rate, bn_size, dilations[i])
            self.features.add_module(f"denseblock{i + 1}", block)
            c = block.out_channels
            self.out_channels.append(c)
            if i < 3:
                self.features.add_module(f"transition{i + 1}", Transition(c, c // 2, pool=pools[i]))
                c //= 2
        self.final_norm = final_norm
        if final_norm:
            self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.strides = [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
        self.output_stride = output_stride
        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.features
        x = f.relu0(f.norm0(f.conv0(x)))
        outs = [x]
        x = f.pool0(x)
        for i in range(1, 5):
            x = getattr(f, f"denseblock{i}")(x)
            if i < 4:
                outs.append(x)
                x = getattr(f, f"transition{i}")(x)
        outs.append(F.relu(f.norm5(x)) if self.final_norm else x)
        return outs


@register_backbone
def densenet121(**kwargs) -> DenseNet:
    """DenseNet-121 (k = 32, blocks 6-12-24-16, 64 stem channels); see the module docstring."""
    return DenseNet(**{"growth_rate": 32, "block_config": (6, 12, 24, 16), "num_init_features": 64, **kwargs})


@register_backbone
def densenet161(**kwargs) -> DenseNet:
    """DenseNet-161 (k = 48, blocks 6-12-36-24, 96 stem channels); see the module docstring."""
    return DenseNet(**{"growth_rate": 48, "block_config": (6, 12, 36, 24), "num_init_features": 96, **kwargs})
