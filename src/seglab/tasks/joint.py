"""Joint models as a task of the engine: one network, several label spaces, each with its own loss and
its own metrics (FCN, Long, Shelhamer, Darrell, CVPR 2015, Sec. 5: SIFT Flow's 33 semantic and 3
geometric classes at once).

- data: a data set with several label spaces (`siftflow`, `synthetic_joint`): batches hold
  `{"image", "masks": {space: labels}}`; the model gets `label_spaces` from the data set;
- loss: `seglab.losses.JointLoss` (weighted sum of the spaces' cross-entropies, `train.label_space_weights`);
- evaluation: `seglab.metrics.JointMetrics` (a confusion matrix per space): metrics.jsonl gets
  `val_<space>_mIoU`, `_aAcc`, `_mAcc` and `val_mIoU`, the mean of the spaces' mIoU, which picks
  best.safetensors; `seglab eval` prints a table per space;
- prediction: `JointPredictor` (each image whole, argmax per space); files: a label PNG and an overlay per
  space and image. Sliding window, TTA, CRF, class weights and OHEM are refused.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..config import Config
from ..errors import ConfigError
from .base import Task, build_model_for, model_name, nan_to_none, pct, refuse_keys
from .semantic import CriterionLoss, build_semantic_datasets


class JointEvaluator:
    def __init__(self, dataset):
        from ..metrics import JointMetrics

        self.label_spaces = dict(dataset.label_spaces)
        self.num_images = len(dataset)
        self.metrics = JointMetrics(dataset.num_classes_per_space, ignore_index=dataset.ignore_index)

    def process(self, index: int, target, prediction) -> None:
        self.metrics.update(prediction, target)

    def all_reduce(self) -> None:
        self.metrics.all_reduce()

    def compute(self) -> dict:
        return self.metrics.compute()

    def summary(self, results: dict) -> dict:
        from ..metrics import flat_metrics

        return {k[len("val_"):]: v for k, v in flat_metrics(results).items()}

    def report(self, results: dict, out_dir: Path, log: Callable[[str], None]) -> list[str]:
        from ..metrics import format_table
        from ..utils.io import write_json_atomic
        from ..viz import plot_confusion_matrix

        written = [f"{out_dir}/eval_metrics.json"]
        for space, r in results.items():
            log(f"label space {space}:")
            log(format_table(r, self.label_spaces[space]))
            path = out_dir / f"confusion_matrix_{space}.png"
            plot_confusion_matrix(self.metrics.spaces[space].confusion, self.label_spaces[space], path)
            written.append(str(path))
        write_json_atomic(out_dir / "eval_metrics.json",
                          {**nan_to_none(self.summary(results)), "label_spaces": nan_to_none(results),
                           "classes": self.label_spaces, "num_images": self.num_images})
        return written


class JointTask(Task):
    name = "joint"
    best_key = "mIoU"
    line_keys = ("mIoU",)

    def check_config(self, cfg: Config) -> None:
        refuse_keys(cfg, "joint", [("train.class_weights", cfg.train.class_weights != "none"),
                                   ("train.ohem", cfg.train.ohem is not None),
                                   ("train.supervision", cfg.train.supervision != "pixel"),
                                   ("eval.slide", cfg.eval.slide is not None), ("eval.tta", cfg.eval.tta is not None),
                                   ("eval.crf", cfg.eval.crf is not None)])

    def build_datasets(self, cfg: Config, *, train: bool = True):
        train_ds, val_ds = build_semantic_datasets(cfg, train=train)
        if getattr(val_ds, "num_classes_per_space", None) is None:
            raise ConfigError(f"model {cfg.model.name!r} predicts several label spaces; data.name "
                              f"{cfg.data.name!r} has one (use siftflow or synthetic_joint)")
        return train_ds, val_ds

    def build_model(self, cfg: Config, dataset) -> nn.Module:
        spaces = dataset.num_classes_per_space
        given = cfg.model.kwargs.get("label_spaces")
        if given is not None and dict(given) != spaces:
            raise ConfigError(f"model.kwargs.label_spaces is {dict(given)} but data set {cfg.data.name!r} has "
                              f"{spaces}")
        return build_model_for(cfg, dataset.num_classes, label_spaces=spaces)

    def model_metadata(self, cfg: Config, dataset) -> dict:
        palettes = getattr(dataset, "palettes", {})
        return {**super().model_metadata(cfg, dataset), "label_space_classes": dict(dataset.label_spaces),
                "label_space_palettes": {s: [list(c) for c in p] for s, p in palettes.items()}}

    def split_batch(self, batch):
        return batch["image"], batch["masks"]

    def split_sample(self, sample):
        return sample["image"], sample["masks"]

    def labelled_pixels(self, targets):
        return sum((m != 255).sum() for m in targets.values())

    def build_loss(self, cfg: Config, train_ds, log):
        from ..losses import JointLoss

        return CriterionLoss(JointLoss(list(train_ds.num_classes_per_space), weights=cfg.train.label_space_weights,
                                       ignore_index=train_ds.ignore_index, aux_weight=cfg.train.aux_weight))

    def build_predictor(self, model: nn.Module, options):
        from ..inference.joint import JointPredictor

        self.refuse_options(options.semantic_options(), model_name(model))
        return JointPredictor(model, precision=options.precision, resize=options.resize)

    def build_evaluator(self, dataset, *, out_dir: Path | None = None, detailed: bool = False):
        return JointEvaluator(dataset)

    def build_writer(self, out_dir: Path, model: nn.Module, options):
        from ..data.palettes import default_palette
        from ..inference.joint import JointWriter

        meta = model.seglab_config
        spaces = meta.get("label_space_classes") or {}
        stored = meta.get("label_space_palettes") or {}
        palettes = {s: stored.get(s) or default_palette(len(names)) for s, names in spaces.items()}
        return JointWriter(out_dir, palettes=palettes, classes=spaces)

    def build_renderer(self, model: nn.Module, options):
        from ..data.palettes import default_palette
        from ..models.joint import check_label_spaces
        from ..serve.render import JointRenderer

        meta = model.seglab_config
        counts = check_label_spaces(meta.get("kwargs", {}).get("label_spaces"), meta["num_classes"])
        spaces = meta.get("label_space_classes") or {s: [str(i) for i in range(n)] for s, n in counts.items()}
        stored = meta.get("label_space_palettes") or {}
        return JointRenderer(spaces, {s: stored.get(s) or default_palette(len(names)) for s, names in spaces.items()})

    def epoch_line(self, entry, epochs: int) -> str:
        line = super().epoch_line({k: v for k, v in entry.items() if k != f"val_{self.best_key}"}, epochs)
        spaces = [k[len("val_"):-len("_mIoU")] for k in entry if k.startswith("val_") and k.endswith("_mIoU")
                  and k != "val_mIoU"]
        if spaces:
            line += "  val mIoU " + "  ".join(f"{s} {pct(entry[f'val_{s}_mIoU'])}" for s in spaces)
        return line
