"""Pixel-affinity targets and the balanced affinity loss.

Liu, Yang, Li, Zhou, Xu, Li & Lu, "Affinity Derivation and Graph Merge for Instance Segmentation",
ECCV 2018, Sec. 3.1-3.2: for each pixel p and each neighbour q = p + d * (dy, dx) (8 directions, each
distance d), the affinity is 1 when p and q belong to the same instance and 0 otherwise; the network
predicts it with a sigmoid per channel and is trained with binary cross-entropy.

Our choices (the seeds give none of these details):
- a pair is supervised when q lies inside the image and at least one of p, q is an instance pixel
  (id > 0); pairs of two background pixels are ignored, since the graph merge never sees background
  vertices; pixels with a negative id (crowd / ignore regions) are ignored;
- balance: positives are rare at long distances and negatives rare at short ones, so each channel's
  loss is the mean of its mean positive BCE and its mean negative BCE (half weight each), averaged
  over the channels that have supervised pairs in the batch.
Channel order (distance outermost, then `seglab.inference.graph_merge.DIRECTIONS`) is the one the
graph merge reads.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..inference.graph_merge import PAPER_DISTANCES, affinity_offsets

__all__ = ["affinity_targets", "balanced_affinity_loss"]


def affinity_targets(instance_map: torch.Tensor, distances: Sequence[int] = PAPER_DISTANCES,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and supervision mask, both (N, 8 * len(distances), H, W), from instance ids (N, H, W)
    or (H, W): 0 = background, > 0 = instance, < 0 = ignore. Targets are float 0/1, the mask bool."""
    ids = instance_map if instance_map.dim() == 3 else instance_map[None]
    ids = ids.long()
    n, h, w = ids.shape
    offsets = affinity_offsets(distances)
    target = torch.zeros(n, len(offsets), h, w, dtype=torch.float32, device=ids.device)
    valid = torch.zeros(n, len(offsets), h, w, dtype=torch.bool, device=ids.device)
    for c, (dy, dx) in enumerate(offsets):
        if abs(dy) >= h or abs(dx) >= w:
            continue  # no neighbour at this offset inside the image
        p_rows, q_rows = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h + min(0, dy))
        p_cols, q_cols = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w + min(0, dx))
        p, q = ids[:, p_rows, p_cols], ids[:, q_rows, q_cols]
        target[:, c, p_rows, p_cols] = ((p == q) & (p > 0)).float()
        valid[:, c, p_rows, p_cols] = ((p > 0) | (q > 0)) & (p >= 0) & (q >= 0)
    return target, valid


def balanced_affinity_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per channel: (mean BCE over positive pairs + mean BCE over negative pairs) / 2 (one term when
    the other class is absent); averaged over channels with supervised pairs. 0 when there are none."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    valid = valid.float()
    pos, neg = valid * target, valid * (1 - target)
    dims = (0, 2, 3)
    n_pos, n_neg = pos.sum(dims), neg.sum(dims)
    pos_loss = (bce * pos).sum(dims) / n_pos.clamp_min(1)
    neg_loss = (bce * neg).sum(dims) / n_neg.clamp_min(1)
    has_pos, has_neg = (n_pos > 0).float(), (n_neg > 0).float()
    per_channel = (pos_loss + neg_loss) / (has_pos + has_neg).clamp_min(1)
    used = (has_pos + has_neg) > 0
    if not used.any():
        return logits.sum() * 0.0
    return per_channel[used].mean()
