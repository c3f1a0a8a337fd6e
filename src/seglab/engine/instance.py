"""Training of instance segmentation models (registry task "instance"); `seglab.engine.train` dispatches
here, as it does joint models to `engine/joint.py`.

The loop is the semantic trainer's (same per-epoch seeding, `optimization_state` for optimizer, poly
schedule and exact resume from last.pt, `train_step` for the bf16 autocast step, `TrainingClock` for
`train.max_minutes` / `train.val_every_minutes`, the same output files); what differs:
- data: an instance data set (`data.name` in `seglab.data.datasets.INSTANCE_DATASETS`), training samples
  through `InstanceTrainTransform` (random scale in `data.scale_range`, pad + random crop to
  `data.crop_size`, flip when `data.hflip`; photometric `data.color_jitter` (off unless set), `data.gamma`,
  `data.blur_prob`, `data.noise_std`), validation through
  `InstanceEvalTransform` (original size), batches by `collate_instances`;
- loss: the model computes it: `model(images, targets)` returns a dict of scalar losses, which are summed
  with weight 1 (as torchvision's and Detectron's Mask R-CNN recipes do); each part is logged per epoch;
- validation: `InstanceEvaluator` (COCO mask and box AP, `engine/evaluate_instances.py`); metrics.jsonl gets
  `val_mask_AP`, `val_mask_AP50`, `val_mask_AP75`, `val_box_AP`, `val_box_AP50`, `val_box_AP75`, and
  `iteration` (optimizer steps so far) and `train_minutes`; best.safetensors is kept by val mask AP, with
  the class names, palette, data set category ids and mean / std in its metadata.
Semantic-only options (class weights, OHEM, image-label supervision, sliding window, TTA, CRF) are refused.
The loop is `train_with_losses`; a `LossModelTask` names what is task-specific, so panoptic models
(`engine/panoptic.py`) train in the same loop.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config, dump_config
from ..data.instances import collate_instances
from ..errors import ConfigError, SeglabError
from ..hub import save_model
from ..utils.io import write_text_atomic
from .checkpoint import rng_state, save_checkpoint
from .ema import build_ema, ema_state
from .evaluate_instances import SUMMARY, evaluate_instances
from .trainer import (
    TrainingClock,
    TrainResult,
    _seed_epoch,
    _worker_init,
    build_model_for,
    optimization_state,
    show_progress,
    train_step,
)


def build_task_datasets(cfg: Config, datasets: dict, task: str, eval_transform, train_transform,
                        *, train: bool = True):
    """(train set with `train_transform` or None, val set with `eval_transform`) of the config's data set,
    which must be one of `datasets` (the instance or panoptic registry) for a model of `task`."""
    from ..data import build_dataset

    d = cfg.data
    if d.name not in datasets:
        raise ConfigError(f"model {cfg.model.name!r} is {'an' if task[0] in 'aeiou' else 'a'} {task} model but "
                          f"data.name {d.name!r} is not {'an' if task[0] in 'aeiou' else 'a'} {task} data set; "
                          f"expected one of {', '.join(datasets)}")
    val = build_dataset(d.name, root=d.root, split=d.val_split, transform=eval_transform(mean=d.mean, std=d.std),
                        **d.kwargs)
    if not train:
        return None, val
    transform = train_transform(crop_size=d.crop_size, scale_range=d.scale_range, hflip=d.hflip,
                                mean=d.mean, std=d.std, color_jitter=d.color_jitter, gamma=d.gamma,
                                blur_prob=d.blur_prob, noise_std=d.noise_std)
    return build_dataset(d.name, root=d.root, split=d.train_split, transform=transform, **d.kwargs), val


def build_instance_datasets(cfg: Config, *, train: bool = True):
    """(train set with augmentation or None, val set at original size) of the config's instance data set."""
    from ..data.datasets import INSTANCE_DATASETS
    from ..data.instances import InstanceEvalTransform, InstanceTrainTransform

    return build_task_datasets(cfg, INSTANCE_DATASETS, "instance", InstanceEvalTransform, InstanceTrainTransform,
                               train=train)


