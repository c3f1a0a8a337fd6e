"""Inference and training speed of seglab models, measured against this machine's own matmul peak.

Prints one JSON line per measurement. First the peak: a large fp32 (and bf16) matmul's GFLOP/s with the
same thread count; then, per model, eval-mode forward latency at a given size, the FLOPs counted by
torch's FlopCounterMode (2 per multiply-add), the achieved GFLOP/s and its share of the peak, for three
execution variants: the plain fp32 baseline, channels_last, and bf16 autocast with channels_last.

    python benchmarks/speed.py                          # default models at 360x480, 2 threads
    python benchmarks/speed.py --models bisenetv2 unet --size 360 480 --runs 5
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import seglab

DEFAULT_MODELS = {
    "bisenetv2": {},
    "bisenetv2@demo": {"width_mult": 0.5, "head_channels": 64},
    "unet": {},
    "segnet_vgg16": {},
    "fcn8s_vgg16": {},
    "fcn_resnet50": {},
}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def best_of_interleaved(fns: dict, runs: int) -> dict:
    """Minimum wall time (s) of each callable over `runs` rounds, the callables taking turns within each
    round (after one warm-up call each): a before/after pair then sees the same machine load, and the
    minimum is the least disturbed run on a shared machine."""
    for fn in fns.values():
        fn()
    best = {name: math.inf for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def matmul_peak(dtype: torch.dtype, n: int = 2048, runs: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, runs) / 1e9


def count_flops(model, x) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def bench_model(name: str, kwargs: dict, size, num_classes: int, runs: int, peak: dict, machine: dict):
    arch = name.split("@")[0]
    model = seglab.create_model(arch, num_classes=num_classes, **kwargs).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 3, *size)
    flops = count_flops(model, x)
    variants = {
        "fp32": (model, x, False),
        "fp32+channels_last": (model.to(memory_format=torch.channels_last),
                               x.contiguous(memory_format=torch.channels_last), False),
        "bf16+channels_last": (model, x.contiguous(memory_format=torch.channels_last), True),
    }
    for variant, (m, inp, bf16) in variants.items():
        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                m(inp)
        sec = timed(run, runs)
        gflops = flops / sec / 1e9
        ref = peak["bf16"] if bf16 else peak["fp32"]
        print(json.dumps({"bench": "inference", "model": name, "kwargs": kwargs, "variant": variant,
                          "size": list(size), "num_classes": num_classes, "params_M": round(params / 1e6, 3),
                          "GFLOPs_per_image": round(flops / 1e9, 2), "latency_ms": round(1000 * sec, 1),
                          "images_per_s": round(1 / sec, 2), "achieved_GFLOP_s": round(gflops, 1),
                          "fraction_of_matmul_peak": round(gflops / ref, 3), **machine}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    p.add_argument("--size", nargs=2, type=int, default=[360, 480])
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    machine = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__}
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(json.dumps({"bench": "matmul_peak", "n": 2048, "fp32_GFLOP_s": round(peak["fp32"], 1),
                      "bf16_GFLOP_s": round(peak["bf16"], 1), **machine}), flush=True)
    for name in args.models:
        bench_model(name, DEFAULT_MODELS.get(name, {}), tuple(args.size), args.num_classes, args.runs, peak, machine)


if __name__ == "__main__":
    main()
