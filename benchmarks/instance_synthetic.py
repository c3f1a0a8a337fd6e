"""Time to accuracy of an instance model on the synthetic set: mask AP50 against minutes of training.

Trains the config's model with the engine (`seglab.engine.train`, the code behind
`seglab train`) for at most --minutes of TRAINING time (`train.max_minutes`; validation is not counted),
validating at the end of the first epoch after every --val-every-minutes of training time
(`train.val_every_minutes`) and once more at the end. The synthetic set (`seglab.data.generate_synthetic`
defaults: 160 train + 40 val images of 128x128, 3 thing classes) is generated first when data.root has
none. The config's schedule still applies (the poly learning rate decays over train.epochs), so a config
meant for this benchmark sizes train.epochs to end near --minutes on the machine it targets.

Prints one JSON line per validation point ({"model", "train_minutes", "iteration", "mask_AP50", "mask_AP",
"box_AP50", "loss"}: the epoch's mean training loss), then a summary line ({"model",
"minutes_to_mask_AP50_0.8": training minutes at the first point with mask AP50 >= 0.8, null if none,
"best_mask_AP50", "machine"}), and writes the curve to <out>/instance_curve.png. Training progress goes to
stderr. Timings are this run's own; nothing is checked against a threshold here.

    python benchmarks/instance_synthetic.py configs/synthetic/affinity.yaml --minutes 15 --out /tmp/bench
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from speed import cpu_name

from seglab.config import load_config
from seglab.engine import train as train_any_task

TARGET_AP50 = 0.8


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None or math.isnan(v) else round(v, digits)


def plot_curve(points: list[dict], path: Path, title: str, series: Sequence[tuple[str, str, str]],
               target_key: str, target: float) -> None:
    """The `series` ((key, style, label), values in [0, 1]) in % against training minutes, with the target."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = [p["train_minutes"] for p in points]
    for key, style, label in series:
        ax.plot(x, [100 * (p[key] if p[key] is not None else math.nan) for p in points], style, label=label)
    ax.axhline(100 * target, color="tab:red", linestyle=":", label=f"target {target_key} {100 * target:.0f}")
    ax.set_xlabel("training minutes (validation excluded)")
    ax.set_ylabel("val (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def parse_args(minutes: float, val_every: float) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--minutes", type=float, default=minutes, help=f"training-time budget (default {minutes:g})")
    p.add_argument("--val-every-minutes", type=float, default=val_every, help="validation interval in training minutes")
    p.add_argument("--out", default=None, help="output folder (default: runs/bench_<model>)")
    p.add_argument("--data-root", default=None, help="synthetic data folder (default: the config's data.root)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    return p.parse_args()


def run_benchmark(args: argparse.Namespace, train: Callable, *, point_keys: Sequence[str], target_key: str,
                  target: float, summary_keys: Sequence[str], series: Sequence[tuple[str, str, str]],
                  curve_name: str) -> None:
    """Train with `train(cfg, progress, log, on_epoch)` under the time budget; print a JSON line per
    validation ({"model", "train_minutes", "iteration", *point_keys, "loss"}) and the summary line
    ({"model", "minutes_to_<target_key>_<target>", "best_<target_key>", the best point's summary_keys,
    "machine"}); write the curve."""
    torch.set_num_threads(args.threads)
    name = load_config(args.config, args.overrides).model.name
    overrides = [*args.overrides, f"train.max_minutes={args.minutes}",
                 f"train.val_every_minutes={args.val_every_minutes}",
                 f"train.out_dir={args.out or f'runs/bench_{name}'}"]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    cfg = load_config(args.config, overrides)
    root = Path(cfg.data.root)
    if cfg.data.name.startswith("synthetic") and not (root / "meta.json").is_file():
        from seglab.data import generate_synthetic

        print(f"generating the synthetic data set in {root}", file=sys.stderr)
        generate_synthetic(root)

    points: list[dict] = []

    def record(entry: dict) -> None:
        if f"val_{target_key}" not in entry:
            return
        point = {"model": name, "train_minutes": round(entry["train_minutes"], 3), "iteration": entry["iteration"],
                 **{k: _round(entry[f"val_{k}"]) for k in point_keys}, "loss": _round(entry["train_loss"])}
        points.append(point)
        print(json.dumps(point), flush=True)

    result = train(cfg, progress=False, log=lambda m: print(m, file=sys.stderr, flush=True), on_epoch=record)
    scored = [p for p in points if p[target_key] is not None]
    reached = [p["train_minutes"] for p in scored if p[target_key] >= target]
    best = max(scored, key=lambda p: p[target_key]) if scored else None
    machine = {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps({"model": name, f"minutes_to_{target_key}_{target}": reached[0] if reached else None,
                      f"best_{target_key}": best and best[target_key],
                      **{k: best and best[k] for k in summary_keys}, "machine": machine}), flush=True)
    if points:
        curve = result.out_dir / curve_name
        plot_curve(points, curve, f"{name} on {cfg.data.name}: {machine['cpu']}, torch threads {machine['torch_threads']}",
                   series, target_key, target)
        print(f"curve: {curve}", file=sys.stderr)


def main() -> None:
    run_benchmark(parse_args(15.0, 1.5), train_any_task, point_keys=("mask_AP50", "mask_AP", "box_AP50"),
                  target_key="mask_AP50", target=TARGET_AP50, summary_keys=(),
                  series=(("mask_AP50", "o-", "mask AP50"), ("mask_AP", ".--", "mask AP")),
                  curve_name="instance_curve.png")


if __name__ == "__main__":
    main()
