"""Training images/s of a config with one process and with N processes (torchrun, gloo on the CPU or nccl
on GPUs), the global batch kept equal: one JSON line per run.

Each run is `seglab train CONFIG` for --epochs epochs (validation only at the end, not timed); images/s is
taken from metrics.jsonl over the epochs after the first (the first pays for start-up). On a CPU the
threads are shared out: one process gets --threads, N processes get --threads // N each, so both runs use
the same cores.

    python benchmarks/distributed_speed.py src/seglab/configs/demo.yaml data.root=seglab_demo/data --epochs 3
    python benchmarks/distributed_speed.py configs/camvid/bisenetv2.yaml data.root=../shared/data/camvid --epochs 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from speed import cpu_name

from seglab.config import load_config


def images_per_s(out: Path, global_batch: int) -> float:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = rows[1:] or rows
    steps = rows[-1]["iteration"] - (rows[0]["iteration"] if len(rows) > 1 else 0)
    return round(steps * global_batch / sum(r["epoch_time_s"] for r in steady), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all (default 2)")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    batch = cfg.data.batch_size
    if batch % args.processes:
        raise SystemExit(f"data.batch_size {batch} is not divisible by {args.processes} processes")
    common = [*args.overrides, f"train.epochs={args.epochs}", f"train.val_interval={args.epochs}",
              "train.max_minutes=null", "train.val_every_minutes=null"]
    for n in (1, args.processes):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // n))}
            launch = [sys.executable, "-m", "seglab"] if n == 1 else \
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "-m", "seglab"]
            cmd = [*launch, "train", args.config, *common, f"data.batch_size={batch // n}", f"train.out_dir={tmp}"]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            print(json.dumps({"config": args.config, "processes": n, "threads_per_process": env["OMP_NUM_THREADS"],
                              "global_batch": batch, "images_per_s": images_per_s(Path(tmp), batch),
                              "machine": cpu_name()}), flush=True)


if __name__ == "__main__":
    main()
