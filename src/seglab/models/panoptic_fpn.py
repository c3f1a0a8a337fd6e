"""Panoptic FPN: Kirillov, Girshick, He & Dollar, "Panoptic Feature Pyramid Networks", CVPR 2019.

Mask R-CNN (`seglab.models.mask_rcnn.MaskRCNN`: trunk, FPN P2..P6, RPN, RoI heads) and the FPN semantic
branch (`seglab.models.fpn_semantic.SemanticFPNHead`, Sec. 3.2 / Fig. 3: per level 3x3 conv 128 + GN +
ReLU + 2x upsampling stages to stride 4, summed, 1x1 conv, 4x bilinear upsampling) share the pyramid.
Choices, as the paper and Detectron2's `PanopticFPN` (the authors' release):
- the semantic branch predicts the `num_stuff` stuff classes plus one "things" class (Sec. 3.2: "an
  'other' class for all pixels belonging to objects"), class num_stuff here; its loss is per-pixel
  cross-entropy at the input size (void 255 ignored) weighted by lambda_s = 0.5 (the task's COCO
  setting; Sec. 3.3 "L = lambda_i (L_c + L_b + L_m) + lambda_s L_s", lambda_i = 1);
- inference: `seglab.inference.panoptic_fusion.panoptic_fpn_merge` (Sec. 4's heuristic: instances by
  score >= 0.5, dropped when more than 0.5 of the mask is already taken, then stuff of the semantic
  argmax on free pixels with area >= `stuff_area_limit` = 4096, COCO scale).
Targets per image: the instance keys of `seglab.data.instances` ("boxes", "labels" thing index 0..T-1,
"masks", "iscrowd") plus "semantic" (H, W) contiguous classes, stuff 0..S-1 first then things S..S+T-1,
255 void (`seglab.data.datasets.coco_panoptic`). Crowd instances are left out of the instance losses
(Mask R-CNN); their pixels keep their semantic class (a thing: the "things" class).
Results: one `PanopticResult` per image at its own size; category_id is the contiguous class index
(stuff c -> c, thing t -> num_stuff + t).

Model kwargs: `num_classes` = stuff + thing classes (the "semantic" target's classes) and `num_things`
(things are the last `num_things` classes); Mask R-CNN's kwargs (fpn_channels, representation_size,
mask_channels, anchor_sizes, rpn_* / box_* ...); `semantic_channels` (128), `semantic_loss_weight`,
`panoptic_score_thresh`, `panoptic_overlap_thresh`, `stuff_area_limit`; the rest go to the trunk (`width`).

Parameter counts (tests/models/test_panoptic_models.py): `panoptic_fpn_resnet50` at COCO's 133 classes
(80 things) 46,031,467 = Mask R-CNN R50-FPN at 80 thing classes (44,400,693) + the semantic branch at
53 + 1 classes (1,630,774); Detectron2 and the paper publish no count.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..inference.panoptic_fusion import panoptic_fpn_merge
from ..layers import resize_to
from ..registry import register_model
from .fpn_semantic import SemanticFPNHead
from .mask_rcnn import MaskRCNN, check_instance_targets

__all__ = ["PanopticFPN", "build_panoptic", "semantic_batch"]

IGNORE = 255
_MASK_RCNN_KWARGS = frozenset(p for p in inspect.signature(MaskRCNN).parameters
                              if p not in ("backbone", "num_classes"))


def semantic_batch(targets: Sequence[dict], size: Sequence[int], device, ignore_index: int = IGNORE) -> torch.Tensor:
    """The per-image "semantic" maps (h_i, w_i) in one (N, H, W) int64 batch, padding = `ignore_index`."""
    out = torch.full((len(targets), int(size[0]), int(size[1])), ignore_index, dtype=torch.long, device=device)
    for i, t in enumerate(targets):
        if "semantic" not in t:
            raise SeglabError(f"targets[{i}] lacks 'semantic': panoptic models need an (H, W) class map")
        sem = torch.as_tensor(t["semantic"], device=device).long()
        out[i, :sem.shape[0], :sem.shape[1]] = sem
    return out


def semantic_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Pixel-averaged cross-entropy over non-void pixels; 0 (on the graph) when every pixel is void."""
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


