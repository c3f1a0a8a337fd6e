"""Deformable convolution v1: Dai, Qi, Xiong, Li, Zhang, Hu & Wei, "Deformable Convolutional Networks",
ICCV 2017, Sec. 2.1.

A regular convolution sums w(p_k) * x(p_0 + p_k) over the kernel grid p_k; the deformable one samples
x(p_0 + p_k + dp_k) at fractional positions with bilinear interpolation (eq. 2-4), the offsets dp_k
being predicted per output pixel by a regular convolution over the same input, initialised to zero so
that training starts from the plain convolution.

`deform_conv2d` has torchvision.ops.deform_conv2d's argument layout and semantics (v1, no mask):
- offset (N, 2 * offset_groups * kh * kw, Ho, Wo): for offset group g and kernel tap k = i * kw + j, channel
  2 * (g * kh * kw + k) is dy and the next one dx; the input channels split into `offset_groups`
  consecutive groups, each deformed by its own offsets;
- tap (i, j) of output pixel (y, x) reads the input at (y * sh - ph + i * dh + dy, x * sw - pw + j * dw + dx);
- bilinear interpolation of the four integer neighbours, each neighbour outside the image counting as
  zero (so a sample at or beyond -1 / H reads 0, as torchvision's kernel);
- weight (C_out, C_in / groups, kh, kw) with `groups` inferred from its shape, as torchvision does.

Written with PyTorch ops, vectorised over pixels and taps: the input is copied channels-last (one row
of C / offset_groups values per pixel and group, the "table"); the four bilinear corners of every tap
of every output pixel are row indices into it, with their weights (zero for corners outside the image);
one `F.embedding_bag(mode="sum", per_sample_weights=...)` sums the four weighted rows of each sample
straight into the im2col matrix (N, Ho * Wo, G * K * C / G), and one matrix product with the weight,
reordered to the same (group, tap, channel) column order, gives the output. Autograd gives the
gradients: embedding_bag's backward scatters into the table and returns, for the corner weights, the
dot products with the corner rows; from there ordinary ops carry them to the offsets (the weights are
piecewise linear in them). Sampling positions are computed in at least float32 (bf16 cannot address
column 300.25).

Speed against F.conv2d of the same shape, forward and forward + backward: docs/performance.md, from
`benchmarks/deform_conv_speed.py`, which keeps the previous implementation (one index_select of all
corners from a strided table, a batched (1 x 4) @ (4 x C) weighting, a reordering copy, the matmul;
10-15x a convolution) as its reference and checks that outputs and gradients agree.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from ..errors import SeglabError

__all__ = ["DeformConv2d", "deform_conv2d"]


def _bilinear_bags(offset: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int], dilation: tuple[int, int], groups: int, height: int,
                   width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The four bilinear corners of every sample as rows of the channels-last input table, and their
    weights: two (N * Ho * Wo * G * K, 4) tensors ordered (n, y, x, g, tap, corner), the rows in im2col
    order. Table row ((n * G + g) * H + y) * W + x holds pixel (y, x) of offset group g of image n.
    A corner outside the image gets weight zero (and a clamped, valid row), as torchvision's kernel."""
    n, _, out_h, out_w = offset.shape
    kh, kw = kernel
    dtype, device = offset.dtype, offset.device
    # (N, G, K, 2, Ho, Wo) -> (N, Ho, Wo, G, K, 2): a permute of the small offset tensor, so that every
    # tensor below is already in the order the gathered rows must have.
    offset = offset.reshape(n, groups, kh * kw, 2, out_h, out_w).permute(0, 4, 5, 1, 2, 3).contiguous()
    tap_y = (torch.arange(kh, dtype=dtype, device=device) * dilation[0]).repeat_interleave(kw)
    tap_x = (torch.arange(kw, dtype=dtype, device=device) * dilation[1]).repeat(kh)
    base_y = torch.arange(out_h, dtype=dtype, device=device) * stride[0] - padding[0]
    base_x = torch.arange(out_w, dtype=dtype, device=device) * stride[1] - padding[1]
    rows = base_y.view(1, out_h, 1, 1, 1) + tap_y + offset[..., 0]         # (N, Ho, Wo, G, K)
    cols = base_x.view(1, 1, out_w, 1, 1) + tap_x + offset[..., 1]
    y0, x0 = rows.floor(), cols.floor()
    fy, fx = rows - y0, cols - x0
    step = torch.arange(2, device=device)
    corner_y = y0.long().unsqueeze(-1) + step                                # (..., 2): y0, y0 + 1
    corner_x = x0.long().unsqueeze(-1) + step
    # Separable weights: corner (a, b) has (1 - fy, fy)[a] * (1 - fx, fx)[b], times "inside the image".
    weight_y = torch.stack([1 - fy, fy], -1) * ((corner_y >= 0) & (corner_y < height))
    weight_x = torch.stack([1 - fx, fx], -1) * ((corner_x >= 0) & (corner_x < width))
    weights = (weight_y.unsqueeze(-1) * weight_x.unsqueeze(-2)).flatten(-2)  # corners (0,0) (0,1) (1,0) (1,1)
    plane = (torch.arange(n, device=device).view(n, 1, 1, 1) * groups
             + torch.arange(groups, device=device)).view(n, 1, 1, groups, 1, 1) * (height * width)
    index = (corner_y.clamp(0, height - 1) * width).unsqueeze(-1) + corner_x.clamp(0, width - 1).unsqueeze(-2)
    index = plane + index.flatten(-2)
    return index.view(-1, 4), weights.view(-1, 4)


