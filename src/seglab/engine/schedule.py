"""Learning-rate schedule: the "poly" policy of DeepLab (Chen et al., TPAMI 2018, Sec. 4.1),
lr = base_lr * (1 - iter / max_iter) ** power, with an optional linear warm-up (Goyal et al. 2017)."""
from __future__ import annotations

import torch


def poly_lambda(max_iters: int, *, power: float = 0.9, warmup_iters: int = 0, warmup_ratio: float = 0.1):
    def factor(it: int) -> float:
        poly = max(0.0, 1 - it / max_iters) ** power
        if it < warmup_iters:
            return poly * (warmup_ratio + (1 - warmup_ratio) * it / warmup_iters)
        return poly
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, max_iters: int, *, power: float = 0.9,
                    warmup_iters: int = 0, warmup_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_lambda(max_iters, power=power, warmup_iters=warmup_iters, warmup_ratio=warmup_ratio))


def build_optimizer(model: torch.nn.Module, name: str, *, lr: float, momentum: float = 0.9,
                    weight_decay: float = 1e-4, lr_mult_params: set[int] | None = None,
                    lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters. Parameters whose id is in `lr_mult_params` (a
    pretrained trunk, `train.backbone_lr_mult`) learn at `lr * lr_mult`; the schedule scales every
    group alike."""
    # No weight decay on norm layers and biases (common practice; they have no scale to regularise).
    trunk = lr_mult_params if lr_mult != 1.0 and lr_mult_params else set()
    decay, no_decay, trunk_decay, trunk_no_decay = [], [], [], []
    for p in model.parameters():
        if p.requires_grad:
            if id(p) in trunk:
                (trunk_no_decay if p.ndim <= 1 else trunk_decay).append(p)
            else:
                (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if trunk:
        groups += [{"params": trunk_decay, "weight_decay": weight_decay, "lr": lr * lr_mult},
                   {"params": trunk_no_decay, "weight_decay": 0.0, "lr": lr * lr_mult}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")
