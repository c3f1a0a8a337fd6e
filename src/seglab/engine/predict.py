"""Prediction to files, for every task: what `seglab predict` runs. The model (a model file, a shipped
name, an exported ONNX file, or a model object) picks its task; the task gives the predictor and the
writer; the one loop (`seglab.inference.files.predict_to_files`) reads each input (images, videos,
folders mirrored into the output folder), predicts and writes.

Inference options: the model's training size and stored settings, then the explicit ones (`imgsz`,
`scale`, `slide`, `tta`, `crf` as on the command line, `precision`, `score_thresh`, `backend`;
`seglab.inference.options.resolve_options`)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ..inference.load import load_predictor

__all__ = ["load_predictor", "predict_to_folder"]


def predict_to_folder(model_or_source, inputs: Iterable[str | Path], out_dir: str | Path | None = None, *,
                      device: str | None = "auto", progress: bool = False, save_frames: bool = False,
                      log: Callable[[str], None] | None = None, **options) -> list[str]:
    """Predict every image and video of `inputs` (files or folders, walked recursively) into `out_dir`
    (default: a new `runs/predict/<n>`) with the task's writer (label PNGs and overlays; instance
    overlays and COCO JSON; panoptic PNGs and COCO panoptic JSON; videos of overlays, with the
    per-frame files when `save_frames`); returns the lines that say what was written. `log` gets a line
    saying how it predicts (scale, TTA, the fast path taken) and the notes on converted images."""
    from ..inference.files import predict_to_files
    from ..inference.inputs import collect_inputs, default_out_dir

    out = Path(out_dir) if out_dir is not None else default_out_dir()
    items = collect_inputs([str(i) for i in inputs], out)
    task, predictor, resolved = load_predictor(model_or_source, device=device, log=log, **options)
    writer = task.build_writer(out, predictor.model, resolved)
    if log is not None:
        log(describe(predictor, resolved))
    return predict_to_files(predictor, writer, items, progress=progress, log=log, save_frames=save_frames)


def describe(predictor, options) -> str:
    """One line: the model, how images are sized, test-time augmentation, CRF, and the fast path taken."""
    config = getattr(predictor.model, "seglab_config", {})
    parts = [f"{config.get('name', type(predictor.model).__name__)}"]
    parts.append(f"images {options.resize.describe() if options.resize else 'at their own size'}")
    if options.slide:
        parts.append(f"sliding window {options.slide[0]}x{options.slide[1]}")
    if options.tta_active:
        flip = "flip" if options.tta.get("flip") else ""
        scales = tuple(options.tta.get("scales", (1.0,)))
        parts.append("TTA " + ",".join(filter(None, [flip, "scales " + "/".join(f"{s:g}" for s in scales)
                                                      if scales != (1.0,) else ""])))
    if options.crf is not None:
        parts.append("dense CRF")
    return "predicting with " + "; ".join(parts + predictor.notes)
