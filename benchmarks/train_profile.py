"""Where a training step's time goes, for any config: data loading, forward, loss, backward and the
optimizer step, timed over real iterations, then torch.profiler's top operators.

Prints one JSON line per measurement (seconds per iteration and share of the step).

    python benchmarks/train_profile.py configs/camvid/bisenetv2.yaml --iters 12
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from speed import cpu_name
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

from seglab.config import load_config
from seglab.engine import build_datasets
from seglab.tasks.base import build_model_for
from seglab.losses import SegmentationLoss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--iters", type=int, default=12, help="timed iterations (after 2 warm-up)")
    p.add_argument("--top", type=int, default=12, help="operators listed from the profiler")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    t, d = cfg.train, cfg.data
    train_ds, _ = build_datasets(cfg)
    model = build_model_for(cfg, train_ds.num_classes).train()
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = SegmentationLoss(ignore_index=train_ds.ignore_index, aux_weight=t.aux_weight,
                                 ohem_thresh=t.ohem.thresh if t.ohem else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr)
    loader = iter(DataLoader(train_ds, batch_size=d.batch_size, shuffle=True, drop_last=True,
                             num_workers=d.num_workers))
    phases = {"data": 0.0, "forward": 0.0, "loss": 0.0, "backward": 0.0, "optimizer": 0.0}

    def step(timed: bool) -> None:
        marks = [time.perf_counter()]
        batch = next(loader)
        images = batch["image"].contiguous(memory_format=torch.channels_last) if t.channels_last else batch["image"]
        marks.append(time.perf_counter())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.bf16):
            out = model(images)
        marks.append(time.perf_counter())
        out = {"out": out["out"].float(), "aux": [a.float() for a in out.get("aux") or []]} \
            if isinstance(out, dict) else out.float()
        loss = criterion(out, batch["mask"])["loss"]
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if timed:
            for name, a, b in zip(phases, marks, marks[1:]):
                phases[name] += b - a

    for _ in range(2):
        step(False)
    for _ in range(args.iters):
        step(True)
    total = sum(phases.values())
    common = {"config": args.config, "machine": cpu_name(), "threads": torch.get_num_threads(),
              "batch_size": d.batch_size, "crop_size": list(d.crop_size), "bf16": t.bf16}
    for name, seconds in phases.items():
        print(json.dumps({**common, "phase": name, "s_per_iter": round(seconds / args.iters, 4),
                          "share": round(seconds / total, 3)}))
    print(json.dumps({**common, "phase": "step", "s_per_iter": round(total / args.iters, 4),
                      "images_per_s": round(args.iters * d.batch_size / total, 2)}))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step(False)
    for e in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:args.top]:
        print(json.dumps({**common, "op": e.key, "self_cpu_ms_per_iter": round(e.self_cpu_time_total / 3e3, 2),
                          "calls_per_iter": e.count // 3}))


if __name__ == "__main__":
    main()
