"""Speed of the detection operators in `seglab.layers` against naive Python-loop baselines.

Prints one JSON line per measurement: first the machine, then
- `roi_align` forward (and forward + backward for 7x7, sampling 2) for --rois RoIs on a
  (1, C, H, W) map (default 256 x 100 x 152, FPN's P3 of an 800 x 1216 image at stride 8), output
  7x7 and 14x14, sampling_ratio 2 and adaptive (-1); RoI sides are log-uniform in 32..512 image pixels;
- `nms` for 1000 and 5000 boxes (sides 16..256 on an 800 x 1216 image), scattered uniformly or in
  proposal-like clusters around 50 objects, at IoU 0.5 and 0.7, and `batched_nms` with 80 classes.
Each figure is the minimum over --runs repetitions (the least disturbed one on a shared machine). The
baselines are plain loops: RoIAlign per RoI, bin and sample with channel vectors (timed on
--naive-rois RoIs and scaled linearly, since RoIs are independent), greedy NMS as a double loop over
boxes in Python floats (timed once). Their results are checked against the vectorised ones.

    python benchmarks/ops_speed.py                       # full size, 2 threads (takes a few minutes)
    python benchmarks/ops_speed.py --rois 20 --channels 8 --height 20 --width 30 --boxes 100 --runs 1
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
from speed import cpu_name  # benchmarks/speed.py (the script's folder is on sys.path)

from seglab.layers.nms import batched_nms, nms
from seglab.layers.roi_align import roi_align


def best_of(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_rois(num: int, height: int, width: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img_h, img_w = height / scale, width / scale
    sides = torch.exp(torch.empty(num, 2).uniform_(math.log(32), math.log(512), generator=g))
    x1 = torch.rand(num, generator=g) * (img_w - sides[:, 0]).clamp(min=1)
    y1 = torch.rand(num, generator=g) * (img_h - sides[:, 1]).clamp(min=1)
    return torch.stack([torch.zeros(num), x1, y1, x1 + sides[:, 0], y1 + sides[:, 1]], dim=1)


def naive_roi_align(x: torch.Tensor, rois: torch.Tensor, size: int, scale: float, ratio: int) -> torch.Tensor:
    """torchvision's kernel with Python loops over RoIs, bins and samples (vectors over channels)."""
    _, channels, height, width = x.shape
    out = torch.zeros(len(rois), channels, size, size)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        plane = x[int(b)]
        roi_w, roi_h = max(x2 * scale - x1 * scale, 1.0), max(y2 * scale - y1 * scale, 1.0)
        bin_w, bin_h = roi_w / size, roi_h / size
        gw = ratio if ratio > 0 else math.ceil(roi_w / size)
        gh = ratio if ratio > 0 else math.ceil(roi_h / size)
        for ph in range(size):
            for pw in range(size):
                acc = torch.zeros(channels)
                for iy in range(gh):
                    y = y1 * scale + ph * bin_h + (iy + 0.5) * bin_h / gh
                    for ix in range(gw):
                        xx = x1 * scale + pw * bin_w + (ix + 0.5) * bin_w / gw
                        if y < -1 or y > height or xx < -1 or xx > width:
                            continue
                        yc, xc = min(max(y, 0.0), height - 1), min(max(xx, 0.0), width - 1)
                        y0, x0 = int(yc), int(xc)
                        y1_, x1_ = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
                        ly, lx = yc - y0, xc - x0
                        acc += ((1 - ly) * (1 - lx) * plane[:, y0, x0] + (1 - ly) * lx * plane[:, y0, x1_]
                                + ly * (1 - lx) * plane[:, y1_, x0] + ly * lx * plane[:, y1_, x1_])
                out[k, :, ph, pw] = acc / max(gh * gw, 1)
    return out


