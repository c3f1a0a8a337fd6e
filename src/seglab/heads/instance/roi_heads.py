"""Mask R-CNN's RoI heads: He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017 (Sec. 3, 3.1 and
Fig. 4 right, the FPN head), with PANet's adaptive feature pooling as an option (Liu, Qi, Qin, Shi & Jia,
"Path Aggregation Network for Instance Segmentation", CVPR 2018, Sec. 3.2).

Parts and parameter names are torchvision's (`torchvision/models/detection/roi_heads.py`,
`faster_rcnn.py`, `mask_rcnn.py`), so a torchvision checkpoint's `roi_heads.*` maps key for key:
- `box_roi_pool`: RoIAlign 7x7, sampling ratio 2, each RoI from the FPN level of FPN eq. 1;
- `box_head` (`TwoMLPHead`): fc6, fc7 of `representation_size` (1024) with ReLU;
- `box_predictor` (`FastRCNNPredictor`): `cls_score` (C + 1, class 0 = background) and class-specific
  `bbox_pred` (4 (C + 1));
- `mask_roi_pool`: RoIAlign 14x14; `mask_head` (`MaskRCNNHeads`): 4 x (3x3 conv 256 + ReLU) as
  `mask_head.{i}.0`; `mask_predictor` (`MaskRCNNPredictor`): `conv5_mask` (2x2 transposed conv, stride 2,
  + ReLU) and `mask_fcn_logits` (1x1 conv to C + 1): one 28x28 mask per class.
Training (Sec. 3.1): the ground-truth boxes join the proposals; a proposal is foreground when its IoU
with a ground-truth box is >= 0.5, else background; 512 RoIs per image with up to 25% foreground;
box targets encoded with weights (10, 10, 5, 5). Losses: cross-entropy over the C + 1 classes,
smooth-L1 (beta 1/9, summed and divided by the number of sampled RoIs) on the ground-truth class's 4
deltas only, and the mask loss: per-pixel sigmoid BCE on the ground-truth class's 28x28 channel only
(no competition between classes, the paper's decoupling), on foreground RoIs only.
Mask targets: the ground-truth mask is RoIAligned onto the proposal (28x28) and thresholded at 0.5, as
Detectron does. Deviation from torchvision (which uses `aligned=False` and soft targets): we use
`aligned=True`, because the data's masks and boxes are in the pixel-edge convention (a box tight
around a square mask yields an all-ones target) and `paste_masks_in_image` pastes with the same
continuous coordinates. Crowd instances (`iscrowd`) are not used as targets (`drop_crowd`).
Inference: softmax scores, class-specific box decoding, clipping, background dropped, score > 0.05,
tiny boxes removed, per-class NMS at 0.5, the 100 best; the mask head then runs on the kept boxes and
the predicted class's channel is taken. Labels out are 0..C-1 (the background index is internal).

`adaptive_pooling=True` (PANet Sec. 3.2): every RoI is pooled from all levels; the box branch applies
fc6 to each level's pooled feature and fuses them by element-wise max before fc7; the mask branch
applies its first conv per level, fuses by max, then the other convs. (ReLU commutes with max, so the
order of activation and fusion does not matter.) `mask_fc_fusion=True` adds PANet's fully-connected
fusion (Sec. 3.4): `mask_fc_fusion.conv4_fc`, `.conv5_fc` (half the channels) from the mask head's
conv3 and an fc layer to a class-agnostic 28x28 logit map added to every class's mask logits.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import SeglabError
from ...layers import (
    BoxCoder,
    MultiScaleRoIAlign,
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
    roi_align,
)
from ...layers.roi_align import axis_interpolation
from .sampling import BalancedPositiveNegativeSampler, Matcher

__all__ = ["FastRCNNPredictor", "MaskFCFusion", "MaskRCNNHeads", "MaskRCNNPredictor", "RoIHeads", "TwoMLPHead",
           "drop_crowd", "project_masks_on_boxes"]


def drop_crowd(targets: Sequence[dict]) -> list[dict]:
    """Targets without their crowd instances (`iscrowd` True), which are not training targets."""
    out = []
    for t in targets:
        crowd = t.get("iscrowd")
        if crowd is None or not bool(torch.as_tensor(crowd).any()):
            out.append(t)
            continue
        keep = ~torch.as_tensor(crowd, dtype=torch.bool)
        out.append({**t, **{k: torch.as_tensor(t[k])[keep] for k in ("boxes", "labels", "masks", "iscrowd")
                            if k in t}})
    return out


def _bin_weights(start: torch.Tensor, end: torch.Tensor, size: int, pixels: int) -> torch.Tensor:
    """(K, size, pixels): along one axis, the weight of each pixel in each of `size` bins of [start, end)
    as RoIAlign (aligned=True, adaptive sampling) computes it: the mean of ceil(bin) bilinear samples."""
    start, end = start - 0.5, end - 0.5  # aligned=True: pixel centres at integer coordinates
    bin_size = (end - start) / size
    grid = torch.ceil(bin_size).clamp(min=1).long()
    samples = torch.arange(int(grid.max()), device=start.device)
    coords = (start[:, None, None] + torch.arange(size, device=start.device)[None, :, None] * bin_size[:, None, None]
              + (samples + 0.5)[None, None, :] * (bin_size / grid)[:, None, None])
    index, weight = axis_interpolation(coords, pixels)  # (K, size, samples, 2)
    weight = weight * (samples[None, None, :, None] < grid[:, None, None, None]) / grid[:, None, None, None]
    out = weight.new_zeros(start.shape[0], size, pixels)
    return out.scatter_add_(2, index.flatten(2), weight.flatten(2))


def project_masks_on_boxes(gt_masks: torch.Tensor, boxes: torch.Tensor, matched_idxs: torch.Tensor,
                           size: int, threshold: float = 0.5) -> torch.Tensor:
    """Binary (K, size, size) targets: gt mask `matched_idxs[k]` RoIAligned onto box k (aligned=True,
    adaptive sampling), >= `threshold`. RoIAlign is separable, so each target is Wy @ mask @ Wx^T, computed
    per ground-truth mask for all its RoIs (no (K, H, W) copy of the masks)."""
    boxes = boxes.float()
    with torch.autocast(boxes.device.type, enabled=False):  # float32 weights and products under bf16 training
        rows = _bin_weights(boxes[:, 1], boxes[:, 3], size, gt_masks.shape[-2])
        cols = _bin_weights(boxes[:, 0], boxes[:, 2], size, gt_masks.shape[-1])
        out = boxes.new_empty(boxes.shape[0], size, size)
        for g in matched_idxs.unique().tolist():
            k = torch.where(matched_idxs == g)[0]
            projected = (rows[k].flatten(0, 1) @ gt_masks[g].float()).view(len(k), size, -1)
            out[k] = torch.bmm(projected, cols[k].transpose(1, 2))
    return (out >= threshold).float()


class TwoMLPHead(nn.Module):
    """fc6 -> ReLU -> fc7 -> ReLU on flattened pooled features (torchvision's `TwoMLPHead`)."""

    def __init__(self, in_channels: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))

    def forward_levels(self, x: torch.Tensor) -> torch.Tensor:
        """PANet adaptive pooling: x (L, R, C, S, S) pooled from L levels; fc6 per level, max, fc7."""
        fused = self.fc6(x.flatten(2)).amax(0)
        return F.relu(self.fc7(F.relu(fused)))


