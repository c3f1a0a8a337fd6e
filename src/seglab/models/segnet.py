"""SegNet (Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture
for Image Segmentation", TPAMI 2017, Sec. 3 and Fig. 2-3).

Encoder: the 13 convolutional layers of VGG-16 (3x3, 64-64 | 128-128 | 256x3 | 512x3 | 512x3), each
followed by batch norm and ReLU, and five 2x2 stride-2 max pools that record their argmax indices
(strides 2, 4, 8, 16, 32). VGG's fully connected layers are dropped (Sec. 3: this cuts the encoder from
134M to 14.7M parameters).

Decoder: five stages mirroring the encoder. Each one max-unpools with the indices of the matching
encoder pool (a sparse map, zero except at the argmax positions; nothing is learned in the upsampling
and no encoder feature map is stored, only the indices) and densifies it with conv+BN+ReLU layers whose
channels mirror the encoder (512x3 | 512,512,256 | 256,256,128 | 128,64 | 64,64): 13 decoder convs,
then a 1x1 classifier (the paper's soft-max classifier input). That gives 29.4M parameters at 11
classes, matching the paper's Table 6 ("SegNet 29.5M").

Odd input sizes use ceil-mode pooling and unpooling to the exact pre-pool size
(see `seglab.layers.unpool`), so logits come out at the input's H, W with no padding or resizing.

`width_div` divides every channel width (tiny test models); `backbone_weights` loads a torchvision
VGG-16 ImageNet checkpoint (no BN) into the 13 encoder convs; the BN layers stay at their init.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import SeglabError
from ..layers import ConvNormAct
from ..layers.unpool import IndexedMaxPool2d, MaxUnpool2d
from ..registry import register_model

# Encoder stages of VGG-16 (conv output channels); the decoder mirrors them.
_ENCODER = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
# torchvision `vgg16().features` indices of the 13 convolutions, in order.
_TV_VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


class SegNet(nn.Module):
    """SegNet with a VGG-16 encoder and an index-unpooling decoder."""

    def __init__(self, num_classes: int, *, in_channels: int = 3, width_div: int = 1):
        super().__init__()
        if width_div < 1 or 64 % width_div:
            raise SeglabError(f"segnet: width_div must divide 64, got {width_div}")
        enc_cfg = [[c // width_div for c in stage] for stage in _ENCODER]
        self.encoder = nn.ModuleList()
        c = in_channels
        for stage in enc_cfg:
            layers = []
            for out in stage:
                layers.append(ConvNormAct(c, out, 3))
                c = out
            self.encoder.append(nn.Sequential(*layers))
        self.pool = IndexedMaxPool2d(2)
        self.unpool = MaxUnpool2d(2)

        # Decoder stage i undoes encoder stage i: convs keep the channels of that stage, and the last
        # conv maps to the input channels of the encoder stage (the previous stage's width), except in
        # the first stage, which ends at 64 like the encoder's first conv.
        self.decoder = nn.ModuleList()
        for i, stage in enumerate(enc_cfg):
            out_last = enc_cfg[i - 1][-1] if i > 0 else stage[0]
            chans = list(stage[:-1]) + [out_last]
            layers, c = [], stage[-1]
            for out in chans:
                layers.append(ConvNormAct(c, out, 3))
                c = out
            self.decoder.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(enc_cfg[0][0], num_classes, 1)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def encoder_convs(self) -> list[nn.Conv2d]:
        """The 13 encoder convolutions in VGG-16 order (conv1_1 ... conv5_3)."""
        return [block[0] for stage in self.encoder for block in stage]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        switches = []
        for stage in self.encoder:
            x, idx, size = self.pool(stage(x))
            switches.append((idx, size))
        for stage, (idx, size) in zip(reversed(self.decoder), reversed(switches)):
            x = stage(self.unpool(x, idx, size))
        return self.classifier(x)


def load_vgg16_encoder(model: SegNet, path: str) -> None:
    """Copy the 13 convolutions of a torchvision VGG-16 checkpoint (`features.{0,2,5,...}`) into the
    SegNet encoder. VGG-16 has no BN, so the encoder's BN layers keep their initial values. The VGG
    conv biases are not used: every encoder conv is followed by BN, which subtracts any constant
    per-channel offset, so `ConvNormAct` has no conv bias."""
    from ..utils.state_dict import read_state_dict

    state = read_state_dict(path)
    convs = model.encoder_convs()
    for tv_idx, conv in zip(_TV_VGG16_CONVS, convs):
        key = f"features.{tv_idx}.weight"
        if key not in state:
            raise SeglabError(f"{path}: not a VGG-16 checkpoint (no {key!r})")
        w = state[key]
        if w.shape != conv.weight.shape:
            raise SeglabError(f"{path}: {key} has shape {tuple(w.shape)}, the SegNet encoder expects "
                              f"{tuple(conv.weight.shape)} (ImageNet weights need width_div=1 and "
                              f"in_channels=3)")
        with torch.no_grad():
            conv.weight.copy_(w)


@register_model
def segnet_vgg16(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 width_div: int = 1) -> SegNet:
    """SegNet with a VGG-16 encoder (BN after every conv), 29.4M parameters at 11 classes."""
    model = SegNet(num_classes, in_channels=in_channels, width_div=width_div)
    if backbone_weights is not None:
        load_vgg16_encoder(model, backbone_weights)
    return model
