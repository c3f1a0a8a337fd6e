"""Prediction on files: one loop for every task (`predict_to_files`), and the semantic writer.

The loop reads each input (`seglab.inference.inputs`: images, videos, folders mirrored into the output
folder), asks the task's predictor and hands the result to the task's writer; it never asks which task
it runs. Every input is checked (image header read, video opened) before anything is written, so a bad
file in a folder stops the run with one clear line and no partial output. Images are read on a second
thread while the model works on the one before (decoding a PNG releases the GIL).
Writers (each has `write(item, image, prediction, picture=True)`, `render(image, prediction)` -> the
picture as an RGB array, and `close() -> lines saying what was written`):
- `SemanticWriter` (here): `<name>.png` (palette PNG, pixel value = class index) and `<name>_overlay.png`
  (colours over the photo, with a legend of the classes present);
- `JointWriter` (`inference/joint.py`), `InstanceWriter` (`inference/instances.py`), `PanopticWriter`
  (`inference/panoptic.py`).
Videos (`inference/video.py`) give `<name>_overlay.mp4` made of the writer's pictures and, on request,
the writer's per-frame files under `<name>/`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .inputs import IMAGE_SUFFIXES, InputFile, collect_inputs

__all__ = ["IMAGE_SUFFIXES", "collect_inputs", "predict_to_files", "SemanticWriter", "predict_files"]

# PNG compression for pictures (overlays): zlib level 1 writes a 480x360 overlay in ~12 ms instead of
# ~55 ms at Pillow's default 6, for files about a third larger. Label PNGs keep the default (they are small).
PICTURE_PNG = {"compress_level": 1}


def model_in_channels(model) -> int:
    return int(getattr(model, "seglab_config", {}).get("kwargs", {}).get("in_channels", 3))


def check_inputs(items: Sequence[InputFile]) -> None:
    """Open every input (image header, video stream) before anything is written."""
    from ..data.io import image_size
    from .video import video_info

    for item in items:
        if item.is_video:
            video_info(item.path)
        else:
            image_size(item.path)


def predict_to_files(predictor, writer, inputs: Sequence[InputFile | str | Path], *, progress: bool = False,
                     log: Callable[[str], None] | None = None, save_frames: bool = False) -> list[str]:
    """Every input through the predictor into `writer`; returns the writer's summary lines. `log` gets a
    line for each converted image (RGBA, grayscale, 16-bit, ...); `save_frames`: videos also get the
    writer's files for each frame."""
    from ..data.io import read_photo
    from .video import predict_video

    items = [InputFile.of(i) for i in inputs]
    check_inputs(items)
    in_channels = model_in_channels(predictor.model)
    images = [i for i in items if not i.is_video]
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read_photo, images[0].path, in_channels) if images else None
        for k, item in enumerate(tqdm(images, desc="predict", disable=not progress, leave=False, dynamic_ncols=True)):
            image, note = pending.result()
            if k + 1 < len(images):
                pending = reader.submit(read_photo, images[k + 1].path, in_channels)
            if note and log is not None:
                log(f"note: {note}")
            writer.write(item, image, predictor.predict_image(image))
    for item in items:
        if item.is_video:
            predict_video(predictor, writer, item, save_frames=save_frames, progress=progress, log=log)
    return writer.close()


class SemanticWriter:
    """`<name>.png` (labels, palette PNG) and `<name>_overlay.png` (colours over the photo and a legend of
    the classes present) per image."""

    def __init__(self, out_dir: Path, *, palette: Sequence[Sequence[int]], classes: Sequence[str] | None = None,
                 alpha: float = 0.5):
        self.out_dir, self.palette, self.alpha = Path(out_dir), [tuple(c) for c in palette], alpha
        self.classes = list(classes) if classes else [str(i) for i in range(len(self.palette))]
        self.count = 0

    def render(self, image: np.ndarray, prediction) -> np.ndarray:
        from ..viz import overlay
        from ..viz.legend import classes_present, draw_legend

        labels = prediction.labels.numpy()
        picture = overlay(image, labels, self.palette, alpha=self.alpha)
        return np.asarray(draw_legend(picture, classes_present(labels, self.classes, self.palette)))

    def write(self, item: InputFile, image: np.ndarray, prediction, *, picture: bool = True) -> None:
        from PIL import Image

        from ..utils.io import save_image_atomic
        from ..viz import save_label_png

        labels = prediction.labels.numpy().astype(np.uint8)
        save_label_png(item.output(self.out_dir, ".png"), labels, self.palette)
        if picture and image.shape[2] == 3:
            save_image_atomic(item.output(self.out_dir, "_overlay.png"), Image.fromarray(self.render(image, prediction)),
                              **PICTURE_PNG)
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
