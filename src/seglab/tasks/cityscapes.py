"""Cityscapes' own scores next to a task's usual ones, for `seglab eval` on Cityscapes data.

A data set that can hand out its raw `*_gtFine_instanceIds.png` maps (`cityscapes_instance_ids(i)`:
`CityscapesInstances`, and the semantic `Cityscapes` when its instanceIds files are present) is scored
by the Cityscapes benchmark's rules (`seglab.metrics.cityscapes`) besides the task's own evaluator:
- instance models: instance AP, AP50, AP (100 m), AP (50 m) and per-class AP over the 8 classes
  (`CityscapesInstanceEvaluator`; the distance-limited APs use the depth of each image's
  `disparity/*_disparity.png` and `camera/*_camera.json` when the data set has them, and are NaN, as the
  table says, when it does not);
- semantic models: iIoU per class and per category (`CityscapesInstanceIoU`).
The wrapper adds `cityscapes_*` values to the summary, a `cityscapes` section to `compute()` (so
`eval_metrics.json` holds it) and the Cityscapes table to the report. The tasks only wrap when `detailed`
(what `seglab eval` asks for): validation during training keeps the task's usual metrics.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import Evaluator, nan_to_none, pct


def has_cityscapes_ground_truth(dataset) -> bool:
    """Whether `dataset` hands out the raw instanceIds maps the Cityscapes scripts evaluate against."""
    if not callable(getattr(dataset, "cityscapes_instance_ids", None)):
        return False
    has = getattr(dataset, "has_instance_ids", None)
    return has() if callable(has) else True


class WithCityscapesScores:
    """The task's evaluator `base` plus a Cityscapes metric (`CityscapesInstanceEvaluator` for instance
    predictions, `CityscapesInstanceIoU` for semantic ones), both fed the same images."""

    def __init__(self, base: Evaluator, dataset, *, instance: bool):
        from ..metrics.cityscapes import CityscapesInstanceEvaluator, CityscapesInstanceIoU

        self.base, self.dataset, self.instance = base, dataset, instance
        self.metric = CityscapesInstanceEvaluator() if instance else CityscapesInstanceIoU()

    def process(self, index: int, target, prediction) -> None:
        self.base.process(index, target, prediction)
        gt = self.dataset.cityscapes_instance_ids(index)
        if self.instance:
            depth_of = getattr(self.dataset, "cityscapes_depth", None)  # stereo depth: AP (100 m), AP (50 m)
            self.metric.update(index, prediction, gt, depth=depth_of(index) if callable(depth_of) else None)
        else:
            self.metric.update(prediction.labels, gt)

    def all_reduce(self) -> None:
        self.base.all_reduce()
        self.metric.all_reduce()

    def compute(self) -> dict:
        return {**self.base.compute(), "cityscapes": self.metric.compute()}

    def summary(self, results: dict) -> dict:
        cs = results["cityscapes"]
        keys = ("AP", "AP50", "AP100m", "AP50m") if self.instance else ("iIoU", "iIoU_category")
        return {**self.base.summary(results), **nan_to_none({f"cityscapes_{k}": cs[k] for k in keys})}

    def report(self, results: dict, out_dir: Path, log: Callable[[str], None]) -> list[str]:
        from ..metrics.cityscapes import format_cityscapes_instance_table

        written = self.base.report(results, out_dir, log)  # eval_metrics.json holds results["cityscapes"] too
        cs = results["cityscapes"]
        if self.instance:
            log("Cityscapes instance-level evaluation (cityscapesScripts' rules):\n"
                + format_cityscapes_instance_table(cs))
        else:
            per = {**cs["iIoU_per_class"], **cs["iIoU_per_category"]}
            log("Cityscapes instance-level IoU: iIoU " + pct(cs["iIoU"]) + "  iIoU category "
                + pct(cs["iIoU_category"]) + "\n  " + "  ".join(f"{k} {pct(v)}" for k, v in per.items()))
        return written
