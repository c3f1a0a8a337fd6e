"""FCIS's position-sensitive inside/outside score maps, their assembling per RoI, and the joint mask /
classification head: Li, Qi, Dai, Ji & Wei, "Fully Convolutional Instance-aware Semantic
Segmentation", CVPR 2017 (Sec. 3.1 position-sensitive inside/outside maps, Sec. 3.2 joint mask
prediction and classification, Sec. 3.3 the architecture; the release msracver/FCIS for the layout).

Score maps. On the conv5 feature a 1x1 conv to `mid_channels` (1024 in the paper) with ReLU, then two
sibling 1x1 convs over the whole image: 2 k^2 (C + 1) inside/outside maps (k = 7) and 4 k^2 maps for
class-agnostic box regression. Channels are grouped as R-FCN's position-sensitive maps are: channel
`(g * k + i) * k + j` holds group g's scores for the cell (i, j) of a k x k grid over an RoI; for the
inside/outside maps group g = 2 c + t, t = 0 inside and t = 1 outside of class c (0 = background).

Assembling (Sec. 3.1). An RoI is divided into k x k cells; cell (i, j) of the assembled map copies
its values from the channels of position (i, j) only, so every RoI reads the shared maps and has no
layer of its own. The assembled maps have a fixed RoI resolution `roi_size` (21 in the paper, a
multiple of k: each cell is roi_size / k bins wide). Implementation: the maps are re-viewed as k^2
images, image p holding the G channels of position p, and the k^2 cells of every RoI become sub-RoIs
on their position's image; one RoIAlign call (`seglab.layers.roi_align`, aligned, adaptive sampling)
then pools all cells of all RoIs, vectorised, with no loop over RoIs or cells. The bins are those of
RoIAlign on the whole RoI at roi_size x roi_size (the release uses PSRoIPooling's integer bins).

Joint formulation (Sec. 3.2), per RoI and class c:
- mask probability per pixel = softmax over the pair (inside_c, outside_c), i.e. sigmoid(inside_c -
  outside_c), returned as the log-odds `mask_logits = inside_c - outside_c`;
- class logit = the RoI average of max(inside_c, outside_c); a softmax over the C + 1 classes gives the
  class likelihood;
- box deltas = the RoI average of the 4 position-sensitive regression maps (class-agnostic).
Training losses (`fcis_losses`): softmax cross-entropy over the sampled RoIs; the per-pixel softmax
cross-entropy of the (inside, outside) pair of the ground-truth class of positive RoIs only (equal to
binary cross-entropy on the log-odds); smooth-L1 box regression on positives. The paper weighs the
three equally. Optional OHEM (Sec. 3.3 and the release): the RoIs with the highest summed loss are kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, SeglabError
from ...layers.roi_align import boxes_to_rois, roi_align

__all__ = ["FCISHead", "FCISOutputs", "assemble_position_sensitive", "fcis_losses", "ohem_select"]


def _check_grid(k: int, roi_size: int) -> None:
    if k < 1 or roi_size < 1 or roi_size % k:
        raise ConfigError(f"FCIS needs k >= 1 and roi_size a multiple of k (cells of equal size), "
                          f"got k={k}, roi_size={roi_size}")


def assemble_position_sensitive(score_maps: torch.Tensor, rois: torch.Tensor | list[torch.Tensor], *, k: int,
                                roi_size: int, spatial_scale: float, sampling_ratio: int = -1) -> torch.Tensor:
    """Assemble per-RoI maps from position-sensitive score maps.

    `score_maps` (N, G k^2, H, W), channel `(g * k + i) * k + j` = group g at cell (i, j); `rois` a
    (R, 5) `[batch_index, x1, y1, x2, y2]` Tensor or per-image (Ri, 4) boxes in image pixels.
    Returns (R, G, roi_size, roi_size): the block of cell (i, j) (rows i * s .. (i + 1) * s - 1,
    s = roi_size // k) is RoIAlign of cell (i, j) of the RoI on channels (g, i, j) of the maps.
    """
    _check_grid(k, roi_size)
    if score_maps.dim() != 4 or score_maps.shape[1] % (k * k):
        raise SeglabError(f"score maps must be (N, G*k*k, H, W) with k={k}, got {tuple(score_maps.shape)}")
    n, channels, height, width = score_maps.shape
    groups, positions, cell = channels // (k * k), k * k, roi_size // k
    rois = boxes_to_rois(rois).detach().to(score_maps.device, torch.promote_types(score_maps.dtype, torch.float32))
    num = rois.shape[0]
    # Image n * k^2 + p holds the G channels of position p of image n.
    per_position = score_maps.reshape(n, groups, positions, height, width).transpose(1, 2)
    per_position = per_position.reshape(n * positions, groups, height, width)
    steps = torch.arange(k, device=rois.device, dtype=rois.dtype)
    row, col = steps.repeat_interleave(k), steps.repeat(k)  # position p = i * k + j
    x1, y1, x2, y2 = (v[:, None] for v in rois[:, 1:].unbind(1))
    cell_w, cell_h = (x2 - x1) / k, (y2 - y1) / k
    cells = torch.stack([rois[:, :1] * positions + torch.arange(positions, device=rois.device),
                         x1 + col * cell_w, y1 + row * cell_h, x1 + (col + 1) * cell_w, y1 + (row + 1) * cell_h],
                        dim=2)  # (R, k^2, 5)
    pooled = roi_align(per_position, cells.reshape(-1, 5), cell, spatial_scale=spatial_scale,
                       sampling_ratio=sampling_ratio, aligned=True)  # (R k^2, G, s, s)
    pooled = pooled.reshape(num, k, k, groups, cell, cell).permute(0, 3, 1, 4, 2, 5)
    return pooled.reshape(num, groups, roi_size, roi_size)


@dataclass
class FCISOutputs:
    """Per RoI: class logits (R, C + 1), mask log-odds inside vs outside (R, C + 1, S, S) and
    class-agnostic box deltas (R, 4)."""
    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    box_deltas: torch.Tensor


class FCISHead(nn.Module):
    """Feature -> 1x1 conv (mid_channels, ReLU) -> inside/outside maps (2 k^2 (C + 1)) and box maps
    (4 k^2); `forward(feature, rois)` assembles them per RoI and applies the joint formulation."""

    def __init__(self, in_channels: int, num_classes: int, *, mid_channels: int = 1024, k: int = 7,
                 roi_size: int = 21, spatial_scale: float = 1 / 16):
        super().__init__()
        _check_grid(k, roi_size)
        self.num_classes, self.k, self.roi_size, self.spatial_scale = num_classes, k, roi_size, spatial_scale
        self.reduce = nn.Conv2d(in_channels, mid_channels, 1)
        self.inside_outside = nn.Conv2d(mid_channels, 2 * k * k * (num_classes + 1), 1)
        self.box = nn.Conv2d(mid_channels, 4 * k * k, 1)
        for conv in (self.reduce, self.inside_outside, self.box):  # the release's initialisation
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def score_maps(self, feature: torch.Tensor) -> torch.Tensor:
        """The shared maps (N, (2 (C + 1) + 4) k^2, H, W): inside/outside groups, then the 4 box groups."""
        x = F.relu(self.reduce(feature))
        return torch.cat([self.inside_outside(x), self.box(x)], dim=1)

    def forward(self, maps: torch.Tensor, rois: torch.Tensor) -> FCISOutputs:
        """Assemble the score maps `maps` (from `score_maps`) over (R, 5) `rois`."""
        assembled = assemble_position_sensitive(maps, rois, k=self.k, roi_size=self.roi_size,
                                                spatial_scale=self.spatial_scale)
        c1 = self.num_classes + 1
        pair = assembled[:, :2 * c1].unflatten(1, (c1, 2))  # (R, C + 1, inside/outside, S, S)
        inside, outside = pair[:, :, 0], pair[:, :, 1]
        return FCISOutputs(class_logits=torch.maximum(inside, outside).mean((-2, -1)),
                           mask_logits=inside - outside,
                           box_deltas=assembled[:, 2 * c1:].mean((-2, -1)))


def _per_roi_losses(out: FCISOutputs, labels: torch.Tensor, mask_targets: torch.Tensor,
                    box_targets: torch.Tensor, smooth_l1_beta: float) -> tuple[torch.Tensor, ...]:
    """(classification, mask, box) loss per RoI; mask and box are 0 on negatives."""
    cls = F.cross_entropy(out.class_logits, labels, reduction="none")
    positive = torch.where(labels > 0)[0]
    mask = cls.new_zeros(cls.shape)
    box = cls.new_zeros(cls.shape)
    if positive.numel():
        # Softmax cross-entropy of the (inside, outside) pair of the ground-truth class only; the pair's
        # softmax is the sigmoid of its difference, so this is binary cross-entropy on the log-odds.
        logits = out.mask_logits[positive, labels[positive]]
        pixel = F.binary_cross_entropy_with_logits(logits, mask_targets[positive].to(logits.dtype), reduction="none")
        mask = mask.index_put((positive,), pixel.flatten(1).mean(1))
        reg = F.smooth_l1_loss(out.box_deltas[positive], box_targets[positive].to(out.box_deltas.dtype),
                               beta=smooth_l1_beta, reduction="none")
        box = box.index_put((positive,), reg.sum(1))
    return cls, mask, box


def ohem_select(per_roi_loss: torch.Tensor, image_index: torch.Tensor, per_image: int) -> torch.Tensor:
    """Indices of the `per_image` RoIs of each image with the highest loss (online hard example mining,
    Shrivastava et al., CVPR 2016, as FCIS uses it: 128 of 300 RoIs)."""
    loss = per_roi_loss.detach()
    keep = []
    for i in image_index.unique():
        members = torch.where(image_index == i)[0]
        keep.append(members[loss[members].topk(min(per_image, members.numel())).indices])
    return torch.cat(keep) if keep else image_index.new_zeros(0)


def fcis_losses(out: FCISOutputs, labels: torch.Tensor, mask_targets: torch.Tensor, box_targets: torch.Tensor, *,
                image_index: torch.Tensor | None = None, ohem_per_image: int | None = None,
                smooth_l1_beta: float = 1.0) -> dict[str, torch.Tensor]:
    """FCIS's three losses over R RoIs: `labels` (R,) 0 background or class + 1; `mask_targets`
    (R, S, S) and `box_targets` (R, 4), read on positives only. With `ohem_per_image`, only that many
    RoIs per image (by `image_index`), those of highest summed loss, count.
    Classification: mean over the counted RoIs; mask: mean per-pixel loss over counted positives;
    box: sum over counted positives / counted RoIs (Fast R-CNN's normalisation)."""
    cls, mask, box = _per_roi_losses(out, labels, mask_targets, box_targets, smooth_l1_beta)
    if ohem_per_image is not None:
        if image_index is None:
            raise SeglabError("fcis_losses: OHEM needs image_index, the image of every RoI")
        keep = ohem_select(cls + mask + box, image_index, ohem_per_image)
        cls, mask, box, labels = cls[keep], mask[keep], box[keep], labels[keep]
    positive = labels > 0
    num_pos = int(positive.sum())
    # Zero that keeps every output on the graph when a term is empty (e.g. a batch without positives).
    anchor = (out.class_logits.sum() + out.mask_logits.sum() + out.box_deltas.sum()) * 0.0
    return {"loss_classifier": cls.mean() if cls.numel() else anchor,
            "loss_mask": mask[positive].sum() / num_pos + anchor if num_pos else anchor,
            "loss_box_reg": box.sum() / max(cls.numel(), 1) + anchor}
