"""InstanceFCN: Dai, He, Li, Ren & Sun, "Instance-sensitive Fully Convolutional Networks", ECCV 2016
(Sec. 3 instance-sensitive score maps and the assembling module, Sec. 4 architecture, training and
inference, Sec. 5 segment proposals by average recall and instance semantic segmentation with MNC's
classifier).

`instance_fcn_resnet50`, `instance_fcn_resnet18` (registered with task="instance"):
- trunk at stride 8: the paper's VGG-16 has pool4's stride set to 1 and conv5 dilated; a ResNet here
  has conv4 and conv5 dilated (`output_stride=8`);
- on conv5, `seglab.heads.instance.instance_fcn.InstanceFCNHead`: k^2 instance-sensitive score maps
  (k = 5) and the objectness map; m x m sliding windows (m = 21 cells = 168 pixels) assembled from
  them (parameter-free) are the class-agnostic segment proposals, one per position and scale;
- image pyramid (Sec. 4): the network runs on the image resized by each of `scales` (the paper's
  shorter sides 600 x 1.5^{-4..1}, relative to the given image: 1.5^-4 .. 1.5); every window of every
  scale is a candidate, scored by its objectness;
- proposals: the `pre_nms_top_n` best windows per image, their assembled m x m segments resized to the
  window's pixels (bilinear), binarised at 0.5, tight boxes, NMS on those boxes at IoU 0.8 (the paper's),
  the best `post_nms_top_n` (300, the paper's N for classification); `propose(images)` returns them,
  `seglab.metrics.proposals.average_recall` scores them (AR@N, Sec. 5);
- classification for instance segmentation (Sec. 5.1: "MNC's stage 3" on the proposals): conv5 reduced
  to `feature_channels` (512) by a 1x1 conv + ReLU, each proposal's tight box RoI-warped to 14 x 14
  (`seglab.layers.roi_warp`), `seglab.heads.instance.mnc.MaskClassifier` (box pathway + mask pathway
  with the proposal's own mask, fc `representation_size` 4096) with its mask-level classifier only.
Training (`forward(images, targets)`, the losses summed): every image goes through at one scale drawn
from `scales` (the paper jitters the scale the same way), its targets resized with it.
- windows (Sec. 4): a window is positive for an instance when the instance's box centre lies within
  half a sub-window (W / 2k pixels, W = m x stride) of the window's centre in both directions and the
  box's longer side is within `positive_scale_range` (0.4 .. 0.8) of W; else negative. 256 windows per
  image, up to half positive (the paper samples 256 at 1:1). The paper does not state its positive
  rule; this one lets a pyramid of steps <= 2 give every instance a scale where it fits.
- `loss_objectness`: logistic loss of the sampled windows' objectness; `loss_segment`: per-pixel
  logistic loss of the positives' assembled segments against their instance's mask cropped to the
  window and resampled to m x m (RoIAlign, binarised at 0.5), averaged over pixels;
- `loss_classifier`: the classifier's cross-entropy over up to 64 RoIs per image (up to 25% foreground)
  drawn from the image's proposals (detached, computed from the same forward) and its ground-truth
  instances; a proposal's label is the class of the ground-truth instance it overlaps with mask IoU
  >= 0.5, else background. The paper trains the classifier in a second step on fixed proposals; here it
  trains jointly but no gradient passes between the proposals and the classifier (the same split).
Inference (`forward(images)` -> InstanceResult per image): the proposals, classified on the features of
the scale nearest 1; every proposal x class with probability > `score_thresh` is a detection scored by
that probability, per-class NMS at box IoU 0.3, the best `detections_per_img` (100).

Deviations: BatchNorm trunk trained from scratch (the paper: ImageNet VGG-16); proposals from all
scales are ranked together by objectness (the paper does not say how it merges scales). The paper gives
parameter counts for the last k^2 conv only ("about 0.1M" against DeepMask's 53M fc layers): ours is
512 x 9 x 25 + 25 = 115,225 (`tests/models/test_instance_fcn.py`). Totals at 21 classes:
instance_fcn_resnet50 274,431,600 = trunk 23,508,032 + the two branches 10,602,522 + 1x1 reduction
1,049,088 + MNC's classifier 239,271,958 (its fc layers; mask-level classifier only);
instance_fcn_resnet18 253,449,328.
Width knobs for tiny builds: `width` (ResNet), `mid_channels`, `feature_channels`, `representation_size`,
`k`, `m`, `scales`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.instances import masks_to_boxes
from ..errors import SeglabError
from ..heads.instance.instance_fcn import InstanceFCNHead, assemble_instances, check_window, window_boxes
from ..heads.instance.mnc import MaskClassifier
from ..heads.instance.roi_heads import project_masks_on_boxes
from ..heads.instance.sampling import BalancedPositiveNegativeSampler
from ..layers import batched_nms, nms, paste_masks_in_image, roi_warp
from ..layers.image_batch import batch_images
from ..registry import register_model
from ..structures import InstanceResult
from .mask_rcnn import check_instance_targets
from .trunk_builder import build_on_trunk

__all__ = ["InstanceFCN", "PAPER_SCALES"]

STRIDE = 8
PAPER_SCALES = tuple(1.5 ** e for e in range(-4, 2))


def _resize_batch(batch: torch.Tensor, sizes: Sequence[tuple[int, int]], scale: float):
    """(batch resized by `scale`, padded to a multiple of the stride; the images' scaled sizes)."""
    if scale == 1.0:
        return batch, list(sizes)
    height, width = (max(1, round(v * scale)) for v in batch.shape[-2:])
    resized = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False)
    padded, _ = batch_images(resized, STRIDE)
    return padded, [(max(1, round(h * scale)), max(1, round(w * scale))) for h, w in sizes]


