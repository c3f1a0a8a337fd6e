"""Late-fusion RGB-HHA FCN: Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015, Sec. 5 (NYUDv2 table; TPAMI 2017, Sec. 5), on the HHA depth
encoding of Gupta, Girshick, Arbelaez, Malik, ECCV 2014 (`seglab.data.hha`).

The paper's NYUDv2 rows: RGB (a plain FCN), RGBD "early fusion" (depth as a fourth input channel:
`create_model("fcn32s_vgg16", num_classes=40, in_channels=4)`, nothing new needed), HHA (a plain FCN
on the 3-channel HHA image) and "late fusion" RGB-HHA, built here: two complete nets, one on the
colour image and one on the HHA image, whose predictions are summed at the final layer, trained end
to end. `fcn32s_rgbhha_vgg16` and `fcn16s_rgbhha_vgg16` are the paper's two RGB-HHA rows (32.8 and
34.0 mean IU); each stream is seglab's `fcn32s_vgg16` / `fcn16s_vgg16` (`models/fcn.py`).
`fcn_rgbhha_resnet18` is a light CPU-sized variant with two `fcn_resnet18` streams (not in the paper).

Input: `in_channels` (default 6) channels, RGB first: the colour stream reads the first
min(3, in_channels - 1) channels and the HHA stream the rest, so in_channels=4 is RGB + depth late
fusion. With in_channels=1 no split exists and both streams read the one channel.

Deviations from the Caffe release (`nyud-fcn32s-color-hha`): it fuses the two stride-32 score maps
as 0.5 x (color + hha) and upsamples the fused map with one frozen bilinear deconvolution; we sum the
streams' full-resolution outputs, each stream keeping its own (learnable, bilinear-initialised)
upsampling. Bilinear upsampling is linear, so at initialisation the function is the release's up to
the factor 2 (the score layers start at zero, so the factor is absorbed by learning), and each stream
stays a complete FCN whose weights can be moved to or from a single-modality net. The extra
upsampling costs one `upscore` (21 x 21 x 64 x 64 = 1.81M parameters at 21 classes, 6.55M at 40).

Contract: eval `forward(x)` -> rgb_stream(x[:, :k]) + hha_stream(x[:, k:]); training with
`aux_loss=True` (ResNet streams) -> {"out": summed logits, "aux": summed aux logits}.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, SeglabError
from ..registry import register_model
from .fcn import fcn16s_vgg16, fcn32s_vgg16, fcn_resnet18

__all__ = ["LateFusion", "split_channels"]


def split_channels(in_channels: int) -> tuple[int, int]:
    """(colour-stream channels, other-stream channels) for an input of `in_channels`: RGB first."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer (RGB then HHA / depth), got {in_channels!r}")
    if in_channels == 1:
        return 1, 1  # nothing to split: both streams read the one channel
    rgb = min(3, in_channels - 1)
    return rgb, in_channels - rgb


class LateFusion(nn.Module):
    """Two segmentation nets on a channel split of one input, their logits summed (FCN's late fusion).

    `rgb` reads channels [0, rgb_channels), `hha` the channels after them (with a 1-channel input,
    both read it). Each stream returns logits, or in training {"out", "aux"}; outputs are summed
    key by key."""

    def __init__(self, rgb: nn.Module, hha: nn.Module, *, in_channels: int):
        super().__init__()
        self.rgb, self.hha = rgb, hha
        self.in_channels = in_channels
        self.rgb_channels, self.hha_channels = split_channels(in_channels)

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise SeglabError(f"{type(self).__name__} expects (N, {self.in_channels}, H, W) input "
                              f"({self.rgb_channels} colour + {self.hha_channels} HHA/depth channels), "
                              f"got {tuple(x.shape)}")
        shared = self.in_channels == 1
        a = self.rgb(x if shared else x[:, :self.rgb_channels])
        b = self.hha(x if shared else x[:, self.rgb_channels:])
        if isinstance(a, dict):
            return {"out": a["out"] + b["out"], "aux": a["aux"] + b["aux"]}
        return a + b


def _late_fusion(stream, num_classes: int, in_channels: int, backbone_weights: str | None, aux_loss: bool,
                 kwargs: dict) -> LateFusion:
    rgb_channels, hha_channels = split_channels(in_channels)
    # Both streams start from the same ImageNet weights, as in FCN / Gupta et al. (a stream with other
    # than 3 input channels cannot take them: the loader reports the shape mismatch).
    rgb = stream(num_classes=num_classes, in_channels=rgb_channels, backbone_weights=backbone_weights,
                 aux_loss=aux_loss, **kwargs)
    hha = stream(num_classes=num_classes, in_channels=hha_channels, backbone_weights=backbone_weights,
                 aux_loss=aux_loss, **kwargs)
    return LateFusion(rgb, hha, in_channels=in_channels)


@register_model
def fcn32s_rgbhha_vgg16(*, num_classes: int, in_channels: int = 6, backbone_weights: str | None = None,
                        aux_loss: bool = False, **kwargs) -> LateFusion:
    """FCN-32s RGB-HHA late fusion (two VGG-16 FCN-32s). kwargs go to both streams (`width_div`,
    `fc_channels`, `dropout`, `skip_scale`)."""
    return _late_fusion(fcn32s_vgg16, num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model
def fcn16s_rgbhha_vgg16(*, num_classes: int, in_channels: int = 6, backbone_weights: str | None = None,
                        aux_loss: bool = False, **kwargs) -> LateFusion:
    """FCN-16s RGB-HHA late fusion (two VGG-16 FCN-16s). kwargs go to both streams (`width_div`,
    `fc_channels`, `dropout`, `skip_scale`)."""
    return _late_fusion(fcn16s_vgg16, num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model
def fcn_rgbhha_resnet18(*, num_classes: int, in_channels: int = 6, backbone_weights: str | None = None,
                        aux_loss: bool = False, output_stride: int = 8, **kwargs) -> LateFusion:
    """Late fusion of two `fcn_resnet18` streams (CPU-sized; not in the paper). kwargs go to both
    trunks (`width`, `multi_grid`)."""
    return _late_fusion(fcn_resnet18, num_classes, in_channels, backbone_weights, aux_loss,
                        dict(output_stride=output_stride, **kwargs))
