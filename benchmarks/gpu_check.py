"""GPU check of the engine: what the CPU-only CI cannot run. Needs CUDA; prints one JSON line per check.

1. the demo (synthetic data, BiSeNet V2) trained on CUDA in fp32, bf16 and fp16 (fp16 with the gradient
   scaler), a few epochs each: images/s, final val mIoU, peak GPU memory;
2. DDP with torchrun: the same config with 1 process and, when the machine has 2 or more GPUs, 2 processes
   (nccl), images/s and the loss curves side by side;
3. prediction on CUDA of the trained model (`seglab predict`), images/s, and the labels compared with a
   CPU prediction of the same file (trained on a GPU, predicted on a CPU);
4. a checkpoint written on CUDA resumed on the CPU (`--device cpu --resume`).

    python benchmarks/gpu_check.py [--out runs/gpu_check] [--epochs 6]

Without CUDA it says so and exits 0 (nothing to measure here).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        emit(check="command failed", cmd=" ".join(cmd), stderr=proc.stderr[-2000:])
        raise SystemExit(1)
    proc.seconds = time.perf_counter() - t0
    return proc


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def images_per_s(rows: list[dict], global_batch: int) -> float:
    """Training images per second over the epochs after the first (start-up, cudnn autotuning)."""
    if len(rows) < 2:
        return round(rows[0]["iteration"] * global_batch / rows[0]["epoch_time_s"], 1)
    steps = rows[-1]["iteration"] - rows[0]["iteration"]
    return round(steps * global_batch / sum(r["epoch_time_s"] for r in rows[1:]), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu_check")
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args()
    if not torch.cuda.is_available():
        emit(check="cuda", available=False, note="no CUDA device: nothing to check on this machine")
        return
    out = Path(args.out)
    seglab = [sys.executable, "-m", "seglab"]
    emit(check="cuda", available=True, device=torch.cuda.get_device_name(0), count=torch.cuda.device_count(),
         torch=torch.__version__)

    from seglab.data import generate_synthetic

    data = generate_synthetic(out / "data")
    cfg = Path(__file__).resolve().parents[1] / "src" / "seglab" / "configs" / "demo.yaml"
    batch = 8
    common = [f"data.root={data}", f"train.epochs={args.epochs}", f"data.batch_size={batch}", "train.device=cuda"]
    for precision in ("fp32", "bf16", "fp16"):
        run_dir = out / f"demo_{precision}"
        torch.cuda.reset_peak_memory_stats()
        proc = run([*seglab, "train", str(cfg), *common, f"train.precision={precision}", f"train.out_dir={run_dir}"])
        rows = history(run_dir)
        emit(check="train", precision=precision, processes=1, images_per_s=images_per_s(rows, batch),
             val_mIoU=rows[-1].get("val_mIoU"), losses=[round(r["train_loss"], 4) for r in rows],
             wall_s=round(proc.seconds, 1))

    n = min(2, torch.cuda.device_count())
    if n >= 2:
        run_dir = out / "ddp2"
        proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "-m",
                    "seglab", "train", str(cfg), *common, f"data.batch_size={batch // n}", "train.precision=bf16",
                    "train.sync_bn=true", f"train.out_dir={run_dir}"])
        rows = history(run_dir)
        emit(check="train", precision="bf16", processes=n, sync_bn=True, images_per_s=images_per_s(rows, batch),
             val_mIoU=rows[-1].get("val_mIoU"), losses=[round(r["train_loss"], 4) for r in rows],
             wall_s=round(proc.seconds, 1))
    else:
        emit(check="ddp", processes=2, skipped="one GPU: a 2-process nccl run needs two")

    best = out / "demo_bf16" / "best.safetensors"
    images = sorted((data / "images").glob("val_*.png"))
    for device in ("cuda", "cpu"):
        pred = out / f"predict_{device}"
        proc = run([*seglab, "predict", "--checkpoint", str(best), str(data / "images"), "--out", str(pred),
                    "--device", device])
        emit(check="predict", device=device, images=len(list((data / "images").glob("*.png"))),
             wall_s=round(proc.seconds, 1))
    same = [np.array_equal(np.array(Image.open(out / "predict_cuda" / f"{f.stem}.png")),
                           np.array(Image.open(out / "predict_cpu" / f"{f.stem}.png"))) for f in images]
    agree = np.mean([np.mean(np.array(Image.open(out / "predict_cuda" / f"{f.stem}.png"))
                             == np.array(Image.open(out / "predict_cpu" / f"{f.stem}.png"))) for f in images])
    emit(check="cuda vs cpu labels", identical_images=int(sum(same)), images=len(images),
         pixel_agreement=round(float(agree), 6))

    resume_dir = out / "demo_fp16"
    proc = run([*seglab, "train", str(cfg), *common, "train.precision=fp16", f"train.out_dir={resume_dir}",
                f"train.epochs={args.epochs + 1}", "--resume", "--device", "cpu"],
               env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    emit(check="resume on cpu", ok="resumed from" in proc.stdout, epochs=len(history(resume_dir)))


if __name__ == "__main__":
    main()
