"""Exponential moving average of the weights (Polyak & Juditsky, "Acceleration of Stochastic Approximation
by Averaging", SIAM J. Control Optim. 1992; the form of TensorFlow's ExponentialMovingAverage with
`num_updates`, used by EfficientNet, YOLOv5 and timm's ModelEmaV2).

After every optimizer step, every floating-point entry of the state dict (weights and BatchNorm's running
statistics) moves towards the trained model's: `ema = d * ema + (1 - d) * w`, with the warm-up
`d = min(decay, (1 + n) / (10 + n))` after n updates, so the early average does not hold on to the random
initialisation. Integer buffers (BatchNorm's batch counter) are copied. The average is what validation
measures and what best.safetensors holds when `train.ema_decay` is set; its state goes into last.pt, so
a resumed run continues exactly.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_checkpoint


class ModelEMA:
    """`update(model)` after each step; `module` is the averaged copy (eval mode, no gradients)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = float(decay), 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        trained = model.state_dict()
        for name, avg in self.module.state_dict().items():
            if avg.is_floating_point():
                avg.lerp_(trained[name].detach().to(avg.dtype), 1 - d)
            else:
                avg.copy_(trained[name])

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def build_ema(t_cfg, model: nn.Module, resume_from: Path | None) -> ModelEMA | None:
    """The EMA of `model` when `train.ema_decay` is set (restored from the last.pt being resumed), else None."""
    if t_cfg.ema_decay is None:
        return None
    ema = ModelEMA(model, t_cfg.ema_decay)
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        if "ema" in state:
            ema.load_state_dict(state["ema"])
    return ema


def ema_state(ema: ModelEMA | None) -> dict:
    """The last.pt entry of the EMA (empty without one)."""
    return {} if ema is None else {"ema": ema.state_dict()}
