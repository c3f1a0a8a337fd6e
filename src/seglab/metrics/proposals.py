"""Average recall (AR) of segment proposals, as DeepMask (Pinheiro, Collobert & Dollar, NeurIPS 2015)
and InstanceFCN (Dai et al., ECCV 2016, Sec. 5) report it, after Hosang, Benenson, Dollar & Schiele,
"What makes for effective detection proposals?", TPAMI 2016.

For the first N proposals of every image (in the order given: best first), a ground-truth instance is
recalled at threshold t when some proposal's mask IoU with it is >= t (proposals are not assigned
one-to-one, as in Hosang et al.). Recall(t) counts the recalled instances of all images over all
instances; AR@N is the mean of Recall(t) over t = 0.5, 0.55, ..., 0.95, which approximates twice the
area under the recall-vs-IoU curve between 0.5 and 1 (the definition DeepMask and InstanceFCN use).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import SeglabError

__all__ = ["IOU_THRESHOLDS", "average_recall", "best_mask_iou"]

IOU_THRESHOLDS = tuple(0.5 + 0.05 * i for i in range(10))


def best_mask_iou(proposals: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(G, N): mask IoU of every ground-truth mask (G, H, W) with every proposal mask (N, H, W)."""
    if proposals.shape[1:] != gt.shape[1:]:
        raise SeglabError(f"proposal masks {tuple(proposals.shape[1:])} and ground-truth masks "
                          f"{tuple(gt.shape[1:])} must have the same image size")
    p = proposals.flatten(1).float()
    g = gt.flatten(1).float()
    inter = g @ p.T
    union = g.sum(1)[:, None] + p.sum(1)[None] - inter
    return inter / union.clamp(min=1)


def average_recall(proposals: Sequence[torch.Tensor], ground_truth: Sequence[torch.Tensor],
                   counts: Sequence[int] = (10, 100, 1000)) -> dict[str, float]:
    """{"AR@N": value} for each N in `counts`, from per-image proposal masks (N_i, H, W), best first, and
    ground-truth masks (G_i, H, W). Images without ground truth count no instances."""
    if len(proposals) != len(ground_truth):
        raise SeglabError(f"got proposals for {len(proposals)} images and ground truth for {len(ground_truth)}")
    total = sum(int(g.shape[0]) for g in ground_truth)
    out = {}
    for n in counts:
        recalled = torch.zeros(len(IOU_THRESHOLDS))
        for p, g in zip(proposals, ground_truth):
            if g.shape[0] == 0:
                continue
            if p.shape[0] == 0:
                continue
            best = best_mask_iou(p[:n].bool(), g.bool()).amax(1)  # (G,)
            recalled += (best[None] >= torch.tensor(IOU_THRESHOLDS)[:, None] - 1e-9).sum(1).float()
        out[f"AR@{n}"] = float(recalled.mean() / total) if total else float("nan")
    return out
