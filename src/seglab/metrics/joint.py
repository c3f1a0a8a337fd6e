"""Metrics of joint models: one streaming `SemanticMetrics` per label space (FCN, Long et al., CVPR 2015,
Sec. 5 scores SIFT Flow's semantic and geometric spaces on their own confusion matrices). `flat_metrics`
turns them into metrics.jsonl keys: `val_<space>_mIoU`, `_aAcc`, `_mAcc`, and `val_mIoU`, the mean of the
spaces' mIoU (what picks best.safetensors)."""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .semantic import SemanticMetrics


class JointMetrics:
    """One streaming `SemanticMetrics` per label space; `compute()` -> {space: metrics dict}."""

    def __init__(self, num_classes: Mapping[str, int], ignore_index: int | None = 255):
        self.spaces = {s: SemanticMetrics(k, ignore_index=ignore_index) for s, k in num_classes.items()}

    def update(self, preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> None:
        for s, m in self.spaces.items():
            m.update(preds[s], targets[s])

    def merge(self, other: JointMetrics) -> JointMetrics:
        if set(other.spaces) != set(self.spaces):
            raise ValueError(f"cannot merge label spaces {sorted(other.spaces)} into {sorted(self.spaces)}")
        for s, m in self.spaces.items():
            m.merge(other.spaces[s])
        return self

    def all_reduce(self) -> JointMetrics:
        for m in self.spaces.values():
            m.all_reduce()
        return self

    def compute(self) -> dict[str, dict]:
        return {s: m.compute() for s, m in self.spaces.items()}


def flat_metrics(results: Mapping[str, dict], prefix: str = "val") -> dict[str, float]:
    """`{val_<space>_mIoU, _aAcc, _mAcc}` per space and `val_mIoU`, the mean of the spaces' mIoU."""
    flat = {f"{prefix}_{s}_{k}": r[k] for s, r in results.items() for k in ("mIoU", "aAcc", "mAcc")}
    ious = [r["mIoU"] for r in results.values()]
    flat[f"{prefix}_mIoU"] = math.nan if any(math.isnan(v) for v in ious) else sum(ious) / len(ious)
    return flat


def flat_metrics(results: Mapping[str, dict], prefix: str = "val") -> dict[str, float]:
    """`{val_<space>_mIoU, _aAcc, _mAcc}` per space and `val_mIoU`, the mean of the spaces' mIoU."""
    flat = {f"{prefix}_{s}_{k}": r[k] for s, r in results.items() for k in ("mIoU", "aAcc", "mAcc")}
    ious = [r["mIoU"] for r in results.values()]
    flat[f"{prefix}_mIoU"] = math.nan if any(math.isnan(v) for v in ious) else sum(ious) / len(ious)
    return flat
