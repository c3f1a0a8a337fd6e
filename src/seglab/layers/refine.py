"""RefineNet blocks: Lin, Milan, Shen & Reid, "RefineNet: Multi-Path Refinement Networks for
High-Resolution Semantic Segmentation", CVPR 2017 (Sec. 3.2, Fig. 3).

- `ResidualConvUnit` (Fig. 3b): ReLU -> 3x3 conv -> ReLU -> 3x3 conv, plus the identity; no batch norm.
  As in the authors' release, the first conv has a bias and the second none.
- `MultiResolutionFusion` (Fig. 3c): a 3x3 conv (no bias) per input path to a common width (the
  smallest input width in the paper), bilinear upsampling (align_corners=False) to the largest input
  resolution, summation.
- `ChainedResidualPooling` (Fig. 3d): a ReLU, then a chain of pooling blocks (5x5 max pool with
  stride 1 + 3x3 conv without bias), each block taking the previous block's output; every block's
  output is summed onto the ReLU'd input. `stages=2` as drawn in the paper's figure (the later
  released code uses 4).
- `RefineNetBlock` (Fig. 3a): 2 RCUs per input path (each at its own width), fusion (skipped for a
  single path), chained residual pooling, then the output convolution (1 RCU).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .upsample import resize_to

__all__ = ["ResidualConvUnit", "MultiResolutionFusion", "ChainedResidualPooling", "RefineNetBlock"]


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), channels unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class MultiResolutionFusion(nn.Module):
    """3x3 conv each path to `out_channels`, upsample to the largest input resolution, sum."""

    def __init__(self, in_channels: Sequence[int], out_channels: int | None = None):
        super().__init__()
        out_channels = min(in_channels) if out_channels is None else out_channels
        self.convs = nn.ModuleList(nn.Conv2d(c, out_channels, 3, padding=1, bias=False) for c in in_channels)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        size = max((x.shape[-2:] for x in xs), key=lambda s: s[0] * s[1])
        out = None
        for conv, x in zip(self.convs, xs):
            y = resize_to(conv(x), size)
            out = y if out is None else out + y
        return out


class ChainedResidualPooling(nn.Module):
    """relu(x) + sum_k block_k(...block_1(relu(x))), block = 5x5 max pool (stride 1) + 3x3 conv."""

    def __init__(self, channels: int, stages: int = 2, *, pool_size: int = 5):
        super().__init__()
        self.pool = nn.MaxPool2d(pool_size, stride=1, padding=pool_size // 2)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        top = x
        for conv in self.convs:
            top = conv(self.pool(top))
            x = x + top
        return x


class RefineNetBlock(nn.Module):
    """Fig. 3(a): RCUs per path -> multi-resolution fusion -> chained residual pooling -> output RCU.

    `in_channels[i]` is path i's width (its RCUs keep it); the fusion maps every path to
    `out_channels`. With one path the fusion is skipped and `in_channels[0]` must equal `out_channels`.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, *, num_rcu: int = 2,
                 crp_stages: int = 2, num_out_rcu: int = 1):
        super().__init__()
        in_channels = list(in_channels)
        if len(in_channels) == 1 and in_channels[0] != out_channels:
            raise ValueError(f"a single-path RefineNet block keeps its width: {in_channels[0]} != {out_channels}")
        self.rcus = nn.ModuleList(nn.Sequential(*[ResidualConvUnit(c) for _ in range(num_rcu)]) for c in in_channels)
        self.fusion = MultiResolutionFusion(in_channels, out_channels) if len(in_channels) > 1 else None
        self.crp = ChainedResidualPooling(out_channels, crp_stages)
        self.output_conv = nn.Sequential(*[ResidualConvUnit(out_channels) for _ in range(num_out_rcu)])

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if len(xs) != len(self.rcus):
            raise ValueError(f"this RefineNet block takes {len(self.rcus)} inputs, got {len(xs)}")
        xs = [rcu(x) for rcu, x in zip(self.rcus, xs)]
        x = xs[0] if self.fusion is None else self.fusion(xs)
        return self.output_conv(self.crp(x))
