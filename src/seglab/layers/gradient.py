"""Gradient clipping inside the graph: an identity whose backward clamps the incoming gradient.

Used where a cascade back-propagates through predicted boxes (MNC, Dai et al., CVPR 2016, Sec. 3.4):
the release (github.com/daijifeng001/MNC, `proposal_layer.py` and `stage_bridge_layer.py`) clips the
gradient that reaches the box deltas through the RoI warping to +-1/512 per value.
"""
from __future__ import annotations

import torch

__all__ = ["clamp_gradient"]


class _ClampGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.bound = bound
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.clamp(-ctx.bound, ctx.bound), None


def clamp_gradient(x: torch.Tensor, bound: float | None) -> torch.Tensor:
    """`x` unchanged; in backward the gradient w.r.t. `x` is clamped to [-bound, bound] (None: no clamp)."""
    if bound is None or not x.requires_grad:
        return x
    return _ClampGradient.apply(x, float(bound))
