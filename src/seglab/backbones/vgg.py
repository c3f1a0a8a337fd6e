"""VGG-16 (Simonyan & Zisserman, ICLR 2015) as a segmentation trunk, with the atrous variant of
DeepLab v1 (Chen et al., "Semantic Image Segmentation with Deep Convolutional Nets and Fully
Connected CRFs", ICLR 2015, Sec. 3.1 and 4.1, DeepLab-LargeFOV).

`features` keeps torchvision's indices (`features.0` ... `features.28`), so an ImageNet checkpoint's
convolutions load by name; `batch_norm=True` puts a BatchNorm after every conv, torchvision's
`vgg16_bn` layout (`features.0` conv, `features.1` BN, ... `features.41`). The classifier's fully
connected layers become convolutions `fc6`, `fc7` ("convolutionalization", FCN Sec. 3.1): by default
fc6 is a 7x7 conv with 4096 channels, exactly the ImageNet fc6 reshaped. With `atrous=True` (DeepLab
v1): pool4 and pool5 become 3x3 stride-1 pooling, conv5 is dilated by 2, and fc6 is a 3x3 conv dilated
by `fc6_dilation` (12 for LargeFOV) with `fc_channels` (1024 for LargeFOV), giving output stride 8; the
converter subsamples the ImageNet fc weights to that shape, as DeepLab did.

`forward(x)` returns [pool1, pool2, pool3, pool4, fc7] (strides 2, 4, 8, 16, 32; or 2, 4, 8, 8, 8
atrous). Pools use ceil mode so any input size works (FCN pads its input by 100 pixels for the same
reason; we crop instead).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import register_backbone

_CFG_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, cfg=_CFG_VGG16, *, in_channels: int = 3, atrous: bool = False, fc: bool = True,
                 fc_channels: int | None = None, fc6_kernel: int | None = None, fc6_dilation: int | None = None,
                 dropout: float = 0.5, width_div: int = 1, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c, pool_idx = in_channels, 0
        self.pool_indices: list[int] = []
        for v in cfg:
            if v == "M":
                pool_idx += 1
                if atrous and pool_idx >= 4:
                    layers.append(nn.MaxPool2d(3, 1, 1))
                else:
                    layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                self.pool_indices.append(len(layers) - 1)
            else:
                v = v // width_div
                dil = 2 if atrous and pool_idx == 4 else 1
                conv = nn.Conv2d(c, v, 3, padding=dil, dilation=dil)
                layers += [conv, nn.BatchNorm2d(v), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.out_channels = [cfg[0] // width_div, cfg[3] // width_div, cfg[7] // width_div, c]
        self.strides = [2, 4, 8, 8 if atrous else 16]
        self.atrous = atrous
        self.fc = fc
        if fc:
            fc_channels = fc_channels or (1024 if atrous else 4096) // width_div
            kernel = fc6_kernel or (3 if atrous else 7)
            dil = fc6_dilation or (12 if atrous else 1)
            self.fc6 = nn.Conv2d(c, fc_channels, kernel, padding=dil * (kernel - 1) // 2, dilation=dil)
            self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
            self.relu = nn.ReLU(inplace=True)
            self.drop = nn.Dropout2d(dropout)
            self.out_channels.append(fc_channels)
        else:
            self.out_channels.append(c)
        self.strides.append(8 if atrous else 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.pool_indices:
                feats.append(x)
        # feats: pool1..pool5; the last entry is replaced by fc7 when the fc layers are present.
        if self.fc:
            x = self.drop(self.relu(self.fc6(x)))
            x = self.drop(self.relu(self.fc7(x)))
            feats[-1] = x
        return feats


@register_backbone
def vgg16(**kwargs) -> VGG:
    """VGG-16 trunk; `atrous=True` for DeepLab v1's output-stride-8 variant."""
    return VGG(_CFG_VGG16, **kwargs)
