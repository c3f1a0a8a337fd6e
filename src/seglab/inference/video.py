"""Video input for `seglab predict`: each frame predicted like a photo, the task writer's pictures
(overlays with a legend, instance or panoptic pictures) written as `<name>_overlay.mp4` at the video's
frame rate, and with `save_frames` the writer's files for every frame under `<name>/` (e.g.
`<name>/000001.png`, the label map of frame 1).

Read and written with OpenCV (`opencv-python-headless`, which albumentations already needs): its FFmpeg
build reads the common containers (.mp4, .avi, .mov, .mkv, .webm) and writes MPEG-4 Part 2 ('mp4v')
into .mp4, which every player opens. OpenCV gives BGR frames; they are turned into RGB here.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DataError
from .inputs import InputFile


def _capture(path: Path):
    import cv2

    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot read video (not a video, or a codec OpenCV's FFmpeg does not have)")
    return cap


def video_info(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frame count as the container states it, frames per second, (width, height)); checks that the
    first frame decodes."""
    import cv2

    cap = _capture(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise DataError(f"{path}: video has no readable frame")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
        return count, fps if fps > 0 else 25.0, (frame.shape[1], frame.shape[0])
    finally:
        cap.release()


def read_frames(path: Path, in_channels: int = 3) -> Iterator[np.ndarray]:
    """The video's frames as uint8 H x W x C RGB (or grayscale for 1-channel models)."""
    import cv2

    cap = _capture(path)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            if in_channels == 1:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[:, :, None]
            else:
                yield np.ascontiguousarray(frame[:, :, ::-1])
    finally:
        cap.release()


class VideoFileWriter:
    """RGB frames -> an .mp4 file ('mp4v'), written under a temporary name and renamed when closed."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = Path(path), fps
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.writer = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                raise DataError(f"{self.path}: OpenCV cannot write an mp4v video here")
        self.writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.tmp.unlink(missing_ok=True)


def predict_video(predictor, writer, item: InputFile, *, save_frames: bool = False, progress: bool = False,
                  log: Callable[[str], None] | None = None) -> Path:
    """Every frame of `item` through `predictor`: the writer's pictures into `<name>_overlay.mp4`, and with
    `save_frames` its files for frame i as `<name>/<i:06d>` (pictures left out). Returns the video's path."""
    count, fps, _ = video_info(item.path)
    in_channels = int(getattr(predictor.model, "seglab_config", {}).get("kwargs", {}).get("in_channels", 3))
    out = VideoFileWriter(item.output(writer.out_dir, "_overlay.mp4"), fps)
    try:
        frames = read_frames(item.path, in_channels)
        for i, frame in enumerate(tqdm(frames, total=count or None, desc=item.path.name, disable=not progress,
                                       leave=False, dynamic_ncols=True), start=1):
            prediction = predictor.predict_image(frame)
            picture = writer.render(frame, prediction) if frame.shape[2] == 3 else np.repeat(frame, 3, axis=2)
            out.write(picture)
            if save_frames:
                writer.write(InputFile(item.path, item.key / f"{i:06d}"), frame, prediction, picture=False)
    except BaseException:
        out.discard()
        raise
    out.close()
    if log is not None:
        log(f"{item.path}: {out.frames} frames -> {out.path}"
            + (f" and per-frame files in {item.output(writer.out_dir, '')}/" if save_frames else ""))
    return out.path
