"""SGN's two grouping networks: Liu, Jia, Fidler & Urtasun, "SGN: Sequential Grouping Networks for Instance
Segmentation", ICCV 2017 (Sec. 3.2 LineNet, Sec. 3.3 MergerNet; seed 000's Fig. 1).

- `LineNet`: a recurrent network that reads one scan line (a row, or a column) of the grid cell by cell
  and decides, at every cell, whether a new line segment starts there. Its input per cell is what the
  breakpoint FCN predicted there: the class probabilities (C + 1) and the breakpoint probability of
  that scan direction; a bidirectional GRU (`hidden` units per direction) sees the whole line, so a
  weak breakpoint can be confirmed or dismissed by what follows it, and a linear layer gives the start
  logit. One LineNet per direction (rows and columns).
- `MergerNet`: scores whether two line segments of consecutive rows belong to one instance. A segment
  is described by the mean, over its cells, of a projection of the FCN's decoder features
  (`channels`); a pair by both descriptions, their absolute difference and four geometric cues from
  the vertical LineNet: the mean and max start probability on the overlap, and the overlap as a
  fraction of each segment. A 2-layer perceptron gives the merge logit. Segments are then grouped
  greedily, best pair first (`seglab.inference.sequential_grouping.group_segments`).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LineNet", "MergerNet"]


class LineNet(nn.Module):
    """(L, T, D) sequences of per-cell inputs -> (L, T) start logits."""

    def __init__(self, in_features: int, hidden: int = 32):
        super().__init__()
        self.rnn = nn.GRU(in_features, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, lines: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(lines)
        return self.out(states)[..., 0]

    def scan(self, inputs: torch.Tensor, vertical: bool) -> torch.Tensor:
        """Start logits (N, H, W) of (N, D, H, W) grid inputs, along rows (or columns if `vertical`)."""
        n, d, h, w = inputs.shape
        if vertical:
            lines = inputs.permute(0, 3, 2, 1).reshape(n * w, h, d)
            return self(lines).view(n, w, h).transpose(1, 2)
        lines = inputs.permute(0, 2, 3, 1).reshape(n * h, w, d)
        return self(lines).view(n, h, w)


class MergerNet(nn.Module):
    """Pair descriptions -> merge logits (see the module docstring)."""

    GEOMETRY = 4  # mean / max start probability on the overlap, overlap / length of each segment

    def __init__(self, in_channels: int, channels: int = 32, hidden: int = 64):
        super().__init__()
        self.project = nn.Conv2d(in_channels, channels, 1)
        self.mlp = nn.Sequential(nn.Linear(3 * channels + self.GEOMETRY, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 1))

    def segment_features(self, feature: torch.Tensor, ids: torch.Tensor, count: int) -> torch.Tensor:
        """(S, channels) mean projected feature of each segment, from a (D, H, W) feature map and an
        (H, W) segment-id map (-1 outside segments)."""
        projected = self.project(feature[None])[0].flatten(1).T  # (H W, channels)
        flat = ids.reshape(-1)
        inside = flat >= 0
        sums = projected.new_zeros(count, projected.shape[1]).index_add(0, flat[inside], projected[inside])
        sizes = torch.bincount(flat[inside], minlength=count).clamp(min=1).to(sums.dtype)
        return sums / sizes[:, None]

    def forward(self, segment_features: torch.Tensor, pairs: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        a, b = segment_features[pairs[:, 0]], segment_features[pairs[:, 1]]
        return self.mlp(torch.cat([a, b, (a - b).abs(), geometry.to(a.dtype)], 1))[:, 0]