def make_boxes(num: int, seed: int, clustered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly scattered boxes, or proposals-like clusters: jittered copies of 50 object boxes."""
    g = torch.Generator().manual_seed(seed)
    count = 50 if clustered else num
    sides = torch.exp(torch.empty(count, 2).uniform_(math.log(16), math.log(256), generator=g))
    xy = torch.rand(count, 2, generator=g) * torch.tensor([1216.0, 800.0])
    if clustered:
        pick = torch.randint(0, count, (num,), generator=g)
        sides = sides[pick] * torch.exp(torch.randn(num, 2, generator=g) * 0.15)
        xy = xy[pick] + torch.randn(num, 2, generator=g) * sides * 0.15
    return torch.cat([xy, xy + sides], dim=1), torch.rand(num, generator=g)


def naive_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    b = boxes.tolist()
    areas = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    suppressed, keep = [False] * len(b), []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            if not suppressed[j]:
                w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
                h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
                inter = w * h
                suppressed[j] = inter / (areas[i] + areas[j] - inter) > threshold
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--height", type=int, default=100)
    parser.add_argument("--width", type=int, default=152)
    parser.add_argument("--scale", type=float, default=1 / 8, help="spatial_scale of the map (1/stride)")
    parser.add_argument("--boxes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--naive-rois", type=int, default=10, help="RoIs timed for the naive RoIAlign loop")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(json.dumps({"machine": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}))

    x = torch.randn(1, args.channels, args.height, args.width)
    rois = make_rois(args.rois, args.height, args.width, args.scale, seed=0)
    for size in (7, 14):
        for ratio in (2, -1):
            seconds = best_of(lambda size=size, ratio=ratio: roi_align(x, rois, size, args.scale, ratio), args.runs)
            few = rois[:args.naive_rois]
            t0 = time.perf_counter()
            reference = naive_roi_align(x, few, size, args.scale, ratio)
            naive = (time.perf_counter() - t0) * len(rois) / max(len(few), 1)
            error = (roi_align(x, few, size, args.scale, ratio) - reference).abs().max().item() if len(few) else 0.0
            print(json.dumps({"op": "roi_align", "rois": len(rois), "map": [args.channels, args.height, args.width],
                              "output": size, "sampling_ratio": ratio, "ms": round(seconds * 1e3, 2),
                              "naive_ms_extrapolated": round(naive * 1e3, 1), "speedup": round(naive / seconds, 1),
                              "max_abs_diff": error}))
    grad_x = x.clone().requires_grad_()
    seconds = best_of(lambda: roi_align(grad_x, rois, 7, args.scale, 2).sum().backward(), args.runs)
    print(json.dumps({"op": "roi_align_forward_backward", "rois": len(rois), "output": 7, "sampling_ratio": 2,
                      "ms": round(seconds * 1e3, 2)}))

    for num, clustered in ((n, c) for n in args.boxes for c in (False, True)):
        boxes, scores = make_boxes(num, seed=num, clustered=clustered)
        layout = "clustered" if clustered else "uniform"
        for threshold in (0.5, 0.7):
            seconds = best_of(lambda b=boxes, s=scores, t=threshold: nms(b, s, t), args.runs)
            t0 = time.perf_counter()
            reference = naive_nms(boxes.double(), scores, threshold)
            naive = time.perf_counter() - t0
            same = nms(boxes.double(), scores, threshold).tolist() == reference
            print(json.dumps({"op": "nms", "boxes": num, "layout": layout, "iou_threshold": threshold, "kept": len(reference),
                              "ms": round(seconds * 1e3, 3), "naive_ms": round(naive * 1e3, 1),
                              "speedup": round(naive / seconds, 1), "same_as_naive": same}))
        labels = torch.randint(0, 80, (num,), generator=torch.Generator().manual_seed(1))
        seconds = best_of(lambda b=boxes, s=scores, c=labels: batched_nms(b, s, c, 0.5), args.runs)
        print(json.dumps({"op": "batched_nms", "boxes": num, "layout": layout, "classes": 80, "iou_threshold": 0.5,
                          "ms": round(seconds * 1e3, 3)}))


if __name__ == "__main__":
    main()
