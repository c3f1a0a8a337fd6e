"""CamVid validation figure and inference speed of a packed seglab model (by default the shipped
`bisenetv2.camvid`), plus prediction overlays for the docs.

Prints one JSON line per measurement: the val metrics (mIoU, per-class IoU, pixel accuracy) with the
model's stored prediction settings (or --tta), then images/s at 360x480 on this machine for the
plain fp32 forward, bf16 autocast, and the stored settings.

    python benchmarks/camvid_eval.py --root ../shared/data/camvid
    python benchmarks/camvid_eval.py --model runs/x/packed.safetensors --overlays 4 --overlay-out docs/img/camvid_overlays.png
    python benchmarks/camvid_eval.py --model runs/camvid_fold_0006R0/best.safetensors \
        --split configs/camvid/folds/only_0006R0.txt --overlays 4   # a model on a street it never saw
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from plots import finish_plot
from speed import cpu_name
from tqdm import tqdm

import seglab
from seglab.data import CamVid, EvalTransform
from seglab.engine import evaluate
from seglab.inference import build_predictor, parse_tta_spec
from seglab.viz import overlay


def images_per_second(predictor, x: torch.Tensor, runs: int) -> float:
    with torch.inference_mode():
        predictor.predict(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(runs):
            predictor.predict(x)
    return runs / (time.perf_counter() - t0)


def write_overlays(predictor, dataset, palette, indices, path: Path) -> None:
    """One row per image: the image, the ground truth and the prediction (overlaid on the image)."""
    rows = []
    for i in indices:
        image, mask = dataset.read_raw(i)
        pred = predictor.predict(dataset[i]["image"][None])[0]
        rows.append(np.concatenate([image, np.array(overlay(image, mask, palette, alpha=0.6)),
                                    np.array(overlay(image, pred.numpy(), palette, alpha=0.6))], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def time_to_accuracy(metrics_jsonl: Path, out_png: Path, marks=(52.0, 60.0)) -> list[dict]:
    """Val mIoU against summed training minutes (validation time excluded) from a run's metrics.jsonl;
    plots it with the milestone lines and returns the validated points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    minutes, points = 0.0, []
    for r in rows:
        minutes += r["epoch_time_s"] / 60
        if "val_mIoU" in r:
            points.append({"epoch": r["epoch"], "train_minutes": round(minutes, 1), "val_mIoU": round(100 * r["val_mIoU"], 2)})
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.plot([p["train_minutes"] for p in points], [p["val_mIoU"] for p in points], "o-", label="val mIoU (360x480)")
    for m, style in zip(marks, ("--", ":")):
        ax.axhline(m, color="gray", linestyle=style, linewidth=1)
        ax.text(1, m + 0.4, f"{m:g}", color="gray", fontsize=8)
    finish_plot(fig, ax, out_png, xlabel="training minutes (2 CPU cores, validation excluded)", ylabel="mIoU (%)",
                legend_size=10)
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bisenetv2.camvid", help="shipped model name or packed model file")
    p.add_argument("--root", default="../shared/data/camvid", help="CamVid folder (SegNet layout)")
    p.add_argument("--split", default="val",
                   help="val, or a list file such as configs/camvid/folds/only_0006R0.txt (a held-out sequence)")
    p.add_argument("--tta", default=None, help="override the stored prediction settings, e.g. none or flip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20, help="timed forwards per speed figure (0: skip the speed figures)")
    p.add_argument("--overlays", type=int, default=0, help="write overlays for this many val images")
    p.add_argument("--overlay-out", default="docs/img/camvid_overlays.jpg")
    p.add_argument("--curve", default=None, metavar="METRICS_JSONL",
                   help="also plot val mIoU against training minutes from a run's metrics.jsonl")
    p.add_argument("--curve-out", default="docs/img/camvid_time_to_accuracy.png")
    args = p.parse_args()
    if args.curve:
        points = time_to_accuracy(Path(args.curve), Path(args.curve_out))
        first = next((q for q in points if q["val_mIoU"] >= 52.0), None)
        print(json.dumps({"measure": "time_to_accuracy", "points": points, "first_at_or_above_52": first,
                          "path": args.curve_out}), flush=True)
    torch.set_num_threads(args.threads)

    model = seglab.load_model(args.model)
    meta = model.seglab_config
    stored_tta = (meta.get("inference") or {}).get("tta")
    tta = parse_tta_spec(args.tta) if args.tta is not None else stored_tta
    mean, std = meta.get("mean"), meta.get("std")
    dataset = CamVid(args.root, split=args.split, transform=EvalTransform(mean, std))
    predictor = build_predictor(model, tta=tta)
    common = {"model": args.model, "machine": cpu_name(), "threads": args.threads}

    t0 = time.perf_counter()
    metrics = evaluate(model, dataset, num_classes=dataset.num_classes, predictor=predictor, progress=True).compute()
    per_class = {name: round(100 * iou, 2) for name, iou in zip(dataset.classes, metrics["IoU"])}
    print(json.dumps({**common, "measure": "camvid_val", "split": args.split, "images": len(dataset), "tta": tta,
                      "mIoU": round(100 * metrics["mIoU"], 2), "aAcc": round(100 * metrics["aAcc"], 2),
                      "mAcc": round(100 * metrics["mAcc"], 2), "IoU": per_class,
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)

    if args.runs > 0:  # --runs 0: no speed figures
        x = dataset[0]["image"][None]  # 360x480
        variants = [("fp32", build_predictor(model)), ("bf16", build_predictor(model, bf16=True)),
                    ("stored_settings_fp32", predictor),
                    ("stored_settings_bf16", build_predictor(model, tta=tta, bf16=True))]
        for name, pred in tqdm(variants, desc="speed", leave=False):
            print(json.dumps({**common, "measure": "images_per_s", "variant": name, "size": list(x.shape[-2:]),
                              "images_per_s": round(images_per_second(pred, x, args.runs), 2)}), flush=True)

    if args.overlays:
        indices = np.linspace(0, len(dataset) - 1, args.overlays).round().astype(int).tolist()
        write_overlays(predictor, dataset, [tuple(c) for c in meta["palette"]], indices, Path(args.overlay_out))
        print(json.dumps({**common, "measure": "overlays", "images": indices, "path": args.overlay_out}))


if __name__ == "__main__":
    main()