def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                  dilation: int | Sequence[int] = 1) -> torch.Tensor:
    """Deformable convolution v1 with torchvision.ops.deform_conv2d's arguments (no modulation mask):
    input (N, C_in, H, W), offset (N, 2 * offset_groups * kh * kw, Ho, Wo), weight (C_out, C_in / groups,
    kh, kw), bias (C_out,) -> (N, C_out, Ho, Wo)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if input.dim() != 4 or weight.dim() != 4:
        raise SeglabError(f"deform_conv2d expects a 4-d input and weight, got {tuple(input.shape)} and "
                          f"{tuple(weight.shape)}")
    n, channels, height, width = input.shape
    out_channels, group_in, kh, kw = weight.shape
    if group_in == 0 or channels % group_in or out_channels % (channels // group_in):
        raise SeglabError(f"weight {tuple(weight.shape)} does not fit {channels} input channels: C_in must be "
                          f"a multiple of weight.shape[1] and C_out of the resulting number of groups")
    weight_groups = channels // group_in
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = kh * kw
    offset_groups = offset.shape[1] // (2 * taps) if offset.dim() == 4 else 0
    if (offset.dim() != 4 or offset_groups == 0 or offset.shape[1] != 2 * taps * offset_groups
            or offset.shape[0] != n or tuple(offset.shape[-2:]) != (out_h, out_w) or channels % offset_groups):
        raise SeglabError(f"offset must have shape ({n}, 2 * offset_groups * {taps}, {out_h}, {out_w}) with "
                          f"offset_groups dividing {channels} channels, got {tuple(offset.shape)}")
    if out_h <= 0 or out_w <= 0:
        raise SeglabError(f"input {height}x{width} is too small for a {kh}x{kw} kernel with padding {padding} "
                          f"and dilation {dilation}")
    # Sampling positions in at least float32 (bf16 cannot address pixels beyond 256 exactly).
    offset = offset.to(torch.promote_types(input.dtype, torch.float32))
    index, corner_weights = _bilinear_bags(offset, (kh, kw), stride, padding, dilation, offset_groups,
                                           height, width)
    group_channels = channels // offset_groups
    # Channels-last table: one row of C / G values per (image, offset group, pixel).
    # (a copy: for one image and group the transposed view would merge into strided rows, and gathering
    # strided rows is 6x slower).
    table = input.reshape(n, offset_groups, group_channels, height * width).transpose(2, 3)
    table = table.reshape(-1, group_channels).contiguous()
    # One embedding_bag sums the four weighted corner rows of every sample: the im2col matrix, columns
    # ordered (g, tap, channel of the group). Its backward is the scatter into the table and, for the
    # corner weights, the dot products with the corner rows; autograd takes it from there to the offsets.
    columns = F.embedding_bag(index, table, per_sample_weights=corner_weights.to(table.dtype), mode="sum")
    columns = columns.view(n, out_h * out_w, offset_groups * taps * group_channels)
    if weight_groups == 1:
        # Reorder the (small) weight to the columns' (g, tap, channel) order: one matmul, no reordering copy
        # of the columns.
        kernel = weight.reshape(out_channels, offset_groups, group_channels, taps).transpose(2, 3)
        out = columns @ kernel.reshape(out_channels, -1).t()                  # (N, L, C_out)
        out = out.transpose(1, 2).reshape(n, out_channels, out_h, out_w)
    else:
        # Grouped: channel-major (channel, tap) columns, then group g of the weight reads input channels
        # [g * C_in/groups, (g + 1) * C_in/groups).
        columns = columns.view(n, -1, offset_groups, taps, group_channels).transpose(3, 4)
        columns = columns.reshape(n, out_h * out_w, weight_groups, group_in * taps).transpose(1, 2)
        kernel = weight.reshape(weight_groups, out_channels // weight_groups, group_in * taps)
        out = columns @ kernel.transpose(1, 2).unsqueeze(0)                   # (N, groups, L, C_out / groups)
        out = out.permute(0, 1, 3, 2).reshape(n, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Deformable convolution v1 whose offsets come from a regular convolution with the same kernel,
    stride, padding and dilation, initialised to zero (Dai et al., Sec. 2.1): at initialisation it is
    exactly the regular convolution with its own weight."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, offset_groups: int = 1, bias: bool = True):
        super().__init__()
        if offset_groups < 1 or in_channels % offset_groups:
            raise SeglabError(f"offset_groups must be >= 1 and divide in_channels={in_channels}, got {offset_groups}")
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(in_channels, 2 * offset_groups * taps, self.kernel_size, self.stride,
                                     self.padding, self.dilation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's default init for the weight and bias; zero offsets.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, self.conv_offset(x), self.weight, self.bias, self.stride, self.padding,
                             self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1]}, {self.weight.shape[0]}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"offset_groups={self.conv_offset.out_channels // (2 * self.weight[0, 0].numel())}")
