"""Time to accuracy of an instance model on the synthetic set: mask AP50 against minutes of training.

Trains the config's model with the engine (`seglab.engine.instance.train_instances`, the code behind
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
from pathlib import Path

import torch
from speed import cpu_name

from seglab.config import load_config
from seglab.engine.instance import train_instances

TARGET_AP50 = 0.8


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None or math.isnan(v) else round(v, digits)


def plot_curve(points: list[dict], path: Path, title: str) -> None:
    """Mask AP50 and mask AP (%) against training minutes, with the 80% AP50 target."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = [p["train_minutes"] for p in points]
    for key, style in (("mask_AP50", "o-"), ("mask_AP", ".--")):
        ax.plot(x, [100 * (p[key] if p[key] is not None else math.nan) for p in points], style,
                label=key.replace("_", " "))
    ax.axhline(100 * TARGET_AP50, color="tab:red", linestyle=":", label=f"target AP50 {100 * TARGET_AP50:.0f}")
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--minutes", type=float, default=15.0, help="training-time budget (default 15)")
    p.add_argument("--val-every-minutes", type=float, default=1.5, help="validation interval in training minutes")
    p.add_argument("--out", default=None, help="output folder (default: runs/bench_<model>)")
    p.add_argument("--data-root", default=None, help="synthetic data folder (default: the config's data.root)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    name = load_config(args.config, args.overrides).model.name
    overrides = [*args.overrides, f"train.max_minutes={args.minutes}",
                 f"train.val_every_minutes={args.val_every_minutes}",
                 f"train.out_dir={args.out or f'runs/bench_{name}'}"]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    cfg = load_config(args.config, overrides)
    root = Path(cfg.data.root)
    if cfg.data.name == "synthetic_instances" and not (root / "meta.json").is_file():
        from seglab.data import generate_synthetic

        print(f"generating the synthetic data set in {root}", file=sys.stderr)
        generate_synthetic(root)

    points: list[dict] = []

    def record(entry: dict) -> None:
        if "val_mask_AP50" not in entry:
            return
        point = {"model": name, "train_minutes": round(entry["train_minutes"], 3), "iteration": entry["iteration"],
                 "mask_AP50": _round(entry["val_mask_AP50"]), "mask_AP": _round(entry["val_mask_AP"]),
                 "box_AP50": _round(entry["val_box_AP50"]), "loss": _round(entry["train_loss"])}
        points.append(point)
        print(json.dumps(point), flush=True)

    result = train_instances(cfg, progress=False, log=lambda m: print(m, file=sys.stderr, flush=True),
                             on_epoch=record)
    reached = [p["train_minutes"] for p in points if p["mask_AP50"] is not None and p["mask_AP50"] >= TARGET_AP50]
    ap50 = [p["mask_AP50"] for p in points if p["mask_AP50"] is not None]
    machine = {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps({"model": name, f"minutes_to_mask_AP50_{TARGET_AP50}": reached[0] if reached else None,
                      "best_mask_AP50": max(ap50) if ap50 else None, "machine": machine}), flush=True)
    if points:
        curve = result.out_dir / "instance_curve.png"
        plot_curve(points, curve, f"{name} on {cfg.data.name}: {machine['cpu']}, torch threads {machine['torch_threads']}")
        print(f"curve: {curve}", file=sys.stderr)


if __name__ == "__main__":
    main()
