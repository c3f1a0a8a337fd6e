"""Evaluation metrics: streaming, mergeable objects with `update(pred, target)`, `merge(other)`,
`all_reduce()` and `compute() -> dict` (see DESIGN.md, Contracts)."""
from .cityscapes import CityscapesInstanceEvaluator, CityscapesInstanceIoU
from .instance import InstanceEvaluator, format_instance_table, instance_results_to_coco
from .joint import JointMetrics, flat_metrics
from .panoptic import PanopticEvaluator, format_panoptic_table, pq_compute
from .semantic import SemanticMetrics, format_table

__all__ = ["SemanticMetrics", "JointMetrics", "flat_metrics", "format_table", "InstanceEvaluator",
           "format_instance_table", "instance_results_to_coco", "PanopticEvaluator", "format_panoptic_table",
           "pq_compute", "CityscapesInstanceEvaluator", "CityscapesInstanceIoU"]
