"""Prediction on files: one loop for every task (`predict_to_files`), and the semantic writer.

The loop reads each input (`seglab.inference.inputs`: images, videos, folders mirrored into the output
folder), asks the task's predictor and hands the result to the task's writer; it never asks which task
it runs. Every input is checked (image header read, video opened) before anything is written, so a bad
file in a folder stops the run with one clear line and no partial output. Images are read on a second
thread while the model works on those before (decoding a PNG releases the GIL), and consecutive images of
the same size go through the model together (`batch_size` of them, fewer for large photos: at most
`BATCH_PIXELS` pixels per batch), which is faster per image on CPUs and GPUs alike.
Writers (each has `output_suffixes` (the files it writes per image: `<name><suffix>`), `write(item, image, prediction, picture=True)`, `render(image, prediction)` -> the
picture as an RGB array, and `close() -> lines saying what was written`):
- `SemanticWriter` (here): `<name>.png` (palette PNG, pixel value = class index) and `<name>_overlay.png`
  (colours over the photo, with a legend of the classes present);
- `JointWriter` (`inference/joint.py`), `InstanceWriter` (`inference/instances.py`), `PanopticWriter`
  (`inference/panoptic.py`).
Videos (`inference/video.py`) give `<name>_overlay.mp4` made of the writer's pictures and, on request,
the writer's per-frame files under `<name>/`.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .inputs import IMAGE_SUFFIXES, InputFile, check_output_names, collect_inputs

__all__ = ["IMAGE_SUFFIXES", "collect_inputs", "predict_to_files", "SemanticWriter", "predict_files"]

# PNG compression for pictures (overlays): zlib level 1 writes a 480x360 overlay in ~12 ms instead of
# ~55 ms at Pillow's default 6, for files about a third larger. Label PNGs keep the default (they are small).
PICTURE_PNG = {"compress_level": 1}
BATCH_PIXELS = 4_000_000  # pixels of the images in one batch (eight 480x360 frames, one 12-megapixel photo)


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


def read_ahead(paths: Iterable[Path], read: Callable, depth: int) -> Iterator:
    """`read(path)` for each path in order, up to `depth` of them read ahead on a second thread."""
    paths = iter(paths)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = deque(pool.submit(read, p) for p in islice(paths, depth))
        while pending:
            result = pending.popleft().result()
            following = next(paths, None)
            if following is not None:
                pending.append(pool.submit(read, following))
            yield result


def same_size_batches(items: Iterable, size_of: Callable, batch_size: int, max_pixels: int = BATCH_PIXELS) -> Iterator[list]:
    """Consecutive items whose images share a size, grouped up to `batch_size` items and `max_pixels` pixels."""
    batch: list = []
    for item in items:
        h, w = size_of(item)
        if batch and (size_of(batch[0]) != (h, w) or len(batch) >= batch_size or (len(batch) + 1) * h * w > max_pixels):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def predict_to_files(predictor, writer, inputs: Sequence[InputFile | str | Path], *, progress: bool = False,
                     log: Callable[[str], None] | None = None, save_frames: bool = False,
                     batch_size: int | None = None) -> list[str]:
    """Every input through the predictor into `writer`; returns the writer's summary lines. `log` gets a
    line for each converted image (RGBA, grayscale, 16-bit, ...); `save_frames`: videos also get the
    writer's files for each frame; `batch_size`: images per forward pass (default the predictor's)."""
    from ..data.io import read_photo
    from .video import predict_video

    items = [InputFile.of(i) for i in inputs]
    check_output_names(items, getattr(writer, "output_suffixes", ()), save_frames=save_frames)
    check_inputs(items)
    in_channels = model_in_channels(predictor.model)
    images = [i for i in items if not i.is_video]
    batch_size = max(1, batch_size or predictor.batch_size)

    def read(item):
        return (item, *read_photo(item.path, in_channels))

    bar = tqdm(total=len(images), desc="predict", disable=not progress, leave=False, dynamic_ncols=True)
    for batch in same_size_batches(read_ahead(images, read, 2 * batch_size), lambda r: r[1].shape[:2], batch_size):
        for item, _, note in batch:
            if note and log is not None:
                log(f"note: {note}")
        results = predictor.predict_images([image for _, image, _ in batch])
        for (item, image, _), result in zip(batch, results):
            writer.write(item, image, result)
        bar.update(len(batch))
    bar.close()
    for item in items:
        if item.is_video:
            predict_video(predictor, writer, item, save_frames=save_frames, progress=progress, log=log)
    return writer.close()


class SemanticWriter:
    """`<name>.png` (labels, palette PNG) and `<name>_overlay.png` (colours over the photo and a legend of
    the classes present) per image."""
    output_suffixes = (".png", "_overlay.png")

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
