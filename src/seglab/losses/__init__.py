"""Training criteria: `criterion(outputs, target) -> dict[str, Tensor]` with the total under "loss"
(see DESIGN.md, Contracts), and class-weighting helpers."""
from .affinity import affinity_targets, balanced_affinity_loss
from .class_weights import count_class_pixels, inverse_log_frequency_weights, median_frequency_weights
from .cross_entropy import SegmentationLoss
from .joint import JointLoss
from .mil import MILLoss, multiclass_mil_loss
from .se_loss import SemanticEncodingLoss, class_presence, semantic_encoding_loss

__all__ = ["SegmentationLoss", "JointLoss", "count_class_pixels", "median_frequency_weights",
           "inverse_log_frequency_weights", "MILLoss", "multiclass_mil_loss", "SemanticEncodingLoss",
           "class_presence", "semantic_encoding_loss", "affinity_targets", "balanced_affinity_loss"]
