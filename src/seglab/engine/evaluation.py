"""The evaluation loop, one for every task: each image of a data set at its own size (batch 1, as the
benchmarks' protocols require) through the task's predictor into the task's evaluator (Detectron2's
`inference_on_dataset` shape). In a distributed run each rank takes every world-size-th image and the
evaluators are reduced (confusion matrices summed, COCO and PQ records gathered), so every rank ends with
the same results.

Public entry points:
- `run_evaluation(task, predictor, dataset, evaluator, runtime)`: the loop;
- `evaluate_model(task, model, dataset, eval_config, runtime)`: validation during training (the config's
  `eval:` settings without the CRF, which is too slow per epoch), returns (summary, results);
- `load_for_evaluation(cfg, checkpoint)`: config + checkpoint -> (model, validation set, task);
- `evaluate_checkpoint(cfg, checkpoint, ...)`: what `seglab eval` runs (tables and files in `out_dir`);
- `evaluate(model, dataset, ...)`: semantic models in Python, returns the filled `SemanticMetrics`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..config import Config
from ..errors import OutputError, SeglabError
from ..utils.io import make_folder
from .runtime import Runtime


@torch.no_grad()
def run_evaluation(task, predictor, dataset, evaluator, runtime: Runtime | None = None, *,
                   progress: bool = False) -> dict:
    """Fill `evaluator` with this rank's share of `dataset`, reduce over the ranks, return `compute()`.
    The model is put back in the mode it was in."""
    runtime = runtime or Runtime(device=predictor.device)
    model = predictor.model
    was_training = model.training
    model.eval()
    try:
        indices = runtime.shard(len(dataset))
        for i in tqdm(indices, desc="eval", disable=not (progress and runtime.is_main), leave=False,
                      dynamic_ncols=True):
            image, target = task.split_sample(dataset[i])
            raw = dataset.read_raw(i)[0] if predictor.needs_image else None  # the CRF reads colours
            evaluator.process(i, target, predictor.predict_tensor(image, image=raw))
    finally:
        model.train(was_training)
    evaluator.all_reduce()
    return evaluator.compute()


def evaluate_model(task, model: nn.Module, dataset, eval_config, runtime: Runtime, *,
                   progress: bool = False, model_config: dict | None = None) -> tuple[dict, dict]:
    """Validation during training: predicts as `seglab eval` does with this config (input size from
    `model_config`'s `train_size`, the metadata best.safetensors gets; sliding window and TTA from `eval:`;
    the run's precision; no CRF); returns (summary values, full results)."""
    predictor = task.build_predictor(model, validation_options(eval_config, runtime.precision, model_config))
    evaluator = task.build_evaluator(dataset)
    results = run_evaluation(task, predictor, dataset, evaluator, runtime, progress=progress)
    return evaluator.summary(results), results


def validation_options(eval_config, precision: str = "fp32", model_config: dict | None = None):
    """The inference options of validation during training: the training images' size (`train_size` of
    `model_config`), then the config's `eval:` without the CRF."""
    from ..inference.options import resolve_options

    train_size = (model_config or {}).get("train_size")
    return resolve_options(model_config={"train_size": train_size} if train_size else None, eval_config=eval_config,
                           precision=precision).with_(crf=None)


def load_for_evaluation(cfg: Config, checkpoint: str | Path, *, device: str | torch.device = "cpu"):
    """(model in eval mode on `device`, the config's validation set, the task) for a checkpoint: a seglab
    model file (e.g. best.safetensors, or the name of a shipped model), an exported .onnx file (run by
    onnxruntime), a training state (last.pt) or a torchvision checkpoint of the config's architecture."""
    from ..hub import load_model, load_weights, read_model_metadata, resolve_model_file
    from ..registry import model_task
    from ..tasks import task_for_model
    from ..utils.state_dict import check_state_dict
    from .checkpoint import load_checkpoint

    task = task_for_model(cfg.model.name)
    task.check_config(cfg)
    try:
        ckpt = resolve_model_file(checkpoint)
    except SeglabError:
        raise SeglabError(f"checkpoint not found: {checkpoint}") from None
    _, val_ds = task.build_datasets(cfg, train=False)
    if ckpt.suffix.lower() == ".onnx":  # an exported file carries its metadata like a model file does
        from ..inference.load import load_any_model

        model = load_any_model(ckpt, device=device)
        meta = model.seglab_config
    else:
        meta = read_model_metadata(ckpt, required=False) if ckpt.suffix == ".safetensors" else None
        model = None
    if meta is not None:  # a seglab model file describes its own architecture (maybe packed without aux heads)
        if model_task(meta["name"]) != task.name:
            raise SeglabError(f"{ckpt}: holds a {model_task(meta['name'])} model ({meta['name']}) but the config's "
                              f"model {cfg.model.name!r} is a {task.name} model")
        if meta["num_classes"] != val_ds.num_classes:
            raise SeglabError(f"{ckpt}: the model predicts {meta['num_classes']} classes, the config's data set "
                              f"has {val_ds.num_classes}")
        model = model if model is not None else load_model(ckpt, device=device)
    else:  # the checkpoint replaces whatever initial weights the config names
        no_init = cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": None,
                                                                              "backbone_weights": None})})
        model = task.build_model(no_init, val_ds)
        if ckpt.suffix == ".pt":  # a training state (last.pt)
            state = load_checkpoint(ckpt)["model"]
            check_state_dict(state, model.state_dict(), ckpt, f"model {cfg.model.name!r} of the config")
            model.load_state_dict(state)
        else:
            load_weights(model, ckpt)
        model.seglab_config.update(task.model_metadata(cfg, val_ds))
        model.to(device)
    return model.eval(), val_ds, task


