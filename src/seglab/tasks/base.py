"""What a task says about itself, so that one training loop, one evaluation loop and one
predict-to-files loop (`seglab.engine`) serve semantic, joint, instance and panoptic segmentation alike.

A `Task` answers: how to build its data sets and its model from a config, what a training batch is and
how its loss is computed (a criterion on the model's logits, or the model's own loss dict), how to predict
(`build_predictor`), how to score predictions (`build_evaluator`) and how to write them to files
(`build_writer`). The evaluator protocol is Detectron2's `DatasetEvaluator` shape: `process` each image,
`all_reduce` over the ranks of a distributed run, `compute` the results, `summary` of the values that go
into metrics.jsonl (one of them, `Task.best_key`, picks best.safetensors), and `report` (tables and files).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError, SeglabError


class Evaluator(Protocol):
    def process(self, index: int, target: Any, prediction: Any) -> None: ...
    def all_reduce(self) -> None: ...
    def compute(self) -> dict: ...
    def summary(self, results: dict) -> dict[str, float | None]: ...
    def report(self, results: dict, out_dir: Path, log: Callable[[str], None]) -> list[str]: ...


class Writer(Protocol):
    def write(self, source: Path, image: Any, prediction: Any) -> None: ...
    def close(self) -> list[str]: ...


class Loss(Protocol):
    """`forward` runs under autocast; `losses` turns what it returned into float32 {"loss": total, ...}."""
    def forward(self, model: nn.Module, inputs: Any, targets: Any) -> Any: ...
    def losses(self, outputs: Any, targets: Any) -> dict[str, torch.Tensor]: ...


def model_name(model: nn.Module) -> str:
    return getattr(model, "seglab_config", {}).get("name", type(model).__name__)


def pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def nan_to_none(obj):
    """JSON has no NaN: values that are not defined (classes absent from the data) are written as null."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


class Task:
    """Defaults shared by the tasks; each task module overrides what differs."""

    name = "semantic"
    best_key = "mIoU"                          # the summary value best.safetensors is kept by
    line_keys: tuple[str, ...] = ("mIoU",)     # summary values on the console's epoch line
    # Instance and panoptic heads skip parameters on some steps (no positive RoI): DDP must allow it.
    find_unused_parameters = False

    # --- configuration ----------------------------------------------------------------------------
    def check_config(self, cfg: Config) -> None:
        """Refuse options this task does not implement (one line naming the keys)."""

    def refuse_options(self, given: list[str], model_name: str) -> None:
        """Semantic prediction options (slide, tta, crf) asked of a task that has none."""
        if given:
            raise SeglabError(f"{', '.join(given)}: semantic prediction options, not supported for {self.name} "
                              f"model {model_name!r}")

    # --- data and model ------------------------------------------------------------------------------
    def build_datasets(self, cfg: Config, *, train: bool = True):
        """(train set with augmentation, or None when `train` is false; val set at original size)."""
        raise NotImplementedError

    def build_model(self, cfg: Config, dataset) -> nn.Module:
        raise NotImplementedError

    def check_training_data(self, cfg: Config, train_ds, log: Callable[[str], None]) -> None:
        """Refuse a training set that cannot teach anything (e.g. an empty foreground) before training on
        it; warn about what is only suspicious. Tasks without such a check accept every set."""

    def model_metadata(self, cfg: Config, dataset) -> dict:
        """What best.safetensors records besides the architecture: class names, palette, normalisation, and
        the typical size of the training images (`train_size`, [h, w]: prediction resizes photos to its
        short side, `seglab.inference.scale`)."""
        meta = {"classes": list(dataset.classes), "palette": [list(c) for c in dataset.palette],
                "mean": list(cfg.data.mean), "std": list(cfg.data.std), "dataset": cfg.data.name}
        size = typical_image_size(dataset)
        if size is not None:
            meta["train_size"] = list(size)
        return meta

    collate: Callable | None = None            # DataLoader collate_fn (None: PyTorch's default)

    def split_batch(self, batch) -> tuple[Any, Any]:
        """(inputs, targets) of a training batch."""
        raise NotImplementedError

    def split_sample(self, sample) -> tuple[torch.Tensor, Any]:
        """(normalised image (C, H, W), target) of a validation sample."""
        raise NotImplementedError

    def labelled_pixels(self, targets) -> torch.Tensor | None:
        """How many target pixels of a training batch carry a label (not the ignore index), as a tensor on
        the targets' device; None where the task's targets are not pixel labels. An epoch without any is
        a data mistake the loop reports (the loss would be 0 and nothing learnt)."""
        return None

    def build_loss(self, cfg: Config, train_ds, log: Callable[[str], None]) -> Loss:
        raise NotImplementedError

    # --- prediction, evaluation, files -----------------------------------------------------------------
    def build_predictor(self, model: nn.Module, options):
        raise NotImplementedError

    def build_evaluator(self, dataset, *, out_dir: Path | None = None, detailed: bool = False) -> Evaluator:
        """`detailed`: everything `seglab eval` reports (e.g. boundary accuracy, prediction files in
        `out_dir`), not only what validation during training needs."""
        raise NotImplementedError

    def build_writer(self, out_dir: Path, model: nn.Module, options) -> Writer:
        raise NotImplementedError

    def build_renderer(self, model: nn.Module, options):
        """How `seglab serve` answers with this task's results (`seglab.serve.render`): JSON, label PNG,
        overlay PNG."""
        raise NotImplementedError

    # --- `seglab models --params` --------------------------------------------------------------------------
    def counting_kwargs(self, num_things: int) -> dict:
        """Extra entrypoint arguments to build a model of this task for a parameter count."""
        return {}

    def counting_note(self, num_classes: int, num_things: int) -> str | None:
        return None

    # --- console ------------------------------------------------------------------------------------------
    def epoch_line(self, entry: Mapping, epochs: int) -> str:
        parts = [k for k in entry if k.startswith("train_loss_")]
        parts = parts if len(parts) > 1 else []  # one part is the total itself
        s = f"epoch {entry['epoch']:>3}/{epochs}  loss {entry['train_loss']:.4f}"
        if parts:
            s += " (" + ", ".join(f"{k[len('train_loss_'):]} {entry[k]:.4f}" for k in parts) + ")"
        s += f"  lr {entry['lr']:.2e}  {entry['epoch_time_s']:.1f}s"
        if f"val_{self.best_key}" in entry:
            s += "  val " + "  ".join(f"{k.replace('_', ' ')} {pct(entry.get(f'val_{k}'))}" for k in self.line_keys)
        return s

    def summary_line(self, summary: Mapping[str, float | None]) -> str:
        return "  ".join(f"{k.replace('_', ' ')} {pct(summary.get(k))}" for k in self.line_keys)


