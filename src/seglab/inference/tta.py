"""Test-time augmentation: multi-scale inputs and horizontal flips, probabilities averaged.

Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution,
and Fully Connected CRFs", TPAMI 2018 (multi-scale inputs, "MSC", in its experiments) and Chen et al.,
"Rethinking Atrous Convolution for Semantic Image Segmentation" (DeepLab v3), arXiv 2017, whose
val-set inference strategy averages the outputs for scales {0.5, 0.75, 1.0, 1.25, 1.5, 1.75} and
left-right flipped inputs. Each scaled / flipped pass goes through the wrapped `Predictor`, so
sliding-window inference composes with TTA; probabilities are resized back to the input size
(bilinear) and flipped back before the average. The average is over softmax probabilities, as in
DeepLab's released multi-scale inference code.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .predictor import Predictor


def parse_tta_spec(text: str) -> dict:
    """'flip,scales=0.75,1,1.25' -> {'flip': True, 'scales': (0.75, 1.0, 1.25)}.

    Comma-separated items: `flip` (or `noflip`), and `scales=` followed by every remaining number.
    An empty string or 'none' means no augmentation: {'flip': False, 'scales': (1.0,)}."""
    if not isinstance(text, str):
        raise ValueError(f"TTA spec must be a string like 'flip,scales=0.75,1,1.25', got {text!r}")
    flip, scales = False, None
    items = [item.strip() for item in text.split(",")]
    if items in ([""], ["none"]):
        return {"flip": False, "scales": (1.0,)}
    i = 0
    while i < len(items):
        item = items[i].lower()
        if item in ("flip", "noflip"):
            flip = item == "flip"
        elif item.startswith("scales="):
            if scales is not None:
                raise ValueError(f"TTA spec {text!r}: 'scales=' given twice")
            values = [item[len("scales="):]]
            while i + 1 < len(items) and not items[i + 1].lower().startswith(("flip", "noflip", "scales=")):
                i += 1
                values.append(items[i])
            try:
                scales = tuple(float(v) for v in values)
            except ValueError:
                raise ValueError(f"TTA spec {text!r}: scales must be numbers, got {','.join(values)!r}") from None
            if not scales or any(not s > 0 or s != s or s == float("inf") for s in scales):
                raise ValueError(f"TTA spec {text!r}: scales must be positive finite numbers")
        else:
            raise ValueError(f"TTA spec {text!r}: unknown item {items[i]!r} "
                             "(expected 'flip', 'noflip' or 'scales=s1,s2,...')")
        i += 1
    return {"flip": flip, "scales": scales if scales is not None else (1.0,)}


class TTAPredictor(Predictor):
    """A `Predictor` whose `probabilities` average flipped and rescaled passes of another Predictor.

    `TTAPredictor(Predictor(model, slide=(512, 512)), flip=True, scales=(0.75, 1.0, 1.25))`.
    `predict`, `predict_image` and `seglab.engine.evaluate(..., predictor=...)` work as for the
    wrapped predictor. A bare model may be passed instead of a Predictor (whole-image inference).
    """

    def __init__(self, predictor, *, flip: bool = True, scales: Sequence[float] = (1.0,)):
        if isinstance(predictor, torch.nn.Module):
            predictor = Predictor(predictor)
        if not hasattr(predictor, "probabilities"):
            raise ValueError(f"predictor must be a Predictor or a model, got {type(predictor).__name__}")
        scales = tuple(float(s) for s in scales)
        if not scales or any(not s > 0 for s in scales):
            raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
        self.predictor = predictor
        self.model = predictor.model                  # predict_image reads mean/std and the device here
        self.precision = predictor.precision
        self.resize = predictor.resize                # applied once, around every augmented pass
        self.notes = predictor.notes
        self.flip = bool(flip)
        self.scales = scales

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) normalised images -> (N, num_classes, H, W) averaged probabilities."""
        n, (h, w) = len(images), images.shape[-2:]
        total, count = None, 0
        for scale in self.scales:
            if scale == 1.0:
                x = images
            else:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            if self.flip:  # the image and its mirror in one batch: one pass through the model
                p = self.predictor.probabilities(torch.cat([x, x.flip(-1)]))
                p = p[:n] + p[n:].flip(-1)
            else:
                p = self.predictor.probabilities(x)
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            total = p if total is None else total.add_(p)
            count += 2 if self.flip else 1
        return total / count

    def __repr__(self) -> str:
        return f"TTAPredictor({type(self.predictor).__name__}, flip={self.flip}, scales={self.scales})"
