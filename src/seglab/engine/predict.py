"""Prediction to files, for every task: what `seglab predict` runs. The model (a model file, a shipped
name, or a model object) picks its task; the task gives the predictor and the writer; the one loop
(`seglab.inference.files.predict_to_files`) reads each input, predicts and writes.

Inference options: the model file's stored settings, then the explicit ones (`slide`, `tta`, `crf` as on
the command line, `precision`, `score_thresh`; `seglab.inference.options.resolve_options`)."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import nn

from .runtime import resolve_device


def load_predictor(model_or_source, *, device: str | None = "auto", **options):
    """(task, predictor, resolved options) for a model object, a model file or a shipped model's name."""
    from ..hub import load_model
    from ..inference.options import resolve_options
    from ..tasks import task_for_model

    dev = resolve_device(device)
    model = model_or_source.to(dev).eval() if isinstance(model_or_source, nn.Module) else \
        load_model(model_or_source, device=dev)
    task = task_for_model(model.seglab_config["name"])
    resolved = resolve_options(stored=model.seglab_config.get("inference"), **options)
    return task, task.build_predictor(model, resolved), resolved


def predict_to_folder(model_or_source, inputs: Iterable[str | Path], out_dir: str | Path, *,
                      device: str | None = "auto", progress: bool = False, **options) -> list[str]:
    """Predict every image of `inputs` (files or folders) into `out_dir` with the task's writer (label PNGs
    and overlays; instance overlays and COCO JSON; panoptic PNGs and COCO panoptic JSON); returns the
    lines that say what was written."""
    from ..inference.files import collect_inputs, predict_to_files

    files = collect_inputs([str(i) for i in inputs])
    task, predictor, resolved = load_predictor(model_or_source, device=device, **options)
    writer = task.build_writer(Path(out_dir), predictor.model, resolved)
    return predict_to_files(predictor, writer, files, progress=progress)
