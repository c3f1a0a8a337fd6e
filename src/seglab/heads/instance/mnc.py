"""The per-RoI stages of Multi-task Network Cascades: Dai, He & Sun, "Instance-aware Semantic
Segmentation via Multi-task Network Cascades", CVPR 2016 (Sec. 3.2 mask-level instances, Sec. 3.3
categorized instances), with the layer sizes of the release (github.com/daijifeng001/MNC,
`models/VGG16/mnc_5stage/train.prototxt`).

Both stages read the same RoI-warped feature, `warp_size` x `warp_size` (14 x 14) cells of the shared
feature map (`seglab.layers.roi_warp`, differentiable w.r.t. the box):
- `MaskEstimator` (stage 2): fc `fc6_maskest` to `hidden` (256) + ReLU, fc `mask_pred` to m x m
  (m = 21 in the release, 28 in the paper's text) class-agnostic mask logits, per-pixel logistic
  regression. Initialised with N(0, 0.001) weights as in the release.
- `MaskClassifier` (stage 3): two pathways over the warped feature, each 2x2 max-pooled to 7 x 7 and
  followed by two fc layers of `representation_size` (4096) + ReLU: the box pathway reads the warped
  feature as is, the mask pathway reads it multiplied by the stage-2 mask (its probabilities resized
  bilinearly to 14 x 14: "feature masking"). The two fc7 outputs are concatenated (mask first, as the
  release) and three sibling fc layers predict box-level class logits `cls_score` (C + 1), mask-level
  class logits `seg_cls_score` (C + 1, the classifier the paper's stage 3 describes, trained against
  labels from the mask IoU) and class-specific box deltas `bbox_pred` (4 (C + 1)), used by the 5-stage
  cascade to move the RoIs for stages 4 and 5. `box_outputs=False` keeps only the mask-level classifier
  (InstanceFCN classifies its segment proposals with "MNC's stage 3", Dai et al., ECCV 2016, Sec. 5.1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskClassifier", "MaskEstimator", "StageOutputs"]


def _init_linear(layer: nn.Linear, std: float) -> nn.Linear:
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return layer


class MaskEstimator(nn.Module):
    """Warped RoI feature (R, C, S, S) -> class-agnostic mask logits (R, m, m)."""

    def __init__(self, in_channels: int, warp_size: int = 14, *, hidden: int = 256, mask_size: int = 21):
        super().__init__()
        self.mask_size = mask_size
        self.fc6_maskest = _init_linear(nn.Linear(in_channels * warp_size ** 2, hidden), 0.001)
        self.mask_pred = _init_linear(nn.Linear(hidden, mask_size ** 2), 0.001)

    def forward(self, warped: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc6_maskest(warped.flatten(1)))
        return self.mask_pred(x).view(-1, self.mask_size, self.mask_size)


class _Pathway(nn.Sequential):
    """2x2 max pooling, flatten, fc6 + ReLU, fc7 + ReLU."""

    def __init__(self, in_features: int, representation_size: int):
        super().__init__(nn.MaxPool2d(2, 2), nn.Flatten(1), nn.Linear(in_features, representation_size),
                         nn.ReLU(inplace=True), nn.Linear(representation_size, representation_size),
                         nn.ReLU(inplace=True))


@dataclass
class StageOutputs:
    """Per RoI: box-level class logits (R, C + 1), mask-level class logits (R, C + 1) and class-specific
    box deltas (R, 4 (C + 1)); the first and last are None without box outputs."""
    class_logits: torch.Tensor | None
    seg_class_logits: torch.Tensor
    box_deltas: torch.Tensor | None


class MaskClassifier(nn.Module):
    """Box pathway + mask pathway (feature masking) -> class scores and box deltas (see the docstring)."""

    def __init__(self, in_channels: int, num_classes: int, warp_size: int = 14, *, representation_size: int = 4096,
                 box_outputs: bool = True):
        super().__init__()
        if warp_size % 2:
            raise ValueError(f"warp_size must be even (2x2 max pooling), got {warp_size}")
        self.warp_size = warp_size
        pooled = in_channels * (warp_size // 2) ** 2
        self.box_pathway = _Pathway(pooled, representation_size)
        self.mask_pathway = _Pathway(pooled, representation_size)
        joint = 2 * representation_size
        self.seg_cls_score = _init_linear(nn.Linear(joint, num_classes + 1), 0.01)
        self.cls_score = _init_linear(nn.Linear(joint, num_classes + 1), 0.01) if box_outputs else None
        self.bbox_pred = _init_linear(nn.Linear(joint, 4 * (num_classes + 1)), 0.001) if box_outputs else None

    def forward(self, warped: torch.Tensor, mask_probs: torch.Tensor) -> StageOutputs:
        """`warped` (R, C, S, S); `mask_probs` (R, m, m) stage-2 mask probabilities in the same RoIs."""
        mask = F.interpolate(mask_probs[:, None].to(warped.dtype), size=(self.warp_size, self.warp_size),
                             mode="bilinear", align_corners=False)
        joint = torch.cat([self.mask_pathway(warped * mask), self.box_pathway(warped)], dim=1)
        if self.cls_score is None:
            return StageOutputs(None, self.seg_cls_score(joint), None)
        return StageOutputs(self.cls_score(joint), self.seg_cls_score(joint), self.bbox_pred(joint))
