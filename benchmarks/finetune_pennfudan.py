"""Fine-tuning the shipped `bisenetv2.camvid` against training from scratch, on a small new task, for the
same training minutes: Penn-Fudan pedestrians as one semantic class ("person" vs "background").

Data: the 119 Penn-Fudan images of ../shared/data/pennfudan (instance masks, 0 = background, k > 0 =
pedestrian k), split 75/25 with `seglab data convert --split 0.75 --seed 0` (89 train, 30 val) and
relabelled to two classes with `data.kwargs.label_map` (every instance id -> 1), exactly the custom-data
path of docs/custom_data.md. Every run uses the same recipe (BiSeNet V2 at full width, 256x256 crops at
0.5-1.0x, batch 8, AdamW, poly decay over --epochs, bf16 autocast); they differ only in where the weights
start:
- scratch: the entrypoint's initialisation;
- finetune: `model.weights=bisenetv2.camvid model.reinit_heads=true` (trunk, aggregation and head conv
  from CamVid; the 2-class classifier and the auxiliary heads re-initialised);
- finetune_lr0.1: the same with `train.backbone_lr_mult=0.1` (the detail and semantic branches learn 10x
  slower).
Every run trains the same number of steps (--epochs of 11 steps), so every run does the same computation:
the same steps are the same minutes. The minutes on the curves are epochs x --epoch-seconds, by default
the fastest epoch seen in these runs (a shared machine only slows a run down, so the minimum is the
closest to the machine to itself); the measured time of every epoch is printed too. Validation (every epoch, not counted) is on
the 30 val images at full size. Prints one JSON line per validation point ({"run", "epoch",
"train_minutes": as measured, "mIoU": over the two classes, "loss", "epoch_time_s"}) and a summary line per
run ({"run", "best_mIoU", "best_epoch", "best_person_IoU": the person class's IoU of the best model,
"final_mIoU", "epochs", "machine"}); writes the curves to --plot.

    /work/bin/cpujob timing python benchmarks/finetune_pennfudan.py --epochs 11 --out /tmp/ft \
        --plot docs/img/finetune_pennfudan.png
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from speed import cpu_name

from seglab.config import config_from_dict
from seglab.data.convert import convert_folder
from seglab.engine import evaluate_checkpoint, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pennfudan"
RUNS = {"scratch": [], "finetune": ["model.weights=bisenetv2.camvid", "model.reinit_heads=true"],
        "finetune_lr0.1": ["model.weights=bisenetv2.camvid", "model.reinit_heads=true", "train.backbone_lr_mult=0.1"]}


def recipe(root: Path, out: Path, epochs: int) -> dict:
    return {
        "model": {"name": "bisenetv2"},
        "data": {"name": "folder", "root": str(root), "crop_size": [256, 256], "scale_range": [0.5, 1.0],
                 "batch_size": 8, "num_workers": 0,
                 "kwargs": {"classes": ["background", "person"], "label_map": {k: 1 for k in range(1, 32)}}},
        "train": {"epochs": epochs, "optimizer": "adamw", "lr": 0.004, "weight_decay": 1e-4, "warmup_iters": 20,
                  "precision": "bf16", "channels_last": True, "val_interval": 1, "out_dir": str(out)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(SHARED), help="the Penn-Fudan folder (PNGImages, PedMasks)")
    ap.add_argument("--out", required=True, help="work folder: the converted data and one run folder per run")
    ap.add_argument("--epochs", type=int, default=11, help="epochs per run (11 steps of 8 images each)")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
    ap.add_argument("--plot", default=None, help="PNG with the curves")
    ap.add_argument("--epoch-seconds", type=float, default=None,
                    help="seconds of one epoch for the minutes axis (default: the fastest epoch of these runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = Path(args.out)
    data = out / "pennfudan"
    if not (data / "images" / "train").is_dir():
        convert_folder(args.src, data, images="PNGImages", masks="PedMasks", mask_suffix="_mask", split=0.75,
                       seed=0, log=lambda m: print(m, file=sys.stderr))
    curves: dict[str, list[dict]] = {}
    for run in args.runs.split(","):
        cfg = config_from_dict(recipe(data, out / run, args.epochs), RUNS[run])
        points: list[dict] = []

        def on_epoch(entry: dict, run=run, points=points) -> None:
            if "val_mIoU" in entry:
                p = {"run": run, "epoch": entry["epoch"], "train_minutes": round(entry["train_minutes"], 3),
                     "mIoU": round(entry["val_mIoU"], 4), "loss": round(entry["train_loss"], 4),
                     "epoch_time_s": entry["epoch_time_s"]}
                points.append(p)
                print(json.dumps(p), flush=True)

        result = train(cfg, log=lambda m: print(m, file=sys.stderr), progress=False, on_epoch=on_epoch)
        summary, results, _ = evaluate_checkpoint(cfg, result.out_dir / "best.safetensors",
                                                  out_dir=result.out_dir / "eval", log=lambda m: None)
        curves[run] = points
        print(json.dumps({"run": run, "best_mIoU": round(result.best_value, 4), "best_epoch": result.best_epoch,
                          "best_person_IoU": round(results["IoU"][1], 4),
                          "final_mIoU": points[-1]["mIoU"] if points else None, "epochs": len(result.history),
                          "machine": cpu_name()}), flush=True)
    epoch_s = args.epoch_seconds or min(p["epoch_time_s"] for ps in curves.values() for p in ps)
    print(json.dumps({"fastest_epoch_s": epoch_s, "steps_per_epoch": 11, "machine": cpu_name()}), flush=True)
    if args.plot:
        plot(curves, Path(args.plot), epoch_s)
    return 0


def plot(curves: dict[str, list[dict]], path: Path, epoch_s: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = {"scratch": "from scratch", "finetune": "fine-tuned from bisenetv2.camvid",
              "finetune_lr0.1": "fine-tuned, backbone_lr_mult 0.1"}
    for run, points in curves.items():
        ax.plot([p["epoch"] * epoch_s / 60 for p in points],
                [100 * p["mIoU"] if not math.isnan(p["mIoU"]) else math.nan for p in points], "o-",
                label=labels.get(run, run))
    ax.set_xlabel(f"training minutes, 2 CPU cores (epochs of 11 steps x {epoch_s:.1f} s)")
    ax.set_ylabel("val mIoU (%), background + person")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Penn-Fudan people (89 train / 30 val images), BiSeNet V2", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    sys.exit(main())
