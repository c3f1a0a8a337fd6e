"""Task-agnostic blocks and operators."""
from .conv_norm_act import ConvNormAct, SeparableConvNormAct
from .upsample import BilinearConvTranspose2d, bilinear_kernel, center_crop_to, resize_to

__all__ = ["ConvNormAct", "SeparableConvNormAct", "BilinearConvTranspose2d", "bilinear_kernel",
           "center_crop_to", "resize_to"]
