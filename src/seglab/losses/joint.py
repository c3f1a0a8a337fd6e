"""The loss of joint models (one network, several label spaces): FCN (Long, Shelhamer, Darrell, CVPR 2015,
Sec. 5, SIFT Flow) trains one net on 33 semantic and 3 geometric classes at once, summing one softmax
loss per label space (the release weights them 1, 1). Here the weighted sum over spaces of
`SegmentationLoss` (ignore index 255, aux heads weighted `aux_weight`); weights from
`train.label_space_weights` (unlisted spaces 1.0)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .cross_entropy import SegmentationLoss


class JointLoss(nn.Module):
    """`loss = sum_s weight_s * CE_s` over label spaces; returns `loss` and `loss_<space>` (unweighted)."""

    def __init__(self, label_spaces: Sequence[str], *, weights: Mapping[str, float] | None = None,
                 ignore_index: int = 255, aux_weight: float = 0.4):
        super().__init__()
        self.label_spaces = list(label_spaces)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.label_spaces))
        if unknown:
            raise ConfigError(f"train.label_space_weights: unknown label spaces {unknown}, expected some of "
                              f"{self.label_spaces}")
        if any(w < 0 for w in weights.values()):
            raise ConfigError(f"train.label_space_weights must be >= 0, got {weights}")
        self.weights = {s: float(weights.get(s, 1.0)) for s in self.label_spaces}
        self.per_space = SegmentationLoss(ignore_index=ignore_index, aux_weight=aux_weight)

    def forward(self, outputs: Mapping, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [s for s in self.label_spaces if s not in outputs or s not in targets]
        if missing:
            raise ValueError(f"label spaces {missing} missing from the outputs ({sorted(outputs)}) or "
                             f"targets ({sorted(targets)})")
        parts = {s: self.per_space(outputs[s], targets[s])["loss"] for s in self.label_spaces}
        total = sum(self.weights[s] * parts[s] for s in self.label_spaces)
        return {"loss": total, **{f"loss_{s}": v for s, v in parts.items()}}
