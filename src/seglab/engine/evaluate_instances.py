"""Instance evaluation over a data set: every image at its own size (batch 1) through an instance model,
scored by `seglab.metrics.instance.InstanceEvaluator` (COCO mask and box AP through pycocotools, against
the data set's COCO JSON when it has one, else against its targets). The same function serves
validation during training (`seglab.engine.instance`) and `seglab eval`."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from ..inference.instances import predict_instances
from ..metrics.instance import InstanceEvaluator
from .evaluate import _nan_to_none

# metrics.jsonl / eval summary keys: COCO's AP, AP50, AP75 for masks and boxes
SUMMARY = tuple(f"{kind}_{key}" for kind in ("mask", "box") for key in ("AP", "AP50", "AP75"))


def evaluate_instances(model: torch.nn.Module, dataset, *, progress: bool = False,
                       bf16: bool = False) -> InstanceEvaluator:
    """An `InstanceEvaluator` filled with every image of `dataset` ((image, target) samples with
    "image_id"); the model is put back in the mode it was in."""
    was_training = model.training
    model.eval()
    evaluator = InstanceEvaluator.for_dataset(dataset)
    for i in tqdm(range(len(dataset)), desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        image, target = dataset[i]
        evaluator.update(target["image_id"], predict_instances(model, image, bf16=bf16), target)
    model.train(was_training)
    return evaluator


def summary_line(results: dict) -> str:
    return "  ".join(f"{k.replace('_', ' ')} {100 * results[k]:.2f}" for k in SUMMARY if k in results)


def evaluate_instances_and_report(model: torch.nn.Module, dataset, out_dir, *, progress: bool = False,
                                  bf16: bool = False, log: Callable[[str], None] = print) -> dict:
    """Evaluate, print the per-class AP / AP50 table and the COCO summary numbers, and write
    `eval_metrics.json` and the COCO result JSON `instances_results.json` into `out_dir`."""
    from ..utils.io import write_json_atomic

    out_dir = Path(out_dir)
    evaluator = evaluate_instances(model, dataset, progress=progress, bf16=bf16)
    results = evaluator.compute()
    log(evaluator.format_table(results))
    write_json_atomic(out_dir / "eval_metrics.json",
                      {**_nan_to_none(results), "classes": list(dataset.classes),
                       "categories": evaluator.categories, "num_images": len(dataset),
                       "num_predictions": len(evaluator.predictions)})
    evaluator.write_results_json(out_dir / "instances_results.json")
    return results
