"""Panoptic models (registry task "panoptic": Panoptic FPN, UPSNet) in the engine: training, evaluation
and prediction files. `seglab.engine.train`, `seglab eval` and `seglab predict` dispatch here.

Panoptic quality (PQ = SQ x RQ) is Kirillov, He, Girshick, Rother, Dollar, "Panoptic Segmentation",
CVPR 2019, Sec. 4, computed by `seglab.metrics.panoptic.PanopticEvaluator` with panopticapi's rules.

Training is the instance loop (`seglab.engine.instance.train_with_losses` with the `PANOPTIC` task below:
the model returns a dict of losses, summed with weight 1; `optimization_state`, `train_step`,
`TrainingClock`, exact resume from last.pt, the same output files); what differs:
- data: a panoptic data set (`data.name` in `seglab.data.datasets.PANOPTIC_DATASETS`), training samples
  through `PanopticTrainTransform` (the instance geometry on one mask per segment), validation through
  `PanopticEvalTransform` (original size), batches by `collate_panoptic` (= `collate_instances`); the model gets `num_things`
  from the data set (things are its last classes);
- validation: PQ / SQ / RQ over all classes, things and stuff; metrics.jsonl gets `val_PQ`, `val_SQ`,
  `val_RQ`, `val_PQ_th`, ..., `val_RQ_st` (Detectron2's names; null where a group has no class), and
  best.safetensors is kept by val PQ, with the data set's categories (COCO panoptic dicts in class order)
  and category ids in its metadata, so `seglab predict` writes COCO category ids.
Evaluation writes the predictions in the COCO panoptic format (`panoptic_predictions.json` and its PNG
folder `panoptic_predictions/`, file names those of the ground truth), which `pq_compute` reads back.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..config import Config
from ..data.datasets.coco_panoptic import PanopticEvalTransform, PanopticTrainTransform
from ..errors import ConfigError, SeglabError
from ..metrics.panoptic import PanopticEvaluator
from ..structures import PanopticResult
from ..utils.io import write_json_atomic
from .evaluate import _nan_to_none
from .instance import LossModelTask, _pct, build_task_datasets, train_with_losses
from .trainer import TrainResult, build_model_for

# metrics.jsonl / eval summary keys (Detectron2's names): PQ, SQ, RQ of all classes, things, stuff
GROUP_SUFFIX = {"All": "", "Things": "_th", "Stuff": "_st"}
SUMMARY = tuple(f"{m}{s}" for s in GROUP_SUFFIX.values() for m in ("PQ", "SQ", "RQ"))
PREDICTIONS = "panoptic_predictions"  # <out>/panoptic_predictions.json + <out>/panoptic_predictions/*.png


def build_panoptic_datasets(cfg: Config, *, train: bool = True):
    """(train set with augmentation or None, val set at original size) of the config's panoptic data set."""
    from ..data.datasets import PANOPTIC_DATASETS

    return build_task_datasets(cfg, PANOPTIC_DATASETS, "panoptic", PanopticEvalTransform, PanopticTrainTransform,
                               train=train)


def build_panoptic_model(cfg: Config, dataset) -> nn.Module:
    """The config's panoptic model for `dataset`'s classes: num_classes and num_things (the last classes)."""
    given = cfg.model.kwargs.get("num_things")
    if given is not None and given != dataset.num_things:
        raise ConfigError(f"model.kwargs.num_things is {given} but data set {cfg.data.name!r} has "
                          f"{dataset.num_things} thing classes (leave it out to take the data set's)")
    model_cfg = cfg.model.model_copy(update={"kwargs": {**cfg.model.kwargs, "num_things": dataset.num_things}})
    return build_model_for(cfg.model_copy(update={"model": model_cfg}), dataset.num_classes)


@torch.no_grad()
def predict_panoptic(model: nn.Module, image: torch.Tensor, *, bf16: bool = False) -> PanopticResult:
    """One normalised (3, H, W) image through a panoptic model in eval mode -> its PanopticResult (on the
    CPU; category_id = the model's contiguous class index)."""
    device = next(model.parameters()).device
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and device.type == "cpu"):
        result = model([image.to(device)])[0]
    return PanopticResult(segments=result.segments.cpu(), segments_info=list(result.segments_info))


