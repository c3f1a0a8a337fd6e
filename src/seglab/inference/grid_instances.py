"""From an instance-id map on a coarse grid (a bottom-up method's grouping: InstanceCut's multicut, SGN's
merged line segments) to an `InstanceResult` at the image size: the map is nearest-resized by the grid
stride, every instance keeps only the pixels whose full-resolution most probable class is its class (so
masks follow the finer class boundaries), instances under `min_area` pixels are dropped, and an
instance's score is the mean probability of its class over its pixels."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.instances import masks_to_boxes
from ..structures import InstanceResult

__all__ = ["instances_from_grid"]


def instances_from_grid(ids: np.ndarray, labels: np.ndarray, probs: torch.Tensor, stride: int,
                        min_area: int = 1) -> InstanceResult:
    """`ids` (h, w) instance ids on the grid (0 = none, k = instance k), `labels` (K,) the class (1..C) of
    instance k + 1, `probs` (C + 1, H, W) class probabilities at the image size (class 0 = background).
    Result labels are 0-based thing classes (class - 1)."""
    height, width = probs.shape[-2:]
    grid = torch.from_numpy(np.ascontiguousarray(ids)).to(probs.device)
    full = F.interpolate(grid[None, None].float(), scale_factor=stride, mode="nearest")[0, 0, :height, :width].long()
    classes = torch.as_tensor(labels, dtype=torch.long, device=probs.device)
    masks = full[None] == torch.arange(1, len(classes) + 1, device=probs.device)[:, None, None]
    masks &= probs.argmax(0)[None] == classes[:, None, None]
    keep = masks.flatten(1).sum(1) >= min_area
    masks, classes = masks[keep], classes[keep]
    scores = torch.stack([probs[c][m].mean() for c, m in zip(classes.tolist(), masks)]) if len(classes) \
        else probs.new_zeros(0)
    return InstanceResult(boxes=masks_to_boxes(masks.cpu()).to(probs.device), scores=scores, labels=classes - 1,
                          masks=masks)
