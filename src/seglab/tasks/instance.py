"""Instance segmentation as a task of the engine (registry task "instance": Mask R-CNN, PANet, FCIS,
YOLACT, the affinity network, ...): a mask per object.

- data: an instance data set (`data.name` in `seglab.data.datasets.INSTANCE_DATASETS`), training samples
  through `InstanceTrainTransform` (random scale in `data.scale_range`, pad + random crop to
  `data.crop_size`, flip when `data.hflip`; photometric `data.color_jitter` (off unless set), `data.gamma`,
  `data.blur_prob`, `data.noise_std`), validation through
  `InstanceEvalTransform` (original size), batches by `collate_instances`;
- loss: the model computes it: `model(images, targets)` returns a dict of scalar losses, summed with
  weight 1 (as torchvision's and Detectron's Mask R-CNN recipes do); each part is logged per epoch;
- evaluation: `InstanceEvaluator` (COCO mask and box AP through pycocotools, against the data set's COCO
  JSON when it has one; `seglab eval` on Cityscapes adds the Cityscapes benchmark's AP, AP50 and
  per-class AP, see `tasks.cityscapes`); metrics.jsonl gets `val_mask_AP`, `val_mask_AP50`, `val_mask_AP75`, `val_box_AP`,
  `val_box_AP50`, `val_box_AP75`; best.safetensors is kept by val mask AP, with the data set's category
  ids in its metadata; `seglab eval` prints the per-class table and writes `instances_results.json`;
- prediction: `InstancePredictor`; files: overlays and one COCO result JSON.
Semantic-only options (class weights, OHEM, image-label supervision, sliding window, TTA, CRF) are refused.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from ..data.instances import collate_instances
from ..errors import ConfigError, SeglabError
from .base import Task, build_model_for, model_name, nan_to_none, refuse_keys
from .cityscapes import WithCityscapesScores, has_cityscapes_ground_truth

# metrics.jsonl / eval summary keys: COCO's AP, AP50, AP75 for masks and boxes
SUMMARY = tuple(f"{kind}_{key}" for kind in ("mask", "box") for key in ("AP", "AP50", "AP75"))


def build_task_datasets(cfg: Config, datasets: dict, task: str, eval_transform, train_transform,
                        *, train: bool = True):
    """(train set with `train_transform` or None, val set with `eval_transform`) of the config's data set,
    which must be one of `datasets` (the instance or panoptic registry) for a model of `task`."""
    from ..data import build_dataset

    d = cfg.data
    article = "an" if task[0] in "aeiou" else "a"
    if d.name not in datasets:
        raise ConfigError(f"model {cfg.model.name!r} is {article} {task} model but data.name {d.name!r} is not "
                          f"{article} {task} data set; expected one of {', '.join(datasets)}")
    val = build_dataset(d.name, root=d.root, split=d.val_split, transform=eval_transform(mean=d.mean, std=d.std),
                        **d.kwargs)
    if not train:
        return None, val
    transform = train_transform(crop_size=d.crop_size, scale_range=d.scale_range, hflip=d.hflip,
                                mean=d.mean, std=d.std, color_jitter=d.color_jitter, gamma=d.gamma,
                                blur_prob=d.blur_prob, noise_std=d.noise_std)
    return build_dataset(d.name, root=d.root, split=d.train_split, transform=transform, **d.kwargs), val


def sum_losses(losses) -> dict[str, torch.Tensor]:
    """The training criterion of a model that computes its losses: `{"loss": sum of the parts, **parts}`
    (float32)."""
    if not isinstance(losses, Mapping) or not losses or "loss" in losses \
            or not all(isinstance(v, torch.Tensor) and v.numel() == 1 for v in losses.values()):
        raise SeglabError(f"an instance or panoptic model in training must return a non-empty dict of scalar "
                          f"losses (not named 'loss'), got {type(losses).__name__} "
                          f"{sorted(losses) if isinstance(losses, Mapping) else ''}")
    parts = {k: v.float().reshape(()) for k, v in losses.items()}
    return {"loss": sum(parts.values()), **parts}


class ModelLoss:
    """The model's own loss dict: forward = `model(images, targets)`, losses = their sum and the parts."""

    def forward(self, model: nn.Module, inputs, targets):
        return model(inputs, targets)

    def losses(self, outputs, targets) -> dict[str, torch.Tensor]:
        return sum_losses(outputs)


