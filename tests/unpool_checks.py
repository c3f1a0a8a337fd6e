"""Shared check for the unpooling decoders (SegNet, DeconvNet): an unpooled map holds values only at
the argmax of each 2x2 pooling window of the encoder map it mirrors, at most one per window."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def assert_unpooled_at_argmax(encoder: torch.Tensor, unpooled: torch.Tensor, level: int) -> None:
    assert unpooled.shape == encoder.shape, \
        f"level {level}: unpooled {tuple(unpooled.shape)} != encoder {tuple(encoder.shape)}"
    nz = unpooled != 0
    assert nz.any()
    # Sparse: at most one non-zero per 2x2 window (ceil mode covers the odd last row / column) ...
    per_window = F.avg_pool2d(nz.float(), 2, ceil_mode=True, divisor_override=1)
    assert per_window.max() <= 1, f"level {level}: more than one value per pooling window"
    # ... and only where the encoder feature had its window maximum.
    h, w = encoder.shape[-2:]
    window_max = F.max_pool2d(encoder, 2, ceil_mode=True).repeat_interleave(2, -2).repeat_interleave(2, -1)
    at_max = encoder == window_max[..., :h, :w]
    assert not (nz & ~at_max).any(), f"level {level}: unpooled values away from the encoder's argmax"
