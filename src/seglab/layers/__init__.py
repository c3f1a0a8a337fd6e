"""Task-agnostic blocks and operators."""
from .conv_norm_act import ConvNormAct, SeparableConvNormAct
from .unpool import IndexedMaxPool2d, MaxUnpool2d
from .upsample import BilinearConvTranspose2d, bilinear_kernel, center_crop_to, resize_to

__all__ = ["ConvNormAct", "SeparableConvNormAct", "BilinearConvTranspose2d", "bilinear_kernel",
           "center_crop_to", "resize_to", "IndexedMaxPool2d", "MaxUnpool2d"]