def summary(results: dict) -> dict[str, float]:
    """`PanopticEvaluator.compute()`'s groups as flat keys: {"PQ", "SQ", "RQ", "PQ_th", ..., "RQ_st"}."""
    return {f"{m}{s}": results[group][m.lower()] for group, s in GROUP_SUFFIX.items() for m in ("PQ", "SQ", "RQ")}


def summary_line(results: dict) -> str:
    """"PQ 61.2 SQ 80.3 RQ 74.0 (things PQ 55.1, stuff PQ 67.3)" from `compute()`'s dict."""
    a = results["All"]
    return (f"PQ {_pct(a['pq'])} SQ {_pct(a['sq'])} RQ {_pct(a['rq'])} (things PQ {_pct(results['Things']['pq'])}, "
            f"stuff PQ {_pct(results['Stuff']['pq'])})")


def evaluate_panoptic(model: nn.Module, dataset, *, progress: bool = False, bf16: bool = False,
                      predictions_dir: str | Path | None = None) -> tuple[PanopticEvaluator, list[dict]]:
    """(a `PanopticEvaluator` filled with every image of the panoptic `dataset`, the predictions' COCO
    annotations). With `predictions_dir` each prediction is written there as a COCO panoptic PNG named
    like its ground truth's, and the annotations carry the data set's JSON image ids and category ids.
    The model is put back in the mode it was in."""
    from ..data.panoptic import to_category_ids, write_panoptic

    was_training = model.training
    model.eval()
    evaluator = PanopticEvaluator(dataset.categories)
    annotations: list[dict] = []
    if predictions_dir is not None:
        Path(predictions_dir).mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(dataset)), desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        image, target = dataset[i]
        result = predict_panoptic(model, image, bf16=bf16)
        evaluator.update_result(result, target, class_to_category=dataset.category_ids)
        if predictions_dir is not None:
            gt = dataset.samples[i][2]
            name = Path(gt["file_name"]).name
            infos = to_category_ids(result.segments_info, dataset.category_ids)
            annotations.append(write_panoptic(predictions_dir, name, result.segments.numpy(), infos,
                                              image_id=gt["image_id"]))
    model.train(was_training)
    return evaluator, annotations


def evaluate_panoptic_and_report(model: nn.Module, dataset, out_dir, *, progress: bool = False,
                                 bf16: bool = False, log: Callable[[str], None] = print) -> dict:
    """Evaluate, print the PQ table (`format_table`), and write into `out_dir`: `eval_metrics.json`
    (the summary keys, n per group, per-class PQ / SQ / RQ by class name) and the predictions in COCO
    panoptic format (`panoptic_predictions.json` + `panoptic_predictions/`). Returns `compute()`'s dict."""
    from ..data.panoptic import save_panoptic_json

    out_dir = Path(out_dir)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in dataset.categories}
    evaluator, annotations = evaluate_panoptic(model, dataset, progress=progress, bf16=bf16,
                                               predictions_dir=out_dir / PREDICTIONS)
    results = evaluator.compute()
    log(evaluator.format_table(results))
    write_json_atomic(out_dir / "eval_metrics.json", _nan_to_none({
        **summary(results), **{f"n{s}": results[g]["n"] for g, s in GROUP_SUFFIX.items()},
        "per_class": {names[c]: v for c, v in results["per_class"].items()},
        "classes": list(dataset.classes), "category_ids": list(dataset.category_ids),
        "num_images": len(dataset)}))
    images = [{"id": a["image_id"], "file_name": dataset.samples[i][1]} for i, a in enumerate(annotations)]
    save_panoptic_json(out_dir / f"{PREDICTIONS}.json", {"images": images, "annotations": annotations,
                                                         "categories": list(dataset.categories)})
    return results


def _validate(model: nn.Module, val_ds, progress: bool) -> tuple[dict, dict]:
    results = evaluate_panoptic(model, val_ds, progress=progress)[0].compute()
    return _nan_to_none(summary(results)), results


