"""Point-wise spatial attention: Zhao, Zhang, Liu, Shi, Loy, Lin & Jia, "PSANet: Point-wise Spatial
Attention Network for Scene Parsing", ECCV 2018, Sec. 3-4 (Fig. 2-3).

Bi-directional information flow (Sec. 3.2): two branches, "collect" (each position gathers from all
others) and "distribute" (each position sends to all others). Each branch follows the paper's PSA
module (Sec. 4.1) as the authors' release builds it (hszhao/semseg `model/psanet.py`, psa_type=2):
- reduction: 1x1 conv C -> 512 (C = 2048) + BN + ReLU;
- "adaption": 1x1 conv 512 -> 512 + BN + ReLU, then 1x1 conv (no bias) to mask_h * mask_w channels,
  the over-completed attention map: at position p, one value per offset (q - p) in a
  mask_h x mask_w window centred on p (the paper's (2H-1) x (2W-1) for an H x W map);
- the over-completed map is cropped to the H x W window centred on each position (`gather_window`,
  the release's CUDA `psa_mask` written as one `torch.gather`), giving an HW x HW map;
- collect: the weight p gives to q is the entry at offset q - p of p's map; distribute: p receives
  from q what q's map sends to offset p - q, i.e. the same gather transposed; each is normalised by a
  softmax over the sending positions q (the release's `psa_softmax=True`, normalisation factor 1;
  the paper's Eq. 5-6 write a 1/N factor instead);
- branch output z_p = sum_q a_{p,q} x_q over the reduced features; the two outputs (2 x 512) are
  concatenated, projected by 1x1 conv 1024 -> C + BN + ReLU and concatenated with the input (2C).
The release computes the attention on a map shrunk by `shrink_factor` 2 ((H-1)//2 + 1, bilinear with
aligned corners) and resizes the projection back; so does this module (back to exactly H x W, as
mmsegmentation's PSAHead does, rather than the release's (h-1)*2 + 1).

Any input size works: the window is computed from the feature size at run time. When the map is
larger than the mask covers ((2h - 1) > mask_h), offsets outside the mask get no weight (-inf before
the softmax). The release writes zeros there instead, which still take part in its softmax; with a
mask large enough for the map (the configured crop), both are the same.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..layers import ConvNormAct

__all__ = ["PointwiseSpatialAttention", "gather_window"]


def gather_window(over_completed: torch.Tensor, mask_size: Sequence[int]) -> torch.Tensor:
    """(N, mask_h * mask_w, H, W) -> (N, HW, HW) with `out[n, p, q]` = the map at position p, offset
    q - p (mask index `centre + (q - p)`); -inf where the offset lies outside the mask. Positions
    are flattened row-major (p = row * W + col)."""
    mask_h, mask_w = mask_size
    n, channels, h, w = over_completed.shape
    if channels != mask_h * mask_w:
        raise ConfigError(f"over-completed map has {channels} channels, expected {mask_h}*{mask_w}")
    device = over_completed.device
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    # offset (q - p) shifted to a mask index, per axis: [p, q]
    dh = rows[None, :] - rows[:, None] + (mask_h - 1) // 2
    dw = cols[None, :] - cols[:, None] + (mask_w - 1) // 2
    inside = (((dh >= 0) & (dh < mask_h))[:, None, :, None]
              & ((dw >= 0) & (dw < mask_w))[None, :, None, :]).reshape(h * w, h * w)
    index = (dh.clamp(0, mask_h - 1)[:, None, :, None] * mask_w
             + dw.clamp(0, mask_w - 1)[None, :, None, :]).reshape(1, h * w, h * w)
    per_position = over_completed.flatten(2).transpose(1, 2)  # (N, HW_p, mask_h * mask_w)
    out = per_position.gather(2, index.expand(n, -1, -1))
    return out.masked_fill(~inside, float("-inf"))


class PointwiseSpatialAttention(nn.Module):
    """`forward(x)` -> `cat([x, project(cat([collect(x), distribute(x)]))])` with 2C channels."""

    def __init__(self, in_channels: int, channels: int = 512, *, mask_size: Sequence[int] = (59, 59),
                 shrink_factor: int = 2):
        super().__init__()
        mask_h, mask_w = (int(s) for s in mask_size)
        if mask_h < 1 or mask_w < 1 or mask_h % 2 == 0 or mask_w % 2 == 0:
            raise ConfigError(f"mask_size must be two odd positive sizes (a window centred on each "
                              f"position), got {tuple(mask_size)}")
        if shrink_factor < 1:
            raise ConfigError(f"shrink_factor must be >= 1, got {shrink_factor}")
        self.mask_size = (mask_h, mask_w)
        self.shrink_factor = shrink_factor
        self.reduce_collect = ConvNormAct(in_channels, channels, 1)
        self.attention_collect = self._attention(channels)
        self.reduce_distribute = ConvNormAct(in_channels, channels, 1)
        self.attention_distribute = self._attention(channels)
        self.project = ConvNormAct(2 * channels, in_channels, 1)
        self.out_channels = 2 * in_channels

    def _attention(self, channels: int) -> nn.Sequential:
        return nn.Sequential(ConvNormAct(channels, channels, 1),
                             nn.Conv2d(channels, self.mask_size[0] * self.mask_size[1], 1, bias=False))

    def collect_attention(self, reduced: torch.Tensor) -> torch.Tensor:
        """(N, HW_p, HW_q): how much p gathers from q; rows sum to 1."""
        return gather_window(self.attention_collect(reduced), self.mask_size).softmax(dim=2)

    def distribute_attention(self, reduced: torch.Tensor) -> torch.Tensor:
        """(N, HW_p, HW_q): how much p receives from q, predicted at q for offset p - q; rows sum to 1."""
        sent = gather_window(self.attention_distribute(reduced), self.mask_size)  # [q, p]
        return sent.transpose(1, 2).softmax(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        small = tuple((s - 1) // self.shrink_factor + 1 for s in size)
        collect = self._resize_aligned(self.reduce_collect(x), small)
        distribute = self._resize_aligned(self.reduce_distribute(x), small)
        # z[:, :, p] = sum_q a[p, q] x[:, :, q]
        z_collect = torch.bmm(collect.flatten(2), self.collect_attention(collect).transpose(1, 2))
        z_distribute = torch.bmm(distribute.flatten(2), self.distribute_attention(distribute).transpose(1, 2))
        z = torch.cat([z_collect, z_distribute], dim=1).unflatten(2, small)
        out = self._resize_aligned(self.project(z), tuple(size))
        return torch.cat([x, out], dim=1)

    @staticmethod
    def _resize_aligned(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
