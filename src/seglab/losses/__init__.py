"""Training criteria: `criterion(outputs, target) -> dict[str, Tensor]` with the total under "loss"
(see DESIGN.md, Contracts), and class-weighting helpers."""
from .class_weights import count_class_pixels, inverse_log_frequency_weights, median_frequency_weights
from .cross_entropy import SegmentationLoss

__all__ = ["SegmentationLoss", "count_class_pixels", "median_frequency_weights",
           "inverse_log_frequency_weights"]
