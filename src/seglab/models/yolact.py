"""YOLACT: Bolya, Zhou, Xiao & Lee, "YOLACT: Real-time Instance Segmentation", ICCV 2019 (Sec. 3-4),
with the settings of the authors' release (dbolya/yolact, `yolact_base_config`) where the paper is silent.

One-stage instance segmentation: a protonet predicts k prototype masks for the whole image while a
one-stage detector head predicts, per anchor, class scores, a box and k mask coefficients; an
instance's mask is sigmoid(P c) for its coefficients c (a linear combination of the prototypes P),
cropped to its box. `yolact_resnet101` is the paper's main model (ResNet-101-FPN, 550x550);
`yolact_resnet50` its ResNet-50 variant; `yolact_resnet18` a small model for the CPU.

Architecture (Sec. 3, 4; `seglab.heads.instance.yolact` for the two branches):
- ResNet trunk at output stride 32; C3..C5 feed an FPN (lateral 1x1 + top-down + 3x3 convs, 256
  channels) giving P3..P5, each followed by ReLU as in the release; P6 and P7 come from 3x3 stride-2
  convs on P5 and on P6 (RetinaNet's extra levels, without a ReLU between them, as in the release);
- `ProtoNet` on P3: k = 32 prototypes at stride 4 (138x138 at 550 px);
- `PredictionHead` shared by P3..P7: class (C + 1) * a, box 4 * a, coefficients k * a with tanh;
  a = 3 anchors per location, aspect ratios (w/h) {1, 1/2, 2}, one size per level: 24, 48, 96, 192, 384
  pixels at 550 px (3x the level's stride), centred on the feature cells. `anchor_sizes` should follow
  the objects' sizes in pixels while staying above the strides: shrinking them with the image (x 128/550
  = 6..96 px, below the strides 8..128) left most objects with a single matched anchor, and on the
  128-px synthetic set (objects of 18-65 px) the paper's sizes gave mask AP50 82% after 15 epochs where
  the shrunk ones gave 21%;
- at training time only, a 1x1 conv on P3 to C channels for the auxiliary semantic segmentation loss.
Images (a Tensor or a list of (3, H, W) Tensors) are zero-padded bottom/right to a common size
divisible by 32, so every stride divides it; results are cropped back to each image's own size.

Training (`forward(images, targets)` -> dict of losses, sum them; labels 0..C-1, background 0 inside):
- matching: anchor IoU with a gt box >= 0.5 positive, < 0.4 negative, between ignored; then, as in
  the release, each gt box in turn (highest IoU first) takes its best anchor not yet taken, so every
  gt box has a positive anchor of its own; anchors covering a crowd region (> 0.7 of
  the anchor's area) that would be negative are ignored; crowd instances are otherwise dropped;
- `loss_class`: softmax cross-entropy over the positives and the hardest negatives (OHEM, by background
  loss, 3 negatives per positive), summed and divided by the number of positives (weight 1);
- `loss_box`: smooth-L1 (beta 1) of the box offsets of the positives / number of positives, weight 1.5;
  offsets are SSD's encoding with variances (0.1, 0.2), i.e. `BoxCoder` weights (10, 10, 5, 5);
- `loss_mask`: per positive (at most 100 per image, sampled, as the release), BCE of
  sigmoid(P c) against its gt mask downsampled to the prototype size (bilinear, > 0.5), cropped to the gt
  box (prototype cells that overlap it) and divided by the gt box area in prototype cells; summed over
  positives / number of positives, weight 6.125;
- `loss_semantic`: sigmoid BCE of the P3 semantic logits against the per-class union of the gt masks
  (downsampled the same way), summed over classes, averaged over pixels and images, weight 1.
Inference: softmax scores; anchors whose best class score > 0.05 go to per-class Fast NMS
(`seglab.layers.fast_nms`, IoU 0.5, top 200 per class, 100 detections), detections with a class
score <= 0.05 dropped; masks are assembled at the prototype size, cropped to the predicted box,
bilinearly upsampled to the (padded) image size, cut to the image and thresholded at 0.5.

Deviations: the FPN's top-down path upsamples by nearest neighbour (`seglab.necks.fpn`, torchvision's
layout) where the release uses bilinear; the mask BCE is computed from logits and only inside the crop
(the release multiplies sigmoid outputs by the crop, which gives a large constant loss where the
downsampled gt mask leaks outside the box); the crop keeps the prototype cells overlapping the box
where the release pads the box by one cell; inputs are padded to a multiple of 32 (550x550 runs at
576x576: P3 72x72, 20,730 anchors, where the release's 550 gives 69x69 and 19,248). The release's anchors are all square by a kept bug
(`use_square_anchors`: sides s * sqrt(r)); we use the paper's aspect ratios.

Parameters at 21 classes (eval = without the training-only semantic conv / total):
yolact_resnet101 49,728,526 / 49,733,923; yolact_resnet50 30,736,398 / 30,741,795; yolact_resnet18
17,716,750 / 17,722,147 (tests/models/test_yolact.py). The parts at 256 channels: FPN on C3..C5
2,688,512 (ResNet-50/101), P6 + P7 convs 1,180,160, protonet 2,368,544, prediction head 991,150
(1,399,135 at COCO's 81 logits). The paper gives no count. At 80 classes + background the eval counts
are 50,136,511 (resnet101) and 31,144,383 (resnet50); OpenVINO lists 36.83M for its export of the
release's ResNet-50 model: an exported graph holds the shared prediction head once per level (4 more
copies: 36,740,923), the remaining ~0.09M (e.g. the 19,248 x 4 anchor constant) we cannot attribute.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import create_backbone
from ..errors import ConfigError, SeglabError
from ..heads.instance.sampling import Matcher
from ..heads.instance.yolact import PredictionHead, ProtoNet
from ..layers import BoxCoder, box_iou, clip_boxes_to_image, fast_nms
from ..layers.image_batch import batch_images
from ..necks.fpn import FeaturePyramidNetwork
from ..registry import register_model
from ..structures import InstanceResult

__all__ = ["Yolact", "assemble_masks", "crop_masks", "force_best_anchors", "mask_loss", "ohem_negatives",
           "yolact_anchors"]

PAPER_ANCHOR_SIZES = (24.0, 48.0, 96.0, 192.0, 384.0)  # P3..P7, pixels at 550x550
PAPER_ASPECT_RATIOS = (1.0, 0.5, 2.0)  # width / height
SIZE_DIVISOR = 32
LOSS_WEIGHTS = {"class": 1.0, "box": 1.5, "mask": 6.125, "semantic": 1.0}


def yolact_anchors(grid_sizes: Sequence[Sequence[int]], image_size: Sequence[int], sizes: Sequence[float],
                   aspect_ratios: Sequence[float], device=None, dtype=torch.float32) -> torch.Tensor:
    """xyxy anchors (sum_l H_l W_l a, 4): per level, cells row-major, `len(aspect_ratios)` anchors per
    cell centred on it ((j + 0.5) * W / W_l), of width s sqrt(r) and height s / sqrt(r)."""
    height, width = float(image_size[0]), float(image_size[1])
    ratios = torch.tensor(aspect_ratios, dtype=dtype, device=device).sqrt()
    levels = []
    for (gh, gw), s in zip(grid_sizes, sizes):
        cy = (torch.arange(int(gh), dtype=dtype, device=device) + 0.5) * (height / int(gh))
        cx = (torch.arange(int(gw), dtype=dtype, device=device) + 0.5) * (width / int(gw))
        cy, cx = (v[..., None].expand(-1, -1, len(aspect_ratios)) for v in torch.meshgrid(cy, cx, indexing="ij"))
        half_w, half_h = (s * ratios / 2).expand_as(cx), (s / ratios / 2).expand_as(cx)
        levels.append(torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1).reshape(-1, 4))
    return torch.cat(levels)


def crop_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(K, height, width) bool: the cells of a height x width grid (cell (i, j) spans [j, j + 1) x
    [i, i + 1)) that overlap each xyxy box, given in cell units."""
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    in_x = (xs[None] + 1 > boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])
    in_y = (ys[None] + 1 > boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])
    return in_y[:, :, None] & in_x[:, None, :]


