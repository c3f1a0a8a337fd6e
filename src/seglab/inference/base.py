"""What every predictor shares, whatever the task: the model on its device, mixed-precision autocast,
and the normalisation of a uint8 photo with the statistics the model was trained with.

Each task's predictor (semantic `Predictor` / `TTAPredictor`, `JointPredictor`, `InstancePredictor`,
`PanopticPredictor`) answers the same two calls, which the engine's evaluation and predict-to-files
loops use without knowing the task:
- `predict_tensor(x, image=None)`: one normalised (C, H, W) tensor -> the task's result on the CPU
  (`image`, the original uint8 H x W x C picture, is passed when `needs_image` is true: the dense CRF
  reads colours);
- `predict_image(image)`: one uint8 H x W x C array -> the same result.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from ..errors import SeglabError

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_precision(precision: str | None, bf16: bool = False) -> str:
    """`precision` ('fp32' | 'bf16' | 'fp16'), with the older `bf16=True` flag as a synonym for 'bf16'."""
    precision = precision or ("bf16" if bf16 else "fp32")
    if precision not in PRECISIONS:
        raise SeglabError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


class ModelPredictor:
    """A model in eval mode on its device, with autocast at `precision` and the model's normalisation."""

    needs_image = False  # True when predict_tensor also needs the original picture (the dense CRF)

    def __init__(self, model: nn.Module, *, precision: str | None = None, bf16: bool = False):
        self.model = model.eval()
        self.precision = resolve_precision(precision, bf16)

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def normalize(self, image: np.ndarray, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> torch.Tensor:
        """uint8 H x W x C -> normalised (C, H, W), with the model's recorded mean / std by default."""
        config = getattr(self.model, "seglab_config", {})
        return normalize_image(image, mean if mean is not None else config.get("mean", IMAGENET_MEAN),
                               std if std is not None else config.get("std", IMAGENET_STD))

    def predict_tensor(self, x: torch.Tensor, *, image: np.ndarray | None = None):
        raise NotImplementedError

    def predict_image(self, image: np.ndarray, *, mean=None, std=None, path: str | None = None):
        return self.predict_tensor(self.normalize(image, mean, std), image=image)
