"""Region Proposal Network: Ren, He, Girshick & Sun, "Faster R-CNN: Towards Real-Time Object Detection
with Region Proposal Networks", NeurIPS 2015, Sec. 3.1; its FPN form: Lin, Dollar, Girshick, He,
Hariharan & Belongie, "Feature Pyramid Networks for Object Detection", CVPR 2017, Sec. 4.1.

A 3x3 conv (+ ReLU) slides over every feature level and two sibling 1x1 convs predict, for each of the
A anchors of a location, an objectness logit and 4 box deltas; the head is shared by all levels (FPN).
Choices follow torchvision's `torchvision/models/detection/rpn.py`, so its checkpoints load key for key
(`rpn.head.conv.0.0.*`, `rpn.head.cls_logits.*`, `rpn.head.bbox_pred.*`):
- training targets: an anchor is positive at IoU >= 0.7 with a ground-truth box or when it is a box's
  best anchor, negative below 0.3, ignored in between; 256 anchors per image, up to half positive;
  crowd boxes are dropped before matching (torchvision has no crowd handling; Detectron ignores them);
- losses: binary cross-entropy averaged over the sampled anchors, and smooth-L1 (beta 1/9) over the
  sampled positives' deltas (box coder weights 1, 1, 1, 1), summed and divided by the sampled count;
- proposals: per level the `pre_nms_top_n` highest objectness anchors, decoded, clipped to the image,
  small (< `min_size`) and low-score (sigmoid < `score_thresh`) boxes removed, NMS at 0.7 per level,
  then the `post_nms_top_n` best overall (2000/1000 train/test per image, as torchvision's Mask R-CNN;
  the FPN paper keeps 2000 per level in training, torchvision per image).
Deviation: torchvision computes the losses only in training mode; here they are computed whenever
targets are given. The RPN gets no padded image tensor, so each level's stride is taken as the power of
two that maps the feature size onto the largest image (exact when images are padded to a multiple of
the coarsest stride, as torchvision pads); `strides=` states them explicitly instead.
`proposal_grad=True` (MNC's cascade, Dai et al., CVPR 2016, Sec. 3.4) keeps the proposals on the
autograd graph of the box deltas, so that a later stage that reads features at the proposals through
a differentiable RoI warping layer trains the RPN's box regression too; by default they are detached.
`proposal_grad_clip` then clamps the gradient that reaches each box delta that way (the MNC release: 1/512).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, SeglabError
from ...layers import (
    AnchorGenerator,
    BoxCoder,
    batched_nms,
    box_iou,
    clamp_gradient,
    clip_boxes_to_image,
    remove_small_boxes,
)
from .sampling import BalancedPositiveNegativeSampler, Matcher

__all__ = ["RPNHead", "RegionProposalNetwork"]


class RPNHead(nn.Module):
    """Shared conv + objectness and box-delta predictors: `forward(features)` ->
    (per level (N, A, H, W) logits, per level (N, 4A, H, W) deltas)."""

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1):
        super().__init__()
        # nn.Sequential(Conv, ReLU) per conv gives torchvision's `conv.0.0.weight` keys.
        self.conv = nn.Sequential(*(nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1),
                                                  nn.ReLU(inplace=True)) for _ in range(conv_depth)))
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for feature in features:
            t = self.conv(feature)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def flatten_levels(maps: Sequence[torch.Tensor], values_per_anchor: int) -> torch.Tensor:
    """(N, A*C, H, W) per level -> (N, sum_i H_i W_i A, C), anchors ordered (level, y, x, anchor) as
    the AnchorGenerator lays them out."""
    flat = []
    for m in maps:
        n, _, h, w = m.shape
        flat.append(m.view(n, -1, values_per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, values_per_anchor))
    return torch.cat(flat, dim=1)


class RegionProposalNetwork(nn.Module):
    """`forward(features, image_sizes, targets=None)` -> (proposals per image (K_i, 4) xyxy, losses).

    `features` has one map per level (in the order of `anchor_sizes`), all images padded to one size;
    `image_sizes` are the true (h, w) of the images, used to clip the proposals. `strides` (optional)
    gives each level's stride in pixels; by default it is inferred (see the module docstring).
    """

    def __init__(self, in_channels: int, *, anchor_sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,)),
                 aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = (0.5, 1.0, 2.0),
                 fg_iou_thresh: float = 0.7, bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256,
                 positive_fraction: float = 0.5, pre_nms_top_n_train: int = 2000, pre_nms_top_n_test: int = 1000,
                 post_nms_top_n_train: int = 2000, post_nms_top_n_test: int = 1000, nms_thresh: float = 0.7,
                 score_thresh: float = 0.0, min_size: float = 1e-3, strides: Sequence[int] | None = None,
                 proposal_grad: bool = False, proposal_grad_clip: float | None = None):
        super().__init__()
        self.proposal_grad, self.proposal_grad_clip = bool(proposal_grad), proposal_grad_clip
        self.anchor_generator = AnchorGenerator(anchor_sizes, aspect_ratios)
        per_location = self.anchor_generator.num_anchors_per_location()
        if len(set(per_location)) != 1:
            raise ConfigError(f"RPN: every level needs the same number of anchors per location (one shared "
                              f"head), got {per_location} from anchor_sizes and aspect_ratios")
        self.num_levels = len(per_location)
        if strides is not None and len(strides) != self.num_levels:
            raise ConfigError(f"RPN: strides {tuple(strides)} must give one stride per anchor level "
                              f"({self.num_levels})")
        self.strides = None if strides is None else tuple(int(s) for s in strides)
        self.head = RPNHead(in_channels, per_location[0])
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self._pre_nms_top_n = {"training": int(pre_nms_top_n_train), "testing": int(pre_nms_top_n_test)}
        self._post_nms_top_n = {"training": int(post_nms_top_n_train), "testing": int(post_nms_top_n_test)}
        self.nms_thresh, self.score_thresh, self.min_size = float(nms_thresh), float(score_thresh), float(min_size)

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    def level_strides(self, grid_sizes: Sequence[tuple[int, int]],
                      image_sizes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """(stride_y, stride_x) per level: `strides` if given, else the smallest power of two >= the
        ratio of the largest image side to the feature side (a feature map of ceil(size / s) cells
        gives a ratio in (s/2, s] whenever it has two cells or more)."""
        if self.strides is not None:
            return [(s, s) for s in self.strides]
        max_h = max(int(s[0]) for s in image_sizes)
        max_w = max(int(s[1]) for s in image_sizes)

        def power_of_two(ratio: float) -> int:
            return 2 ** max(0, math.ceil(math.log2(ratio) - 1e-9))

        return [(power_of_two(max_h / h), power_of_two(max_w / w)) for h, w in grid_sizes]

    def forward(self, features: Sequence[torch.Tensor], image_sizes: Sequence[tuple[int, int]],
                targets: Sequence[dict] | None = None) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        if len(features) != self.num_levels:
            raise SeglabError(f"RPN built with {self.num_levels} anchor levels (len(anchor_sizes)), "
                              f"got {len(features)} feature maps")
        num_images = features[0].shape[0]
        if len(image_sizes) != num_images or (targets is not None and len(targets) != num_images):
            raise SeglabError(f"RPN: {num_images} images in the features but {len(image_sizes)} image sizes"
                              + ("" if targets is None else f" and {len(targets)} targets"))
        logits, deltas = self.head(features)
        grid_sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        # Boxes stay float32 under bf16 autocast: bf16 would round COCO-size coordinates to ~4 pixels.
        anchors_per_level = self.anchor_generator.grid_anchors(
            grid_sizes, self.level_strides(grid_sizes, image_sizes), torch.float32, features[0].device)
        anchors = torch.cat(anchors_per_level)  # shared by every image of the padded batch
        objectness = flatten_levels(logits, 1).squeeze(-1).float()  # (N, total anchors)
        box_deltas = flatten_levels(deltas, 4).float()  # (N, total anchors, 4)

        deltas_for_proposals = (clamp_gradient(box_deltas, self.proposal_grad_clip) if self.proposal_grad
                                else box_deltas.detach())
        decoded = self.box_coder.decode_single(deltas_for_proposals.reshape(-1, 4),
                                               anchors.repeat(num_images, 1)).view(num_images, -1, 4)
        proposals = self.select_proposals(decoded, objectness.detach(), image_sizes,
                                          [len(a) for a in anchors_per_level])
        if targets is None:
            return proposals, {}
        labels, regression_targets = self.assign_targets(anchors, targets)
        return proposals, self.compute_loss(objectness, box_deltas, labels, regression_targets)

    def select_proposals(self, boxes: torch.Tensor, objectness: torch.Tensor,
                         image_sizes: Sequence[tuple[int, int]], anchors_per_level: list[int]) -> list[torch.Tensor]:
        """Top-k per level, clip, drop small / low-score boxes, per-level NMS, top-k overall."""
        levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=boxes.device)
                            for i, n in enumerate(anchors_per_level)])
        top_idx, offset = [], 0
        for level_scores in objectness.split(anchors_per_level, dim=1):
            k = min(self.pre_nms_top_n(), level_scores.shape[1])
            top_idx.append(level_scores.topk(k, dim=1).indices + offset)
            offset += level_scores.shape[1]
        top_idx = torch.cat(top_idx, dim=1)  # (N, k_total)
        batch = torch.arange(boxes.shape[0], device=boxes.device)[:, None]
        boxes, scores, levels = boxes[batch, top_idx], torch.sigmoid(objectness[batch, top_idx]), levels[top_idx]
        proposals = []
        for img_boxes, img_scores, img_levels, size in zip(boxes, scores, levels, image_sizes):
            img_boxes = clip_boxes_to_image(img_boxes, size)
            keep = remove_small_boxes(img_boxes, self.min_size)
            keep = keep[img_scores[keep] >= self.score_thresh]
            img_boxes, img_scores, img_levels = img_boxes[keep], img_scores[keep], img_levels[keep]
            keep = batched_nms(img_boxes, img_scores, img_levels, self.nms_thresh)[: self.post_nms_top_n()]
            proposals.append(img_boxes[keep])
        return proposals

    def assign_targets(self, anchors: torch.Tensor, targets: Sequence[dict]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: labels (A,) float 1 / 0 / -1 (positive, negative, ignored) and the regression
        targets (A, 4) that move each anchor onto its matched ground-truth box."""
        labels, regression_targets = [], []
        for target in targets:
            gt_boxes = target["boxes"].to(anchors)
            crowd = target.get("iscrowd")
            if crowd is not None and len(crowd):
                gt_boxes = gt_boxes[~crowd.to(torch.bool, copy=False).to(gt_boxes.device)]
            if gt_boxes.numel() == 0:  # no objects: every anchor is background
                labels.append(torch.zeros(len(anchors), dtype=anchors.dtype, device=anchors.device))
                regression_targets.append(torch.zeros_like(anchors))
                continue
            matched = self.proposal_matcher(box_iou(gt_boxes, anchors))
            image_labels = (matched >= 0).to(anchors.dtype)
            image_labels[matched == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(image_labels)
            regression_targets.append(self.box_coder.encode_single(gt_boxes[matched.clamp(min=0)], anchors))
        return labels, regression_targets

    def compute_loss(self, objectness: torch.Tensor, box_deltas: torch.Tensor, labels: list[torch.Tensor],
                     regression_targets: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos_masks))[0]
        sampled = torch.cat([pos, torch.where(torch.cat(neg_masks))[0]])
        labels_flat, targets_flat = torch.cat(labels), torch.cat(regression_targets)
        box_loss = F.smooth_l1_loss(box_deltas.reshape(-1, 4)[pos], targets_flat[pos], beta=1 / 9,
                                    reduction="sum") / max(1, sampled.numel())
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.reshape(-1)[sampled], labels_flat[sampled])
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}
