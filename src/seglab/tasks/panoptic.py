"""Panoptic segmentation as a task of the engine (registry task "panoptic": Panoptic FPN, UPSNet): one
segment per pixel, stuff and things.

Panoptic quality (PQ = SQ x RQ) is Kirillov, He, Girshick, Rother, Dollar, "Panoptic Segmentation",
CVPR 2019, Sec. 4, computed by `seglab.metrics.panoptic.PanopticEvaluator` with panopticapi's rules.
- data: a panoptic data set (`data.name` in `seglab.data.datasets.PANOPTIC_DATASETS`), training samples
  through `PanopticTrainTransform` (the instance geometry on one mask per segment), validation through
  `PanopticEvalTransform` (original size), batches by `collate_panoptic`; the model gets `num_things`
  from the data set (things are its last classes);
- loss: the model's own loss dict (as for instance models);
- evaluation: PQ / SQ / RQ over all classes, things and stuff; metrics.jsonl gets `val_PQ`, `val_SQ`,
  `val_RQ`, `val_PQ_th`, ..., `val_RQ_st` (Detectron2's names; null where a group has no class);
  best.safetensors is kept by val PQ, with the data set's categories and category ids in its metadata,
  so `seglab predict` writes COCO category ids. `seglab eval` also writes the predictions in the COCO
  panoptic format (`panoptic_predictions.json` and its PNG folder `panoptic_predictions/`, file names
  those of the ground truth; in a distributed run each rank writes the PNGs of its images), which
  `pq_compute` reads back.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

from torch import nn

from ..config import Config
from ..data.instances import collate_instances
from ..errors import ConfigError
from .base import Task, build_model_for, model_name, nan_to_none, pct
from .instance import InstanceTask, build_task_datasets

GROUP_SUFFIX = {"All": "", "Things": "_th", "Stuff": "_st"}
SUMMARY = tuple(f"{m}{s}" for s in GROUP_SUFFIX.values() for m in ("PQ", "SQ", "RQ"))
PREDICTIONS = "panoptic_predictions"  # <out>/panoptic_predictions.json + <out>/panoptic_predictions/*.png


def summary(results: dict) -> dict[str, float]:
    """`PanopticEvaluator.compute()`'s groups as flat keys: {"PQ", "SQ", "RQ", "PQ_th", ..., "RQ_st"}."""
    return {f"{m}{s}": results[group][m.lower()] for group, s in GROUP_SUFFIX.items() for m in ("PQ", "SQ", "RQ")}


def prediction_name(gt_file_name: str, index: int) -> str:
    """The prediction PNG's path below the predictions folder: the ground truth's relative file_name, so
    that `a/x.png` and `b/x.png` stay apart (the data set refuses two annotations naming one PNG); a
    name that would leave the folder becomes `<index>_<name>`."""
    rel = PurePosixPath(str(gt_file_name).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or ":" in rel.parts[0]:
        return f"{index:06d}_{rel.name or 'image'}.png"
    return str(rel)


class PanopticEvaluatorAdapter:
    """PQ of the processed images; with `predictions_dir`, each prediction is also written there as a COCO
    panoptic PNG named like its ground truth's, and `report` writes their JSON."""

    def __init__(self, dataset, predictions_dir: Path | None = None):
        from ..metrics.panoptic import PanopticEvaluator

        self.dataset = dataset
        self.evaluator = PanopticEvaluator(dataset.categories)
        self.predictions_dir = predictions_dir
        # PNGs go to a hidden folder renamed by `report` once every image is done: a failed or killed
        # evaluation leaves no partial set of predictions (and `discard` removes it).
        self.partial_dir = None if predictions_dir is None else \
            predictions_dir.parent / f".{predictions_dir.name}.partial"
        self.annotations: list[tuple[int, dict]] = []  # (dataset index, COCO annotation)

    def discard(self) -> None:
        """Remove the predictions written so far (a failed evaluation, or what a killed one left)."""
        import shutil

        if self.partial_dir is not None:
            shutil.rmtree(self.partial_dir, ignore_errors=True)

    def process(self, index: int, target, prediction) -> None:
        from ..data.panoptic import to_category_ids, write_panoptic

        ds = self.dataset
        self.evaluator.update_result(prediction, target, class_to_category=ds.category_ids)
        if self.predictions_dir is not None:
            gt = ds.samples[index][2]
            infos = to_category_ids(prediction.segments_info, ds.category_ids)
            self.annotations.append((index, write_panoptic(self.partial_dir, prediction_name(gt["file_name"], index),
                                                           prediction.segments.numpy(), infos,
                                                           image_id=gt["image_id"])))

    def all_reduce(self) -> None:
        from ..utils.distributed import all_gather_objects

        self.evaluator.all_reduce()
        self.annotations = sorted(a for part in all_gather_objects(self.annotations) for a in part)

    def compute(self) -> dict:
        return self.evaluator.compute()

    def summary(self, results: dict) -> dict:
        return nan_to_none(summary(results))

    def report(self, results: dict, out_dir: Path, log: Callable[[str], None]) -> list[str]:
        from ..data.panoptic import save_panoptic_json
        from ..utils.io import write_json_atomic

        ds = self.dataset
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in ds.categories}
        log(self.evaluator.format_table(results))
        write_json_atomic(out_dir / "eval_metrics.json", nan_to_none({
            **summary(results), **{f"n{s}": results[g]["n"] for g, s in GROUP_SUFFIX.items()},
            "per_class": {names[c]: v for c, v in results["per_class"].items()},
            "classes": list(ds.classes), "category_ids": list(ds.category_ids), "num_images": len(ds)}))
        written = [f"{out_dir}/eval_metrics.json"]
        if self.predictions_dir is not None:
            import os
            import shutil

            shutil.rmtree(self.predictions_dir, ignore_errors=True)  # a previous evaluation's
            self.partial_dir.mkdir(parents=True, exist_ok=True)  # (no image at all: an empty folder)
            os.replace(self.partial_dir, self.predictions_dir)
            images = [{"id": a["image_id"], "file_name": ds.samples[i][1]} for i, a in self.annotations]
            save_panoptic_json(out_dir / f"{PREDICTIONS}.json", {
                "images": images, "annotations": [a for _, a in self.annotations], "categories": list(ds.categories)})
            written.append(f"the COCO panoptic predictions {out_dir}/{PREDICTIONS}.json (PNGs in "
                           f"{self.predictions_dir}/)")
        return written


