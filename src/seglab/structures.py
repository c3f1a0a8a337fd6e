"""Result types returned by predictors and by instance / panoptic models."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SemanticResult:
    """Per-pixel class indices (H, W) and, optionally, class probabilities (C, H, W)."""
    labels: torch.Tensor
    probs: torch.Tensor | None = None
    path: str | None = None


@dataclass
class InstanceResult:
    """One mask per detected object: boxes (K, 4) xyxy, scores (K,), labels (K,), masks (K, H, W) bool."""
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    path: str | None = None  # the file it was predicted from, when there was one


@dataclass
class PanopticResult:
    """A segment id per pixel (H, W) and one info dict per segment (id, category_id, isthing, area)."""
    segments: torch.Tensor
    segments_info: list[dict] = field(default_factory=list)
    path: str | None = None  # the file it was predicted from, when there was one
