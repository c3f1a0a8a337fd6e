"""Semantic segmentation as a task of the engine: a class per pixel.

- data: any data set of `seglab.data.DATASETS` that is neither an instance nor a panoptic set; training
  samples through `TrainTransform` (random scale, crop, flip, colour jitter), validation at original size;
  with `train.supervision: image_labels` the training set yields class lists (MIL-FCN, `tasks/weak.py`);
- loss: `SegmentationLoss` on the model's logits (cross-entropy with ignore index, auxiliary heads,
  optional class weights and OHEM; EncNet's SE-loss), or MIL-FCN's multi-class MIL loss;
- evaluation: the confusion matrix (`SemanticMetrics`: aAcc, mAcc, mIoU, fwIoU, Dice); `seglab eval` adds
  accuracy near boundaries (trimap), `eval_metrics.json` and `confusion_matrix.png`; best by val mIoU;
- prediction: `seglab.inference.build_predictor` (whole image or sliding window, flip / multi-scale TTA,
  dense CRF); files: a palette label PNG and an overlay per image.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError
from .base import Task, build_model_for, nan_to_none, to_float
from .cityscapes import WithCityscapesScores, has_cityscapes_ground_truth


def build_semantic_datasets(cfg: Config, *, train: bool = True):
    """The train (with augmentation) and val (original size) data sets named by the config."""
    from ..data import build_dataset
    from ..data.datasets import INSTANCE_DATASETS, PANOPTIC_DATASETS
    from ..data.transforms import EvalTransform, TrainTransform
    from ..registry import model_task
    from .weak import build_image_label_train_set, uses_image_labels

    d = cfg.data
    for kind, names in (("instance", INSTANCE_DATASETS), ("panoptic", PANOPTIC_DATASETS)):
        if d.name in names:
            raise ConfigError(f"data.name {d.name!r} is an {kind} data set but model {cfg.model.name!r} is a "
                              f"{model_task(cfg.model.name)} model; pick an {kind} model (seglab models --task "
                              f"{kind}) or a {model_task(cfg.model.name)} data set")
    val = build_dataset(d.name, root=d.root, split=d.val_split,
                        transform=EvalTransform(mean=d.mean, std=d.std), **d.kwargs)
    if not train:
        return None, val
    transform = TrainTransform(crop_size=d.crop_size, scale_range=d.scale_range, hflip=d.hflip,
                               color_jitter=d.color_jitter, mean=d.mean, std=d.std, ignore_index=val.ignore_index,
                               gamma=d.gamma, blur_prob=d.blur_prob, noise_std=d.noise_std)
    if uses_image_labels(cfg):  # weak training from class lists (MIL-FCN, see tasks/weak.py)
        return build_image_label_train_set(cfg, val, transform), val
    return build_dataset(d.name, root=d.root, split=d.train_split, **d.kwargs, transform=transform), val


def class_weights_for(cfg: Config, dataset, num_classes: int, log: Callable[[str], None]) -> torch.Tensor | None:
    """`train.class_weights`: none, median_frequency (SegNet) or its square root, from the training labels."""
    if cfg.train.class_weights == "none":
        return None
    from ..data import class_statistics
    from ..losses import median_frequency_weights

    counts, present = class_statistics(dataset, num_classes)
    weights = median_frequency_weights(counts, present)
    if cfg.train.class_weights == "sqrt_median_frequency":
        weights = weights.sqrt()  # softer balancing: rare classes gain recall without flooding precision
    log(f"{cfg.train.class_weights.replace('_', '-')} class weights: " + ", ".join(f"{w:.2f}" for w in weights.tolist()))
    return weights


class CriterionLoss(nn.Module):
    """A criterion on the model's logits: forward = `model(inputs)`, losses = `criterion(float32 outputs, targets)`."""

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    def forward(self, model: nn.Module, inputs, targets):
        return model(inputs)

    def losses(self, outputs, targets) -> dict[str, torch.Tensor]:
        return self.criterion(to_float(outputs), targets)


