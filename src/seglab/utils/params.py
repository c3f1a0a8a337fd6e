"""Parameter counts: all parameters, and those an eval-mode forward pass uses (auxiliary heads that
only serve training are left out, which is how papers usually report a model's size)."""
from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module, *, in_channels: int = 3, size=(64, 64)) -> tuple[int, int]:
    """(total, used in eval): a parameter counts as used when the eval output depends on it, found by
    one backward pass from the eval logits on a small random input."""
    total = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(1, in_channels, *size))
    if isinstance(out, (list, tuple)):
        # instance models return one result per image (thresholded, not differentiable): all count
        used = total
    else:
        # joint models (several label spaces) return {space: logits}
        outs = out.values() if isinstance(out, dict) else [out]
        sum(o.float().sum() for o in outs).backward()
        used = sum(p.numel() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return total, used
