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

Written with PyTorch ops, vectorised over pixels and taps: the input is viewed channels-last (one row
of C / offset_groups values per pixel and group), the four neighbours of every sample of every tap are
fetched with one `index_select`, weighted and summed into an im2col matrix (N, Ho * Wo, C * kh * kw)
that one matrix product with the weight turns into the output. Autograd gives the gradients for the
input (through index_select), the offsets (through the bilinear weights, piecewise linear in the
offset) and the weight and bias.

Speed (benchmarked on this project's shared 2-core CPU, 1 thread, float32, N = 1, 128 -> 128 channels,
3 x 3, padding 1, 64 x 128 input, ratios from four runs): the forward takes 10-15x the time of
F.conv2d, forward + backward about 7x. Most of it is the gather of 4 neighbours x 9 taps per pixel
(index_select, memory-bound); autograd keeps about 5 x (N, C * kh * kw, Ho, Wo) values (the gathered
neighbours and the im2col matrix), where conv2d keeps none beyond its input.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from ..errors import SeglabError

__all__ = ["DeformConv2d", "deform_conv2d"]


def _sampling_positions(offset: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                        padding: tuple[int, int], dilation: tuple[int, int],
                        groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, G, K, Ho, Wo) fractional input rows and columns of every tap of every output pixel."""
    n, _, out_h, out_w = offset.shape
    kh, kw = kernel
    offset = offset.reshape(n, groups, kh * kw, 2, out_h, out_w)
    dtype, device = offset.dtype, offset.device
    tap_y = (torch.arange(kh, dtype=dtype, device=device) * dilation[0]).repeat_interleave(kw)
    tap_x = (torch.arange(kw, dtype=dtype, device=device) * dilation[1]).repeat(kh)
    base_y = torch.arange(out_h, dtype=dtype, device=device) * stride[0] - padding[0]
    base_x = torch.arange(out_w, dtype=dtype, device=device) * stride[1] - padding[1]
    rows = base_y[None, :, None] + tap_y[:, None, None] + offset[:, :, :, 0]
    cols = base_x[None, None, :] + tap_x[:, None, None] + offset[:, :, :, 1]
    return rows, cols


def _bilinear_columns(input: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (zeros outside) of every offset group at (rows, cols), as an im2col matrix
    (N, Ho * Wo, C * K) with columns ordered (channel, tap) like weight.view(C_out, -1)."""
    n, channels, height, width = input.shape
    _, groups, taps, out_h, out_w = rows.shape
    group_channels = channels // groups
    # Channels-last rows: pixel (b, g, y, x) is row ((b * G + g) * H + y) * W + x of C / G values.
    table = input.view(n, groups, group_channels, height * width).transpose(2, 3).reshape(-1, group_channels)

    y0, x0 = rows.floor(), cols.floor()
    fy, fx = rows - y0, cols - x0
    y0, x0 = y0.long(), x0.long()
    corner_y = torch.stack([y0, y0, y0 + 1, y0 + 1])
    corner_x = torch.stack([x0, x0 + 1, x0, x0 + 1])
    weights = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
    inside = (corner_y >= 0) & (corner_y < height) & (corner_x >= 0) & (corner_x < width)
    weights = weights * inside
    plane = torch.arange(n * groups, device=input.device).view(1, n, groups, 1, 1, 1) * (height * width)
    index = plane + corner_y.clamp(0, height - 1) * width + corner_x.clamp(0, width - 1)

    # (4, N, G, K, Ho, Wo) -> (N, Ho, Wo, G, K, 4) so the gathered rows land in im2col order.
    index = index.permute(1, 4, 5, 2, 3, 0).reshape(-1)
    weights = weights.permute(1, 4, 5, 2, 3, 0).unsqueeze(-2)  # (N, Ho, Wo, G, K, 1, 4)
    samples = table.index_select(0, index).view(n, out_h, out_w, groups, taps, 4, group_channels)
    values = (weights @ samples).squeeze(-2)  # (N, Ho, Wo, G, K, C/G): the 4 neighbours summed
    return values.transpose(-1, -2).reshape(n, out_h * out_w, channels * taps)


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
    offset = offset.to(input.dtype)
    rows, cols = _sampling_positions(offset, (kh, kw), stride, padding, dilation, offset_groups)
    columns = _bilinear_columns(input.contiguous(), rows, cols)  # (N, L, C_in * K)
    # Grouped matmul: group g of the weight reads input channels [g * C_in/groups, (g + 1) * C_in/groups).
    columns = columns.view(n, out_h * out_w, weight_groups, group_in * taps).transpose(1, 2)
    kernel = weight.reshape(weight_groups, out_channels // weight_groups, group_in * taps)
    out = columns @ kernel.transpose(1, 2).unsqueeze(0)  # (N, groups, L, C_out / groups)
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
