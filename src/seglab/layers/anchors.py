"""Anchor boxes over FPN levels for region proposal networks.

Ren et al., "Faster R-CNN" (NeurIPS 2015, Sec. 3.1.1) place k anchors (scales x aspect ratios) at every
position of the feature map; Lin et al., "Feature Pyramid Networks" (CVPR 2017, Sec. 4.1) assign one
scale per level, areas 32^2 .. 512^2 on P2 .. P6, with aspect ratios {1:2, 1:1, 2:1} at every level.
The layout is torchvision's `AnchorGenerator` (`torchvision/models/detection/anchor_utils.py`), so
RPN weights trained there line up with these anchors:
- an aspect ratio is height / width; a base anchor of size s and ratio r has w = s / sqrt(r),
  h = s * sqrt(r), is centred on 0 and has its coordinates rounded to integers;
- per location the base anchors are ordered ratio-major (all sizes of the first ratio, then the next);
- locations are row-major (y, then x) and the anchor at location (i, j) is shifted by
  (j * stride_x, i * stride_y), i.e. centred on the top-left corner of its feature cell, with
  stride = image size // feature size (integer division), as torchvision computes it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError, SeglabError

__all__ = ["AnchorGenerator"]

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * 5


class AnchorGenerator(nn.Module):
    """Anchors (x1, y1, x2, y2) for every location of every feature level.

    `sizes[i]` and `aspect_ratios[i]` are the anchor sizes (sqrt of the area, in pixels) and ratios of
    level i; a flat tuple of sizes means one size per level. `forward(image_size, feature_maps)`
    returns all levels' anchors concatenated, (sum_i H_i W_i A_i, 4), shared by every image of a
    padded batch; `grid_anchors` returns them per level. The module holds no parameters or buffers.
    """

    def __init__(self, sizes: Sequence = FPN_SIZES, aspect_ratios: Sequence = FPN_ASPECT_RATIOS):
        super().__init__()
        if not sizes:
            raise ConfigError("AnchorGenerator needs at least one level of sizes, got sizes=()")
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ConfigError(f"AnchorGenerator: {len(sizes)} levels of sizes but {len(aspect_ratios)} levels "
                              f"of aspect ratios; give one tuple of each per feature level")
        bad = [v for level in (*sizes, *aspect_ratios) for v in level if not v > 0]
        if bad:
            raise ConfigError(f"anchor sizes and aspect ratios must be positive, got {bad}")
        self.sizes = tuple(tuple(level) for level in sizes)
        self.aspect_ratios = tuple(tuple(level) for level in aspect_ratios)
        self.cell_anchors = [self.generate_anchors(s, a) for s, a in zip(self.sizes, self.aspect_ratios)]

    @staticmethod
    def generate_anchors(scales: Sequence[float], aspect_ratios: Sequence[float],
                         dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        """Zero-centred base anchors (len(ratios) * len(scales), 4), ratio-major, rounded."""
        scales_t = torch.as_tensor(scales, dtype=dtype, device=device)
        ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales_t[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales_t[None, :]).view(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per feature-map position for each level (the RPN head's output multiplicity)."""
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes: Sequence[Sequence[int]], strides: Sequence[Sequence[int]],
                     dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> list[torch.Tensor]:
        """Anchors per level, (H_i * W_i * A_i, 4), for feature sizes (H_i, W_i) and strides (sy_i, sx_i)."""
        if not len(grid_sizes) == len(strides) == len(self.cell_anchors):
            raise SeglabError(f"AnchorGenerator has {len(self.cell_anchors)} levels, got {len(grid_sizes)} "
                              f"feature sizes and {len(strides)} strides")
        anchors = []
        for (grid_h, grid_w), (stride_h, stride_w), base in zip(grid_sizes, strides, self.cell_anchors):
            base = base.to(device=device, dtype=dtype)
            shifts_x = torch.arange(0, int(grid_w), dtype=torch.int32, device=device) * int(stride_w)
            shifts_y = torch.arange(0, int(grid_h), dtype=torch.int32, device=device) * int(stride_h)
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def forward(self, image_size: Sequence[int],
                feature_maps: Sequence[torch.Tensor] | Sequence[Sequence[int]]) -> torch.Tensor:
        """All anchors (sum_i H_i W_i A_i, 4) for a (padded) image of `image_size` (H, W) and its
        feature maps (Tensors, or their (H_i, W_i) sizes), levels in the order of `sizes`."""
        tensors = [f for f in feature_maps if isinstance(f, torch.Tensor)]
        grid_sizes = [tuple(int(v) for v in (f.shape[-2:] if isinstance(f, torch.Tensor) else f))
                      for f in feature_maps]
        dtype = tensors[0].dtype if tensors and tensors[0].is_floating_point() else torch.float32
        device = tensors[0].device if tensors else None
        height, width = int(image_size[0]), int(image_size[1])
        strides = [(height // g[0], width // g[1]) for g in grid_sizes]
        if any(s[0] < 1 or s[1] < 1 for s in strides):
            raise SeglabError(f"feature maps {grid_sizes} must not be larger than the image {(height, width)}")
        return torch.cat(self.grid_anchors(grid_sizes, strides, dtype, device))

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}"
