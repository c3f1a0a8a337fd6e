"""The models a server holds: each loaded through the engine's prediction path (`load_predictor`: the
model file's stored settings, then the options given), with its task's renderer and its card for /models."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SeglabError


@dataclass
class ServedModel:
    name: str            # what clients pass as ?model=
    source: str          # what --model said: a shipped model's name or the file's name
    task: Any            # seglab.tasks.Task
    predictor: Any       # the task's predictor (predict_image)
    options: Any         # the resolved seglab.inference.options.PredictOptions
    renderer: Any        # seglab.serve.render.Renderer
    trained: dict = field(default_factory=dict)  # dataset, figure, docs: what the weights registry knows

    @property
    def config(self) -> dict:
        return self.predictor.model.seglab_config

    @property
    def in_channels(self) -> int:
        return int(self.config.get("kwargs", {}).get("in_channels", 3))

    def card(self) -> dict:
        """What /models says: task, classes and colours, input channels, normalisation, the scale images are
        predicted at and the inference settings in use."""
        cfg = self.config
        options = json.loads(json.dumps(asdict(self.options), default=str))
        return {"name": self.name, "source": self.source, "task": self.task.name, "architecture": cfg["name"],
                "num_classes": cfg["num_classes"], **self.renderer.card(),
                "input": {"channels": self.in_channels, "mean": cfg.get("mean"), "std": cfg.get("std"),
                          "scale": input_scale(self.predictor, self.options)},
                "inference": options, "trained": self.trained}


def input_scale(predictor, options) -> str:
    """How images are sized for the model, in words (the resolved options' scale: the model's training
    size, its stored `imgsz`/`scale`, or the command line's)."""
    resize = options.resize if options.resize is not None else getattr(predictor, "resize", None)
    scale = resize.describe() if resize is not None else "at their own size"
    if options.slide:
        scale += f", sliding window {options.slide[0]}x{options.slide[1]}"
    return scale


def parse_model_argument(text: str) -> tuple[str | None, str]:
    """`--model` values: `NAME_OR_FILE`, or `ALIAS=NAME_OR_FILE` to serve it under another name."""
    alias, sep, source = text.partition("=")
    if sep and alias and "/" not in alias and not Path(text).is_file():
        return alias, source
    return None, text


def load_served_model(text: str, *, device: str | None = "auto", **options) -> ServedModel:
    """A model for the server from a `--model` value (a file or a shipped name, optionally `ALIAS=`), with
    the same stored settings and explicit options `seglab predict` would use."""
    from ..engine.predict import load_predictor

    alias, source = parse_model_argument(text)
    task, predictor, resolved = load_predictor(source, device=device, **options)
    name = alias or (Path(source).stem if Path(source).is_file() else source)
    channels = int(predictor.model.seglab_config.get("kwargs", {}).get("in_channels", 3))
    if channels not in (1, 3):
        raise SeglabError(f"--model {text}: the model takes {channels}-channel input; seglab serve takes photos "
                          f"(RGB or grayscale models)")
    renderer = task.build_renderer(predictor.model, resolved)
    return ServedModel(name=name, source=Path(source).name if Path(source).is_file() else source, task=task,
                       predictor=predictor, options=resolved, renderer=renderer, trained=training_card(source))


def training_card(source: str) -> dict:
    """What the weights registry's card says about how a model file was trained (dataset, validation
    figure, docs page), the keys it knows; empty for an exported file or a card that cannot be read."""
    if Path(source).suffix.lower() == ".onnx":
        return {}
    from ..pretrained import model_card

    try:
        card = model_card(source)
    except SeglabError:
        return {}
    return {k: card[k] for k in ("dataset", "figure", "docs") if card.get(k)}


def unique_names(models: list[ServedModel]) -> list[ServedModel]:
    """Two files with the same stem get -2, -3 ... so every model has its own name."""
    seen: dict[str, int] = {}
    for m in models:
        if m.name in seen:
            seen[m.name] += 1
            m.name = f"{m.name}-{seen[m.name]}"
        else:
            seen[m.name] = 1
    return models


def predict_batch(predictor, images: list[np.ndarray]) -> list:
    """Results for several images through the task's predictor: `predict_images` (same-size images in one
    forward pass) where the predictor has it, else `predict_image` one at a time."""
    batched = getattr(predictor, "predict_images", None)
    if batched is not None and len(images) > 1:
        return list(batched(images))
    return [predictor.predict_image(image) for image in images]
