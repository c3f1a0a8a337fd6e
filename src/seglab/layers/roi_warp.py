"""Differentiable RoI warping: Dai, He & Sun, "Instance-aware Semantic Segmentation via Multi-task Network
Cascades", CVPR 2016 (Sec. 3.4 "Differentiable RoI Warping Layers", eq. 8-9).

The layer crops a box out of a feature map and warps the crop to a fixed size by bilinear
interpolation: F_RoI(Theta) = G(B(Theta)) F(Theta). Every output value is a bilinear combination
sum_i kappa(x_i - x) kappa(y_i - y) F_i with kappa(d) = max(0, 1 - |d|), and its sample point (x, y) is
a linear function of the box coordinates, so the output is differentiable with respect to the box as
well as to the features: a stage that reads features at boxes predicted by an earlier stage sends
gradients back into that stage's box regression (MNC's cascade, trained end to end).

Conventions (those of `roi_align` with `aligned=True` and of `paste_masks_in_image`): a box (x1, y1,
x2, y2) is in input-image pixels with pixel edges at integers (pixel k spans [k, k + 1), centre
k + 0.5); `spatial_scale` maps it onto the feature map. Output cell (i, j) of an S_h x S_w warp samples
the point x = x1 + (j + 0.5) (x2 - x1) / S_w, y = y1 + (i + 0.5) (y2 - y1) / S_h, i.e. the warp is
exactly "crop the box, then resize the crop bilinearly to S_h x S_w" (`F.interpolate`,
align_corners=False) whenever the crop is at least S_h x S_w cells; for smaller crops the warp also
reads the neighbours just outside the box instead of repeating the crop's edge. Points beyond the
map's outer pixel centres take the border value (the MNC release samples inside the clipped box).

Implementation: `F.grid_sample` (bilinear, align_corners=False), one call per image with all of that
image's RoIs stacked along the grid's height, so there is no loop over RoIs and no copy of the feature
map per RoI; autograd gives both gradients (features and box coordinates).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, SeglabError

__all__ = ["RoIWarp", "roi_warp"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(int(s) != s or s < 1 for s in pair):
        raise ConfigError(f"output_size must be a positive int or a pair of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def roi_warp(input: torch.Tensor, rois: torch.Tensor, output_size: int | Sequence[int],
             spatial_scale: float = 1.0) -> torch.Tensor:
    """Bilinear crop-and-warp of (N, C, H, W) `input` over (K, 5) `rois` `[batch_index, x1, y1, x2, y2]`
    -> (K, C, S_h, S_w). Differentiable with respect to `input` and to the RoI coordinates."""
    if input.dim() != 4:
        raise SeglabError(f"roi_warp input must be (N, C, H, W), got shape {tuple(input.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise SeglabError(f"rois must be a (K, 5) Tensor [batch_index, x1, y1, x2, y2], got {tuple(rois.shape)}")
    out_h, out_w = _pair(output_size)
    n, channels, height, width = input.shape
    num = rois.shape[0]
    if num == 0:
        return input.new_zeros(0, channels, out_h, out_w) + input.sum() * 0
    index = rois[:, 0].detach().long()
    if int(index.min()) < 0 or int(index.max()) >= n:
        raise SeglabError(f"roi batch indices must lie in [0, {n - 1}], got {index.unique().tolist()}")
    boxes = rois[:, 1:].to(torch.promote_types(input.dtype, torch.float32)) * spatial_scale
    x1, y1, x2, y2 = boxes.unbind(1)
    fy = (torch.arange(out_h, device=input.device, dtype=boxes.dtype) + 0.5) / out_h
    fx = (torch.arange(out_w, device=input.device, dtype=boxes.dtype) + 0.5) / out_w
    ys = y1[:, None] + fy[None] * (y2 - y1)[:, None]  # (K, S_h), continuous feature coordinates
    xs = x1[:, None] + fx[None] * (x2 - x1)[:, None]
    gy = (2 * ys / height - 1)[:, :, None].expand(num, out_h, out_w)
    gx = (2 * xs / width - 1)[:, None, :].expand(num, out_h, out_w)
    grid = torch.stack((gx, gy), dim=-1).to(input.dtype)  # (K, S_h, S_w, 2)
    outputs, order = [], []
    for b in index.unique().tolist():
        members = torch.where(index == b)[0]
        g = grid[members].reshape(1, members.numel() * out_h, out_w, 2)
        sampled = F.grid_sample(input[b:b + 1], g, mode="bilinear", padding_mode="border", align_corners=False)
        outputs.append(sampled.view(channels, members.numel(), out_h, out_w).transpose(0, 1))
        order.append(members)
    order = torch.cat(order)
    return torch.cat(outputs)[torch.argsort(order)]


class RoIWarp(nn.Module):
    """`roi_warp` as a module: RoIWarp(output_size, spatial_scale)."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_warp(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