def _check_config(cfg: Config, task: str = "instance") -> None:
    t, ev = cfg.train, cfg.eval
    unsupported = [key for key, on in (("train.class_weights", t.class_weights != "none"),
                                       ("train.ohem", t.ohem is not None),
                                       ("train.supervision", t.supervision != "pixel"),
                                       ("eval.slide", ev.slide is not None), ("eval.tta", ev.tta is not None),
                                       ("eval.crf", ev.crf is not None)) if on]
    if unsupported:
        raise ConfigError(f"{', '.join(unsupported)}: not supported for {task} models (model {cfg.model.name!r})")


def sum_losses(losses, targets=None) -> dict[str, torch.Tensor]:
    """The training criterion of an instance model: `{"loss": sum of the parts, **parts}` (float32)."""
    if not isinstance(losses, Mapping) or not losses or "loss" in losses \
            or not all(isinstance(v, torch.Tensor) and v.numel() == 1 for v in losses.values()):
        raise SeglabError(f"an instance model in training must return a non-empty dict of scalar losses "
                          f"(not named 'loss'), got {type(losses).__name__} "
                          f"{sorted(losses) if isinstance(losses, Mapping) else ''}")
    parts = {k: v.float().reshape(()) for k, v in losses.items()}
    return {"loss": sum(parts.values()), **parts}


def _forward_with_targets(model, images, targets):
    return model(images, targets)


def _batch_images(images: list[torch.Tensor], channels_last: bool):
    """One (N, 3, H, W) tensor when the crops share a size (the contract allows a list otherwise)."""
    if any(im.shape != images[0].shape for im in images):
        return images
    batch = torch.stack(images)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def _epoch_line(e: dict, epochs: int, val_keys: tuple[str, ...] = ("mask_AP", "mask_AP50", "box_AP")) -> str:
    parts = [k for k in e if k.startswith("train_loss_")]
    s = f"epoch {e['epoch']:>3}/{epochs}  loss {e['train_loss']:.4f}"
    if parts:
        s += " (" + ", ".join(f"{k[len('train_loss_'):]} {e[k]:.4f}" for k in parts) + ")"
    s += f"  lr {e['lr']:.2e}  {e['epoch_time_s']:.1f}s"
    if f"val_{val_keys[0]}" in e:
        s += "  val " + "  ".join(f"{k.replace('_', ' ')} {_pct(e[f'val_{k}'])}" for k in val_keys)
    return s


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.2f}"


@dataclass(frozen=True)
class LossModelTask:
    """What differs between the tasks whose models compute their own losses (instance, panoptic)."""
    name: str  # in messages: "instance"
    build_datasets: Callable  # (cfg) -> (train set, val set)
    build_model: Callable  # (cfg, train set) -> model
    validate: Callable  # (model, val set, progress) -> ({summary key: value}, the evaluator's full results)
    best_key: str  # the summary value best.safetensors is kept by: "mask_AP"
    line_keys: tuple[str, ...]  # summary values on the epoch line
    metadata: Callable  # (train set) -> extra metadata of best.safetensors
    result_field: str  # the TrainResult field of the best value: "best_mask_AP"


def _validate_instances(model, val_ds, progress: bool) -> tuple[dict, dict]:
    metrics = evaluate_instances(model, val_ds, progress=progress).compute()
    return {k: metrics[k] for k in SUMMARY}, metrics


INSTANCE = LossModelTask(name="instance", build_datasets=build_instance_datasets,
                         build_model=lambda cfg, ds: build_model_for(cfg, ds.num_classes),
                         validate=_validate_instances, best_key="mask_AP",
                         line_keys=("mask_AP", "mask_AP50", "box_AP"),
                         metadata=lambda ds: {"category_ids": list(ds.category_ids)}, result_field="best_mask_AP")


