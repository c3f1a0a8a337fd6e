"""Object context modules: Yuan & Wang, "OCNet: Object Context Network for Scene Parsing",
arXiv 1809.00916, 2018 (v1), Sec. 3, with the widths of the authors' release (openseg-group/OCNet.pytorch,
`oc_module/{base,pyramid,asp}_oc_block.py`).

- `ObjectContext` (the release's `_SelfAttentionBlock`): the object context of a pixel is the
  similarity-weighted mean of all pixels' values. Query and key share one transform (1x1 conv + BN +
  ReLU, `key_channels`), the similarity is `softmax_j(k_i . k_j / sqrt(key_channels))` over every
  position j, the value transform is a 1x1 conv (`value_channels`), and a 1x1 conv (`out`, zero-initialised
  as in the release, so a fresh module adds no context) maps the result to `out_channels`.
  `grid=s` restricts the attention to the cells of an s x s partition (Pyramid-OC; cells as the release
  cuts them: `H // s` rows each, the last one taking the remainder); `downsample=2` max-pools the input
  before attending and upsamples the context (ASP-OC's OC branch, to save memory).
- `BaseOC`: object context (output width = input width) concatenated with the input, then 1x1 conv +
  BN + ReLU + dropout to `out_channels`.
- `PyramidOC`: object context within the cells of 1x1, 2x2, 3x3 and 6x6 partitions (key C/2, value C),
  concatenated with the input widened by a 1x1 conv + BN + ReLU to C x levels, then 1x1 conv + BN +
  ReLU + dropout: C=512 -> 2048 + 4 x 512 = 4096 -> 512.
- `ASPOC`: ASPP (DeepLab v3) with the image-pooling branch replaced by an object context branch
  (3x3 conv + BN + ReLU -> `ObjectContext` at half resolution -> 1x1 conv + BN + ReLU), next to a 1x1
  branch and 3x3 branches at rates 12/24/36, each `channels` (256) wide, concatenated (1280) and fused by
  1x1 conv + BN + ReLU + dropout to `out_channels` (512).

Deviations from the release: its InPlaceABN blocks use leaky ReLU (slope 0.01) where the paper says ReLU;
we use ReLU. Convolutions followed by BN carry no bias here (the release's have one; BN cancels it).
ASP-OC's 2x max pooling uses `ceil_mode=True` so odd-sized maps keep their last row/column (the release
floors), and its context is upsampled with `align_corners=True` as in the release.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..layers import ConvNormAct

__all__ = ["ASPOC", "BaseOC", "ObjectContext", "PyramidOC", "SelfAttentionBlock", "region_bounds"]


def region_bounds(length: int, parts: int) -> list[tuple[int, int]]:
    """Half-open [start, end) cells cutting `length` into `parts`, as the release does: `length // parts`
    each, the last one taking the remainder. Maps shorter than `parts` get one-pixel cells (the release
    would give empty ones)."""
    step = max(length // parts, 1)
    starts = [min(i * step, length) for i in range(parts)]
    ends = starts[1:] + [length]
    return [(a, b) for a, b in zip(starts, ends) if b > a]


class ObjectContext(nn.Module):
    """Self-attention over all positions (or within the cells of a `grid` x `grid` partition).

    `forward(x)` -> object context (N, out_channels, H, W), not yet combined with `x`."""

    def __init__(self, in_channels: int, key_channels: int, value_channels: int,
                 out_channels: int | None = None, *, grid: int = 1, downsample: int = 1):
        super().__init__()
        if grid < 1 or downsample < 1:
            raise ConfigError(f"object context grid and downsample must be >= 1, got {grid} and {downsample}")
        self.grid, self.downsample = grid, downsample
        self.key_channels = key_channels
        self.out_channels = out_channels or in_channels
        self.key = ConvNormAct(in_channels, key_channels, 1)  # also the query transform (shared)
        self.value = nn.Conv2d(in_channels, value_channels, 1)
        self.out = nn.Conv2d(value_channels, self.out_channels, 1)
        nn.init.zeros_(self.out.weight)  # as the release (and non-local blocks): start as "no context"
        nn.init.zeros_(self.out.bias)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, self.downsample, ceil_mode=True) if self.downsample > 1 else x

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """Object context map of the global (grid 1) block: (N, HW, HW) on the pooled map; row i holds
        the weights pixel i gives every pixel j."""
        keys = self.key(self._pool(x)).flatten(2)  # (N, Ck, HW)
        logits = keys.transpose(1, 2) @ keys * self.key_channels ** -0.5
        return logits.softmax(dim=-1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """Attention-weighted values (N, value_channels, h, w) on the pooled map, before `out`."""
        x = self._pool(x)
        keys, values = self.key(x), self.value(x)
        if self.grid == 1:
            return _attend(keys, values)
        h, w = x.shape[-2:]
        cols = region_bounds(w, self.grid)
        rows = [torch.cat([_attend(keys[..., r0:r1, c0:c1], values[..., r0:r1, c0:c1]) for c0, c1 in cols],
                          dim=3) for r0, r1 in region_bounds(h, self.grid)]
        return torch.cat(rows, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.out(self.context(x))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return out


SelfAttentionBlock = ObjectContext  # the release's name for the block


def _attend(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """softmax(K^T K / sqrt(Ck)) applied to the values, query = key; (N, Cv, h, w)."""
    n, _, h, w = values.shape
    k = keys.flatten(2).transpose(1, 2)  # (N, hw, Ck)
    v = values.flatten(2).transpose(1, 2)  # (N, hw, Cv)
    # scaled_dot_product_attention's default scale is 1/sqrt(Ck), the paper's; it avoids materialising
    # the (hw x hw) map where a fused kernel is available.
    out = F.scaled_dot_product_attention(k, k, v)
    return out.transpose(1, 2).reshape(n, -1, h, w)


class BaseOC(nn.Module):
    """Base-OC: `fuse(cat([object_context(x), x]))`."""

    def __init__(self, in_channels: int, out_channels: int = 512, *, key_channels: int = 256,
                 value_channels: int = 256, dropout: float = 0.05):
        super().__init__()
        self.object_context = ObjectContext(in_channels, key_channels, value_channels, in_channels)
        self.fuse = nn.Sequential(ConvNormAct(2 * in_channels, out_channels, 1), nn.Dropout2d(dropout))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.object_context(x), x], dim=1))


class PyramidOC(nn.Module):
    """Pyramid-OC: `fuse(cat([expand(x), oc_1(x), oc_2(x), oc_3(x), oc_6(x)]))`, oc_s within s x s cells."""

    def __init__(self, in_channels: int, out_channels: int = 512, *, grids: Sequence[int] = (1, 2, 3, 6),
                 key_channels: int | None = None, value_channels: int | None = None, dropout: float = 0.05):
        super().__init__()
        self.grids = tuple(int(g) for g in grids)
        if not self.grids:
            raise ConfigError("Pyramid-OC needs at least one grid size, got grids=()")
        levels = len(self.grids)
        self.contexts = nn.ModuleList(
            ObjectContext(in_channels, key_channels or in_channels // 2, value_channels or in_channels,
                          in_channels, grid=g) for g in self.grids)
        self.expand = ConvNormAct(in_channels, in_channels * levels, 1)  # the release's `up_dr`
        self.fuse = nn.Sequential(ConvNormAct(2 * in_channels * levels, out_channels, 1), nn.Dropout2d(dropout))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.expand(x), *(oc(x) for oc in self.contexts)], dim=1))


class ASPOC(nn.Module):
    """ASP-OC: ASPP whose image-pooling branch is an object context branch (see module docstring)."""

    def __init__(self, in_channels: int, channels: int = 256, out_channels: int = 512, *,
                 atrous_rates: Sequence[int] = (12, 24, 36), key_channels: int | None = None,
                 value_channels: int | None = None, downsample: int = 2, dropout: float = 0.1):
        super().__init__()
        self.atrous_rates = tuple(int(r) for r in atrous_rates)
        self.object_context = nn.Sequential(
            ConvNormAct(in_channels, channels, 3),
            ObjectContext(channels, key_channels or channels // 2, value_channels or channels, channels,
                          downsample=downsample),
            ConvNormAct(channels, channels, 1),
        )
        self.convs = nn.ModuleList([ConvNormAct(in_channels, channels, 1),
                                    *(ConvNormAct(in_channels, channels, 3, dilation=r) for r in self.atrous_rates)])
        branches = 1 + len(self.convs)
        self.fuse = nn.Sequential(ConvNormAct(branches * channels, out_channels, 1), nn.Dropout2d(dropout))
        self.out_channels = out_channels

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[object context, 1x1, rate 12, rate 24, rate 36] branch outputs, in concatenation order."""
        return [self.object_context(x), *(conv(x) for conv in self.convs)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat(self.branches(x), dim=1))