PANOPTIC = LossModelTask(name="panoptic", build_datasets=build_panoptic_datasets, build_model=build_panoptic_model,
                         validate=_validate, best_key="PQ", line_keys=("PQ", "SQ", "RQ", "PQ_th", "PQ_st"),
                         metadata=lambda ds: {"category_ids": list(ds.category_ids),
                                              "categories": list(ds.categories)},
                         result_field="best_PQ")


def train_panoptic(cfg: Config, *, resume: bool = False, progress: bool | None = None,
                   log: Callable[[str], None] = print,
                   on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a panoptic model; outputs as `seglab.engine.train` (config.yaml, last.pt, best.safetensors,
    metrics.jsonl, curves.png of the loss and val PQ); `result.best_PQ` is the best val PQ.
    `on_epoch(entry)` sees each metrics.jsonl entry once it is written."""
    return train_with_losses(cfg, PANOPTIC, resume=resume, progress=progress, log=log, on_epoch=on_epoch)


# --- prediction files (`seglab predict` with a panoptic model) ---------------------------------------

def model_categories(meta: dict) -> tuple[list[dict], list[int]]:
    """(COCO panoptic categories in class order, category id per class) of a model file's metadata: the
    ones recorded in training, else made from its class names, palette and num_things (ids 0..C-1)."""
    if meta.get("categories") and meta.get("category_ids"):
        return [dict(c) for c in meta["categories"]], [int(c) for c in meta["category_ids"]]
    from ..data.palettes import default_palette

    num_classes = int(meta["num_classes"])
    num_things = int(meta.get("kwargs", {}).get("num_things", 0))
    names = meta.get("classes") or [str(i) for i in range(num_classes)]
    palette = meta.get("palette") or default_palette(num_classes)
    categories = [{"id": i, "name": names[i], "isthing": int(i >= num_classes - num_things),
                   "color": [int(v) for v in palette[i]]} for i in range(num_classes)]
    return categories, list(range(num_classes))


def predict_panoptic_files(model: nn.Module, files: Sequence[Path], out_dir: Path, *, categories: Sequence[dict],
                           class_to_category: Sequence[int], mean: Sequence[float] | None = None,
                           std: Sequence[float] | None = None, bf16: bool = False, alpha: float = 0.6,
                           progress: bool = False) -> tuple[list[Path], Path]:
    """Per image `<stem>_panoptic.png` (COCO panoptic PNG) and `<stem>_panoptic_vis.png` (stuff in its class
    colour, each thing a distinct shade, segment borders) in `out_dir`, and `panoptic.json` (COCO panoptic:
    images, annotations, categories) for all of them; returns (visualisation paths, JSON path). Every
    input is read before anything is written."""
    from ..data import read_image
    from ..data.panoptic import save_panoptic_json
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image
    from ..inference.instances import file_image_ids
    from ..viz.panoptic import save_panoptic_prediction

    files = [Path(f) for f in files]
    stems: dict[str, Path] = {}
    for f in files:  # validate everything first: no half-finished output folders
        if f.stem in stems:
            raise SeglabError(f"{f} and {stems[f.stem]} would write the same {f.stem}_panoptic.png; "
                              f"predict them into different --out folders")
        stems[f.stem] = f
        read_image(f, in_channels=3)
    config = getattr(model, "seglab_config", {})
    mean = mean if mean is not None else config.get("mean", IMAGENET_MEAN)
    std = std if std is not None else config.get("std", IMAGENET_STD)
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures, images, annotations = [], [], []
    for f, image_id in tqdm(list(zip(files, file_image_ids(files))), desc="predict", disable=not progress,
                            leave=False, dynamic_ncols=True):
        image = read_image(f, in_channels=3)
        result = predict_panoptic(model, normalize_image(image, mean, std), bf16=bf16)
        annotations.append(save_panoptic_prediction(out_dir, f.stem, image, result, categories, image_id=image_id,
                                                     alpha=alpha, class_to_category=class_to_category))
        images.append({"id": image_id, "file_name": f.name, "height": int(image.shape[0]),
                       "width": int(image.shape[1])})
        pictures.append(out_dir / f"{f.stem}_panoptic_vis.png")
    json_path = out_dir / "panoptic.json"
    save_panoptic_json(json_path, {"images": images, "annotations": annotations, "categories": list(categories)})
    return pictures, json_path

