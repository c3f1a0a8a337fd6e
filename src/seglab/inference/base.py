"""What every predictor shares, whatever the task: the model on its device, mixed-precision autocast,
the normalisation of a uint8 photo with the statistics the model was trained with, the scale the model
predicts at (`seglab.inference.scale`), and taking any kind of input.

Each task's predictor (semantic `Predictor` / `TTAPredictor`, `JointPredictor`, `InstancePredictor`,
`PanopticPredictor`) answers the same calls, which the engine's evaluation and predict-to-files loops use
without knowing the task:
- `predict_tensor(x, image=None)`: one normalised (C, H, W) tensor -> the task's result on the CPU
  (`image`, the original uint8 H x W x C picture, is passed when `needs_image` is true: the dense CRF
  reads colours);
- `predict_tensors(x, images=None)`: a batch of same-size normalised images -> a result per image;
- `predict_image(image)`: one photo (a uint8 H x W x C array, a PIL image, a tensor or a file path) ->
  the same result;
- `predictor(source)`: a path, a folder, a list, a PIL image, an array or a tensor -> a result, or a list
  of results for several images (same-size images are batched).
`Predictor.from_pretrained(name_or_path)` builds the right one for a model file, a shipped model's name or
an exported ONNX file, with the model's stored settings.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from ..errors import SeglabError
from .scale import InputScale

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_precision(precision: str | None, bf16: bool = False) -> str:
    """`precision` ('fp32' | 'bf16' | 'fp16'), with the older `bf16=True` flag as a synonym for 'bf16'."""
    precision = precision or ("bf16" if bf16 else "fp32")
    if precision not in PRECISIONS:
        raise SeglabError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


class ModelPredictor:
    """A model in eval mode on its device, with autocast at `precision`, the model's normalisation and
    the size images are predicted at (`resize`, None: their own size)."""

    needs_image = False     # True when predict_tensor also needs the original picture (the dense CRF)
    has_probs = False       # True when results can carry class probabilities (semantic models)
    channels_last = False   # feed the model channels-last tensors (set by `seglab.inference.load.fast_path`)
    # Whether `fast_path` may fold BatchNorm and use channels-last tensors: fully convolutional models
    # (semantic, joint), whose outputs on an example input show that folding changed nothing.
    fast_path_ok = False
    batch_size = 8          # same-size images predicted together by __call__ / predict_images

    def __init__(self, model: nn.Module, *, precision: str | None = None, bf16: bool = False,
                 resize: InputScale | None = None):
        self.model = model.eval()
        self.precision = resolve_precision(precision, bf16)
        self.resize = resize
        self.notes: list[str] = []  # how it predicts (the fast path taken), for the command line to print

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def in_channels(self) -> int:
        return int(getattr(self.model, "seglab_config", {}).get("kwargs", {}).get("in_channels", 3))

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input as the model wants it laid out."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def normalize(self, image: np.ndarray, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> torch.Tensor:
        """uint8 H x W x C -> normalised (C, H, W), with the model's recorded mean / std by default."""
        config = getattr(self.model, "seglab_config", {})
        return normalize_image(image, mean if mean is not None else config.get("mean", IMAGENET_MEAN),
                               std if std is not None else config.get("std", IMAGENET_STD))

    def target_size(self, h: int, w: int) -> tuple[int, int] | None:
        """The size an h x w image is predicted at, or None when it stays as it is."""
        return self.resize.target(h, w) if self.resize is not None else None

    def example_call(self, model: nn.Module, x: torch.Tensor):
        """`model` on a normalised example batch `x` as this predictor calls it (for `fast_path`)."""
        return model(x)

    # --- the task's part ---------------------------------------------------------------------------
    def predict_tensor(self, x: torch.Tensor, *, image: np.ndarray | None = None):
        raise NotImplementedError

    def predict_tensors(self, x: torch.Tensor, *, images: Sequence[np.ndarray | None] | None = None) -> list:
        """A batch of same-size normalised images -> a result per image (one at a time unless the task
        batches)."""
        images = list(images) if images is not None else [None] * len(x)
        return [self.predict_tensor(xi, image=im) for xi, im in zip(x, images)]

    # --- photos and other inputs -----------------------------------------------------------------------
    def predict_image(self, image, *, mean=None, std=None, path: str | None = None, **kwargs):
        """One photo (uint8 H x W x C array, PIL image, tensor or file path) -> the task's result."""
        from .sources import as_array

        array = as_array(image, self.in_channels)
        result = self.predict_tensor(self.normalize(array, mean, std), image=array, **kwargs)
        if path is not None or isinstance(image, str) or hasattr(image, "__fspath__"):
            _set_path(result, str(path if path is not None else image))
        return result

    def predict_images(self, images: Sequence[np.ndarray], *, paths: Sequence[str | None] | None = None,
                       batch_size: int | None = None, probs: bool = False) -> list:
        """uint8 H x W x C arrays -> a result each; consecutive images of the same size go through the
        model together, `batch_size` at a time. `probs`: keep class probabilities (semantic models)."""
        if probs and not self.has_probs:
            raise SeglabError(f"probs=True: class probabilities come with semantic models, not with "
                              f"{type(self).__name__}")
        extra = {"with_probs": True} if probs else {}
        paths = list(paths) if paths is not None else [None] * len(images)
        batch_size = max(1, batch_size or self.batch_size)
        results: list = []
        i = 0
        while i < len(images):
            j = i + 1
            while j < len(images) and j - i < batch_size and images[j].shape == images[i].shape:
                j += 1
            chunk = list(images[i:j])
            batch = torch.stack([self.normalize(a) for a in chunk])
            results += self.predict_tensors(batch, images=chunk, **extra)
            i = j
        for result, path in zip(results, paths):
            if path is not None:
                _set_path(result, path)
        return results

    def __call__(self, source, *, batch_size: int | None = None, probs: bool = False):
        """A file, a folder (images, subfolders included), a list of them, a PIL image, an RGB uint8 array
        (H x W x C), a tensor ((C, H, W) or (N, C, H, W), uint8 or floats in [0, 1]) -> its result, or a
        list of results when `source` holds several images. `probs`: keep class probabilities."""
        from .sources import load_sources

        arrays, paths, single = load_sources(source, self.in_channels)
        results = self.predict_images(arrays, paths=paths, batch_size=batch_size, probs=probs)
        return results[0] if single else results


def _set_path(result, path: str) -> None:
    if hasattr(result, "path"):  # joint models' results are plain {space: labels} dicts
        result.path = path
