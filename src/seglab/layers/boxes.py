"""Box operations for detectors: area, pairwise IoU, clipping, small-box removal and the Faster R-CNN
box parameterisation.

Boxes are (K, 4) tensors in absolute pixel coordinates `(x1, y1, x2, y2)`, width `x2 - x1` (no "+1",
as torchvision and Detectron2 count it). `BoxCoder` follows Girshick et al., "Rich feature hierarchies"
(R-CNN, CVPR 2014, appendix C) and Ren et al., "Faster R-CNN" (NeurIPS 2015, eq. 2): a box is encoded
relative to a reference box as

    dx = wx (x - xa) / wa,   dy = wy (y - ya) / ha,   dw = ww log(w / wa),   dh = wh log(h / ha)

with centres (x, y) and sizes (w, h). The weights (10, 10, 5, 5) are the second-stage (box head)
values of Detectron and torchvision, which scale the targets to unit variance; the RPN uses (1, 1, 1, 1).
Decoding clamps dw, dh at log(1000 / 16) so that exp() cannot overflow. The formulas, argument order
and operation order are torchvision's (`torchvision.models.detection._utils.BoxCoder`), so results
match it to the last bit in float32.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ConfigError, SeglabError

__all__ = ["BoxCoder", "box_area", "box_iou", "clip_boxes_to_image", "remove_small_boxes"]


def _check_boxes(boxes: torch.Tensor, name: str = "boxes") -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise SeglabError(f"{name} must have shape (K, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area (K,) of (K, 4) xyxy boxes; a box with x2 < x1 has negative area, as in torchvision."""
    _check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union (N, M) of (N, 4) and (M, 4) xyxy boxes.

    Computed as `inter / (area1 + area2 - inter)` in that order, the order of torchvision's NMS kernel,
    so that thresholds compare bit-identical numbers. Two empty boxes give NaN (0 / 0), which no
    `>` threshold test passes, as in torchvision.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def clip_boxes_to_image(boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Clamp x to [0, W] and y to [0, H] for an image of `size` (H, W); any leading shape (..., 4)."""
    if boxes.shape[-1] != 4:
        raise SeglabError(f"boxes must end in 4 coordinates, got shape {tuple(boxes.shape)}")
    height, width = int(size[0]), int(size[1])
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices (int64) of the boxes whose width and height are both >= `min_size`."""
    _check_boxes(boxes)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


class BoxCoder:
    """Encode boxes as (dx, dy, dw, dh) offsets from reference boxes and decode them back.

    `encode(reference_boxes, proposals)` gives the regression targets that turn each proposal into its
    reference (ground-truth) box; `decode(rel_codes, boxes)` applies predicted offsets to boxes.
    Both take a Tensor or a list of per-image Tensors, like torchvision's BoxCoder.
    """

    def __init__(self, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
                 bbox_xform_clip: float = math.log(1000.0 / 16)):
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise ConfigError(f"BoxCoder weights must be 4 positive numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"

    def encode(self, reference_boxes: torch.Tensor | Sequence[torch.Tensor],
               proposals: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Targets (K, 4) that map `proposals` onto `reference_boxes` (a tuple of them for lists)."""
        if isinstance(reference_boxes, torch.Tensor):
            return self.encode_single(reference_boxes, proposals)
        counts = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(list(reference_boxes)), torch.cat(list(proposals)))
        return targets.split(counts, 0)

    def encode_single(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Encode (K, 4) `reference_boxes` relative to (K, 4) `proposals`; returns (K, 4)."""
        _check_boxes(reference_boxes, "reference_boxes")
        _check_boxes(proposals, "proposals")
        wx, wy, ww, wh = (torch.tensor(w, dtype=reference_boxes.dtype, device=reference_boxes.device)
                          for w in self.weights)
        ex_widths = proposals[:, 2] - proposals[:, 0]
        ex_heights = proposals[:, 3] - proposals[:, 1]
        ex_ctr_x = proposals[:, 0] + 0.5 * ex_widths
        ex_ctr_y = proposals[:, 1] + 0.5 * ex_heights
        gt_widths = reference_boxes[:, 2] - reference_boxes[:, 0]
        gt_heights = reference_boxes[:, 3] - reference_boxes[:, 1]
        gt_ctr_x = reference_boxes[:, 0] + 0.5 * gt_widths
        gt_ctr_y = reference_boxes[:, 1] + 0.5 * gt_heights
        dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
        dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
        dw = ww * torch.log(gt_widths / ex_widths)
        dh = wh * torch.log(gt_heights / ex_heights)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, rel_codes: torch.Tensor, boxes: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Apply (N, 4*C) offsets to N boxes (a Tensor or per-image list): returns (N, C, 4), as
        torchvision's `BoxCoder.decode` (C = 1 for class-agnostic codes, C classes for a box head)."""
        concat = boxes if isinstance(boxes, torch.Tensor) else torch.cat(list(boxes))
        num = concat.shape[0]
        return self.decode_single(rel_codes.reshape(num, -1), concat).reshape(num, -1, 4)

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Apply (N, 4*C) offsets to (N, 4) boxes; returns (N, 4*C) decoded boxes."""
        _check_boxes(boxes)
        if rel_codes.dim() != 2 or rel_codes.shape[0] != boxes.shape[0] or rel_codes.shape[1] % 4:
            raise SeglabError(f"rel_codes must have shape (N, 4*C) with N = {boxes.shape[0]} boxes, "
                              f"got {tuple(rel_codes.shape)}")
        boxes = boxes.to(rel_codes.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        dw = (rel_codes[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)  # exp() must not overflow
        dh = (rel_codes[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]
        pred = torch.stack((pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                            pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h), dim=2)
        return pred.flatten(1)