def _resize_target(target: dict, size: tuple[int, int], scale: float) -> dict:
    if scale == 1.0:
        return target
    masks = F.interpolate(target["masks"][None].float(), size=size, mode="nearest")[0] > 0.5 \
        if target["masks"].numel() else target["masks"].new_zeros(0, *size)
    return {**target, "masks": masks, "boxes": target["boxes"] * scale}


class InstanceFCN(nn.Module):
    """ResNet (stride 8) -> instance-sensitive score maps + objectness -> assembled window segments;
    MNC's stage-3 classifier on the segment proposals (see the module docstring)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, k: int = 5, m: int = 21, mid_channels: int = 512,
                 scales: Sequence[float] = PAPER_SCALES, positive_scale_range: Sequence[float] = (0.4, 0.8),
                 windows_per_image: int = 256, feature_channels: int = 512, warp_size: int = 14,
                 representation_size: int = 4096, rois_per_image: int = 64, positive_fraction: float = 0.25,
                 pre_nms_top_n: int = 1000, post_nms_top_n: int = 300, proposal_nms_thresh: float = 0.8,
                 score_thresh: float = 0.001, nms_thresh: float = 0.3, detections_per_img: int = 100):
        super().__init__()
        check_window(m, k, positive_scale_range)
        if backbone.strides[-1] != STRIDE:
            raise SeglabError(f"InstanceFCN needs its trunk at stride {STRIDE}, got strides {backbone.strides}")
        self.num_classes, self.k, self.m = num_classes, k, m
        self.scales = tuple(float(s) for s in scales)
        self.positive_scale_range = tuple(float(v) for v in positive_scale_range)
        self.backbone = backbone
        self.head = InstanceFCNHead(backbone.out_channels[-1], k=k, mid_channels=mid_channels)
        self.reduce = nn.Sequential(nn.Conv2d(backbone.out_channels[-1], feature_channels, 1), nn.ReLU(inplace=True))
        self.classifier = MaskClassifier(feature_channels, num_classes, warp_size,
                                         representation_size=representation_size, box_outputs=False)
        self.warp_size = warp_size
        self.window_sampler = BalancedPositiveNegativeSampler(windows_per_image, 0.5)
        self.roi_sampler = BalancedPositiveNegativeSampler(rois_per_image, positive_fraction)
        self.pre_nms_top_n, self.post_nms_top_n, self.proposal_nms_thresh = pre_nms_top_n, post_nms_top_n, \
            proposal_nms_thresh
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    # -- windows -------------------------------------------------------------------------------------
    def window_targets(self, target: dict, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """For every window of a (h, w) grid (row-major): the index of the instance it is positive for,
        or -1, and its (h w, 4) pixel box."""
        h, w = grid
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        windows = torch.stack([torch.zeros(h * w, dtype=torch.long), yy.reshape(-1), xx.reshape(-1)], 1)
        boxes = window_boxes(windows, self.m, STRIDE)
        gt = target["boxes"].float().cpu()
        if gt.numel() == 0:
            return torch.full((h * w,), -1, dtype=torch.long), boxes
        side = self.m * STRIDE
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        gt_centres = (gt[:, :2] + gt[:, 2:]) / 2
        offset = (gt_centres[:, None] - centres[None]).abs()  # (G, K, 2)
        longer = (gt[:, 2:] - gt[:, :2]).amax(1) / side
        lo, hi = self.positive_scale_range
        fits = (offset <= side / (2 * self.k)).all(2) & ((longer >= lo) & (longer <= hi))[:, None]
        distance = torch.where(fits, offset.pow(2).sum(2), math.inf)
        best, matched = distance.min(0)
        return torch.where(torch.isfinite(best), matched, -1), boxes

    def window_losses(self, score_maps: torch.Tensor, objectness: torch.Tensor,
                      targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        grid = tuple(score_maps.shape[-2:])
        labels, all_boxes, all_matched = [], [], []
        for t in targets:
            matched, boxes = (v.to(score_maps.device) for v in self.window_targets(t, grid))
            labels.append((matched >= 0).long())
            all_matched.append(matched)
            all_boxes.append(boxes)
        pos_masks, neg_masks = self.window_sampler(labels)
        logits, segments, masks = [], [], []
        flat_objectness = objectness.flatten(1)
        for i, (pos, neg, matched, boxes) in enumerate(zip(pos_masks, neg_masks, all_matched, all_boxes)):
            sampled = torch.where((pos | neg).bool())[0]
            logits.append(torch.stack([flat_objectness[i, sampled], (matched[sampled] >= 0).to(objectness.dtype)], 1))
            positive = torch.where(pos.bool())[0]
            if positive.numel() == 0:
                continue
            y, x = positive // grid[1], positive % grid[1]
            windows = torch.stack([torch.full_like(y, i), y, x], 1).to(score_maps.device)
            segments.append(assemble_instances(score_maps, windows, m=self.m, k=self.k))
            masks.append(project_masks_on_boxes(targets[i]["masks"], boxes[positive].to(score_maps.device),
                                                matched[positive].to(score_maps.device), self.m))
        pairs = torch.cat(logits)
        loss_objectness = F.binary_cross_entropy_with_logits(pairs[:, 0].float(), pairs[:, 1].float())
        if segments:
            loss_segment = F.binary_cross_entropy_with_logits(torch.cat(segments).float(), torch.cat(masks))
        else:
            loss_segment = score_maps.sum() * 0.0
        return {"loss_objectness": loss_objectness, "loss_segment": loss_segment}

    # -- proposals -----------------------------------------------------------------------------------
    def run(self, batch: torch.Tensor):
        """(score maps, objectness, reduced conv5 for the classifier) of a padded batch."""
        feature = self.backbone(batch)[-1]
        score_maps, objectness = self.head(feature)
        return score_maps, objectness, self.reduce(feature)

    @torch.no_grad()
    def proposals_from(self, levels: Sequence[tuple[float, torch.Tensor, torch.Tensor]],
                       sizes: Sequence[tuple[int, int]]) -> list[dict]:
        """Segment proposals per image from (scale, score maps, objectness) of one or more scales:
        {"masks" (K, H, W) bool, "boxes" (K, 4) tight, "scores" (K,) objectness probability}."""
        out = []
        for i, size in enumerate(sizes):
            cands = []
            for scale, score_maps, objectness in levels:
                grid_w = objectness.shape[-1]
                scores = objectness[i, 0].float().sigmoid().flatten()
                top = scores.topk(min(self.pre_nms_top_n, scores.numel())).indices
                windows = torch.stack([torch.full_like(top, i), top // grid_w, top % grid_w], 1)
                cands.append((scores[top], windows, scale, score_maps))
            scores = torch.cat([c[0] for c in cands])
            keep = scores.topk(min(self.pre_nms_top_n, scores.numel())).indices
            probs, boxes = [], []
            offsets = torch.tensor([0] + [len(c[0]) for c in cands]).cumsum(0)
            for j, (_, windows, scale, score_maps) in enumerate(cands):
                mine = keep[(keep >= offsets[j]) & (keep < offsets[j + 1])] - offsets[j]
                probs.append(assemble_instances(score_maps, windows[mine], m=self.m, k=self.k).float().sigmoid())
                boxes.append(window_boxes(windows[mine], self.m, STRIDE).to(scores.device) / scale)
            order = torch.cat([keep[(keep >= offsets[j]) & (keep < offsets[j + 1])] for j in range(len(cands))])
            probs, boxes, scores = torch.cat(probs), torch.cat(boxes), scores[order]
            masks = torch.cat([paste_masks_in_image(p, b, size) >= 0.5
                               for p, b in zip(probs.split(64), boxes.split(64))]) if len(probs) \
                else torch.zeros(0, *size, dtype=torch.bool, device=scores.device)
            nonempty = masks.flatten(1).any(1)
            masks, scores = masks[nonempty], scores[nonempty]
            tight = masks_to_boxes(masks.cpu()).to(scores.device)
            keep = nms(tight, scores, self.proposal_nms_thresh)[: self.post_nms_top_n]
            out.append({"masks": masks[keep], "boxes": tight[keep], "scores": scores[keep]})
        return out

    def pyramid(self, batch: torch.Tensor, sizes: Sequence[tuple[int, int]]):
        """(per scale (scale, score maps, objectness), classifier feature and scale nearest 1)."""
        levels, reference = [], None
        nearest = min(self.scales, key=lambda s: abs(math.log(s)))
        for scale in self.scales:
            resized, _ = _resize_batch(batch, sizes, scale)
            score_maps, objectness, feature = self.run(resized)
            levels.append((scale, score_maps, objectness))
            if scale == nearest:
                reference = (feature, scale)
        return levels, reference

    @torch.no_grad()
    def propose(self, images) -> list[dict]:
        """The class-agnostic segment proposals of every image (see `proposals_from`), all scales."""
        batch, sizes = batch_images(images, STRIDE)
        levels, _ = self.pyramid(batch, sizes)
        return self.proposals_from(levels, sizes)

    # -- classification ------------------------------------------------------------------------------
    def classify(self, feature: torch.Tensor, scale: float, boxes: torch.Tensor, masks: torch.Tensor,
                 image_index: torch.Tensor) -> torch.Tensor:
        """Mask-level class logits (R, C + 1) of segments given by tight `boxes` (R, 4) and full-image
        `masks` (R, H, W), read from `feature` computed at `scale`."""
        if boxes.shape[0] == 0:
            return feature.new_zeros(0, self.num_classes + 1) + feature.sum() * 0.0
        rois = torch.cat([image_index[:, None].to(boxes), boxes * scale], 1)
        warped = roi_warp(feature, rois, self.warp_size, 1 / STRIDE)
        inside = project_masks_on_boxes(masks, boxes, torch.arange(len(boxes), device=boxes.device), self.warp_size)
        return self.classifier(warped, inside).seg_class_logits

    def classifier_loss(self, feature: torch.Tensor, proposals: Sequence[dict], targets: Sequence[dict]):
        boxes, masks, index, labels = [], [], [], []
        for i, (p, t) in enumerate(zip(proposals, targets)):
            cand_masks = torch.cat([p["masks"], t["masks"].bool()])
            cand_boxes = torch.cat([p["boxes"], t["boxes"].to(p["boxes"])])
            lab = torch.zeros(len(cand_masks), dtype=torch.long, device=cand_masks.device)
            if t["masks"].numel():
                inter = (cand_masks.flatten(1).float() @ t["masks"].flatten(1).float().T)
                union = cand_masks.flatten(1).sum(1)[:, None] + t["masks"].flatten(1).sum(1)[None] - inter
                best, matched = (inter / union.clamp(min=1)).max(1)
                lab = torch.where(best >= 0.5, t["labels"][matched] + 1, 0)
            pos, neg = self.roi_sampler([lab])
            keep = torch.where((pos[0] | neg[0]).bool())[0]
            boxes.append(cand_boxes[keep])
            masks.append(cand_masks[keep])
            labels.append(lab[keep])
            index.append(torch.full((len(keep),), i, device=keep.device))
        logits = self.classify(feature, 1.0, torch.cat(boxes), _pad_masks(masks), torch.cat(index))
        return F.cross_entropy(logits.float(), torch.cat(labels))

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes = batch_images(images, STRIDE)
        if targets is None:
            return self.postprocess(batch, sizes)
        targets = check_instance_targets(targets, sizes, batch.device)
        scale = self.scales[int(torch.randint(len(self.scales), ()))]
        batch, sizes = _resize_batch(batch, sizes, scale)
        targets = [_resize_target(t, s, scale) for t, s in zip(targets, sizes)]
        score_maps, objectness, feature = self.run(batch)
        losses = self.window_losses(score_maps, objectness, targets)
        proposals = self.proposals_from([(1.0, score_maps.detach(), objectness.detach())], sizes)
        losses["loss_classifier"] = self.classifier_loss(feature, proposals, targets)
        return losses

    @torch.no_grad()
    def postprocess(self, batch: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[InstanceResult]:
        levels, (feature, scale) = self.pyramid(batch, sizes)
        results = []
        for i, (p, size) in enumerate(zip(self.proposals_from(levels, sizes), sizes)):
            index = torch.full((len(p["boxes"]),), i, device=p["boxes"].device)
            probs = self.classify(feature, scale, p["boxes"], p["masks"], index).float().softmax(1)[:, 1:]
            roi, cls = torch.where(probs > self.score_thresh)
            boxes, scores = p["boxes"][roi], probs[roi, cls]
            keep = batched_nms(boxes, scores, cls, self.nms_thresh)[: self.detections_per_img]
            results.append(InstanceResult(boxes=boxes[keep], scores=scores[keep], labels=cls[keep],
                                          masks=p["masks"][roi[keep]]))
        return results


def _pad_masks(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image (K_i, H_i, W_i) masks zero-padded to one (sum K_i, H, W) tensor."""
    height = max(m.shape[1] for m in masks)
    width = max(m.shape[2] for m in masks)
    return torch.cat([F.pad(m, (0, width - m.shape[2], 0, height - m.shape[1])) for m in masks])


@register_model(task="instance")
def instance_fcn_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                          aux_loss: bool = False, **kwargs) -> InstanceFCN:
    """InstanceFCN on ResNet-50 at stride 8 (Dai et al., ECCV 2016) with MNC's classifier (274.43M parameters
    at 21 classes). Model kwargs: k, m, mid_channels, scales, positive_scale_range, the sampling, proposal
    and classifier settings; the rest go to the trunk (`width`)."""
    return build_on_trunk(InstanceFCN, "resnet50", entrypoint="instance_fcn_resnet50", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)


@register_model(task="instance")
def instance_fcn_resnet18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                          aux_loss: bool = False, **kwargs) -> InstanceFCN:
    """InstanceFCN on ResNet-18 at stride 8 (253.45M parameters at 21 classes, 239M of them MNC's classifier);
    kwargs as for instance_fcn_resnet50."""
    return build_on_trunk(InstanceFCN, "resnet18", entrypoint="instance_fcn_resnet18", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)
