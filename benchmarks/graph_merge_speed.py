"""Speed of the affinity graph merge (`seglab.inference.graph_merge`, Liu et al., ECCV 2018).

Case: one synthetic scene (`seglab.data.synthetic.render_sample`) at --size (default 256x512): its
instance map gives perfect affinities (`seglab.losses.affinity.affinity_targets`) at the paper's
distances {1, ..., 64}, blurred into probabilities by logit noise (sigmoid(+-3 + N(0, --noise))), and its
class map gives softened class probabilities (background + 3 thing classes). Prints one JSON line per
measurement (minimum over --runs): the whole `graph_merge` with the paper's best settings (PAR, forced
local merge 2, class partition, background excluded), without forced local merge, and with every pixel
a vertex (the worst case: 28 edges per pixel, 3.7M at 256x512); how many ground-truth instances the
merge recovers (IoU >= 0.5). Then a baseline: a plain
sequential merge (priority queue, one merge at a time, pure Python) against `merge_graph` on the same
edges of a smaller scene (--baseline-size, every pixel a vertex), with their agreement.

    python benchmarks/graph_merge_speed.py                       # 256x512, 1 thread
    python benchmarks/graph_merge_speed.py --size 64 128 --runs 2 --baseline-size 24 48
"""
from __future__ import annotations

import argparse
import heapq
import json
import time

import numpy as np
import torch
from speed import cpu_name  # benchmarks/speed.py (the script's folder is on sys.path)

from seglab.data.synthetic import SYNTHETIC_THING_IDS, render_sample
from seglab.inference.graph_merge import (
    PAPER_DISTANCES,
    graph_merge,
    merge_graph,
    pixel_edges,
)
from seglab.losses.affinity import affinity_targets

# The paper's best row as far as we implement it (all refinements but RR); without forced local merge;
# and the worst case, every pixel a vertex (no background, no class partition): 28 edges per pixel.
SETTINGS = {
    "paper": {},
    "no_local_merge": {"local_merge_window": 1},
    "all_pixels": {"background_classes": [], "class_partition": False, "local_merge_window": 1},
}


def make_case(h: int, w: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    sample = render_sample(rng, h, w)
    inst = torch.from_numpy(sample["instances"]).long()
    target, _ = affinity_targets(inst, PAPER_DISTANCES)
    logits = (2 * target[0] - 1) * 3 + noise * torch.from_numpy(rng.standard_normal(target.shape[1:])).float()
    affinity = torch.sigmoid(logits).numpy()
    classes = np.zeros((h, w), dtype=np.int64)  # 0 background, 1..3 the thing classes
    for k, cls in enumerate(SYNTHETIC_THING_IDS, start=1):
        classes[sample["label"] == cls] = k
    onehot = np.eye(4, dtype=np.float32)[classes].transpose(2, 0, 1)
    probs = torch.softmax(torch.from_numpy(4 * onehot + rng.standard_normal(onehot.shape).astype(np.float32)), 0)
    return affinity, probs.numpy(), sample["instances"]


def timed(fn, runs: int) -> tuple[float, object]:
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def recovered(instance_map: np.ndarray, gt: np.ndarray) -> int:
    """Ground-truth instances matched by a predicted one with IoU >= 0.5."""
    hits = 0
    for g in range(1, int(gt.max()) + 1):
        gm = gt == g
        ids, counts = np.unique(instance_map[gm], return_counts=True)
        for i, c in zip(ids, counts):
            if i > 0 and c / (gm.sum() + (instance_map == i).sum() - c) >= 0.5:
                hits += 1
                break
    return hits


def sequential_merge(n: int, src, dst, weight, threshold: float) -> np.ndarray:
    """The plain algorithm: a heap of cluster-pair averages, merge the largest, one at a time."""
    adj: list[dict[int, list[float]]] = [{} for _ in range(n)]
    for u, v, x in zip(src.tolist(), dst.tolist(), weight.tolist()):
        s = adj[u].setdefault(v, [0.0, 0])
        s[0] += x
        s[1] += 1
        adj[v][u] = s
    heap = [(-s / c, u, v) for u in range(n) for v, (s, c) in adj[u].items() if u < v]
    heapq.heapify(heap)
    parent = list(range(n))
    while heap:
        neg, u, v = heapq.heappop(heap)
        if parent[u] != u or parent[v] != v or v not in adj[u]:
            continue
        s, c = adj[u][v]
        if s / c != -neg:
            continue  # stale entry
        if -neg <= threshold:
            break
        keep, gone = min(u, v), max(u, v)
        parent[gone] = keep
        del adj[keep][gone], adj[gone][keep]
        for x, (s2, c2) in adj[gone].items():
            del adj[x][gone]
            t = adj[keep].setdefault(x, [0.0, 0])
            t[0] += s2
            t[1] += c2
            adj[x][keep] = t
            heapq.heappush(heap, (-t[0] / t[1], min(keep, x), max(keep, x)))
        adj[gone] = {}
    roots = np.array(parent)
    while not np.array_equal(roots[roots], roots):
        roots = roots[roots]
    return roots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512))
    parser.add_argument("--baseline-size", type=int, nargs=2, default=(48, 96))
    parser.add_argument("--noise", type=float, default=1.5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    h, w = args.size
    affinity, probs, gt = make_case(h, w, args.noise)
    base = {"machine": cpu_name(), "size": [h, w], "noise": args.noise, "threads": args.threads}
    for setting, kwargs in SETTINGS.items():
        seconds, result = timed(lambda kw=kwargs: graph_merge(affinity, probs, **kw), args.runs)
        found = recovered(result.instance_map.numpy(), gt)
        print(json.dumps({**base, "measure": "graph_merge", "setting": setting, "kwargs": kwargs,
                          "seconds": round(seconds, 4), "instances": int(result.labels.numel()),
                          "gt_instances": int(gt.max()), "gt_recovered": found}), flush=True)

    bh, bw = args.baseline_size
    small_aff, _, _ = make_case(bh, bw, args.noise, seed=1)
    src, dst, weight = pixel_edges(small_aff, PAPER_DISTANCES)  # every pixel a vertex
    fast_s, fast = timed(lambda: merge_graph(bh * bw, src, dst, weight, threshold=0.5), args.runs)
    slow_s, slow = timed(lambda: sequential_merge(bh * bw, src, dst, weight, 0.5), 1)
    print(json.dumps({**base, "measure": "merge_vs_sequential", "size": [bh, bw], "edges": int(src.size),
                      "merge_graph_seconds": round(fast_s, 4), "sequential_python_seconds": round(slow_s, 4),
                      "speedup": round(slow_s / fast_s, 1), "same_partition": bool(np.array_equal(fast, slow))}),
          flush=True)


if __name__ == "__main__":
    main()
