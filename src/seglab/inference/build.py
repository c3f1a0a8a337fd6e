"""`build_predictor`: a semantic predictor from inference options (whole image or sliding window, flip /
multi-scale test-time augmentation, the dense CRF, precision). Kept apart from `predictor.py` and `tta.py`
because it composes both."""
from __future__ import annotations

from torch import nn

from .predictor import Predictor
from .scale import InputScale
from .tta import TTAPredictor


def build_predictor(model: nn.Module, *, slide=None, stride=None, blend: str = "gaussian", bf16: bool = False,
                    precision: str | None = None, tta: dict | None = None, crf: dict | None = None,
                    resize: InputScale | None = None) -> Predictor:
    """Whole-image or sliding-window prediction, optionally wrapped in flip / multi-scale TTA
    (`tta={'flip': True, 'scales': (0.75, 1, 1.25)}`), optionally refined by the dense CRF; images
    resized as `resize` says first (`seglab.inference.scale.InputScale`; None: their own size)."""
    predictor = Predictor(model, slide=slide, stride=stride, blend=blend, bf16=bf16, precision=precision,
                          resize=resize)
    if tta and (tta.get("flip") or tuple(tta.get("scales", (1.0,))) != (1.0,)):
        predictor = TTAPredictor(predictor, flip=bool(tta.get("flip")), scales=tuple(tta.get("scales", (1.0,))))
    predictor.crf = crf
    return predictor
