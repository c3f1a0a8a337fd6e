"""Exponential moving average of the weights (Polyak & Juditsky, "Acceleration of Stochastic Approximation
by Averaging", SIAM J. Control Optim. 1992; the form of TensorFlow's ExponentialMovingAverage with
`num_updates`, used by EfficientNet, YOLOv5 and timm's ModelEmaV2).

After every optimizer step, every floating-point entry of the state dict (weights and BatchNorm's running
statistics) moves towards the trained model's: `ema = d * ema + (1 - d) * w`, with the warm-up
`d = min(decay, (1 + n) / (10 + n))` after n updates (`warmup`, on by default), so the early average
does not hold on to the random initialisation. Integer buffers (BatchNorm's batch counter) are copied.

In the training loop (`train.ema: {decay: 0.999}`, engine/loop.py) the average is what validation
measures and what best.safetensors holds; its state goes into last.pt, so a resumed run continues
exactly. Under DDP every rank holds the same weights after each step, so every rank's average of the
weights is the same; BatchNorm statistics are rank 0's at validation (`Runtime.broadcast_buffers`), as
for the trained model.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..errors import SeglabError


class ModelEMA:
    """`update(model)` after each optimizer step; `module` is the averaged copy (eval mode, no gradients)."""

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = float(decay), bool(warmup), 0

    def current_decay(self) -> float:
        """The decay of the next update."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
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


def build_ema(ema_config, model: nn.Module) -> ModelEMA | None:
    """The average of `model` that `train.ema` asks for (`seglab.config.EMAConfig`), or None when unset."""
    if ema_config is None:
        return None
    return ModelEMA(model, ema_config.decay, warmup=ema_config.warmup)


def restore_ema(ema: ModelEMA, state: dict, path: Path) -> None:
    """The average stored in a training state (last.pt) back into `ema`; a state without one, or one that
    does not fit the model, is one line naming the file."""
    saved = state.get("ema")
    if not isinstance(saved, dict) or "model" not in saved or "updates" not in saved:
        raise SeglabError(f"{path}: holds no weight average, but train.ema is set (that run was trained without "
                          f"it); start a new run in another train.out_dir")
    try:
        ema.load_state_dict(saved)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).splitlines() or [""])[0][:160]
        raise SeglabError(f"{path}: its weight average does not fit this model ({type(e).__name__}: {first})") from None
