"""The training loop: one plain loop over epochs for every task, on any device, in one process or many.

What differs between semantic, joint, instance and panoptic training (data, loss, validation, what the
model file records) comes from the task (`seglab.tasks`); everything else is here, once:
- device and precision (`train.device`, `train.precision`; fp16 with a gradient scaler whose state is
  part of the checkpoint), channels_last, gradient accumulation (`train.accumulate_steps`, the schedule
  counted in optimizer steps), gradient clipping, a finite-loss check;
- distributed data parallel under torchrun (`seglab.engine.runtime`): `EpochSampler` gives each rank its
  share of the same global batches a one-process run would see, `train.sync_bn` synchronises BatchNorm,
  validation is sharded over the ranks and the evaluators are reduced, rank 0 alone writes and prints;
- reproducibility: every epoch restarts the random streams from (seed, epoch) and every sample's
  augmentation from (seed, epoch, index) (`engine/sampling.py`), so `--resume` from `last.pt` (written at
  each epoch end) continues exactly as if the run had never stopped, also after a kill mid-epoch;
- outputs in `train.out_dir`: config.yaml, last.pt, best.safetensors (best by the task's key: val mIoU,
  mask AP or PQ), metrics.jsonl, curves.png, all written atomically; `train.max_minutes` and
  `train.val_every_minutes` (engine/clock.py);
- `train.ema`: an exponential moving average of the weights (engine/ema.py), updated after every
  optimizer step, is what validation measures and best.safetensors holds; last.pt stores it.
The step follows Detectron2's `SimpleTrainer.run_step`; DDP set-up follows torchvision's references.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config, dump_config
from ..errors import SeglabError
from ..finetune import freeze_modules, trunk_parameters
from ..tasks.base import check_batch_size
from ..utils.io import make_folder, write_text_atomic
from .checkpoint import check_resume, load_checkpoint, restore_training_state, save_checkpoint
from .clock import TrainingClock
from .ema import build_ema, restore_ema
from .evaluation import evaluate_model
from .runtime import Runtime
from .sampling import EpochSampler, SeededSamples, epoch_seed
from .schedule import build_optimizer, build_scheduler


@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path | None
    last_path: Path
    best_key: str          # the validation value best.safetensors was kept by: mIoU, mask_AP or PQ
    best_value: float      # its best value (NaN when no validation ran)
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    final_metrics: dict | None = None

    def _best(self, key: str) -> float | None:
        return self.best_value if self.best_key == key else None

    @property
    def best_mIoU(self) -> float:
        return self._best("mIoU") if self.best_key == "mIoU" else math.nan

    @property
    def best_mask_AP(self) -> float | None:
        return self._best("mask_AP")

    @property
    def best_PQ(self) -> float | None:
        return self._best("PQ")


def show_progress(progress: bool | None) -> bool:
    import sys

    return sys.stderr.isatty() if progress is None else progress


def loader_workers(setting: int | str, runtime: Runtime) -> int:
    """`data.num_workers`; "auto": 0 on CPU machines with up to 4 cores, else 2; min(8, cores per
    process) on CUDA."""
    import os

    if setting != "auto":
        return int(setting)
    cores = os.cpu_count() or 1
    if runtime.device.type == "cuda":
        return max(1, min(8, cores // max(1, torch.cuda.device_count())))
    return 0 if cores <= 4 else 2


def train(cfg: Config, *, resume: bool = False, progress: bool | None = None, log: Callable[[str], None] = print,
          device: str | None = None, on_epoch: Callable[[dict], None] | None = None,
          overwrite: bool = False, task=None) -> TrainResult:
    """Train the model the config describes with its task's data, loss and validation (module docstring).
    `device` overrides `train.device`; `on_epoch(entry)` sees each metrics.jsonl entry once it is written.
    A new run (not `resume`) into a `train.out_dir` that holds another run's model is refused unless
    `overwrite`, which removes that run's files first. `task` (a `seglab.tasks.Task`) replaces the model's
    registry task, for a task seglab does not ship (examples/conv_autoencoder.py trains a reconstruction
    task this way)."""
    from ..tasks import task_for_model

    t_cfg, d_cfg = cfg.train, cfg.data
    task = task or task_for_model(cfg.model.name)
    task.check_config(cfg)
    runtime = Runtime.create(device or t_cfg.device, t_cfg.precision)
    if not runtime.is_main:
        log = _silent
    out = Path(t_cfg.out_dir)
    last_path, best_path = out / "last.pt", out / "best.safetensors"
    torch.manual_seed(t_cfg.seed)
    train_ds, val_ds = task.build_datasets(cfg)  # config mistakes (model vs data set) are named first
    check_batch_size(cfg, train_ds, runtime.world_size)
    if not resume:
        protect_previous_run(out, overwrite=overwrite, remove=False)  # before training: refuse early
    task.check_training_data(cfg, train_ds, log)
    model = task.build_model(cfg, train_ds)
    report = getattr(model, "seglab_weights_report", None)
    if report is not None:
        log(report.describe())
    frozen = freeze_modules(model, t_cfg.freeze) if t_cfg.freeze else []
    trunk = trunk_parameters(model) if t_cfg.backbone_lr_mult != 1.0 else set()
    if t_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if t_cfg.sync_bn and runtime.world_size > 1:
        from ..layers.sync_batchnorm import convert_sync_batchnorm

        model = convert_sync_batchnorm(model, runtime.device)
    model.to(runtime.device)
    ema = build_ema(t_cfg.ema, model)  # train.ema: the average is validated and kept (engine/ema.py)
    loss = task.build_loss(cfg, train_ds, log)
    if isinstance(loss, nn.Module):
        loss.to(runtime.device)  # class weights
    accumulate = t_cfg.accumulate_steps
    global_batch = d_cfg.batch_size * runtime.world_size * accumulate
    steps_per_epoch = len(train_ds) // global_batch
    optimizer = build_optimizer(model, t_cfg.optimizer, lr=t_cfg.lr, momentum=t_cfg.momentum,
                                weight_decay=t_cfg.weight_decay, lr_mult_params=trunk, lr_mult=t_cfg.backbone_lr_mult)
    scheduler = build_scheduler(optimizer, t_cfg.epochs * steps_per_epoch, power=t_cfg.poly_power,
                                warmup_iters=t_cfg.warmup_iters, warmup_ratio=t_cfg.warmup_ratio)
    scaler = runtime.grad_scaler()
    config_dict = cfg.model_dump(mode="json")
    start_epoch, history, best = 0, [], {task.best_key: -math.inf, "epoch": -1}
    if resume:
        start_epoch, history, saved_best = _resume(last_path, config_dict, runtime, model, optimizer, scheduler,
                                                   scaler, log, ema=ema)
        best = saved_best if task.best_key in saved_best else best
    net = model
    if runtime.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
            find_unused_parameters=task.find_unused_parameters)
    if runtime.is_main:
        if not resume:  # the data and model are ready: only now is a replaced run's model removed
            protect_previous_run(out, overwrite=overwrite, remove=True)
        make_folder(out, "train.out_dir")
        write_text_atomic(out / "config.yaml", dump_config(cfg))
    log(f"training {cfg.model.name} ({task.name}) on {runtime.describe()}: {len(train_ds)} images, global batch "
        f"{global_batch}, {steps_per_epoch} steps per epoch")
    meta = task.model_metadata(cfg, train_ds)
    sampler = EpochSampler(len(train_ds), seed=t_cfg.seed, global_batch=global_batch, rank=runtime.rank,
                           world_size=runtime.world_size)
    workers = loader_workers(d_cfg.num_workers, runtime)
    loader = DataLoader(SeededSamples(train_ds, t_cfg.seed), batch_size=d_cfg.batch_size, sampler=sampler,
                        collate_fn=task.collate, num_workers=workers, pin_memory=runtime.pin_memory,
                        persistent_workers=workers > 0, drop_last=True)
    show = show_progress(progress) and runtime.is_main
    final_metrics = None
    clock = TrainingClock(t_cfg, history, val_key=f"val_{task.best_key}")
    step_fn = TrainStep(net, loss, optimizer, scheduler, scaler, runtime, task, t_cfg, log=log)
    curves = CurvesPlot(out / "curves.png", metric=f"val_{task.best_key}")
    for epoch in range(start_epoch, t_cfg.epochs):
        if runtime.broadcast_object(clock.out_of_time(log)):
            break
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch_seed(t_cfg.seed, epoch) + 1_000_003 * runtime.rank)  # dropout, RoI sampling
        net.train()
        for m in frozen:  # train.freeze: no gradients and no BatchNorm statistics updates
            m.eval()
        t0, sums, steps = time.perf_counter(), {}, 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{t_cfg.epochs}", disable=not show, leave=False,
                   dynamic_ncols=True)
        clock.start()
        batches = iter(loader)
        for _ in range(steps_per_epoch):
            losses = step_fn([next(batches) for _ in range(accumulate)], epoch)
            if ema is not None:
                ema.update(model)
            for k, v in losses.items():  # kept on the device: no synchronisation per step
                sums[k] = sums[k] + v if k in sums else v
            steps += 1
            bar.update()
            if show and (steps % 10 == 1 or steps == steps_per_epoch):
                bar.set_postfix(loss=f"{float(sums['loss']) / steps:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            stop = clock.tick()
            if t_cfg.max_minutes is not None and runtime.broadcast_object(stop):
                break  # train.max_minutes reached: this epoch ends here, validated
        bar.close()
        _check_labelled(step_fn, runtime, epoch, d_cfg.name)
        sums = _mean_over_ranks(sums, steps, runtime)
        entry = {"epoch": epoch + 1, "iteration": scheduler.last_epoch, "train_loss": sums.pop("loss", math.nan),
                 **step_fn.pop_compile_report(),
                 **{f"train_{k}" if k.startswith("loss") else f"train_loss_{k}": v for k, v in sums.items()},
                 "lr": scheduler.get_last_lr()[0], "epoch_time_s": round(time.perf_counter() - t0, 3),
                 "train_minutes": clock.minutes}
        if runtime.broadcast_object(clock.validation_due(epoch, last=epoch + 1 == t_cfg.epochs)):
            evaluated = model if ema is None else ema.module
            runtime.broadcast_buffers(evaluated)
            values, final_metrics = evaluate_model(task, evaluated, val_ds, cfg.eval, runtime, progress=show,
                                                    model_config=meta)
            entry.update({f"val_{k}": v for k, v in values.items()})
            value = values.get(task.best_key)
            if value is not None and not math.isnan(value) and value > best[task.best_key]:
                best = {task.best_key: value, "epoch": epoch + 1}
                if runtime.is_main:
                    _save_best(evaluated, best_path, meta, epoch, values)
        history.append(entry)
        if runtime.is_main:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                     "history": history, "best": best, "world_size": runtime.world_size, "config": config_dict}
            if ema is not None:
                state["ema"] = ema.state_dict()
            save_checkpoint(last_path, state)
            write_text_atomic(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            curves.update(history, validated=any(k.startswith("val_") for k in entry), last=epoch + 1 == t_cfg.epochs)
        runtime.barrier()
        log(task.epoch_line(entry, t_cfg.epochs))
        if on_epoch is not None:
            on_epoch(entry)
    if runtime.is_main:
        curves.flush()  # an epoch not drawn yet (stopped early)
    best_value = best[task.best_key] if best["epoch"] >= 0 else math.nan
    return TrainResult(out_dir=out, best_path=best_path if best_path.exists() else None, last_path=last_path,
                       best_key=task.best_key, best_value=best_value, best_epoch=best["epoch"], history=history,
                       final_metrics=final_metrics)


class CurvesPlot:
    """curves.png, redrawn after every validation, on the last epoch and otherwise at most every
    `every_s` seconds: drawing costs about 0.15 s, a large share of a short epoch (the demo's take 2 s)."""

    def __init__(self, path: Path, *, metric: str, every_s: float = 30.0, clock: Callable[[], float] = time.perf_counter):
        self.path, self.metric, self.every_s, self.clock = path, metric, every_s, clock
        self.drawn_at = -math.inf
        self.pending: list | None = None

    def update(self, history: list, *, validated: bool, last: bool) -> None:
        self.pending = history
        if validated or last or self.clock() - self.drawn_at >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending is None:
            return
        from ..viz import plot_training_curves

        plot_training_curves(self.pending, self.path, metric=self.metric)
        self.drawn_at, self.pending = self.clock(), None


class TrainStep:
    """One optimizer step over `accumulate_steps` batches: autocast forward, float32 losses, a finite-loss
    check (agreed by every rank), scaled backward (gradients synchronised on the last batch only), clipping,
    optimizer and schedule step. Returns the step's mean losses (detached tensors on the device).

    `train.compile`: the network runs through `torch.compile`; the first step (which compiles) is timed
    and reported apart (`compile_s` in metrics.jsonl), and a network that does not compile trains eagerly
    after a one-line message saying why."""

    def __init__(self, net, loss, optimizer, scheduler, scaler, runtime: Runtime, task, t_cfg,
                 log: Callable[[str], None] = print):
        self.net, self.loss, self.optimizer, self.scheduler, self.scaler = net, loss, optimizer, scheduler, scaler
        self.runtime, self.task, self.t_cfg, self.log = runtime, task, t_cfg, log
        self.eager_net = net
        self.compiling = bool(getattr(t_cfg, "compile", False))
        if self.compiling:
            self.net = torch.compile(net)
            if runtime.device.type == "cpu" and runtime.precision != "fp32":
                # measured: BiSeNet V2 on CamVid, bf16 autocast, compiled -> the main head's loss stayed flat
                # while the eager run learnt (docs/performance.md); fp32 compiled matched eager within 1e-4
                log(f"warning: train.compile with {runtime.precision} autocast on the CPU has trained a model "
                    f"that did not learn (docs/performance.md, 'torch.compile'); compare the first epochs' loss "
                    f"with an eager run, or train in fp32")
        self.compile_report: dict = {}
        self.labelled = 0  # labelled target pixels seen this epoch (a tensor on the device once counted)

    def __call__(self, batches: list, epoch: int) -> dict[str, torch.Tensor]:
        if not self.compiling:
            return self._step(batches, epoch)
        self.compiling = False
        t0 = time.perf_counter()
        try:
            losses = self._step(batches, epoch)
        except SeglabError:
            raise
        except Exception as e:  # dynamo / inductor cannot handle the model: say so and train eagerly
            first = (str(e).splitlines() or [""])[0][:160]
            self.log(f"torch.compile failed ({type(e).__name__}: {first}); training continues without it")
            self.net = self.eager_net
            self.compile_report = {"compile_s": None}
            return self._step(batches, epoch)
        self.compile_report = {"compile_s": round(time.perf_counter() - t0, 2)}
        self.log(f"torch.compile: the first step, compilation included, took {self.compile_report['compile_s']:.1f}s")
        return losses

    def pop_compile_report(self) -> dict:
        report, self.compile_report = self.compile_report, {}
        return report

    def _step(self, batches: list, epoch: int) -> dict[str, torch.Tensor]:
        rt, k = self.runtime, len(batches)
        totals: dict[str, torch.Tensor] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches):
            inputs, targets = self.task.split_batch(batch)
            inputs, targets = rt.to_device(inputs), rt.to_device(targets)
            labelled = self.task.labelled_pixels(targets)
            if labelled is not None:
                self.labelled = labelled + self.labelled
            if self.t_cfg.channels_last and isinstance(inputs, torch.Tensor):
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            last = i == k - 1
            sync = contextlib.nullcontext() if last or not rt.distributed else self.eager_net.no_sync()
            with sync:
                with rt.autocast():
                    outputs = self.loss.forward(self.net, inputs, targets)
                losses = self.loss.losses(outputs, targets)
                self._check_finite(losses["loss"], epoch)
                self.scaler.scale(losses["loss"] / k).backward()
            for name, v in losses.items():
                v = v.detach() / k
                totals[name] = totals[name] + v if name in totals else v
        if self.t_cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.t_cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return totals

    def _check_finite(self, loss: torch.Tensor, epoch: int) -> None:
        finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if self.runtime.distributed:  # every rank must stop together, or the others wait forever
            from ..utils.distributed import all_reduce_sum

            finite = (all_reduce_sum(finite) == self.runtime.world_size).float()
        if not bool(finite.item()):
            raise SeglabError(f"loss became {loss.item()} at epoch {epoch + 1}; lower train.lr "
                              f"(now {self.t_cfg.lr}) or enable train.grad_clip")


