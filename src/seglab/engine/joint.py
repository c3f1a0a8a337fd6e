"""Training and validation of joint models: one network, several label spaces, each with its own loss
and its own metrics.

FCN (Long, Shelhamer, Darrell, CVPR 2015, Sec. 5, SIFT Flow) trains one net on 33 semantic and 3
geometric classes at once; its release sums one softmax loss per label space and scores each space on
its own confusion matrix. Here:
- `JointLoss`: the weighted sum over spaces of `SegmentationLoss` (ignore index 255, aux heads weighted
  `aux_weight`); weights from `train.label_space_weights` (unlisted spaces 1.0; the release uses 1, 1).
- `JointMetrics`: one `SemanticMetrics` per space, so metrics.jsonl gets `val_<space>_mIoU`, `_aAcc`,
  `_mAcc` (the paper reports semantic mIoU and geometric pixel accuracy). `val_mIoU` is the mean of the
  spaces' mIoU: it picks `best.safetensors` and is the curve in curves.png.
- `train_joint`: the loop of `seglab.engine.trainer.train` (same seeding, resume, checkpoint and output
  files) for models registered with task "joint"; `train` dispatches here. Validation runs each image
  whole (batch 1, original size); sliding-window, TTA, class weights and OHEM are not supported for
  joint models and are refused in the config.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config, dump_config
from ..errors import ConfigError, SeglabError
from ..hub import save_model
from ..losses import SegmentationLoss
from ..metrics import SemanticMetrics
from ..utils.io import write_text_atomic
from .checkpoint import rng_state, save_checkpoint
from .trainer import (
    TrainingClock,
    TrainResult,
    _seed_epoch,
    _worker_init,
    build_datasets,
    build_model_for,
    optimization_state,
    show_progress,
    train_step,
)


class JointLoss(nn.Module):
    """`loss = sum_s weight_s * CE_s` over label spaces; returns `loss` and `loss_<space>` (unweighted)."""

    def __init__(self, label_spaces: Sequence[str], *, weights: Mapping[str, float] | None = None,
                 ignore_index: int = 255, aux_weight: float = 0.4):
        super().__init__()
        self.label_spaces = list(label_spaces)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.label_spaces))
        if unknown:
            raise ConfigError(f"train.label_space_weights: unknown label spaces {unknown}, expected some of "
                              f"{self.label_spaces}")
        if any(w < 0 for w in weights.values()):
            raise ConfigError(f"train.label_space_weights must be >= 0, got {weights}")
        self.weights = {s: float(weights.get(s, 1.0)) for s in self.label_spaces}
        self.per_space = SegmentationLoss(ignore_index=ignore_index, aux_weight=aux_weight)

    def forward(self, outputs: Mapping, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [s for s in self.label_spaces if s not in outputs or s not in targets]
        if missing:
            raise ValueError(f"label spaces {missing} missing from the outputs ({sorted(outputs)}) or "
                             f"targets ({sorted(targets)})")
        parts = {s: self.per_space(outputs[s], targets[s])["loss"] for s in self.label_spaces}
        total = sum(self.weights[s] * parts[s] for s in self.label_spaces)
        return {"loss": total, **{f"loss_{s}": v for s, v in parts.items()}}


class JointMetrics:
    """One streaming `SemanticMetrics` per label space; `compute()` -> {space: metrics dict}."""

    def __init__(self, num_classes: Mapping[str, int], ignore_index: int | None = 255):
        self.spaces = {s: SemanticMetrics(k, ignore_index=ignore_index) for s, k in num_classes.items()}

    def update(self, preds: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> None:
        for s, m in self.spaces.items():
            m.update(preds[s], targets[s])

    def merge(self, other: JointMetrics) -> JointMetrics:
        if set(other.spaces) != set(self.spaces):
            raise ValueError(f"cannot merge label spaces {sorted(other.spaces)} into {sorted(self.spaces)}")
        for s, m in self.spaces.items():
            m.merge(other.spaces[s])
        return self

    def all_reduce(self) -> JointMetrics:
        for m in self.spaces.values():
            m.all_reduce()
        return self

    def compute(self) -> dict[str, dict]:
        return {s: m.compute() for s, m in self.spaces.items()}


def flat_metrics(results: Mapping[str, dict], prefix: str = "val") -> dict[str, float]:
    """`{val_<space>_mIoU, _aAcc, _mAcc}` per space and `val_mIoU`, the mean of the spaces' mIoU."""
    flat = {f"{prefix}_{s}_{k}": r[k] for s, r in results.items() for k in ("mIoU", "aAcc", "mAcc")}
    ious = [r["mIoU"] for r in results.values()]
    flat[f"{prefix}_mIoU"] = math.nan if any(math.isnan(v) for v in ious) else sum(ious) / len(ious)
    return flat


