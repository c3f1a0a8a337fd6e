"""Criss-cross attention: Huang, Wang, Huang, Huang, Wei & Liu, "CCNet: Criss-Cross Attention for
Semantic Segmentation", ICCV 2019, Sec. 3.2-3.3.

`CrissCrossAttention` (Sec. 3.2): 1x1 convs give a query and a key of C/8 channels and a value of C
channels. Each pixel u attends over its criss-cross path, the H + W - 1 pixels of its row and
column: affinities d_{i,u} = Q_u . K_{i,u}, one softmax over all of them jointly, and the output is
`gamma * sum_i A_{i,u} V_{i,u} + x_u`, with the learnable scalar gamma initialised to 0 (so the module
starts as the identity). The pixel itself lies on both its row and its column; as in the authors'
release (speedinghzl/CCNet), its entry in the column part gets -inf so it is counted once (H + W - 1).

Written with plain tensor ops: the affinities are two einsums, one over each column (H x H per column)
and one over each row (W x W per row), so memory is O(N (H + W)) for N = H W pixels; the N x N
matrix of non-local attention is never formed (the release uses a custom CUDA kernel instead).

`RecurrentCrissCross` (Sec. 3.3): the same module applied R times with shared weights; R = 2 lets
every pixel gather information from every other pixel (row then column or column then row).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["CrissCrossAttention", "RecurrentCrissCross"]


class CrissCrossAttention(nn.Module):
    """`forward(x)` -> `gamma * (criss-cross aggregation of value(x)) + x`, same shape as x."""

    def __init__(self, channels: int, *, reduction: int = 8):
        super().__init__()
        if channels < reduction:
            raise ConfigError(f"criss-cross attention needs channels >= reduction ({reduction}), got {channels}")
        self.query = nn.Conv2d(channels, channels // reduction, 1)
        self.key = nn.Conv2d(channels, channels // reduction, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax weights (B, H, W, H + W): at pixel (h, w), entries [:H] are over its column (rows g
        of column w; the pixel itself, g = h, is masked to 0) and entries [H:] over its row."""
        q, k = self.query(x), self.key(x)
        height = x.shape[-2]
        energy_col = torch.einsum("bchw,bcgw->bhwg", q, k)  # pixel (h, w) against (g, w)
        energy_row = torch.einsum("bchw,bchv->bhwv", q, k)  # pixel (h, w) against (h, v)
        # a float identity compared to 0 (not a bool eye): the same mask, and ONNX's EyeLike has float kernels
        self_in_col = (torch.eye(height, device=x.device) > 0)[:, None, :]  # (h, 1, g)
        energy_col = energy_col.masked_fill(self_in_col, float("-inf"))  # the pixel counts once, in its row
        return torch.cat([energy_col, energy_row], dim=-1).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[-2]
        att = self.attention(x)
        v = self.value(x)
        out_col = torch.einsum("bhwg,bcgw->bchw", att[..., :height], v)
        out_row = torch.einsum("bhwv,bchv->bchw", att[..., height:], v)
        return self.gamma * (out_col + out_row) + x


class RecurrentCrissCross(nn.Module):
    """One `CrissCrossAttention` applied `recurrence` times (shared weights; the paper's R, 2 by default)."""

    def __init__(self, channels: int, *, recurrence: int = 2, reduction: int = 8):
        super().__init__()
        if recurrence < 1:
            raise ConfigError(f"recurrence must be >= 1, got {recurrence}")
        self.recurrence = recurrence
        self.cca = CrissCrossAttention(channels, reduction=reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self.cca(x)
        return x