class PanopticFPN(MaskRCNN):
    """Mask R-CNN + the FPN semantic branch (stuff + "things") on the shared P2..P5 + heuristic merge."""

    def __init__(self, backbone: nn.Module, num_stuff: int, num_things: int, *, semantic_channels: int = 128,
                 semantic_loss_weight: float = 0.5, panoptic_score_thresh: float = 0.5,
                 panoptic_overlap_thresh: float = 0.5, stuff_area_limit: int = 4096, **mask_rcnn_kwargs):
        super().__init__(backbone, num_things, **mask_rcnn_kwargs)
        self.num_stuff, self.num_things = num_stuff, num_things
        self.num_classes = num_stuff + num_things
        channels = self.fpn.out_channels[0]
        self.semantic_head = SemanticFPNHead(channels, self.fpn.strides[:self.roi_levels], num_stuff + 1,
                                             channels=semantic_channels)
        self.semantic_loss_weight = semantic_loss_weight
        self.panoptic_score_thresh = panoptic_score_thresh
        self.panoptic_overlap_thresh = panoptic_overlap_thresh
        self.stuff_area_limit = stuff_area_limit

    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes, pyramid = self.extract_features(images)
        levels = pyramid[:self.roi_levels]
        semantic = resize_to(self.semantic_head(levels), batch.shape[-2:])
        if targets is not None:
            instances = check_instance_targets(targets, sizes, batch.device)
            proposals, rpn_losses = self.rpn(pyramid, sizes, instances)
            _, roi_losses = self.roi_heads(levels, proposals, sizes, instances)
            target = semantic_batch(targets, batch.shape[-2:], batch.device)
            is_thing = (target >= self.num_stuff) & (target != IGNORE)
            target = torch.where(is_thing, torch.full_like(target, self.num_stuff), target)
            loss = semantic_loss(semantic, target)
            return {**rpn_losses, **roi_losses, "loss_semantic": self.semantic_loss_weight * loss}
        proposals, _ = self.rpn(pyramid, sizes)
        detections, _ = self.roi_heads(levels, proposals, sizes)
        instances = self.postprocess(detections, sizes)
        return [panoptic_fpn_merge(semantic[i, :, :h, :w].argmax(0), inst, num_stuff=self.num_stuff,
                                   score_thresh=self.panoptic_score_thresh,
                                   overlap_thresh=self.panoptic_overlap_thresh,
                                   stuff_area_limit=self.stuff_area_limit)
                for i, (inst, (h, w)) in enumerate(zip(instances, sizes))]


def build_panoptic(cls: type, trunk: str, num_classes: int, num_things: int, in_channels: int,
                   backbone_weights: str | None, aux_loss: bool, kwargs: dict, own_kwargs: Sequence[str]):
    """Split kwargs between the model, Mask R-CNN and the trunk; check the stuff/thing split."""
    if aux_loss:
        raise SeglabError(f"{cls.__name__} has no auxiliary head; use aux_loss=False")
    if not isinstance(num_things, int) or not 1 <= num_things <= num_classes:
        raise SeglabError(f"num_things must be an int in [1, num_classes={num_classes}] (things are the last "
                          f"num_things classes), got {num_things!r}")
    if kwargs.pop("output_stride", 32) != 32:
        raise SeglabError(f"{cls.__name__}'s trunk runs at output_stride 32 (the FPN gives strides 4..64)")
    model_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _MASK_RCNN_KWARGS or k in own_kwargs}
    backbone = create_backbone(trunk, weights=backbone_weights, in_channels=in_channels, output_stride=32, **kwargs)
    return cls(backbone, num_classes - num_things, num_things, **model_kwargs)


_OWN = ("semantic_channels", "semantic_loss_weight", "panoptic_score_thresh", "panoptic_overlap_thresh",
        "stuff_area_limit")


@register_model(task="panoptic")
def panoptic_fpn_resnet50(*, num_classes: int, num_things: int, in_channels: int = 3,
                          backbone_weights: str | None = None, aux_loss: bool = False, **kwargs) -> PanopticFPN:
    """Panoptic FPN on ResNet-50-FPN (Kirillov et al., CVPR 2019): `num_classes` stuff + thing classes,
    the last `num_things` of them things. Mask R-CNN kwargs, semantic_channels, semantic_loss_weight,
    panoptic_score_thresh, panoptic_overlap_thresh, stuff_area_limit; the rest go to the trunk (`width`)."""
    return build_panoptic(PanopticFPN, "resnet50", num_classes, num_things, in_channels, backbone_weights,
                          aux_loss, kwargs, _OWN)


@register_model(task="panoptic")
def panoptic_fpn_resnet18(*, num_classes: int, num_things: int, in_channels: int = 3,
                          backbone_weights: str | None = None, aux_loss: bool = False, **kwargs) -> PanopticFPN:
    """Panoptic FPN on ResNet-18-FPN; kwargs as for panoptic_fpn_resnet50."""
    return build_panoptic(PanopticFPN, "resnet18", num_classes, num_things, in_channels, backbone_weights,
                          aux_loss, kwargs, _OWN)
