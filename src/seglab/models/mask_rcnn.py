"""Mask R-CNN: He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017 (Sec. 3, 3.1 "Network
Architecture", Fig. 4 right: the FPN head); PANet options from Liu, Qi, Qin, Shi & Jia, "Path
Aggregation Network for Instance Segmentation", CVPR 2018 (Sec. 3.1 bottom-up path augmentation,
Sec. 3.2 adaptive feature pooling).

Assembly (torchvision's `maskrcnn_resnet50_fpn` layout and choices):
- ResNet trunk at output stride 32; C2..C5 (strides 4..32) -> FPN (`seglab.necks.fpn`, 256 channels,
  `extra_pool=True`): P2..P6, strides 4..64;
- optional PANet bottom-up path (`bottom_up=True`, `seglab.necks.panet`): N2..N6 replace P2..P6;
- RPN (`seglab.heads.instance.rpn`) on all five levels: anchors 32, 64, 128, 256, 512 (one size per
  level) x aspect ratios 0.5, 1, 2; IoU 0.7 / 0.3, 256 anchors per image at half positive; 2000 / 1000
  proposals per image after NMS 0.7 (train / test);
- RoI heads (`seglab.heads.instance.roi_heads`) on P2..P5: RoIAlign 7x7 (box) and 14x14 (mask), sampling
  ratio 2, RoI level by FPN eq. 1; box head fc6/fc7 1024; 4 x conv3x3 256 mask head, 2x2 deconv, 28x28
  per-class masks; 512 RoIs per image at 25% foreground (IoU >= 0.5); losses cross-entropy, smooth-L1,
  per-class sigmoid BCE on the gt class's mask only. `adaptive_pooling=True` pools each RoI from all
  four levels and fuses by max (PANet Sec. 3.2); `mask_fc_fusion=True` adds PANet's fully-connected
  mask fusion (Sec. 3.4). `panet_resnet50_fpn` turns on all three PANet parts.
Images: a (N, 3, H, W) Tensor or a list of (3, H_i, W_i) Tensors (already normalised), zero-padded
bottom/right to a common size divisible by 32 (no resizing inside the model: the data transform scales).
Eval output: an `InstanceResult` per image, masks pasted into the image at its own size
(`paste_masks_in_image`) and binarised at `mask_threshold` (0.5, Sec. 3.1), labels 0..C-1 (background
is class 0 inside the heads only). Training (`forward(images, targets)`): the torchvision loss dict
`loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg, loss_mask`; crowd instances are
dropped from the targets. `extract_features(images) -> (batch, image_sizes, pyramid)` exposes trunk +
FPN (+ bottom-up path) for Panoptic FPN / UPSNet.

Deviations: BatchNorm in the trunk is trained (torchvision freezes it with ImageNet statistics; we
train from scratch as well); mask targets are RoIAligned with `aligned=True` and thresholded (see
roi_heads); RoI feature pooling keeps torchvision's `aligned=False`. PANet: the RPN also runs on the
augmented levels N2..N6 (N6 = max-pool of N5); the paper's other choices (GroupNorm, multi-scale
training, heavier heads, the ResNeXt trunk) are not reproduced.

Parameter counts (tests/models/test_mask_rcnn.py; eval uses all of them, there is no auxiliary head):
- `mask_rcnn_resnet50_fpn` at torchvision's COCO layout (num_classes=90, 91 with background):
  44,454,513 = trunk 23,508,032 + FPN 3,344,384 + RPN 593,935 + box head 13,895,680 + box predictor
  466,375 + mask head 2,360,320 + mask predictor 285,787. torchvision's maskrcnn_resnet50_fpn reports
  44,401,393: the same tensors (every rpn.* / roi_heads.* / backbone.fpn.* key has our shape), less the
  trunk's 53,120 BatchNorm weights and biases, which its FrozenBatchNorm2d holds as buffers.
  `seglab.convert.torchvision` loads that checkpoint (`weights=`) into this model.
- at 21 thing classes (22 with background): mask_rcnn_resnet50_fpn 44,083,155, mask_rcnn_resnet18_fpn
  31,014,355, panet_resnet50_fpn 68,178,531 (+ the bottom-up path's 3,540,480 and the fully-connected
  fusion's 20,554,896, almost all in its 25,088 x 784 fc). The PANet paper gives no parameter count.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..heads.instance.roi_heads import RoIHeads, drop_crowd
from ..heads.instance.rpn import RegionProposalNetwork
from ..layers import paste_masks_in_image
from ..layers.image_batch import batch_images
from ..necks.fpn import FeaturePyramidNetwork
from ..registry import register_model
from ..structures import InstanceResult

__all__ = ["MaskRCNN", "batch_images"]


def check_instance_targets(targets: Sequence[dict], sizes: Sequence[tuple[int, int]], device) -> list[dict]:
    if len(targets) != len(sizes):
        raise SeglabError(f"got {len(targets)} targets for {len(sizes)} images")
    out = []
    for i, (t, size) in enumerate(zip(targets, sizes)):
        missing = [k for k in ("boxes", "labels", "masks") if k not in t]
        if missing:
            raise SeglabError(f"targets[{i}] lacks {missing}; expected boxes (K, 4), labels (K,), masks (K, H, W)")
        boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device)
        labels = torch.as_tensor(t["labels"], device=device).long()
        masks = torch.as_tensor(t["masks"], device=device).bool()
        k = labels.numel()
        if boxes.shape != (k, 4) or tuple(masks.shape) != (k, *size):
            raise SeglabError(f"targets[{i}]: boxes {tuple(boxes.shape)} and masks {tuple(masks.shape)} do not fit "
                              f"{k} labels and the image size {size}")
        crowd = torch.as_tensor(t.get("iscrowd", torch.zeros(k)), device=device).bool()
        out.append({"boxes": boxes, "labels": labels, "masks": masks, "iscrowd": crowd})
    return drop_crowd(out)


class MaskRCNN(nn.Module):
    """Trunk -> FPN (P2..P6) -> [PANet bottom-up] -> RPN (all levels) -> RoI heads (P2..P5).

    RPN and RoI-head settings take torchvision's `MaskRCNN` argument names. `channels_last_inference`:
    `seglab.inference.instances.predict_instances` converts the weights to channels-last (oneDNN's
    convolutions then skip their layout reorders: 18% less CPU time for a forward at 800 x 1216).
    """

    channels_last_inference = True

    def __init__(self, backbone: nn.Module, num_classes: int, *, fpn_channels: int = 256, extra_pool: bool = True,
                 bottom_up: bool = False,
                 adaptive_pooling: bool = False, mask_fc_fusion: bool = False, mask_threshold: float = 0.5,
                 anchor_sizes: Sequence = ((32,), (64,), (128,), (256,), (512,)),
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 rpn_pre_nms_top_n_train: int = 2000, rpn_pre_nms_top_n_test: int = 1000,
                 rpn_post_nms_top_n_train: int = 2000, rpn_post_nms_top_n_test: int = 1000,
                 rpn_nms_thresh: float = 0.7, rpn_fg_iou_thresh: float = 0.7, rpn_bg_iou_thresh: float = 0.3,
                 rpn_batch_size_per_image: int = 256, rpn_positive_fraction: float = 0.5,
                 rpn_score_thresh: float = 0.0, representation_size: int = 1024, mask_channels: int = 256,
                 mask_layers: int = 4, box_score_thresh: float = 0.05, box_nms_thresh: float = 0.5,
                 box_detections_per_img: int = 100, box_fg_iou_thresh: float = 0.5, box_bg_iou_thresh: float = 0.5,
                 box_batch_size_per_image: int = 512, box_positive_fraction: float = 0.25,
                 bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)):
        super().__init__()
        self.num_classes = num_classes
        self.mask_threshold = mask_threshold
        self.backbone = backbone
        # P6 is a max-pool of P5 for a C2..C5 trunk; DetNet's stage 6 gives it (extra_pool=False).
        self.fpn = FeaturePyramidNetwork(backbone.out_channels[1:], fpn_channels, extra_pool=extra_pool,
                                         in_strides=backbone.strides[1:])
        self.bottom_up = None
        if bottom_up:
            from ..necks.panet import BottomUpPathAugmentation

            self.bottom_up = BottomUpPathAugmentation(fpn_channels, num_levels=4, extra_pool=True)
        self.rpn = RegionProposalNetwork(
            fpn_channels, anchor_sizes=anchor_sizes, aspect_ratios=aspect_ratios,
            fg_iou_thresh=rpn_fg_iou_thresh, bg_iou_thresh=rpn_bg_iou_thresh,
            batch_size_per_image=rpn_batch_size_per_image, positive_fraction=rpn_positive_fraction,
            pre_nms_top_n_train=rpn_pre_nms_top_n_train, pre_nms_top_n_test=rpn_pre_nms_top_n_test,
            post_nms_top_n_train=rpn_post_nms_top_n_train, post_nms_top_n_test=rpn_post_nms_top_n_test,
            nms_thresh=rpn_nms_thresh, score_thresh=rpn_score_thresh)
        self.roi_heads = RoIHeads(
            fpn_channels, num_classes, representation_size=representation_size, mask_channels=mask_channels,
            mask_layers=mask_layers, fg_iou_thresh=box_fg_iou_thresh, bg_iou_thresh=box_bg_iou_thresh,
            batch_size_per_image=box_batch_size_per_image, positive_fraction=box_positive_fraction,
            bbox_reg_weights=bbox_reg_weights, score_thresh=box_score_thresh, nms_thresh=box_nms_thresh,
            detections_per_img=box_detections_per_img, adaptive_pooling=adaptive_pooling,
            mask_fc_fusion=mask_fc_fusion)
        self.size_divisible = 32
        self.roi_levels = 4  # P2..P5; P6 only feeds the RPN

    def extract_features(self, images) -> tuple[torch.Tensor, list[tuple[int, int]], list[torch.Tensor]]:
        """(padded batch, each image's (h, w), pyramid P2..P6 or N2..N6)."""
        batch, sizes = batch_images(images, self.size_divisible)
        pyramid = self.fpn(self.backbone(batch)[1:])
        if self.bottom_up is not None:
            pyramid = self.bottom_up(pyramid)
        return batch, sizes, pyramid

    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes, pyramid = self.extract_features(images)
        if targets is not None:
            targets = check_instance_targets(targets, sizes, batch.device)
        proposals, rpn_losses = self.rpn(pyramid, sizes, targets)
        detections, roi_losses = self.roi_heads(pyramid[:self.roi_levels], proposals, sizes, targets)
        if targets is not None:
            return {**rpn_losses, **roi_losses}
        return self.postprocess(detections, sizes)

    @torch.no_grad()
    def postprocess(self, detections: Sequence[dict], sizes: Sequence[tuple[int, int]]) -> list[InstanceResult]:
        """Masks pasted at each image's size and binarised at `mask_threshold`."""
        results = []
        for d, size in zip(detections, sizes):
            masks = paste_masks_in_image(d["mask_probs"], d["boxes"], size, threshold=self.mask_threshold)
            results.append(InstanceResult(boxes=d["boxes"], scores=d["scores"], labels=d["labels"], masks=masks))
        return results


_OWN_KWARGS = frozenset(p for p in inspect.signature(MaskRCNN).parameters if p not in ("backbone", "num_classes"))


def _mask_rcnn(trunk: str, num_classes: int, in_channels: int, backbone_weights: str | None, aux_loss: bool,
               kwargs: dict, **defaults) -> MaskRCNN:
    if aux_loss:
        raise SeglabError(f"Mask R-CNN ({trunk}) has no auxiliary head; use aux_loss=False")
    if kwargs.pop("output_stride", 32) != 32:
        raise SeglabError("Mask R-CNN's trunk runs at output_stride 32 (the FPN gives strides 4..64)")
    own = {**defaults, **{k: kwargs.pop(k) for k in list(kwargs) if k in _OWN_KWARGS}}
    backbone = create_backbone(trunk, weights=backbone_weights, in_channels=in_channels, output_stride=32, **kwargs)
    return MaskRCNN(backbone, num_classes, **own)


@register_model(task="instance")
def mask_rcnn_resnet50_fpn(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                           aux_loss: bool = False, **kwargs) -> MaskRCNN:
    """Mask R-CNN, ResNet-50-FPN (He et al., ICCV 2017; 44.08M parameters at 21 classes). Model kwargs:
    fpn_channels, representation_size, mask_channels, mask_layers, bottom_up, adaptive_pooling,
    mask_fc_fusion, anchor_sizes, aspect_ratios, torchvision's rpn_* / box_* settings, mask_threshold;
    the rest go to the trunk (`width`)."""
    return _mask_rcnn("resnet50", num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model(task="instance")
def mask_rcnn_resnet18_fpn(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                           aux_loss: bool = False, **kwargs) -> MaskRCNN:
    """Mask R-CNN on ResNet-18-FPN; kwargs as for mask_rcnn_resnet50_fpn."""
    return _mask_rcnn("resnet18", num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model(task="instance")
def panet_resnet50_fpn(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                       aux_loss: bool = False, **kwargs) -> MaskRCNN:
    """PANet (Liu et al., CVPR 2018): Mask R-CNN ResNet-50-FPN with the bottom-up path augmentation,
    adaptive feature pooling and fully-connected mask fusion (each can be switched off: bottom_up,
    adaptive_pooling, mask_fc_fusion); kwargs as for mask_rcnn_resnet50_fpn."""
    return _mask_rcnn("resnet50", num_classes, in_channels, backbone_weights, aux_loss, kwargs,
                      bottom_up=True, adaptive_pooling=True, mask_fc_fusion=True)


@register_model(task="instance")
def mask_rcnn_detnet59_fpn(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                           aux_loss: bool = False, **kwargs) -> MaskRCNN:
    """Mask R-CNN on DetNet-59 + FPN (Li et al., ECCV 2018, Sec. 4; see `seglab.backbones.detnet`): stages
    2-6 (strides 4, 8, 16, 16, 16) give P2..P6 directly, the top-down path adds the three stride-16
    levels without upsampling, and no extra pooled level is made. RPN anchors 32..512 on P2..P6 and RoIs
    on P2..P5 by FPN eq. 1 (P5 is at stride 16 here), as the DetNet FPN release assigns them.
    kwargs as for mask_rcnn_resnet50_fpn; `width` and `dilation` go to the trunk."""
    if aux_loss:
        raise SeglabError("Mask R-CNN (detnet59) has no auxiliary head; use aux_loss=False")
    if kwargs.pop("output_stride", 16) != 16:
        raise SeglabError("DetNet keeps output_stride 16 (stages 4-6 all at stride 16)")
    own = {k: kwargs.pop(k) for k in list(kwargs) if k in _OWN_KWARGS}
    backbone = create_backbone("detnet59", weights=backbone_weights, in_channels=in_channels, **kwargs)
    return MaskRCNN(backbone, num_classes, **{"extra_pool": False, **own})
