"""Instance-sensitive score maps, the instance assembling module and the objectness branch: Dai, He, Li,
Ren & Sun, "Instance-sensitive Fully Convolutional Networks", ECCV 2016 (Sec. 3.1 instance-sensitive
score maps, Sec. 3.2 instance assembling module, Sec. 4 network and training).

Branches (Sec. 4), both on the stride-8 feature map:
- segment branch: 1x1 conv to `mid_channels` (512) + ReLU, then a 3x3 conv to k^2 instance-sensitive
  score maps (k = 5); map i * k + j scores "this pixel is at relative position (i, j) of an instance";
- objectness branch: 3x3 conv to 512 + ReLU, then a 1x1 conv: per pixel, the logit that the m x m
  sliding window centred on it holds an instance (a per-pixel logistic regression).
Assembling (Sec. 3.2): a window of m x m cells (m = 21) is divided into k x k sub-windows; the
assembled segment copies each sub-window's values from the score map of its relative position at the
same pixels. Sub-window (i, j) covers the window rows u with floor(u k / m) = i and the columns v with
floor(v k / m) = j (m need not be a multiple of k: 21 = 5 x 4.2). The module has no parameters; the
segment loss is taken on its output, so gradients reach the score maps through the copy.
A window "at" feature cell (y, x) covers the cells y - m // 2 .. y - m // 2 + m - 1 (and the same in x),
i.e. image pixels [(y - m // 2) s, (y - m // 2 + m) s) at stride s: centred on the cell for odd m.
Values outside the map are 0 (an all-"unknown" score).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, SeglabError

__all__ = ["InstanceFCNHead", "assemble_instances", "relative_position_channels", "window_boxes"]


def relative_position_channels(m: int, k: int, device=None) -> torch.Tensor:
    """(m, m) int64: the score map (i * k + j) that each cell (u, v) of an m x m window copies from."""
    cell = torch.arange(m, device=device) * k // m
    return cell[:, None] * k + cell[None, :]


def assemble_instances(score_maps: torch.Tensor, windows: torch.Tensor, *, m: int, k: int) -> torch.Tensor:
    """Assembled segments (K, m, m) from (N, k^2, H, W) score maps for (K, 3) int windows
    `[batch_index, y, x]` (the feature cell each window is at, see the module docstring)."""
    if score_maps.dim() != 4 or score_maps.shape[1] != k * k:
        raise SeglabError(f"score maps must be (N, k*k, H, W) with k={k}, got {tuple(score_maps.shape)}")
    if windows.dim() != 2 or windows.shape[1] != 3:
        raise SeglabError(f"windows must be (K, 3) [batch_index, y, x], got {tuple(windows.shape)}")
    height, width = score_maps.shape[-2:]
    padded = F.pad(score_maps, (m, m, m, m))  # every window stays inside the padded map
    windows = windows.long()
    offsets = torch.arange(m, device=score_maps.device) - m // 2 + m
    rows = windows[:, 1:2] + offsets  # (K, m) rows of the padded map
    cols = windows[:, 2:3] + offsets
    channel = relative_position_channels(m, k, score_maps.device)
    return padded[windows[:, 0, None, None], channel[None], rows[:, :, None], cols[:, None, :]]


def window_boxes(windows: torch.Tensor, m: int, stride: int) -> torch.Tensor:
    """(K, 4) xyxy image-pixel boxes of (K, 3) windows `[batch_index, y, x]`."""
    top_left = (windows[:, 1:].float() - m // 2) * stride
    y1, x1 = top_left.unbind(1)
    return torch.stack([x1, y1, x1 + m * stride, y1 + m * stride], dim=1)


class InstanceFCNHead(nn.Module):
    """Feature -> (k^2 instance-sensitive score maps, objectness logits (N, 1, H, W))."""

    def __init__(self, in_channels: int, *, k: int = 5, mid_channels: int = 512):
        super().__init__()
        if k < 1:
            raise ConfigError(f"InstanceFCN needs k >= 1 relative positions per side, got {k}")
        self.k = k
        self.segment = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(mid_channels, k * k, 3, padding=1))
        self.objectness = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 3, padding=1), nn.ReLU(inplace=True),
                                        nn.Conv2d(mid_channels, 1, 1))
        for module in (*self.segment, *self.objectness):
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.segment(feature), self.objectness(feature)


def check_window(m: int, k: int, scale_range: Sequence[float]) -> None:
    if m < k:
        raise ConfigError(f"InstanceFCN: the window (m={m} cells) must hold the k x k grid (k={k})")
    lo, hi = scale_range
    if not 0 < lo < hi:
        raise ConfigError(f"InstanceFCN: positive_scale_range must be 0 < low < high, got {tuple(scale_range)}")
