"""YOLACT's two parallel branches: Bolya, Zhou, Xiao & Lee, "YOLACT: Real-time Instance Segmentation",
ICCV 2019, Sec. 3.1-3.2 (layer lists as in the release, dbolya/yolact `data/config.py`, yolact_base).

- `ProtoNet` (Sec. 3.1, Fig. 3): an FCN on P3 giving k prototype masks at output stride 4: three
  3x3 convs (256) + ReLU, x2 bilinear upsampling (+ ReLU, a no-op after the previous ReLU, as the
  release's layer list has it), a 3x3 conv (256) + ReLU and a 1x1 conv to k = 32, then ReLU (the
  paper keeps the prototypes unbounded above; ReLU is the release's `mask_proto_prototype_activation`).
- `PredictionHead` (Sec. 3.2, Fig. 4): shared by every FPN level; a 3x3 conv (256) + ReLU, then three
  3x3 convs: class logits (C + 1) * a, box offsets 4 * a and mask coefficients k * a with tanh
  (coefficients may be negative so that prototypes can be subtracted). a = anchors per location.

Convolutions have biases and are xavier-uniform initialised with zero bias (the release's `init_weights`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PredictionHead", "ProtoNet"]


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class ProtoNet(nn.Module):
    """`forward(P3)` -> non-negative prototypes (N, k, 2 H3, 2 W3), i.e. at output stride 4."""

    def __init__(self, in_channels: int, channels: int = 256, num_prototypes: int = 32):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.refine = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.project = nn.Conv2d(channels, num_prototypes, 1)
        self.num_prototypes = num_prototypes
        _xavier(self)

    def forward(self, p3: torch.Tensor) -> torch.Tensor:
        x = self.convs(p3)
        x = F.relu(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return F.relu(self.project(self.refine(x)))


class PredictionHead(nn.Module):
    """`forward([P3, ..., P7])` -> (class logits (N, A, C + 1), box offsets (N, A, 4), coefficients
    (N, A, k) in [-1, 1]), with the A anchors of all levels concatenated level by level, each level in
    row-major (y, x) order and `num_anchors` anchors per location."""

    def __init__(self, in_channels: int, num_classes_with_background: int, num_anchors: int = 3,
                 num_prototypes: int = 32, channels: int = 256):
        super().__init__()
        self.upfeature = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.class_conv = nn.Conv2d(channels, num_anchors * num_classes_with_background, 3, padding=1)
        self.box_conv = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.coef_conv = nn.Conv2d(channels, num_anchors * num_prototypes, 3, padding=1)
        self.num_classes_with_background = num_classes_with_background
        self.num_prototypes = num_prototypes
        _xavier(self)

    @staticmethod
    def _flatten(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
        # (N, a * X, H, W) -> (N, H * W * a, X): channel a * X + x is anchor a's x-th output
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, per_anchor)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        classes, boxes, coefs = [], [], []
        for f in features:
            x = self.upfeature(f)
            classes.append(self._flatten(self.class_conv(x), self.num_classes_with_background))
            boxes.append(self._flatten(self.box_conv(x), 4))
            coefs.append(self._flatten(self.coef_conv(x), self.num_prototypes))
        return torch.cat(classes, 1), torch.cat(boxes, 1), torch.tanh(torch.cat(coefs, 1))
