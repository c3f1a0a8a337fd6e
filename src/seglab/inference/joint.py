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


class JointPredictor(ModelPredictor):
    """A joint model on a normalised (C, H, W) tensor or a uint8 image -> {space: labels (H, W)} on the CPU."""

    @torch.no_grad()
    def predict_tensor(self, x: torch.Tensor, *, image: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        with self.autocast():
            out = self.model(x[None].to(self.device))
        return {space: logits[0].float().argmax(0).cpu() for space, logits in out.items()}


class JointWriter:
    """A label PNG and an overlay per label space and image."""

    def __init__(self, out_dir: Path, *, palettes: Mapping[str, Sequence[Sequence[int]]], alpha: float = 0.5):
        self.out_dir, self.alpha = Path(out_dir), alpha
        self.palettes = {s: [tuple(c) for c in p] for s, p in palettes.items()}
        self.count = 0

    def write(self, source: Path, image: np.ndarray, prediction: Mapping[str, torch.Tensor]) -> None:
        from ..utils.io import save_image_atomic
        from ..viz import overlay, save_label_png

        self.out_dir.mkdir(parents=True, exist_ok=True)
        for space, labels in prediction.items():
            labels = labels.numpy().astype(np.uint8)
            save_label_png(self.out_dir / f"{source.stem}_{space}.png", labels, self.palettes[space])
            if image.shape[2] == 3:
                save_image_atomic(self.out_dir / f"{source.stem}_{space}_overlay.png",
                                  overlay(image, labels, self.palettes[space], alpha=self.alpha))
        self.count += 1

    def close(self) -> list[str]:
        spaces = ", ".join(self.palettes)
        return [f"predicted {self.count} image(s): label PNGs and overlays per label space ({spaces}) in "
                f"{self.out_dir}/ (<image>_<space>.png)"]
