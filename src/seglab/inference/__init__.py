"""Inference: whole-image and sliding-window prediction."""
from .crf import dense_crf
from .predictor import Predictor, build_predictor
from .tta import TTAPredictor, parse_tta_spec

__all__ = ["build_predictor", "Predictor", "TTAPredictor", "dense_crf", "parse_tta_spec"]
