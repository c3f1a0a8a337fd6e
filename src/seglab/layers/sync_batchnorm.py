"""Synchronised batch normalisation: batch statistics over the whole distributed batch.

Peng et al., "MegDet: A Large Mini-Batch Object Detector", CVPR 2018 (Sec. 4, Cross-GPU Batch
Normalization) and Zhang et al., "Context Encoding for Semantic Segmentation" (EncNet), CVPR 2018
(Sec. 3.3) compute BatchNorm's mean and variance over all devices, so small per-device batches normalise
like one large batch. PyTorch's `nn.SyncBatchNorm` does this on GPUs only; `CrossRankBatchNorm2d` below
does it with two differentiable all-reduces (`torch.distributed.nn.functional.all_reduce`: the mean,
then the squared deviations from it, so the variance needs no E[x^2] - E[x]^2 cancellation), which works
on any backend, gloo on CPUs included. Its parameters and buffers are those of `nn.BatchNorm2d`, so state
dicts load either way. `convert_sync_batchnorm` picks PyTorch's kernel on CUDA and this one elsewhere.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x, op=dist.ReduceOp.SUM)


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover every rank's batch (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dtype = x.dtype
        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], dtype=torch.float32, device=x.device)
        total = _all_reduce_sum(torch.cat([xf.sum((0, 2, 3)), count]))
        n = total[-1]
        mean = total[:-1] / n
        var = _all_reduce_sum(((xf - mean[None, :, None, None]) ** 2).sum((0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of `module` synchronised across ranks: PyTorch's SyncBatchNorm on CUDA,
    `CrossRankBatchNorm2d` on other devices (weights and running statistics carried over)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        new = CrossRankBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats, device=_device_of(module))
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = _convert(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _device_of(module: nn.Module) -> torch.device | None:
    t = next(iter(module.state_dict().values()), None)
    return None if t is None else t.device


__all__ = ["CrossRankBatchNorm2d", "convert_sync_batchnorm"]
