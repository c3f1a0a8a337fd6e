"""Accuracy near object boundaries: the "trimap" measure of Kohli, Ladicky & Torr (IJCV 2009) that
DeepLab (Chen et al., ICLR 2015, Sec. 5, Fig. 5) uses to show the CRF's effect: pixel accuracy
restricted to a band of `width` pixels around the ground-truth label boundaries (ignored pixels are
not counted, but their borders are boundaries)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def boundary_band(target: torch.Tensor, width: int) -> torch.Tensor:
    """(H, W) labels -> bool (H, W): pixels within `width` pixels (Chebyshev) of a label change."""
    t = target.float()[None, None]
    k = 2 * width + 1
    hi = F.max_pool2d(t, k, stride=1, padding=width)
    lo = -F.max_pool2d(-t, k, stride=1, padding=width)
    return (hi != lo)[0, 0]


class TrimapAccuracy:
    """Streaming pixel accuracy inside the boundary band, for several band widths at once."""

    def __init__(self, widths=(2, 5, 10), ignore_index: int = 255):
        self.widths = tuple(int(w) for w in widths)
        self.ignore_index = ignore_index
        self.correct = torch.zeros(len(self.widths), dtype=torch.long)
        self.total = torch.zeros(len(self.widths), dtype=torch.long)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        valid = target != self.ignore_index
        hit = (pred == target) & valid
        for i, w in enumerate(self.widths):
            band = boundary_band(target, w) & valid
            self.correct[i] += (hit & band).sum()
            self.total[i] += band.sum()

    def merge(self, other: "TrimapAccuracy") -> "TrimapAccuracy":
        self.correct += other.correct
        self.total += other.total
        return self

    def all_reduce(self) -> "TrimapAccuracy":
        """Sum the counts over all torch.distributed ranks (no-op when not initialised); call once."""
        from ..utils.distributed import all_reduce_sum

        self.correct, self.total = all_reduce_sum(self.correct), all_reduce_sum(self.total)
        return self

    def compute(self) -> dict:
        return {f"trimap_acc@{w}px": c / t if t else float("nan")
                for w, c, t in zip(self.widths, self.correct.tolist(), self.total.tolist())}