class PanopticTask(InstanceTask):
    name = "panoptic"
    best_key = "PQ"
    line_keys = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st")
    collate = staticmethod(collate_instances)

    def build_datasets(self, cfg: Config, *, train: bool = True):
        from ..data.datasets import PANOPTIC_DATASETS
        from ..data.datasets.coco_panoptic import (
            PanopticEvalTransform,
            PanopticTrainTransform,
        )

        return build_task_datasets(cfg, PANOPTIC_DATASETS, "panoptic", PanopticEvalTransform, PanopticTrainTransform,
                                   train=train)

    def build_model(self, cfg: Config, dataset) -> nn.Module:
        """The config's panoptic model for `dataset`'s classes: num_classes and num_things (the last classes)."""
        given = cfg.model.kwargs.get("num_things")
        if given is not None and given != dataset.num_things:
            raise ConfigError(f"model.kwargs.num_things is {given} but data set {cfg.data.name!r} has "
                              f"{dataset.num_things} thing classes (leave it out to take the data set's)")
        return build_model_for(cfg, dataset.num_classes, num_things=dataset.num_things)

    def model_metadata(self, cfg: Config, dataset) -> dict:
        return {**Task.model_metadata(self, cfg, dataset), "category_ids": list(dataset.category_ids),
                "categories": list(dataset.categories)}

    def build_predictor(self, model: nn.Module, options):
        from ..inference.panoptic import PanopticPredictor

        self.refuse_options(options.semantic_options(), model_name(model))
        return PanopticPredictor(model, precision=options.precision, resize=options.resize)

    def build_evaluator(self, dataset, *, out_dir: Path | None = None, detailed: bool = False):
        return PanopticEvaluatorAdapter(dataset, Path(out_dir) / PREDICTIONS if detailed and out_dir else None)

    def build_writer(self, out_dir: Path, model: nn.Module, options):
        from ..inference.panoptic import PanopticWriter, model_categories

        categories, class_to_category = model_categories(model.seglab_config)
        return PanopticWriter(out_dir, categories=categories, class_to_category=class_to_category)

    def build_renderer(self, model: nn.Module, options):
        from ..inference.panoptic import model_categories
        from ..serve.render import PanopticRenderer

        categories, class_to_category = model_categories(model.seglab_config)
        return PanopticRenderer(categories, class_to_category)

    def counting_kwargs(self, num_things: int) -> dict:
        return {"num_things": num_things}

    def counting_note(self, num_classes: int, num_things: int) -> str | None:
        return f"panoptic models: the last {num_things} of the {num_classes} classes are things"

    def summary_line(self, values) -> str:
        return (f"PQ {pct(values.get('PQ'))} SQ {pct(values.get('SQ'))} RQ {pct(values.get('RQ'))} "
                f"(things PQ {pct(values.get('PQ_th'))}, stuff PQ {pct(values.get('PQ_st'))})")