@torch.no_grad()
def evaluate_joint(model: nn.Module, dataset, *, progress: bool = False) -> JointMetrics:
    """Every image of `dataset` at its own size (batch 1) through `model`, argmax per label space."""
    was_training = model.training
    model.eval()
    metrics = JointMetrics(dataset.num_classes_per_space, ignore_index=dataset.ignore_index)
    for i in tqdm(range(len(dataset)), desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        sample = dataset[i]
        out = model(sample["image"][None])
        metrics.update({s: out[s][0].argmax(0) for s in metrics.spaces}, sample["masks"])
    model.train(was_training)
    return metrics


def _float_outputs(outputs):
    """bf16 autocast outputs -> float32, through {space: Tensor | {"out", "aux"}} nesting."""
    if isinstance(outputs, dict):
        return {k: _float_outputs(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [_float_outputs(v) for v in outputs]
    return outputs.float()


def _check_config(cfg: Config, train_ds) -> dict[str, int]:
    """The data set's {space: class count}; refuses options the joint loop does not implement."""
    spaces = getattr(train_ds, "num_classes_per_space", None)
    if spaces is None:
        raise ConfigError(f"model {cfg.model.name!r} predicts several label spaces; data.name "
                          f"{cfg.data.name!r} has one (use siftflow or synthetic_joint)")
    unsupported = [key for key, on in (("train.class_weights", cfg.train.class_weights != "none"),
                                       ("train.ohem", cfg.train.ohem is not None),
                                       ("eval.slide", cfg.eval.slide is not None),
                                       ("eval.tta", cfg.eval.tta is not None)) if on]
    if unsupported:
        raise ConfigError(f"{', '.join(unsupported)}: not supported for joint models (model {cfg.model.name!r})")
    given = cfg.model.kwargs.get("label_spaces")
    if given is not None and dict(given) != spaces:
        raise ConfigError(f"model.kwargs.label_spaces is {dict(given)} but data set {cfg.data.name!r} has "
                          f"{spaces}")
    return spaces


def _epoch_line(e: dict, epochs: int, spaces: Sequence[str]) -> str:
    s = f"epoch {e['epoch']:>3}/{epochs}  loss {e['train_loss']:.4f}"
    s += " (" + ", ".join(f"{sp} {e[f'train_loss_{sp}']:.4f}" for sp in spaces) + ")"
    s += f"  lr {e['lr']:.2e}  {e['epoch_time_s']:.1f}s"
    if "val_mIoU" in e:
        s += "  val mIoU " + "  ".join(f"{sp} {100 * e[f'val_{sp}_mIoU']:.2f}" for sp in spaces)
    return s


def train_joint(cfg: Config, *, resume: bool = False, progress: bool | None = None,
                log: Callable[[str], None] = print) -> TrainResult:
    """Train a joint model on a data set with several label spaces; outputs as `seglab.engine.train`."""
    from ..viz import plot_training_curves

    t_cfg, d_cfg = cfg.train, cfg.data
    out = Path(t_cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.safetensors"
    torch.manual_seed(t_cfg.seed)
    train_ds, val_ds = build_datasets(cfg)
    spaces = _check_config(cfg, train_ds)
    if len(train_ds) < d_cfg.batch_size:
        raise SeglabError(f"data.batch_size is {d_cfg.batch_size} but the training split has only "
                          f"{len(train_ds)} images")
    model_cfg = cfg.model.model_copy(update={"kwargs": {**cfg.model.kwargs, "label_spaces": spaces}})
    model = build_model_for(cfg.model_copy(update={"model": model_cfg}), train_ds.num_classes)
    if t_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = JointLoss(list(spaces), weights=t_cfg.label_space_weights, ignore_index=train_ds.ignore_index,
                          aux_weight=t_cfg.aux_weight)
    optimizer, scheduler, start_epoch, history, best = optimization_state(
        cfg, model, len(train_ds) // d_cfg.batch_size, last_path if resume else None, log)
    write_text_atomic(out / "config.yaml", dump_config(cfg))
    extra = {"mean": list(d_cfg.mean), "std": list(d_cfg.std), "label_space_classes": train_ds.label_spaces}
    show = show_progress(progress)
    final_metrics = None
    clock = TrainingClock(t_cfg, history, val_key="val_mIoU")
    for epoch in range(start_epoch, t_cfg.epochs):
        if clock.out_of_time(log):
            break
        gen = _seed_epoch(train_ds, t_cfg.seed, epoch)
        loader = DataLoader(train_ds, batch_size=d_cfg.batch_size, shuffle=True, drop_last=True,
                            generator=gen, num_workers=d_cfg.num_workers, worker_init_fn=_worker_init)
        model.train()
        t0, sums, n = time.perf_counter(), {k: 0.0 for k in ["loss", *(f"loss_{s}" for s in spaces)]}, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t_cfg.epochs}", disable=not show, leave=False,
                   dynamic_ncols=True)
        clock.start()
        for batch in bar:
            images = batch["image"]
            if t_cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            losses = train_step(model, images, batch["masks"], criterion, optimizer, scheduler, t_cfg, epoch,
                                convert_outputs=_float_outputs)
            for k in sums:
                sums[k] += losses[k].item()
            n += 1
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if clock.tick():  # train.max_minutes reached: this epoch ends here, validated
                break
        entry = {"epoch": epoch + 1, "train_loss": sums["loss"] / max(n, 1),
                 **{f"train_{k}": v / max(n, 1) for k, v in sums.items() if k != "loss"},
                 "lr": scheduler.get_last_lr()[0], "epoch_time_s": round(time.perf_counter() - t0, 3),
                 "train_minutes": clock.minutes}
        if clock.validation_due(epoch, last=epoch + 1 == t_cfg.epochs):
            final_metrics = evaluate_joint(model, val_ds, progress=show).compute()
            entry.update(flat_metrics(final_metrics))
            if entry["val_mIoU"] > best["mIoU"]:
                best = {"mIoU": entry["val_mIoU"], "epoch": epoch + 1}
                save_model(model, best_path, classes=list(train_ds.classes),
                           palette=[list(c) for c in train_ds.palette],
                           extra={**extra, "epoch": epoch + 1, "val_mIoU": entry["val_mIoU"]})
        history.append(entry)
        save_checkpoint(last_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                                    "best": best, "rng": rng_state()})
        write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        plot_training_curves(history, out / "curves.png")
        log(_epoch_line(entry, t_cfg.epochs, list(spaces)))
    return TrainResult(out_dir=out, best_path=best_path if best_path.exists() else None, last_path=last_path,
                       best_mIoU=best["mIoU"], best_epoch=best["epoch"], history=history,
                       final_metrics=final_metrics)
