"""Task-agnostic blocks and operators: conv blocks, upsampling and unpooling, and the detection
operators (RoIAlign, NMS, box coding, anchors, mask pasting) with torchvision's signatures."""
from .anchors import AnchorGenerator
from .boxes import BoxCoder, box_area, box_iou, clip_boxes_to_image, remove_small_boxes
from .conv_norm_act import ConvNormAct, SeparableConvNormAct
from .deform_conv import DeformConv2d, deform_conv2d
from .gradient import clamp_gradient
from .mask_paste import paste_masks_in_image
from .nms import batched_nms, fast_nms, nms
from .roi_align import MultiScaleRoIAlign, RoIAlign, boxes_to_rois, map_rois_to_fpn_levels, roi_align
from .roi_warp import RoIWarp, roi_warp
from .unpool import IndexedMaxPool2d, MaxUnpool2d
from .upsample import BilinearConvTranspose2d, bilinear_kernel, center_crop_to, resize_to

__all__ = ["AnchorGenerator", "BilinearConvTranspose2d", "BoxCoder", "ConvNormAct", "DeformConv2d",
           "IndexedMaxPool2d", "MaxUnpool2d", "MultiScaleRoIAlign", "RoIAlign", "RoIWarp", "SeparableConvNormAct",
           "batched_nms", "bilinear_kernel", "box_area", "box_iou", "boxes_to_rois", "center_crop_to",
           "clamp_gradient", "clip_boxes_to_image", "deform_conv2d", "fast_nms", "map_rois_to_fpn_levels", "nms",
           "paste_masks_in_image", "remove_small_boxes", "resize_to", "roi_align", "roi_warp"]
