"""From a model (object, file, shipped name or exported ONNX file) to the task's predictor with the
model's stored settings: what `seglab predict`, `seglab.predict` and `Predictor.from_pretrained` share.

With `backend="auto"` (the default) the predictor takes the fastest path that keeps the model's labels:
BatchNorm folded into the convolutions before it (checked to give the same outputs) and, for the
fully convolutional semantic and joint models, channels-last tensors (oneDNN's and cuDNN's fast layout).
Both are exact up to float rounding; lower precision (`precision="bf16"`), which changes a fraction of
a percent of the labels, is only used when asked for. `backend="eager"` runs the model as it is;
`backend="compile"` takes the "auto" path and then runs the network through `torch.compile`
(`seglab.inference.compiled`: compile time reported apart, eager fallback with the reason).
An ONNX file runs in onnxruntime, which does its own graph optimisations.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import SeglabError


def load_any_model(source, *, device: torch.device | str = "cpu") -> nn.Module:
    """A seglab model file or shipped name (PyTorch), or an exported `.onnx` file (onnxruntime)."""
    from ..hub import load_model

    if Path(str(source)).suffix.lower() == ".onnx":
        from ..export.runtime import load_onnx_model

        if torch.device(device).type != "cpu":
            raise SeglabError(f"{source}: ONNX files run on the CPU here (onnxruntime's CPU provider); "
                              f"got device {device}")
        return load_onnx_model(source)
    return load_model(source, device=device)


def load_predictor(model_or_source, *, device: str | None = "auto", log=None, **options):
    """(task, predictor, resolved options) for a model object, a model file, a shipped model's name or an
    exported ONNX file. `options`: as `seglab.inference.options.resolve_options` takes them (`imgsz`,
    `scale`, `slide`, `tta`, `crf`, `precision`, `score_thresh`, `backend`), overriding the model's own.
    `log` gets the lines of `backend="compile"` (compile time, or why it fell back)."""
    from ..engine.runtime import resolve_device
    from ..tasks import task_for_model
    from .options import resolve_options

    dev = resolve_device(device)
    if isinstance(model_or_source, nn.Module):
        model = model_or_source.to(dev).eval()
    else:
        model = load_any_model(model_or_source, device=dev)
    config = getattr(model, "seglab_config", None)
    if not config:
        raise SeglabError("the model was not built by seglab.create_model / load_model: it does not say which "
                          "model it is (seglab_config)")
    task = task_for_model(config["name"])
    resolved = resolve_options(model_config=config, **options)
    if getattr(model, "is_exported", False) and resolved.precision != "fp32":
        raise SeglabError(f"precision {resolved.precision}: an exported file runs at the precision it was "
                          f"exported with (seglab export --precision)")
    predictor = task.build_predictor(model, resolved)
    apply_backend(predictor, resolved.backend, log=log)
    return task, predictor, resolved


def apply_backend(predictor, backend: str, *, log=None) -> None:
    """What `backend` does to a built predictor: "auto" the fast path, "compile" the fast path then
    torch.compile, "eager" nothing (noted). Shared by prediction and `seglab eval`."""
    if backend in ("auto", "compile"):
        fast_path(predictor)
    if backend == "compile":
        compile_network(predictor, log=log)
    elif backend == "eager":
        predictor.notes.append("eager PyTorch, as the model is")


def _chain(predictor):
    """The predictor and those it wraps (TTAPredictor -> Predictor)."""
    while predictor is not None:
        yield predictor
        predictor = getattr(predictor, "predictor", None)


def fast_path(predictor) -> None:
    """Fold BatchNorm and use channels-last tensors where they keep the labels (see the module's note);
    `predictor.notes` says what was done."""
    model = predictor.model
    if getattr(model, "is_exported", False):
        predictor.notes.append(f"onnxruntime ({model.describe()})")
        return
    if not predictor.fast_path_ok:
        predictor.notes.append(f"eager PyTorch, {predictor.precision} on {predictor.device}")
        return
    from ..export.fold import fold_conv_bn

    channels_last = predictor.device.type in ("cpu", "cuda")
    in_channels = predictor.in_channels
    example = torch.randn(1, in_channels, 64, 64, device=predictor.device)
    try:
        folded, count = fold_conv_bn(model, lambda m: predictor.example_call(m, example))
    except SeglabError:
        folded, count = model, 0
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    for p in _chain(predictor):
        p.model = folded
        p.channels_last = channels_last
    what = [f"BatchNorm folded into {count} convolutions" if count else "no BatchNorm to fold"]
    if channels_last:
        what.append("channels-last")
    what.append(f"{predictor.precision} on {predictor.device}")
    if predictor.precision == "fp32":
        what.append("same labels as eager fp32")
    predictor.notes.append(", ".join(what))


def compile_network(predictor, *, log=None, compile_fn=None) -> None:
    """Run the predictor's network through `torch.compile` (see `seglab.inference.compiled`)."""
    from .compiled import CompiledNetwork

    if getattr(predictor.model, "is_exported", False):
        predictor.notes.append("torch.compile does not apply to an exported file")
        return
    compiled = CompiledNetwork(predictor.model, log=log, compile_fn=compile_fn)
    for p in _chain(predictor):
        p.model = compiled
    predictor.notes.append("torch.compile (the first image of each size compiles)")