class SemanticEvaluator:
    """Confusion matrix (and, when detailed, boundary accuracy) over the processed images."""

    def __init__(self, dataset, *, detailed: bool = False):
        from ..metrics import SemanticMetrics
        from ..metrics.boundary import TrimapAccuracy

        ignore = getattr(dataset, "ignore_index", 255)
        self.classes = list(getattr(dataset, "classes", None) or map(str, range(dataset.num_classes)))
        self.num_images = len(dataset)
        self.metrics = SemanticMetrics(dataset.num_classes, ignore_index=ignore)
        self.trimap = TrimapAccuracy(ignore_index=ignore) if detailed else None

    def process(self, index: int, target, prediction) -> None:
        self.metrics.update(prediction.labels, target)
        if self.trimap is not None:
            self.trimap.update(prediction.labels, target)

    def all_reduce(self) -> None:
        self.metrics.all_reduce()
        if self.trimap is not None:
            self.trimap.all_reduce()

    def compute(self) -> dict:
        return {**self.metrics.compute(), **(self.trimap.compute() if self.trimap is not None else {})}

    def summary(self, results: dict) -> dict:
        return {k: results[k] for k in ("mIoU", "aAcc", "mAcc")}

    def report(self, results: dict, out_dir: Path, log: Callable[[str], None]) -> list[str]:
        from ..metrics import format_table
        from ..utils.io import write_json_atomic
        from ..viz import plot_confusion_matrix

        log(format_table(results, self.classes))
        trimap = {k: v for k, v in results.items() if k.startswith("trimap")}
        if trimap:
            log("accuracy near boundaries (trimap): " + "  ".join(f"{k[11:]} {100 * v:.2f}" for k, v in trimap.items()))
        write_json_atomic(out_dir / "eval_metrics.json",
                          {**nan_to_none(results), "classes": self.classes, "num_images": self.num_images,
                           "confusion": self.metrics.confusion.tolist()})
        plot_confusion_matrix(self.metrics.confusion, self.classes, out_dir / "confusion_matrix.png")
        return [f"{out_dir}/eval_metrics.json", f"{out_dir}/confusion_matrix.png"]


class SemanticTask(Task):
    name = "semantic"
    best_key = "mIoU"
    line_keys = ("mIoU",)

    def build_datasets(self, cfg: Config, *, train: bool = True):
        return build_semantic_datasets(cfg, train=train)

    def build_model(self, cfg: Config, dataset) -> nn.Module:
        return build_model_for(cfg, dataset.num_classes)

    def check_training_data(self, cfg: Config, train_ds, log) -> None:
        """`seglab.data.check` on the training label maps (all of them, or 500 evenly spaced): the 0/255
        binary-mask trap and an empty foreground stop training; classes without pixels are logged."""
        from ..data.check import label_statistics, training_problems
        from ..errors import DataError

        if cfg.train.supervision != "pixel" or not (hasattr(train_ds, "samples") and hasattr(train_ds, "map_label")):
            return
        stats = label_statistics(train_ds, max_images=500)
        errors, warnings = training_problems(stats, train_ds, cfg.data.train_split)
        if errors:
            raise DataError(f"{errors[0]} (data.root {cfg.data.root}; `seglab data check {cfg.data.root}` shows "
                            f"the class histogram)")
        for w in warnings:
            log(f"warning: {w}")

    def split_batch(self, batch):
        return batch["image"], batch["labels"] if "labels" in batch else batch["mask"]

    def split_sample(self, sample):
        return sample["image"], sample["mask"]

    def labelled_pixels(self, targets):
        if not isinstance(targets, torch.Tensor) or targets.is_floating_point():  # class lists (weak)
            return None
        return (targets != 255).sum()

    def build_loss(self, cfg: Config, train_ds, log):
        from ..losses import SegmentationLoss
        from .weak import build_mil_criterion

        t = cfg.train
        if t.supervision == "image_labels":  # batches hold class lists, not label maps
            return CriterionLoss(build_mil_criterion(cfg, log))
        return CriterionLoss(SegmentationLoss(
            ignore_index=train_ds.ignore_index, aux_weight=t.aux_weight, se_weight=t.se_weight,
            class_weights=class_weights_for(cfg, train_ds, train_ds.num_classes, log),
            ohem_thresh=t.ohem.thresh if t.ohem else None, ohem_min_kept=t.ohem.min_kept if t.ohem else 1 / 16))

    def build_predictor(self, model: nn.Module, options):
        from ..inference.build import build_predictor

        return build_predictor(model, slide=options.slide, stride=options.stride, blend=options.blend,
                               precision=options.precision, tta=options.tta, crf=options.crf,
                               resize=options.resize)

    def build_evaluator(self, dataset, *, out_dir: Path | None = None, detailed: bool = False):
        """Confusion matrix; `seglab eval` (`detailed`) adds boundary accuracy, and Cityscapes' iIoU on
        Cityscapes data with its instanceIds maps."""
        evaluator = SemanticEvaluator(dataset, detailed=detailed)
        if detailed and has_cityscapes_ground_truth(dataset):
            return WithCityscapesScores(evaluator, dataset, instance=False)
        return evaluator

    def build_writer(self, out_dir: Path, model: nn.Module, options):
        from ..data.palettes import default_palette
        from ..inference.files import SemanticWriter

        meta = model.seglab_config
        return SemanticWriter(out_dir, palette=meta.get("palette") or default_palette(meta["num_classes"]),
                              classes=meta.get("classes"))

    def build_renderer(self, model: nn.Module, options):
        from ..data.palettes import default_palette
        from ..serve.render import SemanticRenderer

        meta = model.seglab_config
        n = meta["num_classes"]
        return SemanticRenderer(meta.get("classes") or [str(i) for i in range(n)],
                                meta.get("palette") or default_palette(n))