@torch.no_grad()
def ohem_negatives(class_logits: torch.Tensor, labels: torch.Tensor, ratio: int = 3) -> torch.Tensor:
    """Hard negatives (N, A) bool: per image the `ratio` x (number of positives) negatives (label 0) with
    the largest background loss -log softmax(logits)[0]; positives (> 0) and ignored (< 0) never count."""
    background_loss = torch.logsumexp(class_logits, -1) - class_logits[..., 0]
    background_loss = background_loss.masked_fill(labels != 0, -1.0)  # the loss itself is > 0
    rank = background_loss.argsort(1, descending=True).argsort(1)
    num_neg = (ratio * (labels > 0).sum(1, keepdim=True)).clamp(max=labels.shape[1] - 1)
    return (rank < num_neg) & (labels == 0)


def force_best_anchors(iou: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """Give every gt box (rows of `iou`, (G, A)) its own best anchor, as the release's `match` does:
    repeatedly take the highest remaining (gt, anchor) IoU, match that anchor to that gt, and remove
    both, so G gt boxes get G distinct anchors even when they share the best one."""
    matches = matches.clone()
    iou = iou.clone()
    for _ in range(min(iou.shape)):
        flat = int(iou.argmax())
        gt, anchor = divmod(flat, iou.shape[1])
        matches[anchor] = gt
        iou[gt, :] = -1.0
        iou[:, anchor] = -1.0
    return matches


class Yolact(nn.Module):
    """ResNet-FPN (P3..P7) -> ProtoNet on P3 and a shared prediction head; see the module docstring."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, fpn_channels: int = 256, head_channels: int = 256,
                 num_prototypes: int = 32, anchor_sizes: Sequence[float] = PAPER_ANCHOR_SIZES,
                 aspect_ratios: Sequence[float] = PAPER_ASPECT_RATIOS, score_threshold: float = 0.05,
                 nms_threshold: float = 0.5, top_k: int = 200, max_detections: int = 100,
                 masks_to_train: int = 100):
        super().__init__()
        if len(anchor_sizes) != 5 or any(not s > 0 for s in anchor_sizes):
            raise ConfigError(f"anchor_sizes must be 5 positive sizes (P3..P7), got {anchor_sizes!r}")
        if not aspect_ratios or any(not r > 0 for r in aspect_ratios):
            raise ConfigError(f"aspect_ratios must be positive numbers, got {aspect_ratios!r}")
        self.num_classes = num_classes
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.top_k, self.max_detections, self.masks_to_train = int(top_k), int(max_detections), int(masks_to_train)
        self.backbone = backbone
        self.fpn = FeaturePyramidNetwork(backbone.out_channels[2:], fpn_channels, in_strides=backbone.strides[2:])
        self.extra_levels = nn.ModuleList(nn.Conv2d(fpn_channels, fpn_channels, 3, stride=2, padding=1)
                                          for _ in range(2))
        self.protonet = ProtoNet(fpn_channels, head_channels, num_prototypes)
        self.head = PredictionHead(fpn_channels, num_classes + 1, len(self.aspect_ratios), num_prototypes,
                                   head_channels)
        self.semantic_conv = nn.Conv2d(fpn_channels, num_classes, 1)  # training-only auxiliary loss
        for m in [*self.extra_levels, self.semantic_conv]:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))  # SSD variances (0.1, 0.2)
        self.matcher = Matcher(0.5, 0.4)

    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes = batch_images(images, SIZE_DIVISOR)
        raw = self.forward_raw(batch, semantic=targets is not None)
        if targets is not None:
            return self.losses(raw, targets, sizes)
        return self.postprocess(raw, sizes)

    def forward_raw(self, batch: torch.Tensor, *, semantic: bool = False) -> dict[str, torch.Tensor]:
        """The network's outputs on a padded batch: class_logits (N, A, C + 1), box_deltas (N, A, 4),
        coefficients (N, A, k), prototypes (N, k, H/4, W/4), anchors (A, 4) xyxy, and with `semantic`
        the semantic logits (N, C, H/8, W/8)."""
        pyramid = [F.relu(p) for p in self.fpn(self.backbone(batch)[2:])]
        for conv in self.extra_levels:
            pyramid.append(conv(pyramid[-1]))
        class_logits, box_deltas, coefficients = self.head(pyramid)
        raw = {"class_logits": class_logits, "box_deltas": box_deltas, "coefficients": coefficients,
               "prototypes": self.protonet(pyramid[0]),
               "anchors": yolact_anchors([p.shape[-2:] for p in pyramid], batch.shape[-2:], self.anchor_sizes,
                                         self.aspect_ratios, batch.device)}  # float32 even under autocast
        if semantic:
            raw["semantic"] = self.semantic_conv(pyramid[0])
        return raw

    # ---------------------------------------------------------------- training
    def _match(self, anchors: torch.Tensor, target: dict, size: tuple[int, int], padded: tuple[int, int],
               index: int) -> tuple[torch.Tensor, ...]:
        """Anchor labels (A,) (class + 1, 0 negative, -1 ignored), matched gt index (A,), and the non-crowd
        gt boxes, labels and masks (padded to the batch size)."""
        masks = torch.as_tensor(target["masks"]).bool().to(anchors.device)
        labels = torch.as_tensor(target["labels"]).long().to(anchors.device)
        if masks.dim() != 3 or masks.shape[0] != labels.numel() or tuple(masks.shape[1:]) != size:
            raise SeglabError(f"targets[{index}]: masks {tuple(masks.shape)} do not match {labels.numel()} labels "
                              f"and the image size {size}")
        if labels.numel() and not bool(((labels >= 0) & (labels < self.num_classes)).all()):
            raise SeglabError(f"targets[{index}]: labels must be in 0..{self.num_classes - 1}, got {labels.tolist()}")
        boxes = torch.as_tensor(target["boxes"]).float().to(anchors.device).reshape(-1, 4)
        crowd = torch.as_tensor(target.get("iscrowd", torch.zeros(labels.numel()))).bool().to(anchors.device)
        keep = ~crowd
        gt_boxes, gt_labels = boxes[keep], labels[keep]
        gt_masks = F.pad(masks[keep], (0, padded[1] - size[1], 0, padded[0] - size[0]))
        if gt_boxes.shape[0] == 0:
            matched = torch.zeros(anchors.shape[0], dtype=torch.long, device=anchors.device)
            anchor_labels = torch.zeros_like(matched)
        else:
            iou = box_iou(gt_boxes, anchors)
            matches = force_best_anchors(iou, self.matcher(iou))
            matched = matches.clamp(min=0)
            anchor_labels = torch.where(matches >= 0, gt_labels[matched] + 1, 0)
            anchor_labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
        if bool(crowd.any()):  # negatives mostly inside a crowd region are ignored (release: 0.7)
            crowd_boxes = boxes[crowd]
            wh = (torch.min(anchors[:, None, 2:], crowd_boxes[None, :, 2:])
                  - torch.max(anchors[:, None, :2], crowd_boxes[None, :, :2])).clamp(min=0)
            area = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
            covered = (wh[..., 0] * wh[..., 1]).amax(1) / area > 0.7
            anchor_labels[covered & (anchor_labels == 0)] = -1
        return anchor_labels, matched, gt_boxes, gt_labels, gt_masks

    def losses(self, raw: dict[str, torch.Tensor], targets: Sequence[dict],
               sizes: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        # losses in float32 (the forward may run under bf16 autocast)
        class_logits, box_deltas, coefs, prototypes, semantic = (
            raw[k].float() for k in ("class_logits", "box_deltas", "coefficients", "prototypes", "semantic"))
        anchors = raw["anchors"]
        n = class_logits.shape[0]
        if len(targets) != n:
            raise SeglabError(f"got {len(targets)} targets for {n} images")
        proto_h, proto_w = prototypes.shape[-2:]
        padded = (proto_h * 4, proto_w * 4)
        matched_all = [self._match(anchors, t, tuple(s), padded, i) for i, (t, s) in enumerate(zip(targets, sizes))]
        anchor_labels = torch.stack([m[0] for m in matched_all])
        positive = anchor_labels > 0
        num_pos = positive.sum().clamp(min=1).to(class_logits.dtype)

        selected = positive | ohem_negatives(class_logits, anchor_labels)
        loss_class = F.cross_entropy(class_logits[selected], anchor_labels[selected], reduction="sum") / num_pos

        loss_box = box_deltas.sum() * 0.0  # keeps the graph when a batch has no positives
        loss_mask = coefs.sum() * 0.0 + prototypes.sum() * 0.0
        semantic_target = torch.zeros_like(semantic)
        cells_per_pixel = torch.tensor([proto_w / padded[1], proto_h / padded[0]] * 2, device=anchors.device)
        for i, (_, matched, gt_boxes, gt_labels, gt_masks) in enumerate(matched_all):
            if gt_masks.shape[0] == 0:
                continue
            proto_masks, semantic_masks = (
                F.interpolate(gt_masks[None].to(semantic.dtype), size=grid, mode="bilinear",
                              align_corners=False)[0] > 0.5
                for grid in ((proto_h, proto_w), tuple(semantic.shape[-2:])))
            one_hot = F.one_hot(gt_labels, self.num_classes).t().to(semantic.dtype)  # (C, K)
            per_class = one_hot @ semantic_masks.flatten(1).to(semantic.dtype)  # masks of each class, counted
            semantic_target[i] = per_class.clamp(max=1).view_as(semantic_target[i])
            pos = positive[i].nonzero()[:, 0]
            if pos.numel() == 0:
                continue
            ids = matched[pos]
            box_targets = self.box_coder.encode_single(gt_boxes[ids], anchors[pos])
            loss_box = loss_box + F.smooth_l1_loss(box_deltas[i, pos], box_targets, reduction="sum", beta=1.0)
            scale = 1.0
            if pos.numel() > self.masks_to_train:  # the release trains at most 100 masks per image
                pick = torch.randperm(pos.numel(), device=pos.device)[:self.masks_to_train]
                scale, pos, ids = pos.numel() / self.masks_to_train, pos[pick], ids[pick]
            mask_logits = torch.einsum("khw,pk->phw", prototypes[i], coefs[i, pos])
            per_mask = mask_loss(mask_logits, proto_masks[ids], gt_boxes[ids] * cells_per_pixel)
            loss_mask = loss_mask + scale * per_mask.sum()
        loss_semantic = F.binary_cross_entropy_with_logits(semantic, semantic_target, reduction="sum")
        loss_semantic = loss_semantic / (semantic.shape[-2] * semantic.shape[-1] * n)
        return {"loss_class": LOSS_WEIGHTS["class"] * loss_class,
                "loss_box": LOSS_WEIGHTS["box"] * loss_box / num_pos,
                "loss_mask": LOSS_WEIGHTS["mask"] * loss_mask / num_pos,
                "loss_semantic": LOSS_WEIGHTS["semantic"] * loss_semantic}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def postprocess(self, raw: dict[str, torch.Tensor], sizes: Sequence[tuple[int, int]]) -> list[InstanceResult]:
        """Detections per image: score filter, per-class Fast NMS, masks (see the module docstring)."""
        scores_all = raw["class_logits"].float().softmax(-1)[..., 1:]
        prototypes, anchors = raw["prototypes"].float(), raw["anchors"].float()
        proto_h, proto_w = prototypes.shape[-2:]
        padded = (proto_h * 4, proto_w * 4)
        results = []
        for i, (h, w) in enumerate(sizes):
            candidates = (scores_all[i].max(1).values > self.score_threshold).nonzero()[:, 0]
            boxes = self.box_coder.decode_single(raw["box_deltas"][i, candidates].float(), anchors[candidates])
            idx, scores, labels = fast_nms(boxes, scores_all[i, candidates].t(), self.nms_threshold, self.top_k,
                                           self.max_detections)
            ok = scores > self.score_threshold
            idx, scores, labels = idx[ok], scores[ok], labels[ok]
            boxes = clip_boxes_to_image(boxes[idx], (h, w))
            masks = assemble_masks(prototypes[i], raw["coefficients"][i, candidates[idx]].float())
            cells = boxes * torch.tensor([proto_w / padded[1], proto_h / padded[0]] * 2, device=boxes.device)
            masks = masks * crop_masks(cells, proto_h, proto_w)
            masks = F.interpolate(masks[None], size=padded, mode="bilinear", align_corners=False)[0]
            results.append(InstanceResult(boxes=boxes, scores=scores, labels=labels,
                                          masks=masks[:, :h, :w] > 0.5))
        return results


def assemble_masks(prototypes: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """sigmoid(P c) per instance: prototypes (k, H, W), coefficients (K, k) -> (K, H, W) in (0, 1)."""
    return torch.einsum("khw,pk->phw", prototypes, coefficients).sigmoid()


def mask_loss(mask_logits: torch.Tensor, gt_masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per-instance loss (P,): BCE of sigmoid(logits) (P, H, W) against the gt masks, summed over the
    cells overlapping the gt box (xyxy in cell units) and divided by the box area in cells."""
    crop = crop_masks(boxes, mask_logits.shape[-2], mask_logits.shape[-1])
    bce = F.binary_cross_entropy_with_logits(mask_logits, gt_masks.to(mask_logits.dtype), reduction="none")
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1.0)
    return (bce * crop).sum((1, 2)) / area


