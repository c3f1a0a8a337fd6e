"""EncNet: Zhang, Dana, Shi, Zhang, Wang, Tyagi & Agrawal, "Context Encoding for Semantic
Segmentation", CVPR 2018.

`encnet_resnet50`, `encnet_resnet101` follow the paper (Sec. 2.2-3, Fig. 2) and the authors' release
(zhanghang1989/PyTorch-Encoding, `encoding.models.encnet`, `EncHead` with `lateral=False`, also
mmsegmentation's `encnet_r50-d8`):
- dilated ResNet at output stride 8 (layer3 dilation 2, layer4 dilation 4);
- `conv5`: 3x3 conv 2048 -> 512 + BN + ReLU on layer4;
- `enc` (`seglab.necks.encoding.EncModule`): 1x1 conv 512 + BN + ReLU, Encoding layer with K = 32
  codewords and learned smoothing factors, BN over the codewords + ReLU, mean over k -> encoded
  vector e (512); featuremap attention gamma = sigmoid(FC(e)), output relu(x + x * gamma);
- `classifier`: dropout 0.1 + 1x1 conv to the classes, logits upsampled bilinearly (align_corners=False)
  to the input size;
- `se_classifier` (SE-loss, `se_loss=True`): FC 512 -> classes on e, per-image class-presence logits
  returned in training as `"se"` and trained by `seglab.losses.se_loss` (BCE, weight 0.2:
  `SegmentationLoss(se_weight=)`, config `train.se_weight`);
- `aux_classifier` (`aux_loss=True`): the release's FCN head on layer3 (3x3 conv 1024 -> 256 + BN +
  ReLU + dropout 0.1 + 1x1 conv). The release weights its loss by 0.2 (`--aux-weight`), mmseg by
  0.4; seglab's criterion default is 0.4 (PSPNet's), so set `train.aux_weight: 0.2` for the release's.
Training output: `{"out": logits, "aux": aux_logits, "se": (N, classes)}` (keys of disabled heads left
out; a plain Tensor when both are off). In eval only the logits are computed.

Not followed: the release's JPU (FastFCN) and lateral connections (`lateral=True`, an EncNet variant
used for some Pascal-Context models), both optional there; the release's "resnet50s" deep stem
(three 3x3 convs 3 -> 64 -> 64 -> 128) is replaced by torchvision's 7x7 stem so torchvision
checkpoints load (as in `pspnet.py`).

Sizes at 21 classes: encnet_resnet50 35,875,295 parameters with aux and SE heads, 33,499,317 used in
eval; encnet_resnet101 54,867,423 / 52,491,445 (tests/models/test_encnet.py). No published count
exists for these models; the test checks the head term by term against the release's layer list.

Width knobs for tiny builds: `width` (ResNet), `channels` (512), `num_codes` (32).
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import create_backbone
from ..layers import ConvNormAct, resize_to
from ..necks.encoding import EncModule
from ..registry import register_model
from .fcn import FCNHead

__all__ = ["EncNet"]


class EncNet(nn.Module):
    """Dilated backbone -> 3x3 conv -> EncModule -> classifier; SE-loss and FCN aux heads for training."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, channels: int = 512, num_codes: int = 32,
                 se_loss: bool = True, aux_loss: bool = True, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.conv5 = ConvNormAct(backbone.out_channels[-1], channels, 3)
        self.enc = EncModule(channels, num_codes)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(channels, num_classes, 1))
        self.se_classifier = nn.Linear(channels, num_classes) if se_loss else None
        self.aux_classifier = FCNHead(backbone.out_channels[-2], num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        context, encoded = self.enc(self.conv5(feats[-1]))
        out = resize_to(self.classifier(context), size)
        if not self.training:
            return out
        extra: dict[str, torch.Tensor] = {}
        if self.aux_classifier is not None:
            extra["aux"] = resize_to(self.aux_classifier(feats[-2]), size)
        if self.se_classifier is not None:
            extra["se"] = self.se_classifier(encoded)
        return {"out": out, **extra} if extra else out


def _encnet(name, num_classes, in_channels, backbone_weights, aux_loss, se_loss, output_stride, channels,
            num_codes, dropout, kwargs) -> EncNet:
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return EncNet(backbone, num_classes, channels=channels, num_codes=num_codes, se_loss=se_loss,
                  aux_loss=aux_loss, dropout=dropout)


@register_model
def encnet_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = True, se_loss: bool = True, output_stride: int = 8, channels: int = 512,
                    num_codes: int = 32, dropout: float = 0.1, **kwargs) -> EncNet:
    """EncNet on a dilated ResNet-50 (35.88M parameters with aux and SE heads, 33.50M in eval, at 21
    classes). kwargs go to the trunk (`width`, `multi_grid`)."""
    return _encnet("resnet50", num_classes, in_channels, backbone_weights, aux_loss, se_loss, output_stride,
                   channels, num_codes, dropout, kwargs)


@register_model
def encnet_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                     aux_loss: bool = True, se_loss: bool = True, output_stride: int = 8, channels: int = 512,
                     num_codes: int = 32, dropout: float = 0.1, **kwargs) -> EncNet:
    """EncNet on a dilated ResNet-101 (54.87M parameters with aux and SE heads, 52.49M in eval, at 21
    classes). kwargs go to the trunk (`width`, `multi_grid`)."""
    return _encnet("resnet101", num_classes, in_channels, backbone_weights, aux_loss, se_loss, output_stride,
                   channels, num_codes, dropout, kwargs)
