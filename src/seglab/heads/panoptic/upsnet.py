"""UPSNet's semantic and panoptic heads: Xiong, Liao, Zhao, Hu, Bai, Yumer & Urtasun, "UPSNet: A Unified
Panoptic Segmentation Network", CVPR 2019, Sec. 3.1 and 3.2; details checked against the authors'
release (uber-research/UPSNet: models/fcn.py, operators/modules/unary_logits.py, mask_matching.py,
mask_removal.py, models/resnet_upsnet.py).

`DeformableSemanticHead` (Sec. 3.1, Fig. 3): one subnet of 3x3 deformable convolutions (v1,
`seglab.layers.deform_conv.DeformConv2d`, offsets from a zero-initialised 3x3 conv) shared by P2..P5.
Choices: `num_layers=2` convs, the first FPN channels -> 128, the second 128 -> 128 (the release's
Cityscapes setting; its COCO setting uses 3, the extra first one keeping 256 channels: `num_layers=3`),
each followed by GroupNorm(32) + ReLU (`norm=True`, the task's choice; the release's configs run without
normalisation: `norm=False`). Each level's output is bilinearly upsampled (align_corners=False) to P2's
size (= 2x, 4x, 8x when the input divides by 32), the four maps concatenated (4 x 128 = 512 channels)
and a 1x1 conv gives the logits of all classes (stuff first, then things) at stride 4. Init as the
release: deformable weights He-normal, offsets zero, the 1x1 score conv N(0, 0.01). The paper's RoI loss
option is `roi_logits`: the concatenated features are RoIAligned to 28x28 over ground-truth boxes and
scored by the same 1x1 conv (the release's `fcn_roi_score`, trained with cross-entropy against the
semantic labels cropped to the box: `labels_in_boxes`).

`UPSNetPanopticHead` (Sec. 3.2), parameter-free. From the semantic logits X (C, H, W) split into X_stuff
(the first `num_stuff` channels) and X_thing, and K instances (boxes, thing labels, mask logits), it
builds the panoptic logits Z (num_stuff + K (+ 1), H, W):
- Z_stuff = X_stuff;
- Z_{num_stuff + i} = Y_i + X_thing[label_i] cropped to box_i, where Y_i is the instance's 28x28 mask
  logits pasted into its box (bilinear, `paste_masks_in_image(padding=0)`) and both terms are zero
  outside the box (the release's MaskTerm / SegTerm: zero-initialised maps written inside the box; a
  pixel belongs to a box when its centre lies in it). Already pasted (K, H, W) mask logits are taken as
  they are (`pasted=True`, or by default when their size equals the logits' H x W);
- with `unknown=True`, one more channel: Z_unknown = max over the thing channels of X - max over i of
  the cropped X_thing[label_i] (the release's `void_logits`; an image without instances subtracts 0).
  It is large where the semantic head sees a thing that no instance explains.
Training (`panoptic_target`): cross-entropy of Z against a per-pixel target: a stuff class index, the
slot num_stuff + i of the instance covering the pixel, `ignore_index` for void; thing pixels that no
slot covers (instances dropped on purpose: the release keeps a random 70% of the ground-truth boxes)
get the unknown class. As in the release, the slots are the ground-truth instances (gt boxes, the mask
head's logits on them) and the loss is taken at the semantic logits' stride-4 resolution.
Inference (`predict`): argmax of Z (the softmax does not change it); unknown pixels become void;
stuff segments smaller than `stuff_area_limit` become void (the release's panoptic_stuff_area_limit,
4096 at COCO scale). `select_instances` is the release's instance filtering before the head: score >=
0.6, class-agnostic NMS 0.5, and removal of a mask whose foreground overlaps the already kept masks of
its class by more than 0.3 of its area.

Labels: thing labels are 0..num_things-1; a `PanopticResult`'s category_id is the contiguous class
index over stuff then things (stuff c -> c, thing t -> num_stuff + t), the layout of the "semantic" target.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import SeglabError
from ...layers.deform_conv import DeformConv2d
from ...layers.mask_paste import paste_masks_in_image
from ...layers.nms import nms
from ...layers.roi_align import roi_align
from ...structures import PanopticResult

__all__ = ["DeformableSemanticHead", "UPSNetPanopticHead", "labels_in_boxes", "select_instances"]


class DeformableSemanticHead(nn.Module):
    """P2..P5 -> shared deformable subnet -> upsample to P2 -> concat -> 1x1 conv: (N, C, H/4, W/4)."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int = 128, num_layers: int = 2,
                 num_levels: int = 4, norm: bool = True):
        super().__init__()
        if num_layers < 1:
            raise SeglabError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        width = in_channels
        for i in range(num_layers):
            # As the release: all but the last two layers keep the input width, then in -> 128 -> 128.
            out = in_channels if i < num_layers - 2 else channels
            layers.append(DeformConv2d(width, out, 3, padding=1, bias=not norm))
            if norm:
                layers.append(nn.GroupNorm(math.gcd(32, out), out))
            layers.append(nn.ReLU(inplace=True))
            width = out
        self.subnet = nn.Sequential(*layers)
        self.num_levels = num_levels
        self.score = nn.Conv2d(num_levels * channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, DeformConv2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.score.weight, 0.0, 0.01)
        nn.init.zeros_(self.score.bias)

    def features(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        """The concatenated stride-4 features (N, num_levels * channels, H2, W2) of P2..P5."""
        if len(pyramid) < self.num_levels:
            raise SeglabError(f"the semantic head reads {self.num_levels} pyramid levels, got {len(pyramid)}")
        size = pyramid[0].shape[-2:]
        maps = []
        for level in pyramid[:self.num_levels]:
            x = self.subnet(level)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            maps.append(x)
        return torch.cat(maps, dim=1)

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.score(self.features(pyramid))

    def roi_logits(self, features: torch.Tensor, boxes: Sequence[torch.Tensor], spatial_scale: float,
                   output_size: int = 28) -> torch.Tensor:
        """The RoI-loss logits (R, C, S, S): `features` RoIAligned over per-image `boxes` (image pixels)."""
        pooled = roi_align(features, list(boxes), output_size, spatial_scale, sampling_ratio=2, aligned=True)
        return self.score(pooled)


def labels_in_boxes(labels: torch.Tensor, boxes: torch.Tensor, output_size: int = 28) -> torch.Tensor:
    """The (H, W) label map sampled at the centres of an S x S grid in each (K, 4) box (nearest pixel):
    (K, S, S) int64, the RoI-loss target matching `roi_logits`'s aligned bins."""
    height, width = labels.shape
    steps = (torch.arange(output_size, device=boxes.device, dtype=torch.float32) + 0.5) / output_size
    b = boxes.float()
    ys = b[:, 1:2] + steps * (b[:, 3:4] - b[:, 1:2])
    xs = b[:, 0:1] + steps * (b[:, 2:3] - b[:, 0:1])
    rows = ys.floor().long().clamp(0, height - 1)
    cols = xs.floor().long().clamp(0, width - 1)
    return labels[rows[:, :, None], cols[:, None, :]]


def _box_masks(boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(K, H, W) bool: pixels whose centre lies in the box (edges included), as paste with padding 0."""
    height, width = int(size[0]), int(size[1])
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    in_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] <= boxes[:, 3:4])
    in_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] <= boxes[:, 2:3])
    return in_y[:, :, None] & in_x[:, None, :]


class UPSNetPanopticHead(nn.Module):
    """Parameter-free panoptic head: `forward(semantic_logits, boxes, labels, mask_logits)` -> panoptic
    logits (num_stuff + K (+1 unknown), H, W) for one image; `panoptic_target`, `loss`, `predict`."""

    def __init__(self, num_stuff: int, num_things: int, *, unknown: bool = True, ignore_index: int = 255):
        super().__init__()
        if num_stuff < 0 or num_things < 1:
            raise SeglabError(f"need num_stuff >= 0 and num_things >= 1, got {num_stuff} and {num_things}")
        self.num_stuff, self.num_things = num_stuff, num_things
        self.unknown, self.ignore_index = unknown, ignore_index

    def forward(self, semantic_logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                mask_logits: torch.Tensor, *, pasted: bool | None = None) -> torch.Tensor:
        """semantic_logits (num_stuff + num_things, H, W); boxes (K, 4) xyxy in that grid's pixels; labels
        (K,) thing index; mask_logits (K, M, M) of the label's channel to paste, or already pasted (K, H, W)
        (`pasted=None` decides by the size: pass it when M x M could equal H x W)."""
        channels, height, width = semantic_logits.shape
        if channels != self.num_stuff + self.num_things:
            raise SeglabError(f"semantic logits have {channels} channels, expected num_stuff + num_things = "
                              f"{self.num_stuff + self.num_things}")
        k = boxes.shape[0]
        if labels.shape != (k,) or mask_logits.shape[0] != k:
            raise SeglabError(f"{k} boxes need {k} labels and {k} mask logits, got {tuple(labels.shape)} and "
                              f"{tuple(mask_logits.shape)}")
        stuff = semantic_logits[:self.num_stuff]
        things = semantic_logits[self.num_stuff:]
        boxes = boxes.to(semantic_logits.dtype)
        inside = _box_masks(boxes, (height, width))
        cropped = things[labels.long()] * inside  # X_thing[label_i] inside box_i, zero outside
        mask_logits = mask_logits.to(semantic_logits.dtype)
        if pasted is None:
            pasted = mask_logits.shape[-2:] == (height, width)
        if pasted and mask_logits.shape[-2:] != (height, width):
            raise SeglabError(f"pasted mask logits must be (K, {height}, {width}), got {tuple(mask_logits.shape)}")
        if not pasted:
            mask_logits = paste_masks_in_image(mask_logits, boxes, (height, width), padding=0)
        parts = [stuff, mask_logits * inside + cropped]
        if self.unknown:
            explained = cropped.max(dim=0).values if k else semantic_logits.new_zeros(height, width)
            parts.append((things.max(dim=0).values - explained)[None])
        return torch.cat(parts, dim=0)

    def panoptic_target(self, semantic: torch.Tensor, instance_masks: torch.Tensor,
                        ignore_masks: torch.Tensor | None = None) -> torch.Tensor:
        """(H, W) int64 target for K instance slots: stuff class of `semantic` (contiguous, stuff first,
        `ignore_index` void), num_stuff + i under slot i's mask (a later slot wins an overlap), the
        unknown class (or ignore) on the remaining thing pixels, ignore under `ignore_masks` (crowd)."""
        semantic = semantic.long()
        void = semantic == self.ignore_index
        target = torch.full_like(semantic, self.ignore_index)
        is_stuff = (semantic >= 0) & (semantic < self.num_stuff)
        target[is_stuff] = semantic[is_stuff]
        unclaimed_thing = (semantic >= self.num_stuff) & ~void
        if self.unknown:
            target[unclaimed_thing] = self.num_stuff + instance_masks.shape[0]
        for i, mask in enumerate(instance_masks.bool()):
            target[mask] = self.num_stuff + i
        if ignore_masks is not None and ignore_masks.numel():
            target[ignore_masks.bool().any(dim=0)] = self.ignore_index
        return target

    def loss(self, panoptic_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Pixel-averaged cross-entropy over the non-void pixels (0 with a graph when all are void)."""
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return panoptic_logits.sum() * 0.0
        return F.cross_entropy(panoptic_logits[None], target[None], ignore_index=self.ignore_index)

    @torch.no_grad()
    def predict(self, panoptic_logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None = None,
                *, stuff_area_limit: int = 0) -> PanopticResult:
        """Per-pixel argmax -> `PanopticResult` (segment 0 = void: unknown pixels and small stuff)."""
        winner = panoptic_logits.argmax(dim=0)
        k = labels.shape[0]
        segments = torch.zeros(winner.shape, dtype=torch.int32, device=winner.device)
        infos: list[dict] = []
        counts = torch.bincount(winner.flatten(), minlength=panoptic_logits.shape[0]).tolist()
        for i in range(k):  # instances, in slot order
            area = counts[self.num_stuff + i]
            if area == 0:
                continue
            segments[winner == self.num_stuff + i] = len(infos) + 1
            info = {"id": len(infos) + 1, "category_id": self.num_stuff + int(labels[i]), "isthing": True,
                    "area": area}
            if scores is not None:
                info["score"] = float(scores[i])
            infos.append(info)
        for c in range(self.num_stuff):
            area = counts[c]
            if area == 0 or area < stuff_area_limit:
                continue
            segments[winner == c] = len(infos) + 1
            infos.append({"id": len(infos) + 1, "category_id": c, "isthing": False, "area": area})
        return PanopticResult(segments=segments, segments_info=infos)


def select_instances(boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, masks: torch.Tensor, *,
                     score_thresh: float = 0.6, nms_thresh: float = 0.5,
                     overlap_thresh: float = 0.3) -> torch.Tensor:
    """Indices of the detections the panoptic head uses, in decreasing score: score >= score_thresh,
    class-agnostic NMS, then a mask (K, H, W bool) is dropped when more than `overlap_thresh` of its
    pixels are already covered by kept masks of the same class (the release's MaskRemoval)."""
    candidates = torch.nonzero(scores >= score_thresh).flatten()
    if candidates.numel() == 0:
        return candidates
    candidates = candidates[nms(boxes[candidates].float(), scores[candidates].float(), nms_thresh)]
    taken: dict[int, torch.Tensor] = {}
    keep = []
    for idx in candidates.tolist():
        mask = masks[idx].bool()
        area = int(mask.sum())
        label = int(labels[idx])
        covered = int((mask & taken[label]).sum()) if label in taken else 0
        if area == 0 or covered / area > overlap_thresh:
            continue
        keep.append(idx)
        taken[label] = taken[label] | mask if label in taken else mask.clone()
    return torch.tensor(keep, dtype=torch.long, device=scores.device)