def _yolact(name: str, num_classes: int, in_channels: int, backbone_weights: str | None, aux_loss: bool,
            kwargs: dict) -> Yolact:
    if aux_loss:
        raise SeglabError(f"yolact_{name} has no auxiliary head (its semantic loss is always on); use aux_loss=False")
    own = {k: kwargs.pop(k) for k in ("fpn_channels", "head_channels", "num_prototypes", "anchor_sizes",
                                      "aspect_ratios", "score_threshold", "nms_threshold", "top_k",
                                      "max_detections", "masks_to_train") if k in kwargs}
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels, output_stride=32, **kwargs)
    return Yolact(backbone, num_classes, **own)


@register_model(task="instance")
def yolact_resnet101(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                     aux_loss: bool = False, **kwargs) -> Yolact:
    """YOLACT-550 on ResNet-101-FPN, the paper's main model (49.73M parameters at 21 classes). Model
    kwargs: fpn_channels, head_channels, num_prototypes, anchor_sizes, aspect_ratios, score_threshold,
    nms_threshold, top_k, max_detections, masks_to_train; the rest go to the trunk (`width`)."""
    return _yolact("resnet101", num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model(task="instance")
def yolact_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = False, **kwargs) -> Yolact:
    """YOLACT on ResNet-50-FPN (30.74M parameters at 21 classes); kwargs as for yolact_resnet101."""
    return _yolact("resnet50", num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model(task="instance")
def yolact_resnet18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                    aux_loss: bool = False, **kwargs) -> Yolact:
    """YOLACT on ResNet-18-FPN, for the CPU (17.72M parameters at 21 classes); kwargs as for
    yolact_resnet101."""
    return _yolact("resnet18", num_classes, in_channels, backbone_weights, aux_loss, kwargs)
