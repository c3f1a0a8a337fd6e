"""DeepLab v1: Chen, Papandreou, Kokkinos, Murphy & Yuille, "Semantic Image Segmentation with Deep
Convolutional Nets and Fully Connected CRFs", ICLR 2015.

`deeplabv1_vgg16` is DeepLab-LargeFOV (Sec. 3.1, 4.1, Table 2):
- Atrous VGG-16 (`create_backbone("vgg16", atrous=True)`): pool4/pool5 at stride 1 (3x3 windows), conv5
  dilated by 2, output stride 8.
- fc6: 3x3 conv with dilation (input stride) 12 and 1024 channels; fc7: 1x1 conv 1024; both ReLU +
  dropout 0.5 (inside the trunk); fc8: 1x1 conv to the classes (gaussian init std 0.01, as the release).
- The stride-8 scores are upsampled bilinearly to the input size (Sec. 3.1: bilinear interpolation of
  the score map; the dense CRF of Sec. 4 is post-processing in `seglab.inference`).
- `msc=True` (DeepLab-MSc-LargeFOV, Sec. 4 'multi-scale prediction'): a two-layer MLP on the input
  image and on each of pool1..pool4 -- 3x3 conv 128 + ReLU, 1x1 conv 128 + ReLU (each followed by
  dropout 0.5, like fc6/fc7; our choice) -- whose 5 x 128 features join fc7's. The paper concatenates
  them before the softmax layer; a 1x1 classifier on a concatenation equals the sum of per-branch 1x1
  classifiers, so each branch ends in its own classifier and the five score maps are summed with fc8's
  (the same function). The paper does not say how the finer maps (strides 1, 2, 4) reach stride 8;
  here the 3x3 conv of each branch strides by 8 / (its input's stride), and maps are resized to the
  main score's size when the rounding of odd sizes differs.
- No auxiliary head: aux_loss=True raises.

Sizes at 21 classes: 20,505,429 parameters (the paper's Table 2: 20.5M); with msc 21,711,550.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..layers import resize_to
from ..registry import register_model

__all__ = ["DeepLabV1", "MScHead"]


class MScHead(nn.Sequential):
    """Multi-scale-prediction branch: 3x3 conv (stride to reach output stride 8) + 1x1 conv + classifier."""

    def __init__(self, in_channels: int, num_classes: int, *, stride: int = 1, channels: int = 128,
                 dropout: float = 0.5):
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, stride, padding=1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )
        nn.init.normal_(self[-1].weight, std=0.01)
        nn.init.zeros_(self[-1].bias)


class DeepLabV1(nn.Module):
    """Atrous VGG-16 (fc6/fc7 in the trunk) -> fc8 scores (+ MSc branch scores) -> bilinear upsampling."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, in_channels: int = 3, msc: bool = False,
                 msc_channels: int = 128, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        c, s = backbone.out_channels, backbone.strides
        self.fc8 = nn.Conv2d(c[-1], num_classes, 1)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)
        self.msc = None
        if msc:  # input image, pool1..pool4
            out_stride = s[-1]
            sources = [(in_channels, 1)] + list(zip(c[:4], s[:4]))
            self.msc = nn.ModuleList(
                MScHead(ch, num_classes, stride=max(out_stride // st, 1), channels=msc_channels, dropout=dropout)
                for ch, st in sources)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        feats = self.backbone(x)
        score = self.fc8(feats[-1])
        if self.msc is not None:
            for head, f in zip(self.msc, [x] + feats[:4]):
                score = score + resize_to(head(f), score.shape[-2:])
        return resize_to(score, size)


@register_model
def deeplabv1_vgg16(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = False, msc: bool = False, msc_channels: int = 128, dropout: float = 0.5,
                    **kwargs) -> DeepLabV1:
    """DeepLab-LargeFOV (20.5M parameters at 21 classes); `msc=True` for DeepLab-MSc-LargeFOV. kwargs go to
    the VGG-16 trunk (`width_div`, `fc_channels`, `fc6_dilation`)."""
    if aux_loss:
        raise SeglabError("deeplabv1_vgg16 has no auxiliary head; use aux_loss=False")
    kwargs.setdefault("fc6_dilation", 12)
    backbone = create_backbone("vgg16", weights=backbone_weights, in_channels=in_channels, atrous=True,
                               dropout=dropout, **kwargs)
    return DeepLabV1(backbone, num_classes, in_channels=in_channels, msc=msc, msc_channels=msc_channels,
                     dropout=dropout)