def stack_images(images: list[torch.Tensor]):
    """One (N, C, H, W) tensor when the crops share a size (the model contract allows a list otherwise)."""
    if any(im.shape != images[0].shape for im in images):
        return images
    return torch.stack(images)


class InstanceEvaluatorAdapter:
    """COCO mask / box AP of the processed images (`seglab.metrics.InstanceEvaluator`)."""

    def __init__(self, dataset):
        from ..metrics.instance import InstanceEvaluator

        self.classes, self.num_images = list(dataset.classes), len(dataset)
        self.evaluator = InstanceEvaluator.for_dataset(dataset)

    def process(self, index: int, target, prediction) -> None:
        self.evaluator.update(target["image_id"], prediction, target)

    def all_reduce(self) -> None:
        self.evaluator.all_reduce()

    def compute(self) -> dict:
        return self.evaluator.compute()

    def summary(self, results: dict) -> dict:
        return nan_to_none({k: results[k] for k in SUMMARY if k in results})

    def report(self, results: dict, out_dir: Path, log: Callable[[str], None]) -> list[str]:
        from ..utils.io import write_json_atomic

        log(self.evaluator.format_table(results))
        write_json_atomic(out_dir / "eval_metrics.json",
                          {**nan_to_none(results), "classes": self.classes, "categories": self.evaluator.categories,
                           "num_images": self.num_images, "num_predictions": len(self.evaluator.predictions)})
        self.evaluator.write_results_json(out_dir / "instances_results.json")
        return [f"{out_dir}/eval_metrics.json", f"the COCO results {out_dir}/instances_results.json"]


class InstanceTask(Task):
    name = "instance"
    best_key = "mask_AP"
    line_keys = ("mask_AP", "mask_AP50", "box_AP")
    find_unused_parameters = True
    collate = staticmethod(collate_instances)

    def check_config(self, cfg: Config) -> None:
        t, ev = cfg.train, cfg.eval
        refuse_keys(cfg, self.name, [("train.class_weights", t.class_weights != "none"),
                                     ("train.ohem", t.ohem is not None),
                                     ("train.supervision", t.supervision != "pixel"),
                                     ("eval.slide", ev.slide is not None), ("eval.tta", ev.tta is not None),
                                     ("eval.crf", ev.crf is not None)])

    def build_datasets(self, cfg: Config, *, train: bool = True):
        from ..data.datasets import INSTANCE_DATASETS
        from ..data.instances import InstanceEvalTransform, InstanceTrainTransform

        return build_task_datasets(cfg, INSTANCE_DATASETS, "instance", InstanceEvalTransform, InstanceTrainTransform,
                                   train=train)

    def build_model(self, cfg: Config, dataset) -> nn.Module:
        return build_model_for(cfg, dataset.num_classes)

    def model_metadata(self, cfg: Config, dataset) -> dict:
        return {**super().model_metadata(cfg, dataset), "category_ids": list(dataset.category_ids)}

    def split_batch(self, batch):
        images, targets = batch
        return stack_images(images), targets

    def split_sample(self, sample):
        return sample

    def build_loss(self, cfg: Config, train_ds, log):
        return ModelLoss()

    def build_predictor(self, model: nn.Module, options):
        from ..inference.instances import InstancePredictor

        self.refuse_options(options.semantic_options(), model_name(model))
        return InstancePredictor(model, precision=options.precision, resize=options.resize)

    def build_evaluator(self, dataset, *, out_dir: Path | None = None, detailed: bool = False):
        """COCO AP; `seglab eval` (`detailed`) on Cityscapes adds the Cityscapes benchmark's AP."""
        evaluator = InstanceEvaluatorAdapter(dataset)
        if detailed and has_cityscapes_ground_truth(dataset):
            return WithCityscapesScores(evaluator, dataset, instance=True)
        return evaluator

    def build_writer(self, out_dir: Path, model: nn.Module, options):
        from ..inference.instances import InstanceWriter

        meta = model.seglab_config
        num_classes = meta["num_classes"]
        return InstanceWriter(out_dir, class_names=meta.get("classes") or [str(i) for i in range(num_classes)],
                              category_ids=meta.get("category_ids") or list(range(1, num_classes + 1)),
                              score_threshold=options.score_thresh)

    def build_renderer(self, model: nn.Module, options):
        from ..serve.render import InstanceRenderer

        meta = model.seglab_config
        num_classes = meta["num_classes"]
        return InstanceRenderer(meta.get("classes") or [str(i) for i in range(num_classes)],
                                meta.get("category_ids") or list(range(1, num_classes + 1)), options.score_thresh)

