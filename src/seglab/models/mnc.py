"""MNC: Dai, He & Sun, "Instance-aware Semantic Segmentation via Multi-task Network Cascades", CVPR 2016
(Sec. 3 the three-stage cascade, Sec. 3.4 differentiable RoI warping and end-to-end training, Sec. 4
the 5-stage cascade), with the release (github.com/daijifeng001/MNC: `mnc_5stage/train.prototxt`,
`lib/mnc_config.py`, the `pylayer/*` target layers and `TesterWrapper`) where the paper is terse.

`mnc_resnet50`, `mnc_resnet18` (registered with task="instance"), three stages sharing one trunk:
1. box instances: an RPN (`seglab.heads.instance.rpn`) on conv4 (stride 16), 9 anchors per location
   (sizes 128, 256, 512 = the release's scales 8, 16, 32 x stride 16; ratios 0.5, 1, 2); 300 proposals
   after NMS 0.7 in training (`mnc_5stage.yml`) and at test time, from 12000 / 6000 before NMS;
2. mask instances: every RoI is warped to 14 x 14 cells of the shared feature
   (`seglab.layers.roi_warp`, bilinear crop-and-resize, differentiable w.r.t. the box) and
   `MaskEstimator` (`seglab.heads.instance.mnc`) regresses a class-agnostic 21 x 21 mask;
3. categorized instances: `MaskClassifier` reads the same warped feature through a box pathway and
   a mask pathway (the feature multiplied by the stage-2 mask), and predicts mask-level class scores
   (the paper's stage 3), box-level class scores and class-specific box deltas (the release's).
The shared feature: the paper's is VGG-16's conv5_3 (512 channels, stride 16). For a ResNet we dilate
conv5 (output stride 16, as FCIS does) and reduce it with a 1x1 conv + ReLU to `feature_channels`
(512), so the per-RoI layers keep the release's sizes (fc 256 for the mask, fc 4096 x 2 per pathway).

End-to-end training (Sec. 3.4): the loss is the sum of every stage's terms, and the RoIs of stages 2-3
are the RPN's proposals *with their gradient*: the RoI warping sends the mask and class losses back
into the RPN's box regression (`RegionProposalNetwork(proposal_grad=True)`), as the release's
proposal layer does (`propagate_down` to `rpn_bbox_pred`). The gradient that reaches a box delta (the
RPN's, and stage 3's in the 5-stage cascade) this way is clipped to +-`box_grad_clip` per value (1/512,
the release's `clip_base`). Only foreground RoIs (box IoU >= 0.5) carry that gradient: a background
RoI's box has no target to move towards, and letting the classifier's loss on the sampled background
move the boxes made the RPN's deltas drift under AdamW (mean |dw| 3.52 after 345 iterations on the
synthetic set, no proposal left on an object: mask AP50 2.8%; `benchmarks/mnc_proposals.py`).
`box_grad=False` detaches the boxes instead (the "no box-level back-propagation" ablation).
Training targets (the release's `proposal_target_layer` and `mask_layer`): RoIs = proposals + the
ground-truth boxes, 64 per image, 30% foreground (box IoU >= 0.5), the background 85% from IoU
[0.1, 0.5) and 15% from [0, 0.1); the mask target is the matched ground-truth mask cropped to the RoI
and resized to 21 x 21 (binarised at 0.4, the release's BINARIZE_THRESH); the box-level class label is
the matched class (0 on background), the mask-level label is the matched class when the binarised
predicted mask has mask IoU >= 0.5 with its ground truth, else 0. Losses: `loss_objectness`,
`loss_rpn_box_reg` (the RPN's), `loss_mask` (per-pixel sigmoid cross-entropy on foreground RoIs,
weight 2 as the release), `loss_classifier` (box-level), `loss_seg_classifier` (mask-level),
`loss_box_reg` (smooth-L1, beta 1, on the foreground's class deltas, sum / RoIs; coder weights
(10, 10, 5, 5) = the release's target stds 0.1, 0.1, 0.2, 0.2). Only foreground RoIs pass gradients
from the mask pathway into the stage-2 mask (the release's MaskLayer backward).

5-stage cascade (`stages=5`, Sec. 4, the release's `mnc_5stage`): stage 3's class-specific box deltas
(of the best foreground class by mask-level score) move every RoI; the moved RoIs (+ the ground-truth
boxes, all kept) go through stages 4 and 5, which share their weights with stages 2 and 3; their
losses are added with the suffix `_s5` (`loss_mask_s5`, ...). The gradient flows through the moved
boxes into stage 3's box regression and back to the proposals (clipped as above).

Inference: stage 3's outputs on the 300 proposals (and with `stages=5` also stage 5's on the moved
RoIs, moved by the deltas of each RoI's highest scoring class: the release's TesterWrapper merges
both), scored by the mask-level class probabilities; for every class with probability >
`score_thresh` a detection keeps the RoI as its box and the stage's mask; per-class NMS at 0.3 (the
release's TEST.NMS), the best `detections_per_img` (100); masks pasted into the image and binarised at
`mask_threshold` (0.4). Mask voting (the release's merging of overlapping masks) is not done.

Deviations: ResNet trunk with BatchNorm trained (the paper: VGG-16 / ResNet-101, ImageNet-pretrained);
the RPN's 3x3 conv keeps conv4's width (the release's has 512 channels); the RPN's box-delta gradient
is the autograd gradient of the decoded proposals (the release writes its own, scaled by 1/stride);
images go through at their given size, padded to a multiple of 16 (no 600-pixel rescale inside).
The paper gives no parameter count. Ours at 21 classes (`tests/models/test_mnc.py`): mnc_resnet50
300,018,346 = trunk 23,508,032 + RPN 9,484,333 + 1x1 reduction 1,049,088 + stage 2 25,803,705 (fc6_maskest
512 * 14 * 14 -> 256: 25.69M) + stage 3 240,173,188 (two pathways of 512 * 7 * 7 -> 4096 -> 4096: 119.55M
each); mnc_resnet18 278,017,706. The per-RoI fc layers dominate, as in the release's VGG-16 model, whose
fc6 / fc7 have the same shapes. The 5-stage cascade adds no parameters (stages 4-5 share 2-3's).
Width knobs for tiny builds: `width` (ResNet), `feature_channels`, `mask_hidden`, `representation_size`,
`warp_size`, `mask_size`, `anchor_sizes` and the RPN / RoI counts.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, SeglabError
from ..heads.instance.mnc import MaskClassifier, MaskEstimator, StageOutputs
from ..heads.instance.roi_heads import project_masks_on_boxes
from ..heads.instance.rpn import RegionProposalNetwork
from ..layers import (
    BoxCoder,
    batched_nms,
    box_iou,
    clamp_gradient,
    clip_boxes_to_image,
    paste_masks_in_image,
    roi_warp,
)
from ..layers.image_batch import batch_images
from ..registry import register_model
from ..structures import InstanceResult
from .mask_rcnn import check_instance_targets
from .trunk_builder import build_on_trunk

__all__ = ["MNC"]

STRIDE = 16
PAPER_ANCHOR_SIZES = (128, 256, 512)


def _sample_background(iou: torch.Tensor, candidates: torch.Tensor, count: int, hi_fraction: float) -> torch.Tensor:
    """`count` background indices: `hi_fraction` of them with IoU in [0.1, 0.5), the rest below 0.1,
    each bucket topped up from the other when it runs short (the release's BG_FRACTION [0.85, 0.15])."""
    hi = candidates[iou[candidates] >= 0.1]
    lo = candidates[iou[candidates] < 0.1]
    hi = hi[torch.randperm(hi.numel(), device=hi.device)]
    lo = lo[torch.randperm(lo.numel(), device=lo.device)]
    n_hi = min(hi.numel(), round(count * hi_fraction))
    n_lo = min(lo.numel(), count - n_hi)
    n_hi = min(hi.numel(), count - n_lo)
    return torch.cat([hi[:n_hi], lo[:n_lo]])


class MNC(nn.Module):
    """ResNet (output stride 16) -> RPN on conv4; RoI warping of the reduced conv5 -> mask estimation ->
    mask-based categorisation; `stages` 3 or 5 (see the module docstring)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, stages: int = 3, feature_channels: int = 512,
                 warp_size: int = 14, mask_size: int = 21, mask_hidden: int = 256, representation_size: int = 4096,
                 anchor_sizes: Sequence[float] = PAPER_ANCHOR_SIZES, aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 rpn_pre_nms_top_n_train: int = 12000, rpn_pre_nms_top_n_test: int = 6000,
                 rpn_post_nms_top_n_train: int = 300, rpn_post_nms_top_n_test: int = 300,
                 rpn_batch_size_per_image: int = 256, batch_size_per_image: int = 64,
                 positive_fraction: float = 0.3, fg_iou_thresh: float = 0.5, box_grad: bool = True,
                 box_grad_clip: float | None = 1 / 512, mask_loss_weight: float = 2.0,
                 score_thresh: float = 0.001, nms_thresh: float = 0.3, detections_per_img: int = 100,
                 mask_threshold: float = 0.4):
        super().__init__()
        if stages not in (3, 5):
            raise ConfigError(f"MNC: stages must be 3 or 5 (the paper's cascades), got {stages}")
        if list(backbone.strides[-2:]) != [STRIDE, STRIDE]:
            raise SeglabError(f"MNC needs conv4 and conv5 at stride {STRIDE}, got strides {backbone.strides}")
        self.num_classes, self.stages = num_classes, stages
        self.backbone = backbone
        self.rpn = RegionProposalNetwork(
            backbone.out_channels[-2], anchor_sizes=(tuple(anchor_sizes),), aspect_ratios=tuple(aspect_ratios),
            batch_size_per_image=rpn_batch_size_per_image, pre_nms_top_n_train=rpn_pre_nms_top_n_train,
            pre_nms_top_n_test=rpn_pre_nms_top_n_test, post_nms_top_n_train=rpn_post_nms_top_n_train,
            post_nms_top_n_test=rpn_post_nms_top_n_test, strides=(STRIDE,), proposal_grad=box_grad,
            proposal_grad_clip=box_grad_clip)
        self.reduce = nn.Sequential(nn.Conv2d(backbone.out_channels[-1], feature_channels, 1), nn.ReLU(inplace=True))
        self.mask_estimator = MaskEstimator(feature_channels, warp_size, hidden=mask_hidden, mask_size=mask_size)
        self.classifier = MaskClassifier(feature_channels, num_classes, warp_size,
                                         representation_size=representation_size)
        self.warp_size, self.mask_size = warp_size, mask_size
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.fg_iou_thresh = fg_iou_thresh
        self.box_grad, self.box_grad_clip, self.mask_loss_weight = box_grad, box_grad_clip, mask_loss_weight
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.mask_threshold = mask_threshold

    # -- shared parts --------------------------------------------------------------------------------
    def run_stages(self, feature: torch.Tensor, rois: torch.Tensor,
                   gate: torch.Tensor | None = None) -> tuple[torch.Tensor, StageOutputs]:
        """Stages 2 and 3 (or 4 and 5) on (R, 5) RoIs: (mask logits (R, m, m), class / box outputs).
        With a (R,) bool `gate` (training), only the gated (foreground) RoIs send gradients from the mask
        pathway back into their mask."""
        if gate is not None:  # a background RoI's box has no target to move towards: no box gradient
            rois = torch.where(gate[:, None], rois, rois.detach())
        warped = roi_warp(feature, rois, self.warp_size, 1 / STRIDE)
        mask_logits = self.mask_estimator(warped)
        probs = mask_logits.sigmoid()
        if gate is not None:
            probs = torch.where(gate[:, None, None], probs, probs.detach())
        return mask_logits, self.classifier(warped, probs)

    def move_rois(self, rois: torch.Tensor, outputs: StageOutputs, classes: torch.Tensor,
                  sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """(R, 5) RoIs moved by the (R,) `classes`' deltas of stage 3 and clipped to their images."""
        deltas = outputs.box_deltas.float().view(rois.shape[0], -1, 4)[torch.arange(rois.shape[0]), classes]
        deltas = clamp_gradient(deltas, self.box_grad_clip) if self.box_grad else deltas.detach()
        moved = self.box_coder.decode_single(deltas, rois[:, 1:] if self.box_grad else rois[:, 1:].detach())
        limits = moved.new_tensor([[w, h, w, h] for h, w in sizes])[rois[:, 0].long()]
        moved = torch.minimum(moved.clamp(min=0), limits)
        return torch.cat([rois[:, :1].detach(), moved], dim=1)

    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes = batch_images(images, STRIDE)
        if targets is not None:
            targets = check_instance_targets(targets, sizes, batch.device)
        features = self.backbone(batch)
        feature = self.reduce(features[-1])
        proposals, rpn_losses = self.rpn([features[-2]], sizes, targets)
        if targets is None:
            return self.postprocess(feature, proposals, sizes)
        return {**rpn_losses, **self.cascade_losses(feature, proposals, targets, sizes)}

    # -- training ------------------------------------------------------------------------------------
    def label_rois(self, boxes: torch.Tensor, target: dict, sample: bool) -> tuple[torch.Tensor, ...]:
        """(kept indices, labels (0 background, class + 1), matched gt index, max IoU) for one image's
        candidate boxes: all of them, or the 64-RoI sample of the release."""
        device = boxes.device
        if target["boxes"].numel():
            iou = box_iou(target["boxes"].to(boxes), boxes.detach())
            best, matched = iou.max(0)
        else:
            best = boxes.new_zeros(boxes.shape[0])
            matched = torch.zeros(boxes.shape[0], dtype=torch.long, device=device)
        fg = torch.where(best >= self.fg_iou_thresh)[0]
        bg = torch.where(best < self.fg_iou_thresh)[0]
        if sample:
            most = round(self.batch_size_per_image * self.positive_fraction)
            fg = fg[torch.randperm(fg.numel(), device=device)][:most]
            bg = _sample_background(best, bg, self.batch_size_per_image - fg.numel(), 0.85)
        keep = torch.cat([fg, bg])
        labels = torch.zeros(keep.numel(), dtype=torch.long, device=device)
        if fg.numel():
            labels[: fg.numel()] = target["labels"][matched[fg]] + 1
        return keep, labels, matched[keep], best[keep]

    def stage_targets(self, rois: torch.Tensor, targets: Sequence[dict], sample: bool):
        """Per-RoI training targets for (R, 5) candidate RoIs (+ each image's ground-truth boxes): the kept
        RoIs (with their gradient), labels, mask targets (R, m, m), box targets (R, 4) and the matched
        gt index per RoI (-1 on background)."""
        out_rois, out_labels, out_masks, out_boxes, out_matched = [], [], [], [], []
        for i, t in enumerate(targets):
            mine = rois[rois[:, 0] == i]
            gt = t["boxes"].to(rois.dtype)
            candidates = torch.cat([mine, torch.cat([gt.new_full((gt.shape[0], 1), i), gt], 1)])
            keep, labels, matched, _ = self.label_rois(candidates[:, 1:], t, sample)
            kept = candidates[keep]
            positive = torch.where(labels > 0)[0]
            masks = kept.new_zeros(kept.shape[0], self.mask_size, self.mask_size)
            box_targets = kept.new_zeros(kept.shape[0], 4)
            if positive.numel():
                boxes = kept[positive, 1:].detach()
                masks[positive] = project_masks_on_boxes(t["masks"], boxes, matched[positive], self.mask_size,
                                                         threshold=0.4).to(masks)
                box_targets[positive] = self.box_coder.encode_single(t["boxes"][matched[positive]].to(boxes), boxes)
            out_rois.append(kept)
            out_labels.append(labels)
            out_masks.append(masks.detach())
            out_boxes.append(box_targets.detach())
            out_matched.append(torch.where(labels > 0, matched, -1))
        return (torch.cat(out_rois), torch.cat(out_labels), torch.cat(out_masks), torch.cat(out_boxes),
                torch.cat(out_matched))

    @torch.no_grad()
    def mask_level_labels(self, rois: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                          matched: torch.Tensor, targets: Sequence[dict], sizes) -> torch.Tensor:
        """The mask-level class of every RoI: its label when its binarised mask, pasted into the image,
        has IoU >= 0.5 with its ground-truth mask; else background (the release's MaskLayer)."""
        seg_labels = torch.zeros_like(labels)
        for i, (t, size) in enumerate(zip(targets, sizes)):
            idx = torch.where((rois[:, 0] == i) & (labels > 0))[0]
            if idx.numel() == 0:
                continue
            pred = paste_masks_in_image(mask_logits[idx].float().sigmoid(), rois[idx, 1:].detach().float(), size)
            pred = pred >= self.mask_threshold
            gt = t["masks"][matched[idx]]
            inter = (pred & gt).flatten(1).sum(1)
            union = (pred | gt).flatten(1).sum(1).clamp(min=1)
            seg_labels[idx] = torch.where(inter / union >= 0.5, labels[idx], 0)
        return seg_labels

    def stage_losses(self, mask_logits: torch.Tensor, outputs: StageOutputs, labels: torch.Tensor,
                     seg_labels: torch.Tensor, mask_targets: torch.Tensor, box_targets: torch.Tensor,
                     suffix: str = "") -> dict[str, torch.Tensor]:
        positive = torch.where(labels > 0)[0]
        anchor = mask_logits.sum() * 0.0  # keeps every output on the graph when a term is empty
        if positive.numel():
            loss_mask = F.binary_cross_entropy_with_logits(mask_logits[positive].float(), mask_targets[positive])
            deltas = outputs.box_deltas.float().view(labels.shape[0], -1, 4)[positive, labels[positive]]
            loss_box = F.smooth_l1_loss(deltas, box_targets[positive], beta=1.0, reduction="sum") / labels.numel()
        else:
            loss_mask = loss_box = anchor + outputs.box_deltas.sum() * 0.0
        return {f"loss_mask{suffix}": self.mask_loss_weight * loss_mask + anchor,
                f"loss_classifier{suffix}": F.cross_entropy(outputs.class_logits.float(), labels),
                f"loss_seg_classifier{suffix}": F.cross_entropy(outputs.seg_class_logits.float(), seg_labels),
                f"loss_box_reg{suffix}": loss_box}

    def cascade_losses(self, feature: torch.Tensor, proposals: Sequence[torch.Tensor], targets: Sequence[dict],
                       sizes) -> dict[str, torch.Tensor]:
        rois = torch.cat([torch.cat([p.new_full((p.shape[0], 1), i), p if self.box_grad else p.detach()], 1)
                          for i, p in enumerate(proposals)]).float()
        losses = {}
        for stage, sample in ((3, True), (5, False))[: 1 if self.stages == 3 else 2]:
            rois, labels, mask_targets, box_targets, matched = self.stage_targets(rois, targets, sample)
            mask_logits, outputs = self.run_stages(feature, rois, gate=labels > 0)
            seg_labels = self.mask_level_labels(rois, mask_logits, labels, matched, targets, sizes)
            losses.update(self.stage_losses(mask_logits, outputs, labels, seg_labels, mask_targets, box_targets,
                                            "" if stage == 3 else "_s5"))
            if stage == 3 and self.stages == 5:
                best = outputs.seg_class_logits.detach()[:, 1:].argmax(1) + 1
                rois = self.move_rois(rois, outputs, best, sizes)
        return losses

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def postprocess(self, feature: torch.Tensor, proposals: Sequence[torch.Tensor],
                    sizes: Sequence[tuple[int, int]]) -> list[InstanceResult]:
        rois = torch.cat([torch.cat([p.new_full((p.shape[0], 1), i), p], 1) for i, p in enumerate(proposals)]).float()
        mask_logits, outputs = self.run_stages(feature, rois)
        passes = [(rois, mask_logits, outputs.seg_class_logits.float().softmax(1))]
        if self.stages == 5 and rois.shape[0]:
            moved = self.move_rois(rois, outputs, outputs.seg_class_logits.argmax(1), sizes)
            mask_logits5, outputs5 = self.run_stages(feature, moved)
            passes.append((moved, mask_logits5, outputs5.seg_class_logits.float().softmax(1)))
        all_rois, all_masks, all_probs = (torch.cat([p[k] for p in passes]) for k in range(3))
        return [self.detections(all_rois, all_masks, all_probs, i, size) for i, size in enumerate(sizes)]

    def detections(self, rois: torch.Tensor, mask_logits: torch.Tensor, probs: torch.Tensor, image: int,
                   size: tuple[int, int]) -> InstanceResult:
        mine = torch.where(rois[:, 0] == image)[0]
        boxes = clip_boxes_to_image(rois[mine, 1:], size)
        mine = mine[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        roi_idx, cls = torch.where(probs[mine, 1:] > self.score_thresh)
        roi_idx = mine[roi_idx]
        boxes, scores = clip_boxes_to_image(rois[roi_idx, 1:], size), probs[roi_idx, cls + 1]
        keep = batched_nms(boxes, scores, cls, self.nms_thresh)[: self.detections_per_img]
        boxes, scores, cls, roi_idx = boxes[keep], scores[keep], cls[keep], roi_idx[keep]
        masks = paste_masks_in_image(mask_logits[roi_idx].float().sigmoid(), boxes, size) >= self.mask_threshold
        return InstanceResult(boxes=boxes, scores=scores, labels=cls, masks=masks)


@register_model(task="instance")
def mnc_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, **kwargs) -> MNC:
    """MNC on ResNet-50, conv5 dilated (Dai et al., CVPR 2016; 300.02M parameters at 21 classes). Model
    kwargs: stages (3 or 5), feature_channels, mask_hidden, representation_size, warp_size, mask_size,
    box_grad, box_grad_clip, the RPN / RoI counts and the inference settings; the rest go to the trunk."""
    return build_on_trunk(MNC, "resnet50", entrypoint="mnc_resnet50", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)


@register_model(task="instance")
def mnc_resnet18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, **kwargs) -> MNC:
    """MNC on ResNet-18 (278.02M parameters at 21 classes, almost all in the per-RoI fc layers); kwargs
    as for mnc_resnet50."""
    return build_on_trunk(MNC, "resnet18", entrypoint="mnc_resnet18", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)
