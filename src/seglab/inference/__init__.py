"""Inference: whole-image and sliding-window prediction, TTA, the dense CRF, and the affinity graph
merge that turns pixel affinities into instances."""
from .build import build_predictor
from .crf import dense_crf
from .graph_merge import GraphMergeResult, graph_merge, merge_graph
from .predictor import Predictor
from .tta import TTAPredictor, parse_tta_spec

__all__ = ["build_predictor", "Predictor", "TTAPredictor", "dense_crf", "parse_tta_spec", "GraphMergeResult",
           "graph_merge", "merge_graph"]
