"""Penn-Fudan validation figures of an instance model (by default the shipped one), its speed, overlays on
real photos, and the validation curves of training runs, for docs/instance.md.

Prints one JSON line per measurement: COCO mask / box AP, AP50, AP75 on the validation split of the
config (configs/pennfudan/*.yaml: the seeded 24-image split of the 119 photos), then images/s of the
stored model on those photos (one at a time, at their own size, fp32, 2 threads).

    python benchmarks/pennfudan_eval.py --model runs/pennfudan_mask_rcnn/best.safetensors
    python benchmarks/pennfudan_eval.py --model runs/pennfudan_yolact/best.safetensors --config configs/pennfudan/yolact.yaml
    python benchmarks/pennfudan_eval.py --overlays 4 --overlay-out docs/img/pennfudan_overlays.jpg \
        --curves runs/pennfudan_mask_rcnn runs/pennfudan_yolact --curve-out docs/img/pennfudan_curves.png
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

import seglab
from seglab.config import load_config
from seglab.data import InstanceEvalTransform, build_dataset
from seglab.engine.evaluation import evaluate_model
from seglab.engine.runtime import Runtime
from seglab.inference.instances import predict_instances
from seglab.structures import InstanceResult
from seglab.tasks import task_for_model
from seglab.tasks.instance import SUMMARY
from seglab.viz import draw_instances


def write_overlays(model, dataset, indices, path: Path, score_threshold: float) -> None:
    """One row per photo: ground truth (left) and prediction (right), scaled to a common height."""
    rows, height = [], 300
    for i in indices:
        image, target = dataset.read_raw(i)
        x, _ = dataset[i]
        pred = predict_instances(model, x)
        gt = InstanceResult(boxes=torch.as_tensor(target["boxes"]), scores=torch.ones(len(target["labels"])),
                            labels=torch.as_tensor(target["labels"]), masks=torch.as_tensor(target["masks"]))
        pair = [draw_instances(image, r, dataset.classes, score_threshold) for r in (gt, pred)]
        pair = [p.resize((round(p.width * height / p.height), height)) for p in pair]
        rows.append(np.concatenate([np.array(p) for p in pair], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, quality=90)


def plot_curves(run_dirs: list[Path], out_png: Path) -> None:
    """Validation mask AP and AP50 against epochs of each run's metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for run in run_dirs:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        rows = [r for r in rows if r.get("val_mask_AP") is not None]
        name = run.name.replace("pennfudan_", "")
        for key, style in (("val_mask_AP50", "o-"), ("val_mask_AP", "s--")):
            ax.plot([r["epoch"] for r in rows], [100 * r[key] for r in rows], style, label=f"{name} {key[4:]}")
    finish_plot(fig, ax, out_png, xlabel="epoch (95 training photos)", ylabel="validation AP (%)", legend_size=7)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mask_rcnn_resnet18_fpn.pennfudan",
                   help="shipped name or model file (e.g. runs/pennfudan_mask_rcnn/best.safetensors)")
    p.add_argument("--config", default="configs/pennfudan/mask_rcnn.yaml", help="names the data and its split")
    p.add_argument("--root", default=None, help="Penn-Fudan folder (default: the config's data.root, else "
                   "../shared/data/pennfudan)")
    p.add_argument("--runs", type=int, default=1, help="timed passes over the validation photos")
    p.add_argument("--overlays", type=int, default=0)
    p.add_argument("--overlay-out", type=Path, default=Path("docs/img/pennfudan_overlays.jpg"))
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--curves", type=Path, nargs="*", default=[])
    p.add_argument("--curve-out", type=Path, default=Path("docs/img/pennfudan_curves.png"))
    args = p.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(args.config)
    model = seglab.load_model(args.model)
    meta = model.seglab_config
    root = args.root or cfg.data.root or "../shared/data/pennfudan"
    val = build_dataset(cfg.data.name, root=root, split=cfg.data.val_split,
                        transform=InstanceEvalTransform(meta["mean"], meta["std"]), **cfg.data.kwargs)
    base = {"model": str(args.model), "images": len(val), "machine": cpu_name(), "threads": torch.get_num_threads()}
    _, results = evaluate_model(task_for_model(meta["name"]), model, val, cfg.eval, Runtime(torch.device("cpu")),
                                model_config=meta)
    print(json.dumps({**base, **{k: round(100 * results[k], 2) for k in SUMMARY}}), flush=True)
    images = [val[i][0] for i in range(len(val))]
    with torch.inference_mode():
        predict_instances(model, images[0])  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.runs):
            for x in images:
                predict_instances(model, x)
    ips = args.runs * len(images) / (time.perf_counter() - t0)
    sizes = np.array([x.shape[1:] for x in images])
    print(json.dumps({**base, "images_per_s": round(ips, 2), "median_size_hw": np.median(sizes, 0).tolist()}),
          flush=True)
    if args.overlays:
        picks = np.linspace(0, len(val) - 1, args.overlays).round().astype(int).tolist()
        write_overlays(model, val, picks, args.overlay_out, args.score_thresh)
        print(json.dumps({"overlays": str(args.overlay_out), "indices": picks}))
    if args.curves:
        plot_curves(args.curves, args.curve_out)
        print(json.dumps({"curves": str(args.curve_out)}))


if __name__ == "__main__":
    main()
