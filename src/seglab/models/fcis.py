"""FCIS: Li, Qi, Dai, Ji & Wei, "Fully Convolutional Instance-aware Semantic Segmentation", CVPR 2017
(Sec. 3.3: architecture, training with OHEM, inference), with the release
(github.com/msracver/FCIS, `resnet_v1_101_fcis.py` and its COCO / VOC configs) where the paper is terse.

`fcis_resnet101` (the paper's), `fcis_resnet50`, `fcis_resnet18` (CPU), registered with task="instance":
- ResNet trunk with conv5 dilated (output stride 16: `create_backbone(..., output_stride=16)`);
- RPN (`seglab.heads.instance.rpn`) on conv4 (stride 16) with 12 anchors per location: sizes
  (64, 128, 256, 512) = the release's scales (4, 8, 16, 32) x stride 16, ratios (0.5, 1, 2); the
  release's proposal counts: 6000 before and 300 after NMS (0.7), in training and at test time;
- on conv5, FCIS's head (`seglab.heads.instance.fcis.FCISHead`): 1x1 conv to 1024 channels (ReLU),
  then 2 k^2 (C + 1) position-sensitive inside/outside maps and 4 k^2 class-agnostic box maps (k = 7),
  shared by all RoIs; per RoI the maps are assembled at 21 x 21 (k x k cells, cell (i, j) from score
  group (i, j)); mask = softmax over (inside, outside) per pixel, class logit = RoI average of
  max(inside, outside), box deltas = RoI average of the box maps.
Training (`forward(images, targets)` -> losses to be summed): the RPN's two losses, and over RoIs =
proposals + ground-truth boxes (positive at IoU >= 0.5 with a ground-truth box, else background; crowd
instances dropped): `loss_classifier` (softmax over C + 1), `loss_mask` (per-pixel softmax of the
ground-truth class's (inside, outside) pair on positives; target = the ground-truth mask RoIAligned to
21 x 21 and binarised at 0.4, the release's BINARY_THRESH), `loss_box_reg` (smooth-L1, beta 1, box
coder weights (5, 5, 2, 2) = the release's BBOX_STDS (0.2, 0.2, 0.5, 0.5)), weighted equally as the
paper says. RoI sampling: by default 128 RoIs per image with up to 25% positives (the release's VOC
setting); `ohem_rois=128` is the paper's COCO setting instead: every proposal is scored and the 128
with the highest summed loss per image are kept (OHEM). The release also gives the new layers a 3x
learning rate (CONVNEW3); not done (the engine's optimiser is shared).
Inference (`forward(images)` -> `InstanceResult` per image): the 300 proposals are assembled and
scored; their boxes are refined by the regression and the refined boxes are assembled and scored
again (the paper's "another 300 RoIs"; `refine_rois=False` skips it); for every RoI and foreground
class with probability > `score_thresh` (0.001, the release's) a detection keeps the RoI as its box
and the class's mask; per-class NMS at 0.3, the best `detections_per_img` (100); the 21 x 21 mask
probabilities are pasted with `seglab.layers.paste_masks_in_image` and thresholded at 0.4.
Mask voting (the paper's post-NMS averaging of overlapping masks) is not done.

Deviations: the RPN's 3x3 conv keeps conv4's width (torchvision's RPN head; the release uses 512
channels); class-agnostic box maps are 4 k^2 (the release predicts 8 k^2, background and foreground
deltas, and uses the foreground ones); bins are RoIAlign's bilinear samples (the release's
PSRoIPooling averages integer pixels); images are padded to a multiple of 16 and go through the net
at their given size (no 600-pixel rescale inside the model). The paper gives no parameter count.
Ours at 21 classes: fcis_resnet101 56,508,844 (trunk 42,500,160; RPN 9,499,708 = 3x3 conv 1024->1024
+ 12 objectness + 48 delta channels; head 4,508,976 = 1x1 2048->1024 2,098,176 + 2156 inside/outside
maps 2,209,900 + 196 box maps 200,900), fcis_resnet50 37,516,716, fcis_resnet18 14,718,124
(tests/models/test_fcis.py). At COCO's 80 classes fcis_resnet101 has 62,435,394; the release's layout
(512-channel RPN conv: 4,756,040; 392 box maps: 401,800) gives 57,892,626 for the same trunk and
inside/outside maps: the two deviations above account for the whole difference.
Width knobs for tiny builds: `width` (ResNet),
`mid_channels`, `k`, `roi_size`, `anchor_sizes` and the RPN / RoI counts.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..heads.instance.fcis import FCISHead, FCISOutputs, fcis_losses
from ..heads.instance.roi_heads import project_masks_on_boxes
from ..heads.instance.rpn import RegionProposalNetwork
from ..heads.instance.sampling import BalancedPositiveNegativeSampler, Matcher
from ..layers import (
    BoxCoder,
    batched_nms,
    box_iou,
    paste_masks_in_image,
    remove_small_boxes,
)
from ..layers.image_batch import batch_images
from ..registry import register_model
from ..structures import InstanceResult

__all__ = ["FCIS", "PAPER_ANCHOR_SIZES"]

PAPER_ANCHOR_SIZES = (64, 128, 256, 512)
STRIDE = 16
TARGET_THRESHOLD = 0.4  # the release binarises the RoIAligned ground-truth masks at BINARY_THRESH


def _clip_per_roi(boxes: torch.Tensor, batch_index: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Clamp each (R, 4) box to the size of its own image."""
    limits = boxes.new_tensor([[w, h, w, h] for h, w in sizes])[batch_index]
    return torch.minimum(boxes.clamp(min=0), limits)


