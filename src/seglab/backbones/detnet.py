"""DetNet-59 (Li, Peng, Yu, Zhang, Deng & Sun, "DetNet: A Backbone network for Object Detection",
ECCV 2018, Sec. 3.2 and Fig. 2).

Stages 1-4 are ResNet-50's (7x7 stem + max pool, then 3, 4 and 6 bottlenecks at strides 4, 8, 16; the
same `conv1, bn1, layer1..layer3` modules as `seglab.backbones.resnet`, so those layers take
torchvision's ResNet-50 names). DetNet then adds two stages instead of ResNet's single stride-32 stage 5:
stage 5 (`layer4`) and the extra stage 6 (`layer5`), each of 3 dilated bottlenecks that keep the
1/16 resolution:
- dilated bottleneck (Fig. 2A): 1x1 conv to 256, 3x3 conv with dilation 2 (stride 1), 1x1 conv to
  1024, identity shortcut;
- dilated bottleneck with 1x1 conv projection (Fig. 2B), the first block of each new stage: the same
  with a 1x1 conv + BN on the shortcut although input and output both have 1024 channels, which is
  what makes a stage at unchanged resolution a new stage (Sec. 3.2).
"We fix the channels of stage 5 and 6 to 256" is the bottleneck width (ResNet-50's stage 5 uses 512):
the blocks output 4 x 256 = 1024 channels, as in the public implementation (guoruoqian/DetNet_pytorch,
whose classifier is `Linear(1024, 1000)`), whose module names (`extra_conv` for the projection)
are kept. 3 + 4 + 6 + 3 + 3 = 19 bottlenecks of 3 convs, the stem and the classifier: 59 layers.

`forward(x)` returns [stem, stage 2, ..., stage 6] with `.strides` (2, 4, 8, 16, 16, 16) and
`.out_channels` (64, 256, 512, 1024, 1024, 1024) at the paper's widths. There is no `output_stride`
choice: 16 is the design (Sec. 3.1: keeping the resolution of the deep stages is the point). `width`
(64) scales every stage for tiny builds; `dilation` (2) is the rate of the new stages' 3x3 convs.

Size: 17,347,648 trunk parameters (ResNet-50's trunk: 23,508,032), 18,372,648 with the ImageNet
classifier (tests/backbones/test_detnet.py). The paper reports the cost, not the size: 4.8 GFLOPs at
224x224 against ResNet-50's 3.8G (the original ResNet, stride in the 1x1 conv). Counted the same way
(conv multiply-adds) with the stride-in-3x3 stages 1-4 we share with torchvision: 5.00G against
ResNet-50's 4.09G; the two new stages add 1.72G where ResNet-50's stage 5 costs 0.81G.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import register_backbone
from .resnet import Bottleneck, ResNet


class DilatedBottleneck(nn.Module):
    """1x1 conv + BN + ReLU, 3x3 conv dilated `dilation` + BN + ReLU, 1x1 conv + BN, shortcut, ReLU.

    `projection=True` is Fig. 2B (1x1 conv + BN on the shortcut), else Fig. 2A (identity)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, *, dilation: int = 2, projection: bool = False):
        super().__init__()
        out = planes * self.expansion
        if not projection and inplanes != out:
            raise ValueError(f"an identity shortcut needs inplanes == {out}, got {inplanes}")
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.extra_conv = (nn.Sequential(nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out))
                           if projection else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.extra_conv is None else self.extra_conv(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DetNet(nn.Module):
    """ResNet-50 stages 1-4 + two dilated stride-16 stages; `forward(x)` -> six feature maps."""

    def __init__(self, layers=(3, 4, 6, 3, 3), *, in_channels: int = 3, width: int = 64, dilation: int = 2,
                 output_stride: int = 16):
        super().__init__()
        if output_stride != 16:
            raise ValueError(f"DetNet keeps output stride 16 by design, got output_stride={output_stride}")
        if len(layers) != 5:
            raise ValueError(f"DetNet needs five block counts (stages 2-6), got {layers}")
        # Stages 1-4: ResNet-50's modules (torchvision names); its stride-32 layer4 is not built.
        trunk = ResNet(Bottleneck, (*layers[:3], 1), in_channels=in_channels, width=width)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        c4 = width * 4 * Bottleneck.expansion
        planes = width * 4  # 256: "the channels of stage 5 and 6" (the bottleneck width)
        self.layer4 = self._new_stage(c4, planes, layers[3], dilation)
        self.layer5 = self._new_stage(planes * 4, planes, layers[4], dilation)
        self.out_channels = [width, width * 4, width * 8, c4, planes * 4, planes * 4]
        self.strides = [2, 4, 8, 16, 16, 16]
        self.output_stride = 16
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _new_stage(inplanes: int, planes: int, blocks: int, dilation: int) -> nn.Sequential:
        """Fig. 2B first (1x1 projection: a new stage), then Fig. 2A blocks."""
        first = DilatedBottleneck(inplanes, planes, dilation=dilation, projection=True)
        rest = [DilatedBottleneck(planes * 4, planes, dilation=dilation) for _ in range(blocks - 1)]
        return nn.Sequential(first, *rest)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        c6 = self.layer5(c5)
        return [c1, c2, c3, c4, c5, c6]


@register_backbone
def detnet59(**kwargs) -> DetNet:
    """DetNet-59: ResNet-50 stages 1-4 + two stride-16 stages of 3 dilated bottlenecks (width 256)."""
    return DetNet((3, 4, 6, 3, 3), **kwargs)