def _image_path(dataset, i: int):
    if callable(getattr(dataset, "image_path", None)):
        return dataset.image_path(i)
    if getattr(dataset, "image_paths", None) is not None:
        return dataset.image_paths[i]
    samples = getattr(dataset, "samples", None)
    if samples is not None and isinstance(samples[i], (tuple, list)) and isinstance(samples[i][0], (str, Path)):
        return samples[i][0]
    inner = getattr(dataset, "dataset", None)
    return _image_path(inner, i) if inner is not None and len(inner) == len(dataset) else None


def typical_image_size(dataset, max_images: int = 32) -> tuple[int, int] | None:
    """(h, w) of the median image by short side among up to `max_images` images spread over `dataset`
    (file headers only where the data set names its files), or None when it cannot tell."""
    from ..data.io import image_size
    from ..errors import DataError

    n = len(dataset)
    if n == 0:
        return None
    sizes = []
    for i in sorted({round(k * (n - 1) / max(1, max_images - 1)) for k in range(min(n, max_images))}):
        try:
            path = _image_path(dataset, i)
            if path is not None:
                w, h = image_size(path)
            elif callable(getattr(dataset, "read_raw", None)):
                h, w = dataset.read_raw(i)[0].shape[:2]
            else:
                return None
        except (DataError, OSError, IndexError, TypeError):
            return None
        sizes.append((int(h), int(w)))
    sizes.sort(key=lambda hw: (min(hw), hw))
    return sizes[len(sizes) // 2]


def check_batch_size(cfg: Config, train_ds, processes: int = 1) -> None:
    need = cfg.data.batch_size * processes * cfg.train.accumulate_steps
    if len(train_ds) < need:
        raise SeglabError(f"the global batch (data.batch_size {cfg.data.batch_size} x {processes} process(es) x "
                          f"train.accumulate_steps {cfg.train.accumulate_steps} = {need}) is larger than the "
                          f"training split ({len(train_ds)} images)")


def refuse_keys(cfg: Config, task: str, keys: list[tuple[str, bool]]) -> None:
    unsupported = [key for key, on in keys if on]
    if unsupported:
        raise ConfigError(f"{', '.join(unsupported)}: not supported for {task} models (model {cfg.model.name!r})")


def build_model_for(cfg: Config, num_classes: int, **extra_kwargs) -> nn.Module:
    """The config's model entrypoint with its kwargs (plus `extra_kwargs`) for `num_classes` classes."""
    from ..hub import create_model

    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise SeglabError(f"model.num_classes is {cfg.model.num_classes} but data set {cfg.data.name!r} has "
                          f"{num_classes} classes")
    return create_model(cfg.model.name, num_classes=num_classes, weights=cfg.model.weights,
                        reinit_heads=cfg.model.reinit_heads, backbone_weights=cfg.model.backbone_weights,
                        **{**cfg.model.kwargs, **extra_kwargs})


def to_float(outputs):
    """Low-precision autocast outputs -> float32 (through dict / list nesting) for the criterion."""
    if isinstance(outputs, dict):
        return {k: to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [to_float(v) for v in outputs]
    return outputs.float()
