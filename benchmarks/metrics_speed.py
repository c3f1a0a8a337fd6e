"""Speed of `SemanticMetrics.update` per megapixel, before and after its narrow-dtype bincount.

One 2048x1024 frame (Cityscapes' size, 2.1 MP), 19 classes with 10% ignored (255) target pixels
(and 150 classes, ADE20K's count, where the combined index needs int32), inputs as int64 (what argmax
gives) and uint8 (what label PNGs give). `before` is the update as it was (inputs widened to int64,
ignored pixels dropped by boolean indexing, a range check on each, an int64 bincount), kept here as the
reference; `after` is `SemanticMetrics.update`. Both confusion matrices must be equal. Each figure is
the minimum over --runs rounds in which the two take turns.

    python benchmarks/metrics_speed.py                  # 2 threads
    python benchmarks/metrics_speed.py --size 512 512 --runs 3
"""
from __future__ import annotations

import argparse
import json

import torch
from speed import best_of_interleaved, cpu_name  # benchmarks/speed.py (its folder is on sys.path)

from seglab.metrics import SemanticMetrics


def old_update(confusion: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, ignore_index: int = 255):
    """`SemanticMetrics.update` before this change (the simple path): every step one full copy."""
    c = confusion.shape[0]
    pred, target = pred.long().reshape(-1), target.long().reshape(-1)
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    for name, x in (("target", target), ("pred", pred)):
        bad = (x < 0) | (x >= c)
        if bool(bad.any()):
            raise ValueError(f"{name} has values {torch.unique(x[bad])[:5].tolist()} outside [0, {c})")
    confusion += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=(1024, 2048))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    machine = {"machine": cpu_name(), "threads": args.threads, "torch": torch.__version__}
    h, w = args.size
    mp = h * w / 1e6
    g = torch.Generator().manual_seed(0)
    for num_classes in (19, 150):
        target = torch.randint(0, num_classes, (h, w), generator=g)
        target[torch.rand(h, w, generator=g) < 0.1] = 255
        pred = torch.where(torch.rand(h, w, generator=g) < 0.8, target.clamp_max(num_classes - 1),
                           torch.randint(0, num_classes, (h, w), generator=g))
        for dtype in (torch.int64, torch.uint8):
            p_, t_ = pred.to(dtype), target.to(dtype)
            old = torch.zeros(num_classes, num_classes, dtype=torch.int64)
            new = SemanticMetrics(num_classes, ignore_index=255)
            best = best_of_interleaved({"before": lambda: old_update(old, p_, t_),
                                        "after": lambda: new.update(p_, t_)}, args.runs)
            before, after = 1000 * best["before"], 1000 * best["after"]
            old.zero_(), new.reset()
            old_update(old, p_, t_)
            new.update(p_, t_)
            print(json.dumps({"bench": "semantic_metrics_update", "classes": num_classes,
                              "dtype": str(dtype).replace("torch.", ""), "size": [h, w],
                              "before_ms_per_MP": round(before / mp, 3), "after_ms_per_MP": round(after / mp, 3),
                              "speedup": round(before / after, 1), "same_confusion": torch.equal(old, new.confusion),
                              **machine}), flush=True)


if __name__ == "__main__":
    main()
