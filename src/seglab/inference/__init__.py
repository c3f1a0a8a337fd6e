"""Inference: whole-image and sliding-window prediction at the scale the model was trained for, TTA,
the dense CRF, the affinity graph merge that turns pixel affinities into instances, and prediction on
files, folders and videos.

`Predictor.from_pretrained(name_or_path, device=..., precision=..., **options)` gives the predictor of a
model file, a shipped model's name or an exported ONNX file (whatever its task) with the model's stored
settings; call it on paths, folders, PIL images, arrays or tensors."""
from .base import ModelPredictor
from .build import build_predictor
from .crf import dense_crf
from .graph_merge import GraphMergeResult, graph_merge, merge_graph
from .load import load_predictor
from .predictor import Predictor
from .tta import TTAPredictor, parse_tta_spec


def from_pretrained(name_or_path, *, device: str | None = "auto", precision: str | None = None, **options):
    """The predictor of a model file (.safetensors), a shipped model's name (e.g. "bisenetv2.camvid") or an
    exported .onnx file, with the model's stored prediction settings (input size, TTA, CRF) unless
    `options` (`imgsz`, `scale`, `slide`, `tta`, `crf`, `score_thresh`, `backend`) say otherwise. Semantic
    models give a `Predictor` (or `TTAPredictor`); instance, panoptic and joint models their own."""
    return load_predictor(name_or_path, device=device, precision=precision, **options)[1]


# `Predictor.from_pretrained(...)`: attached here because the loader needs the tasks, which need the
# predictor classes (defining it in predictor.py would make an import cycle).
ModelPredictor.from_pretrained = staticmethod(from_pretrained)

__all__ = ["build_predictor", "from_pretrained", "load_predictor", "ModelPredictor", "Predictor", "TTAPredictor",
           "dense_crf", "parse_tta_spec", "GraphMergeResult", "graph_merge", "merge_graph"]
