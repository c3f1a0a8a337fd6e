"""GINet: Wu, Lu, Zhu, Zhang, Wu, Ma & Guo, "GINet: Graph Interaction Network for Scene Parsing",
ECCV 2020.

`ginet_resnet50`, `ginet_resnet101` follow the paper (Sec. 3) and the authors' head as PaddleSeg
ports it (`paddleseg/models/ginet.py`, `GIHead`):
- dilated ResNet at output stride 8 (layer3 dilation 2, layer4 dilation 4);
- `reduce`: 3x3 conv 2048 -> 512 (`channels`) + BN + ReLU;
- `gi_unit`: the Graph Interaction unit (`seglab.necks.graph_interaction`) on those 512 channels,
  N = 84 visual nodes (`num_nodes`), node width D = 256 (`node_channels`), one semantic node per
  class from a 300-d class embedding (`embed_dim`). The paper's class embeddings are fixed word
  vectors; here they are learned parameters, since nothing can be downloaded;
- `classifier`: dropout 0.1 + 1x1 conv to the classes; logits upsampled bilinearly to the input;
- `aux_classifier` (aux_loss=True, default): FCN head on layer3 (3x3 conv 1024 -> 256 + BN + ReLU +
  dropout 0.1 + 1x1 conv), training only, weighted 0.4 by `SegmentationLoss`;
- semantic context loss (SC-loss; `se_loss=True`, default): each updated semantic node s_m^o is
  scored against its own learned vector, v_m = <s_m^o, c_m> + b_m; sigmoid + binary cross-entropy
  against "class m occurs in the image" trains it. The model returns these presence logits
  (N, num_classes) under "se" in training, the key of EncNet's SE-loss, so `SegmentationLoss`
  trains them (`se_weight`, default 0.2). With `se_loss=False` the unit is built without the
  visual-to-semantic step, whose only reader is this loss (its weights would get no gradient).

Deviations: the official release (and PaddleSeg) put a JPU (FastFCN) on the backbone; we use the
dilated ResNet alone, like the other context models here. Visual-node assignments are a softmax
over the nodes and the visual-to-semantic residual is S + beta * (...) as the paper writes it (see
the unit's docstring). torchvision's 7x7-stem ResNet replaces the releases' deep-stem ResNets
(PaddleSeg: ResNet50_vd), so torchvision ImageNet checkpoints load.

Sizes at 21 classes (measured, tests/models/test_ginet_efficientfcn.py): ginet_resnet50 has
36,048,906 parameters in training (aux head and SC-loss), 33,612,491 used in eval; ginet_resnet101
55,041,034 and 52,604,619. The reduce conv + unit + classifier count 10,170,272, exactly the
release's `GIHead` (word vectors included); the presence scores add 5,397, the aux head 2,365,205.
No published total to compare with (the releases' include the JPU and a deep-stem ResNet).

Width knobs for tiny builds: `width` (ResNet), `channels`, `node_channels`, `num_nodes`, `embed_dim`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import ConfigError
from ..layers import ConvNormAct, resize_to
from ..necks.graph_interaction import GraphInteractionUnit
from ..registry import register_model
from .fcn import FCNHead

__all__ = ["ClassPresence", "GINet"]


class ClassPresence(nn.Module):
    """Presence logits from the updated semantic nodes (B, M, D): v_m = <s_m, c_m> + b_m, (B, M)."""

    def __init__(self, num_classes: int, node_channels: int):
        super().__init__()
        self.centroids = nn.Parameter(torch.randn(num_classes, node_channels) * node_channels ** -0.5)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, semantic_nodes: torch.Tensor) -> torch.Tensor:
        return (semantic_nodes * self.centroids).sum(-1) + self.bias


class GINet(nn.Module):
    """Dilated backbone -> 3x3 reduce -> Graph Interaction unit -> classifier (+ aux head, + SC-loss)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, channels: int = 512, node_channels: int = 256,
                 num_nodes: int = 84, embed_dim: int = 300, aux_loss: bool = True, se_loss: bool = True,
                 dropout: float = 0.1):
        super().__init__()
        if num_classes < 2:  # the semantic MLP's batch norm runs over the class nodes
            raise ConfigError(f"GINet needs num_classes >= 2 (one semantic node per class), got {num_classes}")
        self.backbone = backbone
        self.reduce = ConvNormAct(backbone.out_channels[-1], channels, 3)
        self.gi_unit = GraphInteractionUnit(channels, num_classes, node_channels=node_channels,
                                            num_nodes=num_nodes, embed_dim=embed_dim, semantic_update=se_loss)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(channels, num_classes, 1))
        self.aux_classifier = FCNHead(backbone.out_channels[-2], num_classes) if aux_loss else None
        self.presence = ClassPresence(num_classes, node_channels) if se_loss else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        feats = self.backbone(x)
        context, semantic = self.gi_unit(self.reduce(feats[-1]))
        out = resize_to(self.classifier(context), size)
        if not self.training or (self.aux_classifier is None and self.presence is None):
            return out
        outputs = {"out": out}
        if self.aux_classifier is not None:
            outputs["aux"] = resize_to(self.aux_classifier(feats[-2]), size)
        if self.presence is not None:
            outputs["se"] = self.presence(semantic)
        return outputs


def _ginet(name, num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels, node_channels,
           num_nodes, embed_dim, se_loss, dropout, kwargs) -> GINet:
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    return GINet(backbone, num_classes, channels=channels, node_channels=node_channels, num_nodes=num_nodes,
                 embed_dim=embed_dim, aux_loss=aux_loss, se_loss=se_loss, dropout=dropout)


@register_model
def ginet_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                   aux_loss: bool = True, output_stride: int = 8, channels: int = 512, node_channels: int = 256,
                   num_nodes: int = 84, embed_dim: int = 300, se_loss: bool = True, dropout: float = 0.1,
                   **kwargs) -> GINet:
    """GINet on a dilated ResNet-50 (36.05M parameters with aux and SC-loss, 33.61M in eval, at 21
    classes). `se_loss` returns the semantic context loss's presence logits ("se"). kwargs go to the trunk."""
    return _ginet("resnet50", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                  node_channels, num_nodes, embed_dim, se_loss, dropout, kwargs)


@register_model
def ginet_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = True, output_stride: int = 8, channels: int = 512, node_channels: int = 256,
                    num_nodes: int = 84, embed_dim: int = 300, se_loss: bool = True, dropout: float = 0.1,
                    **kwargs) -> GINet:
    """GINet on a dilated ResNet-101 (55.04M parameters with aux and SC-loss, 52.60M in eval, at 21
    classes). `se_loss` returns the semantic context loss's presence logits ("se"). kwargs go to the trunk."""
    return _ginet("resnet101", num_classes, in_channels, backbone_weights, aux_loss, output_stride, channels,
                  node_channels, num_nodes, embed_dim, se_loss, dropout, kwargs)
