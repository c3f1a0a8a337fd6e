"""Multi-class multiple instance learning (MIL) loss for training an FCN from image-level labels.

Pathak, Shelhamer, Long, Darrell, "Fully Convolutional Multi-Class Multiple Instance Learning",
ICLR workshop 2015 (MIL-FCN, Sec. 2): every pixel is an instance, every image a bag. For each class
l in the image's label set L_I, take the pixel where that class scores highest,
(x_l, y_l) = argmax_{x,y} p_hat_l(x, y), with p_hat the softmax over classes at each pixel, and

    loss(I) = -1 / |L_I| * sum_{l in L_I} log p_hat_l(x_l, y_l).

Only present classes are rewarded, each at one pixel; absent classes enter only through the softmax
at those pixels (the paper's "inter-class competition"), where they are pushed down, never up.

Choices and deviations:
- The max is taken over the model's logits at input resolution (seglab's model contract), not over
  the coarse heat map; bilinear upsampling of a map cannot exceed its coarse maximum, so the chosen
  pixel scores the same up to interpolation of the softmax.
- A batch loss is the mean of the per-image losses over the images with at least one label; images
  with an empty label set contribute nothing (a batch of only such images gives 0 that still
  backpropagates, with zero gradients).
- Auxiliary heads (`{"out": ..., "aux": ...}`) get the same loss times `aux_weight`, as
  `SegmentationLoss` does for pixel labels; the paper's FCN has no auxiliary head. Other output keys
  (EncNet's "se") are ignored.

Criterion contract (DESIGN.md): `MILLoss()(outputs, labels) -> {"loss", "loss_mil"[, "loss_aux"]}`
with `labels` the multi-hot image labels, (N, C), 1 for a class present in the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MILLoss", "multiclass_mil_loss"]


def multiclass_mil_loss(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The MIL loss from per-pixel log class probabilities `log_probs` (N, C, H, W) (log p_hat) and
    multi-hot image labels (N, C). Gradients reach only log p_hat_l at the argmax pixel of each present
    class l; absent classes get none."""
    if log_probs.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) scores, got shape {tuple(log_probs.shape)}")
    if labels.shape != log_probs.shape[:2]:
        raise ValueError(f"image labels {tuple(labels.shape)} do not match scores {tuple(log_probs.shape)}: "
                         "expected multi-hot labels of shape (N, C)")
    present = labels if labels.dtype == torch.bool else labels > 0.5
    # Max over pixels picks one instance per (image, class); its gradient flows to that pixel only.
    best = log_probs.flatten(2).max(dim=2).values.float()  # (N, C): log p_hat_l(x_l, y_l)
    counts = present.sum(dim=1)
    has_labels = counts > 0
    per_image = -(best * present).sum(dim=1) / counts.clamp_min(1)
    if not has_labels.any():
        return best.sum() * 0.0
    return per_image[has_labels].mean()


class MILLoss(nn.Module):
    """MIL-FCN's multi-class MIL loss as a criterion; see the module docstring."""

    def __init__(self, *, aux_weight: float = 0.4):
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        self.aux_weight = float(aux_weight)

    def mil(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return multiclass_mil_loss(F.log_softmax(logits.float(), dim=1), labels)

    def forward(self, outputs, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if isinstance(outputs, dict):
            out, aux = outputs["out"], outputs.get("aux")
        else:
            out, aux = outputs, None
        loss_mil = self.mil(out, labels)
        result = {"loss": loss_mil, "loss_mil": loss_mil}
        heads = [] if aux is None else list(aux) if isinstance(aux, (list, tuple)) else [aux]
        if heads:
            loss_aux = self.aux_weight * sum(self.mil(h, labels) for h in heads)
            result.update(loss=loss_mil + loss_aux, loss_aux=loss_aux)
        return result
