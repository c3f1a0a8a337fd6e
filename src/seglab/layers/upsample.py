"""Upsampling layers (lecture 002, 'upsampling types'): bilinear interpolation, transposed convolution
initialised to bilinear interpolation (Long et al., FCN, CVPR 2015, Sec. 3.3), and resizing helpers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights (channels, channels, k, k) that make a per-channel transposed conv a bilinear upsampler."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


class BilinearConvTranspose2d(nn.ConvTranspose2d):
    """Learnable `factor`x upsampling (kernel 2*factor, stride factor, padding factor/2) that starts out
    as exact bilinear interpolation, as FCN's deconvolution layers do."""

    def __init__(self, channels: int, factor: int, *, bias: bool = False):
        kernel = 2 * factor
        super().__init__(channels, channels, kernel, stride=factor, padding=factor // 2, bias=bias)
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, kernel))
            if self.bias is not None:
                self.bias.zero_()


def resize_to(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    """Resize a feature map or logits to `size` (H, W); a no-op when it already has that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def center_crop_to(x: torch.Tensor, size) -> torch.Tensor:
    """Crop the top-left-aligned upsampled map to `size` (FCN crops its deconvolution outputs)."""
    h, w = size
    if x.shape[-2] < h or x.shape[-1] < w:
        raise ValueError(f"cannot crop {tuple(x.shape[-2:])} to larger size {(h, w)}")
    return x[..., :h, :w]
