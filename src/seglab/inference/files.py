"""Prediction on image files: one loop for every task (`predict_to_files`), and the semantic writer.

The loop reads each image, asks the task's predictor (`predict_image`) and hands the result to the
task's writer; it never asks which task it runs. Every input is checked (opened, header read) before
anything is written, so a bad file in a folder stops the run with one clear line and no partial output.
Writers (each has `write(stem, image, prediction)` and `close() -> lines saying what was written`):
- `SemanticWriter` (here): `<stem>.png` (palette PNG, pixel value = class index) and `<stem>_overlay.png`;
- `JointWriter` (`inference/joint.py`), `InstanceWriter` (`inference/instances.py`), `PanopticWriter`
  (`inference/panoptic.py`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import SeglabError

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


def model_in_channels(model) -> int:
    return int(getattr(model, "seglab_config", {}).get("kwargs", {}).get("in_channels", 3))


def predict_to_files(predictor, writer, files: Sequence[Path], *, progress: bool = False) -> list[str]:
    """Every file through `predictor.predict_image` into `writer`; returns the writer's summary lines."""
    from ..data import read_image
    from ..data.io import image_size

    files = [Path(f) for f in files]
    in_channels = model_in_channels(predictor.model)
    for f in files:  # validate everything first (headers only): no half-finished output folders
        image_size(f)
    for f in tqdm(files, desc="predict", disable=not progress, leave=False, dynamic_ncols=True):
        image = read_image(f, in_channels=in_channels)
        writer.write(f, image, predictor.predict_image(image))
    return writer.close()


class SemanticWriter:
    """`<stem>.png` (labels, palette PNG) and `<stem>_overlay.png` (colours over the photo) per image."""

    def __init__(self, out_dir: Path, *, palette: Sequence[Sequence[int]], alpha: float = 0.5):
        self.out_dir, self.palette, self.alpha = Path(out_dir), [tuple(c) for c in palette], alpha
        self.count = 0

    def write(self, source: Path, image: np.ndarray, prediction) -> None:
        from ..utils.io import save_image_atomic
        from ..viz import overlay, save_label_png

        self.out_dir.mkdir(parents=True, exist_ok=True)
        labels = prediction.labels.numpy().astype(np.uint8)
        save_label_png(self.out_dir / f"{source.stem}.png", labels, self.palette)
        if image.shape[2] == 3:
            save_image_atomic(self.out_dir / f"{source.stem}_overlay.png",
                              overlay(image, labels, self.palette, alpha=self.alpha))
        self.count += 1

    def close(self) -> list[str]:
        return [f"predicted {self.count} image(s): label PNGs and overlays in {self.out_dir}/"]


def predict_files(predictor, files: Sequence[Path], out_dir: Path, *, palette, progress: bool = False,
                  overlay_alpha: float = 0.5) -> list[Path]:
    """Semantic prediction of `files` into `out_dir` (`<stem>.png` + `<stem>_overlay.png`); returns the
    label paths."""
    predict_to_files(predictor, SemanticWriter(out_dir, palette=palette, alpha=overlay_alpha), files,
                     progress=progress)
    return [Path(out_dir) / f"{Path(f).stem}.png" for f in files]
