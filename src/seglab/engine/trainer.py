"""The training loop: a plain loop over epochs, nothing hidden.

Per epoch: shuffle with a generator seeded by (seed, epoch) and re-seed the augmentation and torch
RNGs from the same pair, so an interrupted run resumed from `last.pt` continues exactly as if it had
never stopped. Validation every `val_interval` epochs; the best model (by val mIoU) is kept as
`best.safetensors`; `last.pt` holds everything needed to resume. All files are written atomically.
`train.max_minutes` stops the run once that much training time (validation excluded, `TrainingClock`) has
accumulated, with a final validation; each metrics.jsonl entry records it as `train_minutes`.
Outputs in `train.out_dir`: config.yaml, last.pt, best.safetensors, metrics.jsonl, curves.png.
Joint models train in `engine/joint.py`, instance models in `engine/instance.py` (`train` dispatches).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config, dump_config
from ..errors import ConfigError, SeglabError
from ..hub import create_model, save_model
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .ema import build_ema, ema_state
from .evaluate import evaluate
from .schedule import build_optimizer, build_scheduler
from .weak import build_image_label_train_set, build_mil_criterion, uses_image_labels
from ..utils.io import write_text_atomic


@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path | None
    last_path: Path
    best_mIoU: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    final_metrics: dict | None = None
    best_mask_AP: float | None = None  # instance models: picked by val mask AP (best_mIoU is then NaN)
    best_PQ: float | None = None  # panoptic models: picked by val PQ (best_mIoU is then NaN)


def show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def build_datasets(cfg: Config, *, train: bool = True):
    """The train (with augmentation) and val (original size) data sets named by the config."""
    from ..data import build_dataset
    from ..data.datasets import INSTANCE_DATASETS, PANOPTIC_DATASETS
    from ..data.transforms import EvalTransform, TrainTransform
    from ..registry import model_task

    d = cfg.data
    for kind, names in (("instance", INSTANCE_DATASETS), ("panoptic", PANOPTIC_DATASETS)):
        if d.name in names:
            raise ConfigError(f"data.name {d.name!r} is an {kind} data set but model {cfg.model.name!r} is a "
                              f"{model_task(cfg.model.name)} model; pick an {kind} model (seglab models --task "
                              f"{kind}) or a {model_task(cfg.model.name)} data set")
    val = build_dataset(d.name, root=d.root, split=d.val_split,
                        transform=EvalTransform(mean=d.mean, std=d.std), **d.kwargs)
    if not train:
        return None, val
    transform = TrainTransform(crop_size=d.crop_size, scale_range=d.scale_range, hflip=d.hflip,
                               color_jitter=d.color_jitter, mean=d.mean, std=d.std, ignore_index=val.ignore_index,
                               gamma=d.gamma, blur_prob=d.blur_prob, noise_std=d.noise_std)
    if uses_image_labels(cfg):  # weak training from class lists (MIL-FCN, see engine/weak.py)
        return build_image_label_train_set(cfg, val, transform), val
    tr = build_dataset(d.name, root=d.root, split=d.train_split, **d.kwargs, transform=transform)
    return tr, val


def build_model_for(cfg: Config, num_classes: int) -> torch.nn.Module:
    if cfg.model.num_classes is not None and cfg.model.num_classes != num_classes:
        raise SeglabError(f"model.num_classes is {cfg.model.num_classes} but data set {cfg.data.name!r} has "
                          f"{num_classes} classes")
    return create_model(cfg.model.name, num_classes=num_classes, weights=cfg.model.weights,
                        backbone_weights=cfg.model.backbone_weights, **cfg.model.kwargs)


def _seed_epoch(dataset, seed: int, epoch: int) -> torch.Generator:
    epoch_seed = seed * 100_003 + epoch
    torch.manual_seed(epoch_seed)
    seed_transform(getattr(dataset, "transform", None), epoch_seed)
    return torch.Generator().manual_seed(epoch_seed)


def seed_transform(transform, seed: int) -> None:
    """Albumentations pipelines carry their own generators; seed them so augmentation is reproducible."""
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed_transform(getattr(info.dataset, "transform", None), info.seed % 2**31)


def _loss_weights(cfg: Config, dataset, num_classes: int, log) -> torch.Tensor | None:
    if cfg.train.class_weights == "none":
        return None
    from ..data import class_statistics
    from ..losses import median_frequency_weights

    counts, present = class_statistics(dataset, num_classes)
    weights = median_frequency_weights(counts, present)
    if cfg.train.class_weights == "sqrt_median_frequency":
        weights = weights.sqrt()  # softer balancing: rare classes gain recall without flooding precision
    log(f"{cfg.train.class_weights.replace('_', '-')} class weights: " + ", ".join(f"{w:.2f}" for w in weights.tolist()))
    return weights


def train(cfg: Config, *, resume: bool = False, progress: bool | None = None,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train the model the config describes; returns where the outputs are and the best val mIoU."""
    from ..registry import model_task

    if model_task(cfg.model.name) == "joint":  # several label spaces, one head each (engine/joint.py)
        from .joint import train_joint

        return train_joint(cfg, resume=resume, progress=progress, log=log)
    if model_task(cfg.model.name) == "instance":  # a loss dict from the model, mask AP (engine/instance.py)
        from .instance import train_instances

        return train_instances(cfg, resume=resume, progress=progress, log=log)
    if model_task(cfg.model.name) == "panoptic":  # the same loop, validated with PQ (engine/panoptic.py)
        from .panoptic import train_panoptic

        return train_panoptic(cfg, resume=resume, progress=progress, log=log)
    from ..losses import SegmentationLoss
    from ..viz import plot_training_curves

    t_cfg, d_cfg = cfg.train, cfg.data
    out = Path(t_cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.safetensors"
    torch.manual_seed(t_cfg.seed)
    train_ds, val_ds = build_datasets(cfg)
    num_classes = train_ds.num_classes
    if len(train_ds) < d_cfg.batch_size:
        raise SeglabError(f"data.batch_size is {d_cfg.batch_size} but the training split has only "
                          f"{len(train_ds)} images")
    model = build_model_for(cfg, num_classes)
    if t_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = SegmentationLoss(ignore_index=train_ds.ignore_index, aux_weight=t_cfg.aux_weight,
                                 se_weight=t_cfg.se_weight,
                                 class_weights=_loss_weights(cfg, train_ds, num_classes, log),
                                 ohem_thresh=t_cfg.ohem.thresh if t_cfg.ohem else None,
                                 ohem_min_kept=t_cfg.ohem.min_kept if t_cfg.ohem else 1 / 16)
    if t_cfg.supervision == "image_labels":  # batches hold class lists, not label maps
        criterion = build_mil_criterion(cfg, log)
    optimizer, scheduler, start_epoch, history, best = optimization_state(
        cfg, model, len(train_ds) // d_cfg.batch_size, last_path if resume else None, log)
    ema = build_ema(t_cfg, model, last_path if resume else None)  # train.ema_decay: validate the average
    write_text_atomic(out / "config.yaml", dump_config(cfg))
    meta = {"classes": list(train_ds.classes), "palette": [list(c) for c in train_ds.palette],
            "extra": {"mean": list(d_cfg.mean), "std": list(d_cfg.std)}}
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
        t0, loss_sum, n = time.perf_counter(), 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t_cfg.epochs}", disable=not show, leave=False,
                   dynamic_ncols=True)
        clock.start()
        for batch in bar:
            images, masks = batch["image"], batch["labels"] if "labels" in batch else batch["mask"]
            if t_cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            losses = train_step(model, images, masks, criterion, optimizer, scheduler, t_cfg, epoch,
                                convert_outputs=_to_float)
            if ema is not None:
                ema.update(model)
            loss_sum += losses["loss"].item()
            n += 1
            bar.set_postfix(loss=f"{loss_sum / n:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if clock.tick():  # train.max_minutes reached: this epoch ends here, validated
                break
        entry = {"epoch": epoch + 1, "train_loss": loss_sum / max(n, 1), "lr": scheduler.get_last_lr()[0],
                 "epoch_time_s": round(time.perf_counter() - t0, 3), "train_minutes": clock.minutes}
        if clock.validation_due(epoch, last=epoch + 1 == t_cfg.epochs):
            evaluated = model if ema is None else ema.module
            metrics = evaluate(evaluated, val_ds, num_classes=num_classes, progress=show,
                               predictor=validation_predictor(cfg, evaluated))
            final_metrics = metrics.compute()
            entry.update({"val_mIoU": final_metrics["mIoU"], "val_aAcc": final_metrics["aAcc"],
                          "val_mAcc": final_metrics["mAcc"]})
            if final_metrics["mIoU"] > best["mIoU"]:
                best = {"mIoU": final_metrics["mIoU"], "epoch": epoch + 1}
                save_model(evaluated, best_path, classes=meta["classes"], palette=meta["palette"],
                           extra={**meta["extra"], "epoch": epoch + 1, "val_mIoU": final_metrics["mIoU"]})
        history.append(entry)
        save_checkpoint(last_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "epoch": epoch, "history": history,
                                    "best": best, "rng": rng_state(), **ema_state(ema)})
        write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        plot_training_curves(history, out / "curves.png")
        log(_epoch_line(entry, t_cfg.epochs))
    return TrainResult(out_dir=out, best_path=best_path if best_path.exists() else None, last_path=last_path,
                       best_mIoU=best["mIoU"], best_epoch=best["epoch"], history=history,
                       final_metrics=final_metrics)


