"""Inference: whole-image and sliding-window prediction."""
from .predictor import Predictor

__all__ = ["Predictor"]
