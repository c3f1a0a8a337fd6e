"""`seglab.predict`: one call from a photo (or many) to typed results.

    import seglab
    result = seglab.predict("street.jpg", model="bisenetv2.camvid")   # SemanticResult
    result.labels                                                     # (H, W) class indices
    results = seglab.predict("photos/", model="runs/x/best.safetensors", probs=True)

The same predictor as `seglab predict` and `Predictor.from_pretrained` (the model's stored settings:
input size, test-time augmentation, CRF; the fastest path that keeps the labels), so the labels are the
ones the command line writes. For many calls, build the predictor once with `Predictor.from_pretrained`
and call it.
"""
from __future__ import annotations


def predict(source, model, *, device: str | None = "auto", precision: str | None = None, probs: bool = False,
            batch_size: int | None = None, **options):
    """Predict `source` with `model` (a model file, a shipped model's name, an exported .onnx file, or a
    model object).

    `source`: a file path, a folder (images in subfolders included), a PIL image, an RGB uint8 array
    (H x W x C), a tensor ((C, H, W) or (N, C, H, W); uint8 or floats in [0, 1]) or a list of them.
    Returns one result for one image, a list for several: `SemanticResult` (labels (H, W), probabilities
    (C, H, W) when `probs`), `InstanceResult` (boxes, scores, labels, masks) or `PanopticResult`
    (segments, segments_info); a joint model gives {label space: labels}. Same-size images are batched
    (`batch_size`, default 8). `options`: `imgsz`, `scale`, `slide`, `tta`, `crf`, `score_thresh`,
    `backend`, as `seglab predict` takes them."""
    from .inference.load import load_predictor

    predictor = load_predictor(model, device=device, precision=precision, **options)[1]
    return predictor(source, batch_size=batch_size, probs=probs)
