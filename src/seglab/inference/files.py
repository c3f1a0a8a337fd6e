"""Prediction on image files: a label PNG (palette, pixel value = class index) and a colour overlay
per input image. Every input is checked before anything is written, so a bad file in a folder stops
the run with one clear line and no partial output."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from ..errors import SeglabError
from .predictor import Predictor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def collect_inputs(inputs: Iterable[str]) -> list[Path]:
    """Expand folders into their image files (sorted); a missing path is an error."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SeglabError(f"{p}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise SeglabError(f"input not found: {p}")
    stems = [f.stem for f in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise SeglabError(f"several inputs share the name {dup[0]!r}; their outputs would overwrite each other")
    return files


def predict_files(predictor: Predictor, files: list[Path], out_dir: Path, *, mean, std, palette,
                  in_channels: int = 3, progress: bool = False, overlay_alpha: float = 0.5) -> list[Path]:
    """Writes `<stem>.png` (labels) and `<stem>_overlay.png` into out_dir; returns the label paths."""
    from ..data import read_image
    from ..viz import overlay, save_label_png
    from ..utils.io import save_image_atomic

    for f in files:  # validate everything first: no half-finished output folders
        read_image(f, in_channels=in_channels)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in tqdm(files, desc="predict", disable=not progress, leave=False, dynamic_ncols=True):
        image = read_image(f, in_channels=in_channels)
        result = predictor.predict_image(image, mean=mean, std=std, path=str(f))
        labels = result.labels.numpy().astype(np.uint8)
        label_path = out_dir / f"{f.stem}.png"
        save_label_png(label_path, labels, palette)
        if image.shape[2] == 3:
            save_image_atomic(out_dir / f"{f.stem}_overlay.png", overlay(image, labels, palette, alpha=overlay_alpha))
        written.append(label_path)
    return written
