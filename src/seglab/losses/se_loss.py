"""Semantic Encoding loss (SE-loss): Zhang et al., "Context Encoding for Semantic Segmentation",
CVPR 2018, Sec. 2.2.

A fully connected layer on EncNet's encoded vector predicts, per image, which classes are present;
it is trained with binary cross-entropy against the set of classes that occur in the label map. The
target ignores how many pixels a class covers, so small objects count as much as large ones (the
paper's motivation). As in the authors' release (PyTorch-Encoding, `SegmentationLosses`, which builds
the target with `histc` over [0, C-1] and applies `BCELoss` to sigmoid outputs), the loss is the mean
over the N x C entries; the ignore index marks no class. Its weight in the total loss is 0.2 in the
paper and release (`SegmentationLoss(se_weight=0.2)`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError

__all__ = ["SemanticEncodingLoss", "class_presence", "semantic_encoding_loss"]


def class_presence(target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(N, H, W) label maps -> (N, num_classes) float targets: 1 where the class occurs in the image."""
    labels = target.flatten(1).long()
    valid = labels != ignore_index
    outside = valid & ((labels < 0) | (labels >= num_classes))
    if outside.any():
        bad = int(labels[outside][0])
        raise SeglabError(f"label {bad} in the target is outside [0, {num_classes}) and is not the "
                          f"ignore index {ignore_index}")
    # Ignored pixels go to an extra column that is dropped.
    index = torch.where(valid, labels, num_classes)
    present = torch.zeros(labels.shape[0], num_classes + 1, device=target.device)
    present.scatter_(1, index, 1.0)
    return present[:, :num_classes]


def semantic_encoding_loss(se_logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean binary cross-entropy of (N, C) presence logits against the classes present in `target`."""
    if se_logits.ndim != 2 or se_logits.shape[0] != target.shape[0]:
        raise ValueError(f"SE logits {tuple(se_logits.shape)} do not match target {tuple(target.shape)}: "
                         "expected (N, C) logits for (N, H, W) label maps")
    presence = class_presence(target, se_logits.shape[1], ignore_index)
    return F.binary_cross_entropy_with_logits(se_logits.float(), presence)


class SemanticEncodingLoss(nn.Module):
    """`semantic_encoding_loss` as a module: `SemanticEncodingLoss(ignore_index)(se_logits, target)`."""

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(self, se_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return semantic_encoding_loss(se_logits, target, self.ignore_index)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"
