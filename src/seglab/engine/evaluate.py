"""Evaluation over a data set with the streaming confusion-matrix metrics (batch size 1, so every
image keeps its original size, as the benchmarks' protocols require)."""
from __future__ import annotations

import torch
from tqdm import tqdm

from ..inference.predictor import Predictor


def evaluate(model: torch.nn.Module, dataset, *, num_classes: int, predictor: Predictor | None = None,
             progress: bool = False, confusion_callback=None):
    """Returns a `SemanticMetrics` filled with every image of `dataset`. The model is left in eval mode."""
    from ..metrics import SemanticMetrics

    was_training = model.training
    predictor = predictor or Predictor(model)
    metrics = SemanticMetrics(num_classes, ignore_index=getattr(dataset, "ignore_index", 255))
    for i in tqdm(range(len(dataset)), desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        sample = dataset[i]
        if predictor.crf is not None:  # the CRF needs the original colours
            probs = predictor.probabilities(sample["image"][None])[0]
            pred = predictor.refine(dataset.read_raw(i)[0], probs).argmax(0)
        else:
            pred = predictor.predict(sample["image"][None])[0]
        metrics.update(pred, sample["mask"])
        if confusion_callback is not None:
            confusion_callback(i, sample, pred)
    if was_training:
        model.train()
    return metrics


def evaluate_and_report(model: torch.nn.Module, dataset, out_dir, *, predictor: Predictor | None = None,
                        progress: bool = False, log=print) -> dict:
    """Evaluate, print the per-class table, and write eval_metrics.json and confusion_matrix.png."""
    from pathlib import Path

    from ..metrics import format_table
    from ..metrics.boundary import TrimapAccuracy
    from ..utils.io import write_json_atomic
    from ..viz import plot_confusion_matrix

    out_dir = Path(out_dir)
    trimap = TrimapAccuracy(ignore_index=getattr(dataset, "ignore_index", 255))
    metrics = evaluate(model, dataset, num_classes=dataset.num_classes, predictor=predictor, progress=progress,
                       confusion_callback=lambda i, sample, pred: trimap.update(pred, sample["mask"]))
    results = {**metrics.compute(), **trimap.compute()}
    log(format_table(results, list(dataset.classes)))
    log("accuracy near boundaries (trimap): " + "  ".join(f"{k[11:]} {100 * v:.2f}"
                                                          for k, v in results.items() if k.startswith("trimap")))
    write_json_atomic(out_dir / "eval_metrics.json",
                      {**_nan_to_none(results), "classes": list(dataset.classes), "num_images": len(dataset),
                       "confusion": metrics.confusion.tolist()})
    plot_confusion_matrix(metrics.confusion, list(dataset.classes), out_dir / "confusion_matrix.png")
    return results


def _nan_to_none(obj):
    """JSON has no NaN: classes absent from the data are written as null."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