class FastRCNNPredictor(nn.Module):
    """Class scores (C + 1) and class-specific box deltas (4 (C + 1))."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class MaskRCNNHeads(nn.Sequential):
    """`len(layers)` x (3x3 conv + ReLU), each an `nn.Sequential(conv, relu)` (keys `{i}.0.*`)."""

    def __init__(self, in_channels: int, layers: Sequence[int], dilation: int = 1):
        blocks = []
        for out_channels in layers:
            conv = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            blocks.append(nn.Sequential(conv, nn.ReLU(inplace=True)))
            in_channels = out_channels
        super().__init__(*blocks)

    def run(self, x: torch.Tensor, *, fuse_levels: bool = False,
            tap: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(output, output of block `tap` or None). `fuse_levels`: x is (L, R, C, S, S), pooled from L
        levels (PANet adaptive pooling): the first conv runs per level and the levels are fused by max."""
        tapped = None
        for i, block in enumerate(self):
            if i == 0 and fuse_levels:
                levels, rois = x.shape[:2]
                x = block(x.flatten(0, 1))
                x = x.view(levels, rois, *x.shape[1:]).amax(0)
            else:
                x = block(x)
            if i == tap:
                tapped = x
        return x, tapped


class MaskFCFusion(nn.Module):
    """PANet's fully-connected fusion (Sec. 3.4, Fig. 4): from the mask head's conv3, two 3x3 convs
    (`conv4_fc`, then `conv5_fc` with half the channels) and one fc layer give a class-agnostic
    foreground logit map (28x28) that is added to every class's mask logits."""

    def __init__(self, channels: int, pool_size: int, mask_size: int):
        super().__init__()
        self.conv4_fc = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.conv5_fc = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(channels // 2 * pool_size ** 2, mask_size ** 2)
        self.mask_size = mask_size
        for m in (self.conv4_fc[0], self.conv5_fc[0]):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.conv5_fc(self.conv4_fc(x)).flatten(1))
        return y.view(-1, 1, self.mask_size, self.mask_size)


