"""UPSNet: Xiong, Liao, Zhao, Hu, Bai, Yumer & Urtasun, "UPSNet: A Unified Panoptic Segmentation
Network", CVPR 2019 (Sec. 3, Fig. 2), checked against the authors' release (uber-research/UPSNet,
models/resnet_upsnet.py, experiments/upsnet_resnet50_coco_*.yaml).

One trunk + FPN (P2..P6) feeds three heads:
- the instance head: Mask R-CNN (`seglab.models.mask_rcnn.MaskRCNN`: RPN, box and mask heads, Sec. 3.1);
- the semantic head: `seglab.heads.panoptic.DeformableSemanticHead` (deformable-conv subnet shared by
  P2..P5, 4 x 128 channels concatenated at stride 4, 1x1 conv) over all classes, stuff first then things;
- the parameter-free panoptic head `seglab.heads.panoptic.UPSNetPanopticHead` (Sec. 3.2) with the unknown
  class.
Training losses (the release's COCO setting, the task's defaults): Mask R-CNN's five losses (weight 1);
`loss_semantic`: cross-entropy of the semantic logits upsampled 4x (bilinear) to the input, weight 0.2;
`loss_semantic_roi`: the RoI loss (the semantic head's logits RoIAligned to 28x28 over the ground-truth
boxes, cross-entropy against the labels there), weight 0.2 x 0.2 = 0.04 (0 turns it off, as the
release's Cityscapes setting); `loss_panoptic`: the panoptic head's cross-entropy, weight 0.1. For the
panoptic loss the instance slots are a random `box_keep_fraction` = 70% (at least one) of the image's
non-crowd ground-truth instances, with their ground-truth boxes and the mask head's logits on them; the
pixels of the dropped ones are the unknown class's target; crowd pixels are ignored; the loss is taken
at the semantic logits' stride-4 grid (targets sampled at the grid cells' centres), as the release does.
Inference: Mask R-CNN's detections (score > 0.05, per-class NMS, 100 per image) are filtered as the
release (`select_instances`: score >= 0.6, class-agnostic NMS 0.5, same-class mask overlap > 0.3
dropped); their mask logits are pasted at the image size (bilinear inside the box, zero outside) and
the panoptic head's argmax over [stuff, instances, unknown] at the image size gives the segments;
unknown pixels are void, stuff segments under `stuff_area_limit` (4096 at COCO scale) are void.
Targets per image: the instance keys of `seglab.data.instances` ("boxes", "labels" thing index, "masks",
"iscrowd") and "semantic" (H, W): contiguous classes, stuff 0..S-1 then things S..S+T-1, 255 void.
Results: one `PanopticResult` per image at its own size, category_id the contiguous class index.

Deviations: the trunk is a plain ResNet (the release's COCO model adds deformable convs in the trunk:
`backbone_with_dconv`); BatchNorm in the trunk is trained (the release freezes it); the semantic subnet
uses GroupNorm by default (`semantic_norm`; the release's configs have none); gradient clipping and
the schedule belong to the trainer.

Model kwargs: `num_classes` = stuff + thing classes and `num_things` (the last num_things classes);
Mask R-CNN's kwargs; semantic_channels (128), semantic_layers (2), semantic_norm, unknown,
box_keep_fraction, semantic_loss_weight, roi_loss_weight, panoptic_loss_weight, panoptic_score_thresh,
panoptic_nms_thresh, panoptic_overlap_thresh, stuff_area_limit; the rest go to the trunk (`width`).
Parameter counts (tests/models/test_panoptic_models.py): `upsnet_resnet50` at COCO's 133 classes (80
things) 44,974,046 = Mask R-CNN R50-FPN at 80 thing classes (44,400,693) + the semantic head (573,353);
the panoptic head has none. The paper and the release publish no count.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..heads.panoptic.upsnet import (
    DeformableSemanticHead,
    UPSNetPanopticHead,
    labels_in_boxes,
    select_instances,
)
from ..layers import paste_masks_in_image, resize_to
from ..registry import register_model
from .mask_rcnn import MaskRCNN, check_instance_targets
from .panoptic_fpn import IGNORE, build_panoptic, semantic_batch, semantic_loss

__all__ = ["UPSNet"]


def _sample_grid(maps: torch.Tensor, scale: float, grid: Sequence[int]) -> torch.Tensor:
    """(..., h, w) image-resolution maps sampled at the centres of a `grid` of cells of 1/scale pixels
    (nearest pixel, clamped to the image): the stride-4 targets of the panoptic loss."""
    h, w = maps.shape[-2:]
    rows = ((torch.arange(grid[0], device=maps.device) + 0.5) / scale).long().clamp(max=h - 1)
    cols = ((torch.arange(grid[1], device=maps.device) + 0.5) / scale).long().clamp(max=w - 1)
    return maps[..., rows[:, None], cols[None, :]]


class UPSNet(MaskRCNN):
    """Mask R-CNN + deformable semantic head (all classes) + parameter-free panoptic head."""

    def __init__(self, backbone: nn.Module, num_stuff: int, num_things: int, *, semantic_channels: int = 128,
                 semantic_layers: int = 2, semantic_norm: bool = True, unknown: bool = True,
                 box_keep_fraction: float = 0.7, semantic_loss_weight: float = 0.2, roi_loss_weight: float = 0.04,
                 panoptic_loss_weight: float = 0.1, panoptic_score_thresh: float = 0.6,
                 panoptic_nms_thresh: float = 0.5, panoptic_overlap_thresh: float = 0.3,
                 stuff_area_limit: int = 4096, **mask_rcnn_kwargs):
        super().__init__(backbone, num_things, **mask_rcnn_kwargs)
        self.num_stuff, self.num_things = num_stuff, num_things
        self.num_classes = num_stuff + num_things
        self.semantic_head = DeformableSemanticHead(self.fpn.out_channels[0], self.num_classes,
                                                    channels=semantic_channels, num_layers=semantic_layers,
                                                    num_levels=self.roi_levels, norm=semantic_norm)
        self.panoptic_head = UPSNetPanopticHead(num_stuff, num_things, unknown=unknown, ignore_index=IGNORE)
        self.box_keep_fraction = box_keep_fraction
        self.semantic_loss_weight, self.roi_loss_weight = semantic_loss_weight, roi_loss_weight
        self.panoptic_loss_weight = panoptic_loss_weight
        self.panoptic_score_thresh, self.panoptic_nms_thresh = panoptic_score_thresh, panoptic_nms_thresh
        self.panoptic_overlap_thresh, self.stuff_area_limit = panoptic_overlap_thresh, stuff_area_limit

    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes, pyramid = self.extract_features(images)
        levels = pyramid[:self.roi_levels]
        features = self.semantic_head.features(levels)
        semantic = self.semantic_head.score(features)  # stride 4
        if targets is None:
            return self._inference(batch, sizes, pyramid, semantic)
        instances = check_instance_targets(targets, sizes, batch.device)  # crowd instances dropped
        proposals, rpn_losses = self.rpn(pyramid, sizes, instances)
        _, roi_losses = self.roi_heads(levels, proposals, sizes, instances)
        labels = semantic_batch(targets, batch.shape[-2:], batch.device)
        losses = {**rpn_losses, **roi_losses,
                  "loss_semantic": self.semantic_loss_weight * semantic_loss(resize_to(semantic, batch.shape[-2:]),
                                                                             labels)}
        scale = semantic.shape[-1] / batch.shape[-1]
        if self.roi_loss_weight > 0:
            boxes = [t["boxes"] for t in instances]
            if sum(len(b) for b in boxes):
                roi_logits = self.semantic_head.roi_logits(features, boxes, scale)
                roi_labels = torch.cat([labels_in_boxes(labels[i], b) for i, b in enumerate(boxes) if len(b)])
                losses["loss_semantic_roi"] = self.roi_loss_weight * semantic_loss(roi_logits, roi_labels)
            else:
                losses["loss_semantic_roi"] = semantic.sum() * 0.0
        losses["loss_panoptic"] = self.panoptic_loss_weight * self._panoptic_loss(
            targets, instances, labels, sizes, levels, semantic, scale)
        return losses

    def _panoptic_loss(self, targets, instances, labels, sizes, levels, semantic, scale) -> torch.Tensor:
        """Mean over images of the panoptic head's loss on a random subset of the gt instances."""
        kept = []
        for t in instances:
            k = len(t["boxes"])
            count = max(int(k * self.box_keep_fraction), 1) if k else 0
            kept.append(torch.randperm(k, device=t["boxes"].device)[:count].sort().values)
        boxes = [t["boxes"][idx] for t, idx in zip(instances, kept)]
        things = [t["labels"][idx] for t, idx in zip(instances, kept)]
        logits = self.roi_heads.mask_forward(levels, boxes, sizes)  # (R, C + 1, 28, 28), background 0
        all_things = torch.cat(things)
        mask_logits = logits[torch.arange(len(all_things), device=logits.device), all_things + 1]
        losses = []
        for i, (t, idx, masks, (h, w)) in enumerate(zip(instances, kept, mask_logits.split([len(b) for b in boxes]),
                                                        sizes)):
            grid = (math.ceil(h * scale), math.ceil(w * scale))
            raw = targets[i]
            crowd = torch.as_tensor(raw.get("iscrowd", torch.zeros(0)), device=labels.device).bool()
            crowd_masks = None
            if crowd.any():
                crowd_masks = _sample_grid(torch.as_tensor(raw["masks"], device=labels.device).bool()[crowd],
                                           scale, grid)
            target = self.panoptic_head.panoptic_target(_sample_grid(labels[i, :h, :w], scale, grid),
                                                        _sample_grid(t["masks"][idx], scale, grid), crowd_masks)
            z = self.panoptic_head(semantic[i, :, :grid[0], :grid[1]], boxes[i] * scale, things[i], masks,
                                   pasted=False)
            losses.append(self.panoptic_head.loss(z, target))
        return torch.stack(losses).mean()

    @torch.no_grad()
    def _inference(self, batch, sizes, pyramid, semantic) -> list:
        proposals, _ = self.rpn(pyramid, sizes)
        detections, _ = self.roi_heads(pyramid[:self.roi_levels], proposals, sizes)
        semantic = resize_to(semantic, batch.shape[-2:])
        results = []
        for i, (d, (h, w)) in enumerate(zip(detections, sizes)):
            pasted = paste_masks_in_image(d["mask_logits"], d["boxes"], (h, w), padding=0)
            keep = select_instances(d["boxes"], d["labels"], d["scores"], pasted > 0,
                                    score_thresh=self.panoptic_score_thresh, nms_thresh=self.panoptic_nms_thresh,
                                    overlap_thresh=self.panoptic_overlap_thresh)
            z = self.panoptic_head(semantic[i, :, :h, :w], d["boxes"][keep], d["labels"][keep], pasted[keep],
                                   pasted=True)
            results.append(self.panoptic_head.predict(z, d["labels"][keep], d["scores"][keep],
                                                      stuff_area_limit=self.stuff_area_limit))
        return results


_OWN = ("semantic_channels", "semantic_layers", "semantic_norm", "unknown", "box_keep_fraction",
        "semantic_loss_weight", "roi_loss_weight", "panoptic_loss_weight", "panoptic_score_thresh",
        "panoptic_nms_thresh", "panoptic_overlap_thresh", "stuff_area_limit")


@register_model(task="panoptic")
def upsnet_resnet50(*, num_classes: int, num_things: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = False, **kwargs) -> UPSNet:
    """UPSNet on ResNet-50-FPN (Xiong et al., CVPR 2019): `num_classes` stuff + thing classes, the last
    `num_things` of them things; kwargs: see the module docstring; the rest go to the trunk (`width`)."""
    return build_panoptic(UPSNet, "resnet50", num_classes, num_things, in_channels, backbone_weights, aux_loss,
                          kwargs, _OWN)


@register_model(task="panoptic")
def upsnet_resnet18(*, num_classes: int, num_things: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = False, **kwargs) -> UPSNet:
    """UPSNet on ResNet-18-FPN; kwargs as for upsnet_resnet50."""
    return build_panoptic(UPSNet, "resnet18", num_classes, num_things, in_channels, backbone_weights, aux_loss,
                          kwargs, _OWN)
