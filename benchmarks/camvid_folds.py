"""The sequence-held-out figures of a CamVid recipe (docs/camvid.md, "Validation protocol"): one training
run per held-out sequence (train on the other two, validate on it), read back from the runs' folders.

For each run: the validation mIoU at every validated epoch (its metrics.jsonl), then its best.safetensors
evaluated again on the held-out images with per-class IoU, as the model would predict them (its stored
settings: whole image, no test-time augmentation), and the held-out images' mean pixel value. Prints one JSON line per fold and one for the mean
over the folds, and plots the folds' validation curves.

    python benchmarks/camvid_folds.py runs/camvid_fold_0001TP runs/camvid_fold_0006R0 runs/camvid_fold_0016E5 \
        --root /path/to/camvid --plot docs/img/camvid_folds.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import yaml
from plots import finish_plot

import seglab
from seglab.data import CamVid, EvalTransform
from seglab.engine import evaluate
from seglab.hub import read_model_metadata
from seglab.inference import build_predictor


def validation_curve(run: Path) -> list[tuple[int, float]]:
    """(epoch, val mIoU in %) for every validated epoch of a run."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["epoch"], 100 * r["val_mIoU"]) for r in rows if "val_mIoU" in r]


def held_out_name(val_split: str) -> str:
    """`configs/camvid/folds/only_0001TP.txt` -> `0001TP`."""
    return Path(val_split).stem.removeprefix("only_")


def evaluate_fold(run: Path, root: Path) -> dict:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    val_split = cfg["data"]["val_split"]
    model = seglab.load_model(str(run / "best.safetensors"))
    meta = model.seglab_config
    dataset = CamVid(root, split=val_split, transform=EvalTransform(meta["mean"], meta["std"]))
    metrics = evaluate(model, dataset, num_classes=dataset.num_classes, predictor=build_predictor(model),
                       progress=True).compute()
    curve = validation_curve(run)
    # how dark the held-out street is (0-255): a dusk sequence is a different problem from a new daylight one
    brightness = float(np.mean([dataset.read_raw(i)[0].mean() for i in range(len(dataset))]))
    return {"held_out": held_out_name(val_split), "run": str(run), "train_split": cfg["data"]["train_split"],
            "images": len(dataset), "mean_pixel_value": round(brightness, 1), "epochs": cfg["train"]["epochs"], "best_epoch": read_model_metadata(run / "best.safetensors").get("epoch"),
            "curve": [[e, round(m, 2)] for e, m in curve], "last_epoch_mIoU": round(curve[-1][1], 2),
            "mIoU": round(100 * metrics["mIoU"], 2), "aAcc": round(100 * metrics["aAcc"], 2),
            "IoU": {name: round(100 * iou, 2) for name, iou in zip(dataset.classes, metrics["IoU"])}}


def plot(folds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for fold in folds:
        epochs, values = zip(*fold["curve"])
        ax.plot(epochs, values, "o-", label=f"{fold['held_out']} held out ({fold['images']} images)")
    finish_plot(fig, ax, path, xlabel="epoch", ylabel="mIoU on the held-out sequence (%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="train.out_dir of each fold's run")
    p.add_argument("--root", type=Path, default=Path("../shared/data/camvid"), help="CamVid folder")
    p.add_argument("--plot", type=Path, default=None, help="write the folds' validation curves here (PNG)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    folds = []
    for run in args.runs:
        if not (run / "best.safetensors").is_file():
            raise SystemExit(f"camvid_folds: {run} has no best.safetensors (is the run finished?)")
        folds.append(evaluate_fold(run, args.root))
        print(json.dumps(folds[-1]), flush=True)
    classes = list(folds[0]["IoU"])
    mean = {"held_out": "mean over folds", "folds": [f["held_out"] for f in folds],
            "mIoU": round(float(np.mean([f["mIoU"] for f in folds])), 2),
            "last_epoch_mIoU": round(float(np.mean([f["last_epoch_mIoU"] for f in folds])), 2),
            "IoU": {c: round(float(np.mean([f["IoU"][c] for f in folds])), 2) for c in classes}}
    print(json.dumps(mean), flush=True)
    if args.plot:
        plot(folds, args.plot)
        print(json.dumps({"plot": str(args.plot)}))


if __name__ == "__main__":
    main()
