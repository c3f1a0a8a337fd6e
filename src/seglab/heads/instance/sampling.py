"""Matching anchors / proposals to ground-truth boxes and sampling a balanced training minibatch.

Ren et al., "Faster R-CNN" (NeurIPS 2015, Sec. 3.1.2): an anchor is positive when its IoU with some
ground-truth box is > 0.7, or when it is the best anchor of a ground-truth box ("low-quality matches"),
negative when its best IoU is < 0.3, and ignored in between; each image contributes 256 anchors with up
to half positives. The same rules with thresholds 0.5 / 0.5 and 512 RoIs at 25% positives give the
Fast R-CNN / Mask R-CNN RoI minibatch (He et al., ICCV 2017, Sec. 3.1). Semantics and signatures are
torchvision's `Matcher` and `BalancedPositiveNegativeSampler`
(`torchvision/models/detection/_utils.py`).
"""
from __future__ import annotations

import torch

from ...errors import ConfigError

__all__ = ["BalancedPositiveNegativeSampler", "Matcher"]


class Matcher:
    """`matcher(iou)` with iou (G, P) (ground truth x predictions) -> (P,) int64: the matched
    ground-truth index, or BELOW_LOW_THRESHOLD (-1) / BETWEEN_THRESHOLDS (-2)."""

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ConfigError(f"Matcher: low_threshold {low_threshold} > high_threshold {high_threshold}")
        self.high_threshold, self.low_threshold = float(high_threshold), float(low_threshold)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> torch.Tensor:
        iou = match_quality_matrix
        if iou.numel() == 0:
            if iou.shape[0] == 0:  # no ground truth: every prediction is background
                return torch.full((iou.shape[1],), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=iou.device)
            raise ValueError("Matcher: no predictions to match against the ground-truth boxes")
        best_iou, matches = iou.max(dim=0)
        original = matches.clone() if self.allow_low_quality_matches else None
        matches[best_iou < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        matches[(best_iou >= self.low_threshold) & (best_iou < self.high_threshold)] = self.BETWEEN_THRESHOLDS
        if original is not None:
            # Every ground-truth box keeps the predictions that overlap it best (ties included); a box
            # that overlaps nothing (e.g. degenerate, zero area) claims no prediction (torchvision's would
            # claim every prediction tied at IoU 0).
            best_for_gt = iou.max(dim=1, keepdim=True).values
            _, pred_idx = torch.nonzero((iou == best_for_gt) & (best_for_gt > 0), as_tuple=True)
            matches[pred_idx] = original[pred_idx]
        return matches


class BalancedPositiveNegativeSampler:
    """`sampler(matched_idxs)` with one (P_i,) label tensor per image (1 positive, 0 negative, -1
    ignore) -> (pos_masks, neg_masks): per image uint8 masks of the sampled positives and negatives,
    at most `batch_size_per_image` in all, positives at most `positive_fraction` of them."""

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if batch_size_per_image < 1 or not 0.0 < positive_fraction <= 1.0:
            raise ConfigError(f"BalancedPositiveNegativeSampler: batch_size_per_image {batch_size_per_image} "
                              f"must be >= 1 and positive_fraction {positive_fraction} in (0, 1]")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __call__(self, matched_idxs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pos_masks, neg_masks = [], []
        for labels in matched_idxs:
            positive = torch.where(labels >= 1)[0]
            negative = torch.where(labels == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pos = positive[torch.randperm(positive.numel(), device=labels.device)[:num_pos]]
            neg = negative[torch.randperm(negative.numel(), device=labels.device)[:num_neg]]
            pos_mask = torch.zeros_like(labels, dtype=torch.uint8)
            neg_mask = torch.zeros_like(labels, dtype=torch.uint8)
            pos_mask[pos] = 1
            neg_mask[neg] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks
