"""Heads of the panoptic models: UPSNet's deformable semantic head and its parameter-free panoptic head."""
from .upsnet import (
    DeformableSemanticHead,
    UPSNetPanopticHead,
    labels_in_boxes,
    select_instances,
)

__all__ = ["DeformableSemanticHead", "UPSNetPanopticHead", "labels_in_boxes", "select_instances"]