class MaskRCNNPredictor(nn.Sequential):
    """2x2 transposed conv (stride 2) + ReLU, then 1x1 conv to one mask logit map per class."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        super().__init__(OrderedDict([
            ("conv5_mask", nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2)),
            ("relu", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", nn.Conv2d(dim_reduced, num_classes, 1)),
        ]))
        for m in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward_labels(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(R, 28, 28) logits of class labels[r] only: the 1x1 conv's row of each RoI's class as one batched
        (1 x C) @ (C x 784) product, instead of all C + 1 maps (of which inference keeps one)."""
        x = self.relu(self.conv5_mask(x))
        weight = self.mask_fcn_logits.weight[labels, :, 0, 0].unsqueeze(1).to(x.dtype)   # (R, 1, C)
        logits = torch.bmm(weight, x.flatten(2)).view(x.shape[0], *x.shape[2:])
        return logits + self.mask_fcn_logits.bias[labels].view(-1, 1, 1).to(logits.dtype)


def _level_scales(features: Sequence[torch.Tensor], image_sizes: Sequence[Sequence[int]]) -> list[float]:
    """Each level's scale as `MultiScaleRoIAlign` infers it: the power of two nearest feature / image."""
    max_h = max(int(s[0]) for s in image_sizes)
    return [2.0 ** round(math.log2(f.shape[-2] / max_h)) for f in features]


def pool_all_levels(features: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor],
                    image_sizes: Sequence[Sequence[int]], output_size: int, sampling_ratio: int) -> torch.Tensor:
    """Every box RoIAligned from every level (PANet's adaptive feature pooling): (L, R, C, S, S)."""
    rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
    return torch.stack([roi_align(f, rois, output_size, s, sampling_ratio)
                        for f, s in zip(features, _level_scales(features, image_sizes))])


