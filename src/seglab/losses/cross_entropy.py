"""Pixel-wise cross-entropy for semantic segmentation, with ignore index, class weights and auxiliary
heads.

Per-pixel softmax cross-entropy over the logits is the FCN training loss (Long, Shelhamer, Darrell,
CVPR 2015, Sec. 3); class weights follow SegNet (Badrinarayanan et al., TPAMI 2017, Sec. 3.4, see
`class_weights.py`); the auxiliary loss on an intermediate head, weighted 0.4, is PSPNet's deep
supervision (Zhao et al., CVPR 2017, Sec. 3.3).

Criterion contract: `criterion(outputs, target) -> dict[str, Tensor]` where `outputs` is logits
(N, C, H, W) or `{"out": logits, "aux": Tensor | list[Tensor] | None}` (every head at the target's
size, or an auxiliary head at its own coarser size: the labels are then taken at its cells' centres,
`downsample_labels`, instead of upsampling its logits, which is 4x-1000x cheaper) and the result holds `"loss"` (the total to backprop) and its parts `"loss_ce"` and, with aux
heads, `"loss_aux"` (already multiplied by `aux_weight`, so `loss == loss_ce + loss_aux`).
A dict may also hold `"se"`: (N, C) class-presence logits (EncNet's SE-loss, Zhang et al., CVPR 2018,
see `se_loss.py`); the result then holds `"loss_se"` (times `se_weight`, 0.2 as in the paper),
which is added to `"loss"` too.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .se_loss import semantic_encoding_loss


def downsample_labels(target: torch.Tensor, size) -> torch.Tensor:
    """(N, H, W) labels at a coarser (h, w): the label at each cell's centre (nearest-exact), so an
    auxiliary head at stride s is supervised where its receptive field is centred; no label is mixed."""
    return F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest-exact")[:, 0].long()


class SegmentationLoss(nn.Module):
    """Cross-entropy averaged over the non-ignored pixels (weighted mean with `class_weights`, exactly
    as `F.cross_entropy(..., weight=, ignore_index=)`), plus `aux_weight` times each aux head's loss.

    Online hard example mining (`ohem_thresh`): keep only the pixels whose predicted probability of
    the true class is below `ohem_thresh` (loss above -log(thresh)), but never fewer than
    `ohem_min_kept` of the valid pixels (the hardest ones then), and average the (weighted) losses
    of the kept pixels. This is the OHEM cross-entropy of BiSeNet V2's training (Yu et al., IJCV
    2021, Sec. 5.1; thresh 0.7, at least 1/16 of the pixels), after Shrivastava et al., CVPR 2016.

    A batch whose pixels are all ignored gives a loss of 0 that still backpropagates (zero
    gradients) instead of PyTorch's NaN.
    """

    def __init__(self, ignore_index: int = 255, *,
                 class_weights: Sequence[float] | torch.Tensor | None = None, aux_weight: float = 0.4,
                 ohem_thresh: float | None = None, ohem_min_kept: float = 1 / 16, se_weight: float = 0.2):
        super().__init__()
        if se_weight < 0:
            raise ValueError(f"se_weight must be >= 0, got {se_weight}")
        self.se_weight = float(se_weight)
        if ohem_thresh is not None and not 0 < ohem_thresh <= 1:
            raise ValueError(f"ohem_thresh is a probability in (0, 1], got {ohem_thresh}")
        if not 0 < ohem_min_kept <= 1:
            raise ValueError(f"ohem_min_kept is a fraction of the pixels in (0, 1], got {ohem_min_kept}")
        self.ohem_thresh = None if ohem_thresh is None else float(ohem_thresh)
        self.ohem_min_kept = float(ohem_min_kept)
        self.ignore_index = int(ignore_index)
        self.aux_weight = float(aux_weight)
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weight is not None and weight.ndim != 1:
            raise ValueError(f"class_weights must be 1-D (one per class), got shape {tuple(weight.shape)}")
        self.register_buffer("class_weights", weight)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim != target.ndim + 1 or logits.shape[0] != target.shape[0] \
                or any(a > b for a, b in zip(logits.shape[2:], target.shape[1:])):
            raise ValueError(f"logits {tuple(logits.shape)} do not match target {tuple(target.shape)}: "
                             "expected (N, C, H, W) logits at the target's (N, H, W) size or smaller")
        if logits.shape[2:] != target.shape[1:]:  # a head at its own, coarser resolution
            target = downsample_labels(target, logits.shape[2:])
        num_classes = logits.shape[1]
        weight = self.class_weights
        if weight is not None and weight.numel() != num_classes:
            raise ValueError(f"{weight.numel()} class weights given for {num_classes} classes")
        target = target.long()
        if self.ohem_thresh is not None:
            return self._ohem(logits, target, weight)
        total = F.cross_entropy(logits, target, weight=None if weight is None else weight.to(logits),
                                ignore_index=self.ignore_index, reduction="sum")
        # Denominator of PyTorch's "mean" reduction, the number (or total weight) of the kept pixels,
        # counted in float32 even under low-precision autocast.
        valid = target != self.ignore_index
        if weight is None:
            denom = valid.sum(dtype=torch.float32)
        else:
            denom = (weight.to(logits.device)[torch.where(valid, target, 0)] * valid).sum()
        return total / torch.where(denom > 0, denom, torch.ones_like(denom))

    def _ohem(self, logits: torch.Tensor, target: torch.Tensor, weight) -> torch.Tensor:
        losses = F.cross_entropy(logits, target, weight=None if weight is None else weight.to(logits),
                                 ignore_index=self.ignore_index, reduction="none").float()
        losses = losses[target != self.ignore_index]
        if losses.numel() == 0:
            return logits.sum() * 0.0
        min_kept = max(1, math.ceil(self.ohem_min_kept * losses.numel()))
        hard = losses[losses > -math.log(self.ohem_thresh)]
        if hard.numel() < min_kept:
            hard = losses.topk(min_kept, sorted=False).values
        return hard.mean()

    def forward(self, outputs, target: torch.Tensor) -> dict[str, torch.Tensor]:
        aux = se = None
        if isinstance(outputs, dict):
            if "out" not in outputs:
                raise KeyError(f"outputs dict needs an 'out' entry, got keys {sorted(outputs)}")
            outputs, aux, se = outputs["out"], outputs.get("aux"), outputs.get("se")
        loss_ce = self.cross_entropy(outputs, target)
        losses = {"loss": loss_ce, "loss_ce": loss_ce}
        if aux is not None:
            aux = [aux] if isinstance(aux, torch.Tensor) else list(aux)
            if aux:
                loss_aux = self.aux_weight * sum(self.cross_entropy(a, target) for a in aux)
                losses["loss_aux"] = loss_aux
                losses["loss"] = loss_ce + loss_aux
        if se is not None:
            loss_se = self.se_weight * semantic_encoding_loss(se, target, self.ignore_index)
            losses["loss_se"] = loss_se
            losses["loss"] = losses["loss"] + loss_se
        return losses

    def extra_repr(self) -> str:
        weighted = self.class_weights is not None
        ohem = "" if self.ohem_thresh is None else f", ohem_thresh={self.ohem_thresh}, ohem_min_kept={self.ohem_min_kept}"
        return f"ignore_index={self.ignore_index}, class_weights={weighted}, aux_weight={self.aux_weight}, se_weight={self.se_weight}{ohem}"