def _resume(last_path: Path, config: dict, runtime: Runtime, model, optimizer, scheduler, scaler,
            log: Callable[[str], None], *, ema=None) -> tuple[int, list, dict]:
    """Restore model, optimizer, schedule, gradient scaler and weight average (`ema`, when set) from last.pt
    (after checking that it is the same run: config and process count); returns (next epoch, history, best)."""
    if not last_path.is_file():
        raise SeglabError(f"--resume: no checkpoint to resume from at {last_path}")
    state = load_checkpoint(last_path, map_location=runtime.device)
    check_resume(state, last_path, config=config, world_size=runtime.world_size)
    start_epoch, history, best = restore_training_state(state, last_path, model=model, optimizer=optimizer,
                                                        scheduler=scheduler, scaler=scaler)
    if ema is not None:
        restore_ema(ema, state, last_path)
    epochs = config["train"]["epochs"]
    log(f"resumed from {last_path} at epoch {start_epoch + 1}/{epochs}")
    saved_epochs = state.get("config", {}).get("train", {}).get("epochs", epochs)
    if saved_epochs != epochs:
        log(f"train.epochs changed from {saved_epochs} to {epochs}: the learning rate now decays over {epochs} "
            f"epochs")
    return start_epoch, history, best


def _check_labelled(step_fn: TrainStep, runtime: Runtime, epoch: int, data_name: str) -> None:
    """Refuse an epoch whose training targets held no labelled pixel at all (every one the ignore index):
    the loss is 0 and nothing is learnt, a data mistake (labels all 255, a wrong label mapping)."""
    labelled, step_fn.labelled = step_fn.labelled, 0
    if not isinstance(labelled, torch.Tensor):
        return  # this task's targets are not pixel labels
    total = labelled.detach().to(torch.float64).reshape(1)
    if runtime.distributed:
        from ..utils.distributed import all_reduce_sum

        total = all_reduce_sum(total)
    if total.item() == 0:
        raise SeglabError(f"epoch {epoch + 1}: every training label pixel was the ignore index 255, so the loss is "
                          f"0 and nothing is learnt; check the label files of data set {data_name!r} (data.root) "
                          f"and its label mapping")