class TrainingClock:
    """Training time accumulated over steps (data loading included, validation excluded) for
    `train.max_minutes` and `train.val_every_minutes`; continues from the history on resume."""

    def __init__(self, t_cfg, history: list[dict], *, val_key: str):
        self.max_minutes, self.val_every = t_cfg.max_minutes, t_cfg.val_every_minutes
        self.val_interval = t_cfg.val_interval
        self.seconds = 60.0 * history[-1].get("train_minutes", 0.0) if history else 0.0
        self.last_val_minutes = max((h.get("train_minutes", 0.0) for h in history if val_key in h), default=0.0)
        self._mark = time.perf_counter()

    @property
    def minutes(self) -> float:
        return round(self.seconds / 60.0, 5)

    @property
    def spent(self) -> bool:
        return self.max_minutes is not None and self.seconds >= 60.0 * self.max_minutes

    def start(self) -> None:
        self._mark = time.perf_counter()

    def tick(self) -> bool:
        """Add the time since the last mark; True when the budget is spent."""
        now = time.perf_counter()
        self.seconds, self._mark = self.seconds + now - self._mark, now
        return self.spent

    def out_of_time(self, log: Callable[[str], None]) -> bool:
        """True (and says so) when the budget is spent: checked before an epoch starts."""
        if self.spent:
            log(f"stopped after {self.seconds / 60:.2f} training minutes (train.max_minutes {self.max_minutes})")
        return self.spent

    def validation_due(self, epoch: int, *, last: bool) -> bool:
        """At the last epoch, when stopping for time, and every val_interval epochs (or, with
        val_every_minutes, at the first epoch end past each multiple of it); records the validation."""
        if self.val_every is not None:
            due = int(self.minutes // self.val_every) > int(self.last_val_minutes // self.val_every)
        else:
            due = (epoch + 1) % self.val_interval == 0
        if due or last or self.spent:
            self.last_val_minutes = self.minutes
            return True
        return False


def optimization_state(cfg: Config, model: torch.nn.Module, iters_per_epoch: int, resume_from: Path | None,
                       log: Callable[[str], None]):
    """(optimizer, scheduler, start_epoch, history, best) for a run, restored from `resume_from` (a
    last.pt) when given: model, optimizer, schedule, epoch, history and RNG state, for an exact resume."""
    t = cfg.train
    optimizer = build_optimizer(model, t.optimizer, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    scheduler = build_scheduler(optimizer, t.epochs * iters_per_epoch, power=t.poly_power,
                                warmup_iters=t.warmup_iters, warmup_ratio=t.warmup_ratio)
    if resume_from is None:
        return optimizer, scheduler, 0, [], {"mIoU": -1.0, "epoch": -1}
    if not resume_from.is_file():
        raise SeglabError(f"--resume: no checkpoint to resume from at {resume_from}")
    state = load_checkpoint(resume_from)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    start_epoch = state["epoch"] + 1
    log(f"resumed from {resume_from} at epoch {start_epoch + 1}/{t.epochs}")
    return optimizer, scheduler, start_epoch, list(state["history"]), dict(state["best"])


def train_step(model, images, targets, criterion, optimizer, scheduler, t_cfg, epoch: int, *,
               convert_outputs, forward: Callable | None = None) -> dict[str, torch.Tensor]:
    """One optimisation step (bf16 autocast forward as configured, loss in float32, finite check,
    backward, optional gradient clipping, optimizer and schedule step); returns the criterion's dict.
    `forward(model, images, targets)` replaces `model(images)` (instance models compute their losses)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=t_cfg.bf16):
        outputs = model(images) if forward is None else forward(model, images, targets)
    losses = criterion(convert_outputs(outputs), targets)
    loss = losses["loss"]
    if not torch.isfinite(loss):
        raise SeglabError(f"loss became {loss.item()} at epoch {epoch + 1}; lower train.lr "
                          f"(now {t_cfg.lr}) or enable train.grad_clip")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if t_cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t_cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return losses


def validation_predictor(cfg: Config, model: torch.nn.Module):
    """Validation during training predicts as `seglab eval` does with this config (sliding window and
    test-time augmentation from `eval:`), so the numbers agree; the CRF is left out (too slow per epoch)."""
    from ..inference import build_predictor

    ev = cfg.eval
    slide = ev.slide
    return build_predictor(model, slide=slide.crop if slide else None, stride=slide.stride if slide else None,
                           blend=slide.blend if slide else "gaussian",
                           tta=ev.tta.model_dump() if ev.tta else None)


def _to_float(outputs):
    if isinstance(outputs, dict):
        return {k: ([o.float() for o in v] if isinstance(v, (list, tuple)) else v.float()) for k, v in outputs.items()}
    return outputs.float()


def _epoch_line(e: dict, epochs: int) -> str:
    s = f"epoch {e['epoch']:>3}/{epochs}  loss {e['train_loss']:.4f}  lr {e['lr']:.2e}  {e['epoch_time_s']:.1f}s"
    if "val_mIoU" in e and not math.isnan(e["val_mIoU"]):
        s += f"  val mIoU {100 * e['val_mIoU']:.2f}"
    return s