def train_instances(cfg: Config, *, resume: bool = False, progress: bool | None = None,
                    log: Callable[[str], None] = print,
                    on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train an instance model; outputs as `seglab.engine.train` (config.yaml, last.pt, best.safetensors,
    metrics.jsonl, curves.png of the loss and val mask AP). `on_epoch(entry)` sees each metrics.jsonl
    entry once it is written."""
    return train_with_losses(cfg, INSTANCE, resume=resume, progress=progress, log=log, on_epoch=on_epoch)


def train_with_losses(cfg: Config, task: LossModelTask, *, resume: bool = False, progress: bool | None = None,
                      log: Callable[[str], None] = print,
                      on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """The training loop of a model that returns its own losses (module docstring); `task` says how to
    build, validate and record it."""
    from ..viz import plot_training_curves

    t_cfg, d_cfg = cfg.train, cfg.data
    _check_config(cfg, task.name)
    out = Path(t_cfg.out_dir)
    torch.manual_seed(t_cfg.seed)
    train_ds, val_ds = task.build_datasets(cfg)
    if len(train_ds) < d_cfg.batch_size:
        raise SeglabError(f"data.batch_size is {d_cfg.batch_size} but the training split has only "
                          f"{len(train_ds)} images")
    model = task.build_model(cfg, train_ds)
    if t_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.safetensors"
    optimizer, scheduler, start_epoch, history, best = optimization_state(
        cfg, model, len(train_ds) // d_cfg.batch_size, last_path if resume else None, log)
    ema = build_ema(t_cfg, model, last_path if resume else None)  # train.ema_decay: validate the average
    key = task.best_key
    if key not in best:  # a fresh run (optimization_state starts the semantic record)
        best = {key: -1.0, "epoch": -1}
    write_text_atomic(out / "config.yaml", dump_config(cfg))
    meta = {"classes": list(train_ds.classes), "palette": [list(c) for c in train_ds.palette],
            "extra": {"mean": list(d_cfg.mean), "std": list(d_cfg.std), **task.metadata(train_ds)}}
    show = show_progress(progress)
    final_metrics = None
    clock = TrainingClock(t_cfg, history, val_key=f"val_{key}")
    iteration = history[-1].get("iteration", 0) if history else 0
    for epoch in range(start_epoch, t_cfg.epochs):
        if clock.out_of_time(log):
            break
        gen = _seed_epoch(train_ds, t_cfg.seed, epoch)
        loader = DataLoader(train_ds, batch_size=d_cfg.batch_size, shuffle=True, drop_last=True, generator=gen,
                            num_workers=d_cfg.num_workers, worker_init_fn=_worker_init,
                            collate_fn=collate_instances)
        model.train()
        t0, sums, n = time.perf_counter(), {}, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t_cfg.epochs}", disable=not show, leave=False,
                   dynamic_ncols=True)
        clock.start()
        for images, targets in bar:
            losses = train_step(model, _batch_images(images, t_cfg.channels_last), targets, sum_losses, optimizer,
                                scheduler, t_cfg, epoch, convert_outputs=lambda x: x, forward=_forward_with_targets)
            if ema is not None:
                ema.update(model)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            n += 1
            iteration += 1
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if clock.tick():  # train.max_minutes reached: this epoch ends here, validated
                break
        entry = {"epoch": epoch + 1, "iteration": iteration, "train_loss": sums.get("loss", math.nan) / max(n, 1),
                 **{f"train_{k}" if k.startswith("loss") else f"train_loss_{k}": v / max(n, 1)
                    for k, v in sums.items() if k != "loss"},
                 "lr": scheduler.get_last_lr()[0], "epoch_time_s": round(time.perf_counter() - t0, 3),
                 "train_minutes": clock.minutes}
        if clock.validation_due(epoch, last=epoch + 1 == t_cfg.epochs):
            evaluated = model if ema is None else ema.module
            values, final_metrics = task.validate(evaluated, val_ds, show)
            entry.update({f"val_{k}": v for k, v in values.items()})
            if values[key] is not None and values[key] > best[key]:
                best = {key: values[key], "epoch": epoch + 1}
                save_model(evaluated, best_path, classes=meta["classes"], palette=meta["palette"],
                           extra={**meta["extra"], "epoch": epoch + 1, **{f"val_{k}": v for k, v in values.items()}})
        history.append(entry)
        save_checkpoint(last_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                                    "best": best, "rng": rng_state(), **ema_state(ema)})
        write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        plot_training_curves(history, out / "curves.png", metric=f"val_{key}")
        log(_epoch_line(entry, t_cfg.epochs, task.line_keys))
        if on_epoch is not None:
            on_epoch(entry)
    return TrainResult(out_dir=out, best_path=best_path if best_path.exists() else None, last_path=last_path,
                       best_mIoU=math.nan, best_epoch=best["epoch"], history=history,
                       final_metrics=final_metrics, **{task.result_field: best[key]})