RUN_FILES = ("best.safetensors", "last.pt", "metrics.jsonl", "curves.png")


def protect_previous_run(out: Path, *, overwrite: bool, remove: bool) -> None:
    """A new run must not silently replace another run's model: refuse when `out` holds best.safetensors
    or last.pt, unless `overwrite` (then that run's files are removed, by the process that writes)."""
    if out.exists() and not out.is_dir():
        raise SeglabError(f"train.out_dir {out} is a file, not a folder")
    existing = [n for n in RUN_FILES[:2] if (out / n).exists()]
    if existing and not overwrite:
        raise SeglabError(f"train.out_dir {out} already holds a run ({', '.join(existing)}); continue it with "
                          f"--resume, choose another train.out_dir, or pass --overwrite to replace it")
    if existing and remove:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)


def _mean_over_ranks(sums: dict[str, torch.Tensor], steps: int, runtime: Runtime) -> dict[str, float]:
    """The epoch's mean losses over every rank's steps (what a one-process run would log)."""
    keys = list(sums)  # the model's order, the same on every rank
    values = torch.tensor([float(sums[k]) for k in keys] + [float(steps)], dtype=torch.float64)
    if runtime.distributed:
        from ..utils.distributed import all_reduce_sum

        values = all_reduce_sum(values)
    n = max(values[-1].item(), 1.0)
    return {k: v / n for k, v in zip(keys, values[:-1].tolist())}


def _save_best(model: nn.Module, path: Path, meta: dict, epoch: int, values: dict) -> None:
    from ..hub import save_model

    meta = dict(meta)
    classes, palette = meta.pop("classes"), meta.pop("palette")
    save_model(model, path, classes=classes, palette=palette,
               extra={**meta, "epoch": epoch + 1, **{f"val_{k}": v for k, v in values.items()}})


def _silent(message: str) -> None:
    """Ranks other than 0 print nothing."""
