"""RefineNet: Lin, Milan, Shen & Reid, "RefineNet: Multi-Path Refinement Networks for High-Resolution
Semantic Segmentation", CVPR 2017 (Sec. 3, Fig. 2(c) '4-cascaded 1-scale RefineNet', Fig. 3).

`refinenet_resnet50`, `refinenet_resnet101`:
- ResNet at output stride 32 (no dilation); its layer1..layer4 maps (strides 4, 8, 16, 32) feed
  RefineNet-1..4. Each map is first brought to its path width by a 3x3 conv without bias (the
  release's `p_ims1d2_outl*_dimred`): 512 (2 x `channels`) for RefineNet-4, 256 (`channels`) for the
  others (Sec. 3.2).
- RefineNet-4 takes the stride-32 path alone (no fusion); RefineNet-3/2/1 take their ResNet path and
  the previous block's output; each block = 2 RCUs per path, multi-resolution fusion (3x3 convs to
  `channels`, bilinear upsampling to the finer path, sum), chained residual pooling, 1 output RCU
  (`seglab.layers.refine`). The output of RefineNet-1 (stride 4) goes through 2 more RCUs, the
  classifier (3x3 conv with bias, as released) and bilinear upsampling (align_corners=False) to the
  input size.
- `crp_stages=2` pooling blocks per chained residual pooling, as drawn in the paper's Fig. 3(d); the
  authors' released models use 4 (`crp_stages=4`).
- `dropout`: the release applies dropout (p = 0.5) to the layer3/layer4 features and before the
  classifier; the paper does not mention it, so it defaults to 0.0 (`dropout=0.5` gives the release).
With `crp_stages=4` the network has, tensor for tensor, the parameter shapes of the authors' PyTorch
release of the ResNet-101 model (`rf101`, DrSleep/refinenet-pytorch): 118.05M at 21 classes; the
paper-figure default (`crp_stages=2`) has 109.79M (ResNet-50: 99.06M / 90.80M). No auxiliary head.

Contract: eval `forward(images)` -> logits (N, num_classes, H, W); training returns the same Tensor.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..layers import resize_to
from ..layers.refine import RefineNetBlock, ResidualConvUnit
from ..registry import register_model

__all__ = ["RefineNet"]


class RefineNet(nn.Module):
    """4-cascaded 1-scale RefineNet on a backbone returning [stem, stride 4, 8, 16, 32] maps."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, channels: int = 256, crp_stages: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        if backbone.strides[1:] != [4, 8, 16, 32]:
            raise ValueError(f"RefineNet needs backbone strides 4, 8, 16, 32, got {backbone.strides[1:]}")
        self.backbone = backbone
        c = channels
        widths = [c, c, c, 2 * c]  # RefineNet-1..4 path widths
        self.adapters = nn.ModuleList(nn.Conv2d(cin, w, 3, padding=1, bias=False)
                                      for cin, w in zip(backbone.out_channels[1:], widths))
        self.refine4 = RefineNetBlock([2 * c], 2 * c, crp_stages=crp_stages)
        self.refine3 = RefineNetBlock([c, 2 * c], c, crp_stages=crp_stages)
        self.refine2 = RefineNetBlock([c, c], c, crp_stages=crp_stages)
        self.refine1 = RefineNetBlock([c, c], c, crp_stages=crp_stages)
        self.final_rcus = nn.Sequential(ResidualConvUnit(c), ResidualConvUnit(c))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(c, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        _, l1, l2, l3, l4 = self.backbone(x)
        l3, l4 = self.dropout(l3), self.dropout(l4)
        a1, a2, a3, a4 = (adapt(f) for adapt, f in zip(self.adapters, (l1, l2, l3, l4)))
        y = self.refine4(a4)
        y = self.refine3(a3, y)
        y = self.refine2(a2, y)
        y = self.refine1(a1, y)
        return resize_to(self.classifier(self.dropout(self.final_rcus(y))), size)


def _refinenet(name, num_classes, in_channels, backbone_weights, aux_loss, channels, crp_stages, dropout,
               kwargs) -> RefineNet:
    if aux_loss:
        raise SeglabError(f"refinenet_{name} has no auxiliary head; use aux_loss=False")
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels, output_stride=32,
                               **kwargs)
    return RefineNet(backbone, num_classes, channels=channels, crp_stages=crp_stages, dropout=dropout)


@register_model
def refinenet_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                       aux_loss: bool = False, channels: int = 256, crp_stages: int = 2, dropout: float = 0.0,
                       **kwargs) -> RefineNet:
    """RefineNet on ResNet-50 (output stride 32). kwargs go to the trunk (`width`)."""
    return _refinenet("resnet50", num_classes, in_channels, backbone_weights, aux_loss, channels, crp_stages,
                      dropout, kwargs)


@register_model
def refinenet_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                        aux_loss: bool = False, channels: int = 256, crp_stages: int = 2, dropout: float = 0.0,
                        **kwargs) -> RefineNet:
    """RefineNet on ResNet-101 (output stride 32; `crp_stages=4, dropout=0.5` is the released rf101).
    kwargs go to the trunk (`width`)."""
    return _refinenet("resnet101", num_classes, in_channels, backbone_weights, aux_loss, channels, crp_stages,
                      dropout, kwargs)