class FCIS(nn.Module):
    """ResNet (output stride 16) -> RPN on conv4, FCIS head on conv5 (see the module docstring)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, mid_channels: int = 1024, k: int = 7,
                 roi_size: int = 21, anchor_sizes: Sequence[float] = PAPER_ANCHOR_SIZES,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), rpn_pre_nms_top_n_train: int = 6000,
                 rpn_pre_nms_top_n_test: int = 6000, rpn_post_nms_top_n_train: int = 300,
                 rpn_post_nms_top_n_test: int = 300, rpn_batch_size_per_image: int = 256,
                 batch_size_per_image: int = 128, positive_fraction: float = 0.25, ohem_rois: int | None = None,
                 fg_iou_thresh: float = 0.5, score_thresh: float = 0.001, nms_thresh: float = 0.3,
                 detections_per_img: int = 100, mask_threshold: float = 0.4, refine_rois: bool = True):
        super().__init__()
        if list(backbone.strides[-2:]) != [STRIDE, STRIDE]:
            raise SeglabError(f"FCIS needs conv4 and conv5 at stride {STRIDE}, got strides {backbone.strides}")
        self.num_classes = num_classes
        self.backbone = backbone
        self.rpn = RegionProposalNetwork(
            backbone.out_channels[-2], anchor_sizes=(tuple(anchor_sizes),), aspect_ratios=tuple(aspect_ratios),
            batch_size_per_image=rpn_batch_size_per_image, pre_nms_top_n_train=rpn_pre_nms_top_n_train,
            pre_nms_top_n_test=rpn_pre_nms_top_n_test, post_nms_top_n_train=rpn_post_nms_top_n_train,
            post_nms_top_n_test=rpn_post_nms_top_n_test, strides=(STRIDE,))
        self.head = FCISHead(backbone.out_channels[-1], num_classes, mid_channels=mid_channels, k=k,
                             roi_size=roi_size, spatial_scale=1 / STRIDE)
        self.box_coder = BoxCoder((5.0, 5.0, 2.0, 2.0))
        self.matcher = Matcher(fg_iou_thresh, fg_iou_thresh)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.ohem_rois = None if ohem_rois is None else int(ohem_rois)
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.mask_threshold, self.refine_rois = mask_threshold, refine_rois

    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes = batch_images(images, STRIDE)
        if targets is not None and len(targets) != batch.shape[0]:
            raise SeglabError(f"got {len(targets)} targets for {batch.shape[0]} images")
        features = self.backbone(batch)
        maps = self.head.score_maps(features[-1])
        if targets is not None:
            targets = [self._without_crowd(t, batch.device) for t in targets]
        proposals, rpn_losses = self.rpn([features[-2]], sizes, targets)
        if targets is None:
            return self.postprocess(maps, proposals, sizes)
        rois, labels, mask_targets, box_targets = self.sample_rois(proposals, targets)
        losses = fcis_losses(self.head(maps, rois), labels, mask_targets, box_targets, image_index=rois[:, 0].long(),
                             ohem_per_image=self.ohem_rois)
        return {**rpn_losses, **losses}

    @staticmethod
    def _without_crowd(target: dict, device: torch.device) -> dict:
        labels = torch.as_tensor(target["labels"], device=device).long()
        keep = ~torch.as_tensor(target.get("iscrowd", torch.zeros(labels.numel())), device=device).bool()
        return {"boxes": torch.as_tensor(target["boxes"], device=device).float()[keep], "labels": labels[keep],
                "masks": torch.as_tensor(target["masks"], device=device).bool()[keep]}

    @torch.no_grad()
    def sample_rois(self, proposals: Sequence[torch.Tensor], targets: Sequence[dict]):
        """Training RoIs (R, 5), labels (R,) (0 background, class + 1), mask targets (R, S, S) and box
        targets (R, 4) (zeros on negatives). All RoIs with OHEM, else the balanced sample."""
        size = self.head.roi_size
        all_rois, all_labels, all_masks, all_boxes = [], [], [], []
        for i, (props, t) in enumerate(zip(proposals, targets)):
            boxes = torch.cat([props.detach(), t["boxes"].to(props)])
            if t["boxes"].numel():
                matched = self.matcher(box_iou(t["boxes"].to(props), boxes))
                labels = torch.where(matched >= 0, t["labels"][matched.clamp(min=0)] + 1, 0)
            else:
                matched = torch.full((boxes.shape[0],), -1, dtype=torch.long, device=boxes.device)
                labels = torch.zeros_like(matched)
            if self.ohem_rois is None:
                pos, neg = self.sampler([labels])
                keep = torch.cat([torch.where(pos[0])[0], torch.where(neg[0])[0]])
                boxes, labels, matched = boxes[keep], labels[keep], matched[keep]
            positive = torch.where(labels > 0)[0]
            mask_targets = boxes.new_zeros(boxes.shape[0], size, size)
            box_targets = torch.zeros_like(boxes)
            if positive.numel():
                gt = matched[positive]
                mask_targets[positive] = project_masks_on_boxes(t["masks"], boxes[positive], gt, size,
                                                                threshold=TARGET_THRESHOLD).to(boxes)
                box_targets[positive] = self.box_coder.encode_single(t["boxes"][gt].to(boxes), boxes[positive])
            all_rois.append(torch.cat([boxes.new_full((boxes.shape[0], 1), i), boxes], dim=1))
            all_labels.append(labels)
            all_masks.append(mask_targets)
            all_boxes.append(box_targets)
        return torch.cat(all_rois), torch.cat(all_labels), torch.cat(all_masks), torch.cat(all_boxes)

    @torch.no_grad()
    def postprocess(self, maps: torch.Tensor, proposals: Sequence[torch.Tensor],
                    sizes: Sequence[tuple[int, int]]) -> list[InstanceResult]:
        """Score the proposals (and their refined boxes), per-class NMS, paste the masks."""
        index = torch.cat([torch.full((len(p),), i, dtype=torch.long, device=maps.device)
                           for i, p in enumerate(proposals)])
        rois = torch.cat([index[:, None].to(maps.dtype), torch.cat(list(proposals)).to(maps.dtype)], dim=1)
        first = self.head(maps, rois)
        passes = [(rois, first)]
        if self.refine_rois and rois.shape[0]:
            refined = self.box_coder.decode_single(first.box_deltas, rois[:, 1:])
            refined = torch.cat([rois[:, :1], _clip_per_roi(refined, index, sizes)], dim=1)
            passes.append((refined, self.head(maps, refined)))
        all_rois = torch.cat([r for r, _ in passes])
        outputs = FCISOutputs(*(torch.cat([getattr(o, f) for _, o in passes])
                                for f in ("class_logits", "mask_logits", "box_deltas")))
        probs = outputs.class_logits.softmax(1)[:, 1:]
        return [self._detections(all_rois, probs, outputs.mask_logits, i, size) for i, size in enumerate(sizes)]

    def _detections(self, rois: torch.Tensor, probs: torch.Tensor, mask_logits: torch.Tensor, image: int,
                    size: tuple[int, int]) -> InstanceResult:
        mine = torch.where(rois[:, 0] == image)[0]
        mine = mine[remove_small_boxes(rois[mine, 1:], 1.0)]  # degenerate refined boxes
        roi_idx, cls = torch.where(probs[mine] > self.score_thresh)
        roi_idx = mine[roi_idx]
        boxes, scores = rois[roi_idx, 1:], probs[roi_idx, cls]
        keep = batched_nms(boxes, scores, cls, self.nms_thresh)[: self.detections_per_img]
        roi_idx, cls, boxes, scores = roi_idx[keep], cls[keep], boxes[keep], scores[keep]
        mask_probs = torch.sigmoid(mask_logits[roi_idx, cls + 1])  # softmax of the (inside, outside) pair
        masks = paste_masks_in_image(mask_probs, boxes, size, threshold=self.mask_threshold)
        return InstanceResult(boxes=boxes, scores=scores, labels=cls, masks=masks)


_OWN_KWARGS = ("mid_channels", "k", "roi_size", "anchor_sizes", "aspect_ratios", "rpn_pre_nms_top_n_train",
               "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test",
               "rpn_batch_size_per_image", "batch_size_per_image", "positive_fraction", "ohem_rois",
               "fg_iou_thresh", "score_thresh", "nms_thresh", "detections_per_img", "mask_threshold", "refine_rois")


def _fcis(name: str, num_classes: int, in_channels: int, backbone_weights: str | None, aux_loss: bool,
          kwargs: dict) -> FCIS:
    if aux_loss:
        raise SeglabError(f"fcis_{name} has no auxiliary head; use aux_loss=False")
    own = {k: kwargs.pop(k) for k in _OWN_KWARGS if k in kwargs}
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels, output_stride=STRIDE,
                               **kwargs)
    return FCIS(backbone, num_classes, **own)


@register_model(task="instance")
def fcis_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                   aux_loss: bool = False, **kwargs) -> FCIS:
    """FCIS on ResNet-101, conv5 dilated (the paper's; 56.51M parameters at 21 classes). Model kwargs:
    mid_channels, k, roi_size, anchor_sizes, the RPN / RoI counts, ohem_rois and the inference
    settings; the rest go to the trunk (`width`)."""
    return _fcis("resnet101", num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model(task="instance")
def fcis_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                  aux_loss: bool = False, **kwargs) -> FCIS:
    """FCIS on ResNet-50 (37.52M parameters at 21 classes); kwargs as for fcis_resnet101."""
    return _fcis("resnet50", num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model(task="instance")
def fcis_resnet18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                  aux_loss: bool = False, **kwargs) -> FCIS:
    """FCIS on ResNet-18 for CPU runs (14.72M parameters at 21 classes); kwargs as for fcis_resnet101."""
    return _fcis("resnet18", num_classes, in_channels, backbone_weights, aux_loss, kwargs)
