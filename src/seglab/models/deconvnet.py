"""DeconvNet: Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015
(Sec. 3, Fig. 2 and Table 1; the unpooling of the lecture's seed 002).

Encoder (the convolution network): VGG-16's 13 convolutions (`seglab.backbones.vgg` with
`batch_norm=True`: torchvision's vgg16_bn layout), each followed by batch normalisation and ReLU (Sec.
4.1: "we add a batch normalization layer to the output of every convolutional and deconvolutional
layer"), five 2x2 stride-2 max pools that record their switches, then VGG's fully connected layers as
convolutions: fc6 a 7x7 convolution to 4096 channels with no padding (pool5's 7x7 map of a 224x224
input becomes 1x1) and fc7 a 1x1 convolution to 4096, both with BN + ReLU.

Decoder (the deconvolution network), the encoder mirrored (Table 1): `deconv_fc6`, a 7x7 transposed
convolution 4096 -> 512 (1x1 back to 7x7), then for each pooling stage from the last: max-unpooling at
that pool's recorded switches (`seglab.layers.unpool`: a sparse map, the values put back where the
maxima were) followed by 3x3 deconvolution layers (transposed convolutions, stride 1) mirroring the
stage's convolutions: 512-512-512 | 512-512-256 | 256-256-128 | 128-64 | 64-64, each with BN + ReLU,
and a 1x1 convolution to the class scores. 251,805,653 parameters at 21 classes (Pascal VOC): the paper's
"252M" (tests/models/test_deconvnet.py); the two 7x7 layers hold 205.5M of them.

Choices where the paper's 224x224 object-proposal setting leaves one open:
- Any input size: pools use ceil mode and unpooling restores each pool's exact input size, so logits
  come out at the input's size. On a larger input fc6 slides over pool5 (FCN's convolutionalised view)
  and `deconv_fc6` gives pool5's size back exactly; a pool5 map smaller than 7x7 (input under 193 pixels)
  is zero-padded at its bottom / right to 7x7 for fc6 and the deconvolved map cropped back.
- No dropout (the release's prototxt uses BN instead); transposed convolutions carry biases, as Caffe's
  Deconvolution layers do. Inference on one whole image: the paper's proposal-wise inference and
  ensemble with FCN (EDeconvNet, CRF) are not part of the network.
`width_div` divides the encoder / decoder widths and `fc_channels` sets fc6 / fc7 (4096) for tiny builds;
`backbone_weights` loads a torchvision VGG-16 ImageNet checkpoint: the 13 convolutions (BN stays at its
initial values) and fc6 / fc7 from `classifier.0` / `classifier.3` reshaped, as FCN does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..layers.unpool import IndexedMaxPool2d, MaxUnpool2d
from ..registry import register_model

__all__ = ["DeconvNet"]

# The decoder's deconvolution widths, stage by stage from the deepest (Table 1: deconv5-1 ... deconv1-2).
_DECODER = [(512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64, 64)]


def _deconv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    padding = kernel_size // 2 if kernel_size == 3 else 0  # 3x3: size kept; 7x7 (deconv-fc6): 1 -> 7
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, kernel_size, padding=padding),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DeconvNet(nn.Module):
    """VGG-16 + fc6/fc7 encoder with pooling switches -> deconv-fc6 -> 5 x (unpool + deconvolutions) -> scores."""

    def __init__(self, num_classes: int, *, in_channels: int = 3, width_div: int = 1, fc_channels: int = 4096):
        super().__init__()
        if width_div < 1 or 64 % width_div:
            raise SeglabError(f"deconvnet: width_div must divide 64, got {width_div}")
        self.encoder = create_backbone("vgg16", in_channels=in_channels, fc=False, batch_norm=True,
                                       width_div=width_div)
        c5 = self.encoder.out_channels[-1]
        self.fc6 = nn.Sequential(nn.Conv2d(c5, fc_channels, 7), nn.BatchNorm2d(fc_channels), nn.ReLU(inplace=True))
        self.fc7 = nn.Sequential(nn.Conv2d(fc_channels, fc_channels, 1), nn.BatchNorm2d(fc_channels),
                                 nn.ReLU(inplace=True))
        self.deconv_fc6 = _deconv_bn_relu(fc_channels, c5, 7)
        self.pool = IndexedMaxPool2d(2)
        self.unpool = MaxUnpool2d(2)
        self.decoder = nn.ModuleList()
        c = c5
        for stage in _DECODER:
            layers = []
            for out in stage:
                layers.append(_deconv_bn_relu(c, out // width_div, 3))
                c = out // width_div
            self.decoder.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(c, num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def encoder_convs(self) -> list[nn.Conv2d]:
        """The 13 encoder convolutions in VGG-16 order (conv1_1 ... conv5_3)."""
        return [m for m in self.encoder.features if isinstance(m, nn.Conv2d)]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """(pool5, [(switches, pre-pool size)] per pool, shallowest first)."""
        switches, start = [], 0
        for end in self.encoder.pool_indices:  # the VGG stages, its own pools replaced by switch-recording ones
            x, idx, size = self.pool(self.encoder.features[start:end](x))
            switches.append((idx, size))
            start = end + 1
        return x, switches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, switches = self.encode(x)
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, max(7 - w, 0), 0, max(7 - h, 0)))  # fc6 needs a 7x7 window
        x = self.deconv_fc6(self.fc7(self.fc6(padded)))[..., :h, :w]
        for stage, (idx, size) in zip(self.decoder, reversed(switches)):
            x = stage(self.unpool(x, idx, size))
        return self.classifier(x)  # at the input's size: unpooling restores every pre-pool size exactly


def load_vgg16_weights(model: DeconvNet, path: str) -> None:
    """A torchvision VGG-16 ImageNet checkpoint into the encoder convolutions (`features.{0,2,5,...}`),
    fc6 (`classifier.0`, 4096 x 25088 -> 4096 x 512 x 7 x 7) and fc7 (`classifier.3`)."""
    from ..hub import read_state_dict
    from .segnet import load_vgg16_encoder

    load_vgg16_encoder(model, path)  # the 13 conv weights, shape-checked; their biases are absorbed by BN
    state = read_state_dict(path)
    for key, layer in (("classifier.0", model.fc6[0]), ("classifier.3", model.fc7[0])):
        if f"{key}.weight" not in state:
            raise SeglabError(f"{path}: not a VGG-16 checkpoint (no {key}.weight)")
        w = state[f"{key}.weight"]  # (out, C * 7 * 7): torchvision flattens pool5 as C, H, W
        if w.numel() != layer.weight.numel() or w.shape[0] != layer.weight.shape[0]:
            raise SeglabError(f"{path}: {key}.weight {tuple(w.shape)} does not fit {tuple(layer.weight.shape)} "
                              f"(ImageNet weights need width_div=1 and fc_channels=4096)")
        with torch.no_grad():
            layer.weight.copy_(w.reshape(layer.weight.shape))
            layer.bias.copy_(state[f"{key}.bias"])


@register_model
def deconvnet_vgg16(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = False, width_div: int = 1, fc_channels: int = 4096) -> DeconvNet:
    """DeconvNet (Noh et al., ICCV 2015): VGG-16 + fc6/fc7 encoder, mirrored unpooling + deconvolution
    decoder, BN everywhere; 251.81M parameters at 21 classes."""
    if aux_loss:
        raise SeglabError("deconvnet_vgg16 has no auxiliary head; use aux_loss=False")
    model = DeconvNet(num_classes, in_channels=in_channels, width_div=width_div, fc_channels=fc_channels)
    if backbone_weights is not None:
        load_vgg16_weights(model, backbone_weights)
    return model