def evaluate_and_report(model: nn.Module, dataset, out_dir: str | Path, *, task=None, options=None,
                        runtime: Runtime | None = None, progress: bool = False,
                        log: Callable[[str], None] = print) -> tuple[dict, dict, list[str]]:
    """`model` on every image of `dataset` with everything `seglab eval` reports: the task's tables
    printed and its files in `out_dir` (written by rank 0). `task` defaults to the model's;
    `options` (`PredictOptions`) to the model file's training size and stored settings; with its
    `backend` "auto" (the default), the fast path `seglab predict` takes (`seglab.inference.load.fast_path`:
    the same labels). Returns (summary values, full results, lines naming the files written)."""
    from ..inference.load import apply_backend
    from ..inference.options import resolve_options
    from ..tasks import task_for_model

    task = task or task_for_model(model.seglab_config["name"])
    options = options or resolve_options(model_config=getattr(model, "seglab_config", {}))
    runtime = runtime or Runtime(device=next(model.parameters(), torch.empty(0)).device)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():  # before the work, not after it
        raise OutputError(f"cannot write the evaluation into {out}: it is a file, not a folder")
    evaluator = task.build_evaluator(dataset, out_dir=out, detailed=True)
    discard = getattr(evaluator, "discard", None)  # files an evaluator writes while it runs (panoptic PNGs)
    if discard is not None and runtime.is_main:
        discard()  # what a killed run left
    runtime.barrier()
    try:
        predictor = task.build_predictor(model, options)
        apply_backend(predictor, options.backend, log=log)
        results = run_evaluation(task, predictor, dataset, evaluator, runtime, progress=progress)
        written = []
        if runtime.is_main:
            make_folder(out, "evaluation folder")
            written = evaluator.report(results, out, log)
    except BaseException:
        if discard is not None:  # no partial output
            discard()
        raise
    return evaluator.summary(results), results, written


def evaluate_checkpoint(cfg: Config, checkpoint: str | Path, *, out_dir: str | Path | None = None,
                        device: str | None = None, progress: bool = False, log: Callable[[str], None] = print,
                        **options) -> tuple[dict, dict, list[str]]:
    """`seglab eval`: the checkpoint on the config's validation split; rank 0 prints the tables and writes
    the files into `out_dir` (default: `<checkpoint folder>/eval`). Inference options: the model file's
    training size and stored settings, then the config's `eval:`, then `options` (`imgsz`, `scale`,
    `slide`, `tta`, `crf` as on the command line, `precision`, `backend`; see
    `seglab.inference.options.resolve_options`). Returns (summary, results, the
    lines naming what was written). Runs sharded under torchrun."""
    from ..inference.options import resolve_options

    precision = options.get("precision") or ("bf16" if options.get("bf16") else None)
    runtime = Runtime.create(device or cfg.train.device, precision or "fp32")
    model, val_ds, task = load_for_evaluation(cfg, checkpoint, device=runtime.device)
    resolved = resolve_options(model_config=model.seglab_config, eval_config=cfg.eval, **options)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / "eval"
    return evaluate_and_report(model, val_ds, out, task=task, options=resolved, runtime=runtime,
                               progress=progress, log=log)


def evaluate(model: nn.Module, dataset, *, num_classes: int | None = None, predictor=None, progress: bool = False):
    """A semantic model (or `predictor`) on every image of `dataset`; returns the filled `SemanticMetrics`."""
    from ..inference import Predictor
    from ..tasks import TASKS

    task = TASKS["semantic"]
    predictor = predictor or Predictor(model)
    evaluator = task.build_evaluator(dataset)
    if num_classes is not None and num_classes != evaluator.metrics.num_classes:
        raise SeglabError(f"num_classes is {num_classes} but the data set has {evaluator.metrics.num_classes}")
    run_evaluation(task, predictor, dataset, evaluator, progress=progress)
    return evaluator.metrics