class RoIHeads(nn.Module):
    """Box and mask heads over FPN levels P2..P5; `num_classes` thing classes (+1 background inside).

    `forward(features, proposals, image_sizes, targets=None)` -> (detections, losses). With targets:
    ([], {"loss_classifier", "loss_box_reg", "loss_mask"}). Without: (per image a dict of "boxes" (K, 4),
    "scores" (K,), "labels" (K,) in 0..C-1, "mask_probs" (K, 28, 28) and "mask_logits" (K, 28, 28) of
    the predicted class, {}).
    """

    def __init__(self, in_channels: int, num_classes: int, *, representation_size: int = 1024,
                 mask_channels: int = 256, mask_layers: int = 4, box_pool_size: int = 7, mask_pool_size: int = 14,
                 sampling_ratio: int = 2, fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5,
                 batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                 bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 100, adaptive_pooling: bool = False,
                 mask_fc_fusion: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.box_roi_pool = MultiScaleRoIAlign(None, box_pool_size, sampling_ratio)
        self.box_head = TwoMLPHead(in_channels * box_pool_size ** 2, representation_size)
        self.box_predictor = FastRCNNPredictor(representation_size, num_classes + 1)
        self.mask_roi_pool = MultiScaleRoIAlign(None, mask_pool_size, sampling_ratio)
        self.mask_head = MaskRCNNHeads(in_channels, [mask_channels] * mask_layers)
        self.mask_predictor = MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1)
        self.mask_fc_fusion = (MaskFCFusion(mask_channels, mask_pool_size, 2 * mask_pool_size) if mask_fc_fusion
                               else None)
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.adaptive_pooling = adaptive_pooling

    # -- pooling + heads ---------------------------------------------------------------------------
    def box_forward(self, features, boxes, image_sizes) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (R, C + 1), box deltas (R, 4 (C + 1))) for per-image boxes."""
        if self.adaptive_pooling:
            x = self.box_head.forward_levels(pool_all_levels(features, boxes, image_sizes,
                                                             self.box_roi_pool.output_size,
                                                             self.box_roi_pool.sampling_ratio))
        else:
            x = self.box_head(self.box_roi_pool(features, boxes, image_sizes))
        return self.box_predictor(x)

    def mask_forward(self, features, boxes, image_sizes, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mask logits (R, C + 1, 28, 28) for per-image boxes; with `labels` (R,), only each RoI's class:
        (R, 28, 28). The labelled form runs the head in channels-last layout (the 2x2 transposed conv is
        1.8x faster so on this CPU)."""
        if self.adaptive_pooling:
            x = pool_all_levels(features, boxes, image_sizes, self.mask_roi_pool.output_size,
                                self.mask_roi_pool.sampling_ratio)
        else:
            x = self.mask_roi_pool(features, boxes, image_sizes)
        if labels is not None and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        tap = None if self.mask_fc_fusion is None else max(len(self.mask_head) - 2, 0)  # conv3 of 4
        x, tapped = self.mask_head.run(x, fuse_levels=self.adaptive_pooling, tap=tap)
        if labels is None:
            logits = self.mask_predictor(x)
            return logits if tapped is None else logits + self.mask_fc_fusion(tapped)
        logits = self.mask_predictor.forward_labels(x, labels)
        return logits if tapped is None else logits + self.mask_fc_fusion(tapped)[:, 0]

    # -- training ----------------------------------------------------------------------------------
    def select_training_samples(self, proposals: Sequence[torch.Tensor], targets: Sequence[dict]):
        """Per image: sampled RoIs, their labels (0 background, else class + 1), matched gt index and
        box regression targets."""
        rois, labels, matched, regression = [], [], [], []
        for props, t in zip(proposals, targets):
            gt_boxes = t["boxes"].to(props)
            gt_labels = t["labels"].to(props.device).long() + 1
            props = torch.cat([props, gt_boxes])
            if gt_boxes.numel():
                idx = self.proposal_matcher(box_iou(gt_boxes, props))
            else:
                idx = torch.full((props.shape[0],), Matcher.BELOW_LOW_THRESHOLD, device=props.device)
            clamped = idx.clamp(min=0)
            lab = gt_labels[clamped] if gt_boxes.numel() else torch.zeros_like(idx)
            lab = torch.where(idx == Matcher.BELOW_LOW_THRESHOLD, 0, lab)
            lab = torch.where(idx == Matcher.BETWEEN_THRESHOLDS, -1, lab)
            pos, neg = self.fg_bg_sampler([lab])
            keep = torch.where((pos[0] | neg[0]).bool())[0]
            props, lab, clamped = props[keep], lab[keep], clamped[keep]
            ref = gt_boxes[clamped] if gt_boxes.numel() else torch.zeros_like(props)
            rois.append(props)
            labels.append(lab)
            matched.append(clamped)
            regression.append(self.box_coder.encode_single(ref, props))
        return rois, labels, matched, regression

    def box_loss(self, class_logits: torch.Tensor, box_regression: torch.Tensor, labels: torch.Tensor,
                 regression_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy, and smooth-L1 on the gt class's deltas of the foreground RoIs (sum / RoIs)."""
        loss_classifier = F.cross_entropy(class_logits.float(), labels)
        pos = torch.where(labels > 0)[0]
        deltas = box_regression.float().view(labels.shape[0], -1, 4)[pos, labels[pos]]
        loss_box = F.smooth_l1_loss(deltas, regression_targets[pos], beta=1 / 9, reduction="sum")
        return loss_classifier, loss_box / max(labels.numel(), 1)

    def mask_loss(self, mask_logits: torch.Tensor, pos_boxes: Sequence[torch.Tensor],
                  pos_labels: Sequence[torch.Tensor], pos_matched: Sequence[torch.Tensor],
                  targets: Sequence[dict]) -> torch.Tensor:
        """Sigmoid BCE of the gt class's 28x28 channel against the projected gt masks."""
        if mask_logits.shape[0] == 0:
            return mask_logits.sum() * 0
        size = mask_logits.shape[-1]
        mask_targets = torch.cat([project_masks_on_boxes(t["masks"].to(b.device), b, m, size)
                                  for t, b, m in zip(targets, pos_boxes, pos_matched) if b.shape[0]])
        labels = torch.cat(list(pos_labels))
        logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
        return F.binary_cross_entropy_with_logits(logits.float(), mask_targets)

    # -- inference ---------------------------------------------------------------------------------
    def postprocess_detections(self, class_logits: torch.Tensor, box_regression: torch.Tensor,
                               proposals: Sequence[torch.Tensor], image_sizes) -> list[dict]:
        """Per image: decoded, clipped, thresholded, per-class NMS'd detections (labels 1..C here)."""
        boxes_all = self.box_coder.decode(box_regression.float(), proposals)  # (R, C + 1, 4)
        scores_all = F.softmax(class_logits.float(), -1)
        out = []
        for boxes, scores, size in zip(boxes_all.split([len(p) for p in proposals]),
                                       scores_all.split([len(p) for p in proposals]), image_sizes):
            boxes = clip_boxes_to_image(boxes, size)[:, 1:].reshape(-1, 4)
            labels = torch.arange(1, scores.shape[1], device=scores.device).repeat(scores.shape[0])
            scores = scores[:, 1:].reshape(-1)
            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = remove_small_boxes(boxes, 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[:self.detections_per_img]
            out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return out

    def forward(self, features: Sequence[torch.Tensor], proposals: Sequence[torch.Tensor],
                image_sizes: Sequence[Sequence[int]], targets: Sequence[dict] | None = None):
        features = list(features)
        proposals = [p.detach().float() for p in proposals]  # box arithmetic in float32, also under autocast
        if targets is not None:
            if len(targets) != len(proposals):
                raise SeglabError(f"got {len(targets)} targets for {len(proposals)} images")
            targets = drop_crowd(targets)
            rois, labels, matched, regression = self.select_training_samples(proposals, targets)
            class_logits, box_regression = self.box_forward(features, rois, image_sizes)
            loss_classifier, loss_box_reg = self.box_loss(class_logits, box_regression, torch.cat(labels),
                                                          torch.cat(regression))
            fg = [torch.where(lab > 0)[0] for lab in labels]
            pos_boxes = [r[i] for r, i in zip(rois, fg)]
            mask_logits = self.mask_forward(features, pos_boxes, image_sizes)
            loss_mask = self.mask_loss(mask_logits, pos_boxes, [lab[i] for lab, i in zip(labels, fg)],
                                       [m[i] for m, i in zip(matched, fg)], targets)
            return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}
        class_logits, box_regression = self.box_forward(features, proposals, image_sizes)
        detections = self.postprocess_detections(class_logits, box_regression, proposals, image_sizes)
        mask_logits = self.mask_forward(features, [d["boxes"] for d in detections], image_sizes,
                                        labels=torch.cat([d["labels"] for d in detections]))
        for d, logits in zip(detections, mask_logits.split([len(d["boxes"]) for d in detections])):
            chosen = logits.float()
            d["mask_logits"], d["mask_probs"] = chosen, chosen.sigmoid()
            d["labels"] = d["labels"] - 1
        return detections, {}
