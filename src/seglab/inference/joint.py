"""Prediction with joint models (one trunk, a head per label space: FCN's SIFT Flow net, Long et al.,
CVPR 2015, Sec. 5): `JointPredictor` gives a label map per space; `JointWriter` writes
`<stem>_<space>.png` (palette PNG, pixel value = class index of that space) and
`<stem>_<space>_overlay.png` for every space."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .base import ModelPredictor
from .scale import resize_images, resize_maps


class JointPredictor(ModelPredictor):
    """A joint model on a normalised (C, H, W) tensor or a uint8 image -> {space: labels (H, W)} on the CPU."""

    fast_path_ok = True

    @torch.no_grad()
    def predict_tensor(self, x: torch.Tensor, *, image: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        size = tuple(x.shape[-2:])
        target = self.target_size(*size)
        x = x[None] if target is None else resize_images(x[None], target)
        with self.autocast():
            out = self.model(self.prepare(x.to(self.device)))
        return {space: (resize_maps(logits.float(), size) if target is not None else logits.float())[0].max(0).indices.cpu()
                for space, logits in out.items()}


class JointWriter:
    """A label PNG and an overlay (with a legend) per label space and image."""

    def __init__(self, out_dir: Path, *, palettes: Mapping[str, Sequence[Sequence[int]]],
                 classes: Mapping[str, Sequence[str]] | None = None, alpha: float = 0.5):
        self.out_dir, self.alpha = Path(out_dir), alpha
        self.palettes = {s: [tuple(c) for c in p] for s, p in palettes.items()}
        self.classes = {s: list((classes or {}).get(s) or map(str, range(len(p)))) for s, p in self.palettes.items()}
        self.output_suffixes = tuple(x for s in self.palettes for x in (f"_{s}.png", f"_{s}_overlay.png"))
        self.count = 0

    def _overlay(self, image: np.ndarray, space: str, labels: np.ndarray) -> np.ndarray:
        from ..viz import overlay
        from ..viz.legend import classes_present, draw_legend

        picture = overlay(image, labels, self.palettes[space], alpha=self.alpha)
        return np.asarray(draw_legend(picture, classes_present(labels, self.classes[space], self.palettes[space])))

    def render(self, image: np.ndarray, prediction: Mapping[str, torch.Tensor]) -> np.ndarray:
        """The overlays of every label space side by side."""
        return np.concatenate([self._overlay(image, s, labels.numpy()) for s, labels in prediction.items()], axis=1)

    def write(self, item, image: np.ndarray, prediction: Mapping[str, torch.Tensor], *, picture: bool = True) -> None:
        from PIL import Image

        from ..utils.io import save_image_atomic
        from ..viz import save_label_png
        from .files import PICTURE_PNG

        for space, labels in prediction.items():
            labels = labels.numpy().astype(np.uint8)
            save_label_png(item.output(self.out_dir, f"_{space}.png"), labels, self.palettes[space])
            if picture and image.shape[2] == 3:
                save_image_atomic(item.output(self.out_dir, f"_{space}_overlay.png"),
                                  Image.fromarray(self._overlay(image, space, labels)), **PICTURE_PNG)
        self.count += 1

    def close(self) -> list[str]:
        spaces = ", ".join(self.palettes)
        return [f"predicted {self.count} image(s): label PNGs and overlays per label space ({spaces}) in "
                f"{self.out_dir}/ (<image>_<space>.png)"]
