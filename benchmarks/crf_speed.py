"""Speed of the fully connected CRF (`seglab.inference.dense_crf`) on one 480x360 image, 11 labels,
and at 2048x1024 (a Cityscapes frame), 19 labels, against the code before issue 20.

Prints one JSON line per measurement: the machine; the permutohedral lattice build for the appearance
kernel; one mean-field iteration split into its parts (appearance kernel = splat + blur + slice,
smoothness kernel = exact separable Gaussian, the rest = Potts compatibility + softmax); the whole
`dense_crf` call; and the O(N^2) brute-force cost, measured on a small image and extrapolated by
(N_big / N_small)^2 (the 172800^2 kernel matrix alone would take 119 GB in float32). Also the
agreement of lattice and brute-force CRF outputs on the small image. Then `before_after`: the whole
`dense_crf` (5 iterations) of this version and of the previous one (`baselines/crf_v0.py`, kept
verbatim), timed in turns, with the largest |Q_new - Q_old| and their argmax agreement, at 480x360
(11 labels) and at --large (default 2048x1024, the same image upsampled bilinearly, 19 labels with
probabilities from smooth random logits), and the agreement of each with brute force on the small image.

The image is the first CamVid validation image from ../shared/data/camvid when present (the real
colour statistics set the lattice size), else a synthetic one. Probabilities are a coarse, softened
version of its label map (or random). Each figure is the minimum over --runs repetitions: on a shared
machine the minimum is the least disturbed measurement.

    python benchmarks/crf_speed.py                 # 2 threads, 5 iterations, 7 runs
    python benchmarks/crf_speed.py --runs 11 --iterations 10
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seglab.inference import dense_crf
from baselines.crf_v0 import dense_crf as dense_crf_v0
from speed import best_of_interleaved, cpu_name  # benchmarks/ is on sys.path
from seglab.inference.crf import _BruteKernel, _features, _grid_filter_hwc, _softmax_rows
from seglab.inference.permutohedral import PermutohedralLattice

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
DEFAULTS = dict(pos_w=3.0, pos_xy_std=1.0, bi_w=4.0, bi_xy_std=67.0, bi_rgb_std=3.0)


def timed(fn, runs: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def load_case(num_classes: int = 11):
    val = CAMVID / "val"
    if val.is_dir():
        from PIL import Image

        name = sorted(p.name for p in val.iterdir())[0]
        image = np.array(Image.open(val / name).convert("RGB"))
        labels = torch.from_numpy(np.array(Image.open(CAMVID / "valannot" / name))).long().clamp_max(num_classes - 1)
        onehot = F.one_hot(labels, num_classes).permute(2, 0, 1).float()[None]
        coarse = F.interpolate(F.avg_pool2d(onehot, 8), size=labels.shape, mode="bilinear", align_corners=False)[0]
        probs = torch.softmax(coarse.clamp_min(1e-3).log(), 0)
        return f"camvid/val/{name}", image, probs
    g = torch.Generator().manual_seed(0)
    image = F.interpolate(torch.rand(1, 3, 12, 16, generator=g) * 255, size=(360, 480), mode="bilinear")[0]
    image = (image.permute(1, 2, 0) + 2 * torch.randn(360, 480, 3, generator=g)).clamp(0, 255).to(torch.uint8)
    return "synthetic", image.numpy(), torch.softmax(torch.randn(num_classes, 360, 480, generator=g), 0)


def profile_case(case: str, image: np.ndarray, probs: torch.Tensor, runs: int, iterations: int, emit) -> float:
    """Lattice build, one iteration's parts and the whole call (with and without iterations) for one image;
    returns the seconds per iteration."""
    h, w = image.shape[:2]
    c, n = probs.shape[0], h * w
    feats = _features(torch.from_numpy(image), DEFAULTS["bi_xy_std"], DEFAULTS["bi_rgb_std"])
    build_min, build_med = timed(lambda: PermutohedralLattice(feats), runs)
    lattice = PermutohedralLattice(feats)
    emit(kind="lattice_build", case=case, seconds_min=build_min, seconds_median=build_med, points=n,
         vertices=lattice.num_vertices, vertices_per_point=lattice.num_vertices / n)

    qt = probs.reshape(c, n).t().contiguous()   # dense_crf keeps Q as (N, C)
    out = torch.empty_like(qt)
    parts = {
        "splat": lambda: lattice.splat(qt),
        "blur": (lambda s=lattice.splat(qt): lattice.blur(s)),
        "slice": (lambda b=lattice.blur(lattice.splat(qt)): lattice.slice(b)),
        "appearance_filter": lambda: lattice.filter(qt),
        "smoothness_filter": lambda: _grid_filter_hwc(qt.view(h, w, c), DEFAULTS["pos_xy_std"]),
        "softmax": lambda: _softmax_rows(qt, out),
    }
    iteration = {name: timed(fn, runs)[0] for name, fn in parts.items()}
    emit(kind="iteration_parts", case=case, labels=c, seconds_min=iteration)

    # Full call and set-up only (0 iterations), interleaved so both see the same machine load.
    best = best_of_interleaved({"full": lambda: dense_crf(image, probs, iterations, **DEFAULTS),
                                "setup": lambda: dense_crf(image, probs, 0, **DEFAULTS)}, runs)
    per_iteration = (best["full"] - best["setup"]) / max(iterations, 1)
    emit(kind="dense_crf", case=case, iterations=iterations, seconds_min=best["full"],
         setup_seconds_min=best["setup"], per_iteration_seconds=per_iteration)
    return per_iteration


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--small", type=int, nargs=2, default=(48, 64), metavar=("H", "W"),
                        help="image size for the brute-force measurement")
    parser.add_argument("--large", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    parser.add_argument("--large-runs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emit = lambda **kw: print(json.dumps(kw), flush=True)  # noqa: E731

    source, image, probs = load_case()
    h, w = image.shape[:2]
    c, n = probs.shape[0], h * w
    emit(kind="machine", cpu=cpu_name(), threads=args.threads, torch=torch.__version__,
         loadavg_1min=os.getloadavg()[0], image=source, size=[h, w], labels=c, params=DEFAULTS)

    per_iter = profile_case("native", image, probs, args.runs, args.iterations, emit)
    # Brute force: the dense N x N kernel product on a small image, extrapolated quadratically.
    sh, sw = args.small
    small = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=(sh, sw),
                          mode="bilinear", align_corners=False)[0].permute(1, 2, 0).round().clamp(0, 255)
    small = small.to(torch.uint8).numpy()
    sprobs = F.interpolate(probs[None], size=(sh, sw), mode="bilinear", align_corners=False)[0]
    sprobs = sprobs / sprobs.sum(0, keepdim=True)
    ns = sh * sw
    bi = _BruteKernel(_features(torch.from_numpy(small), DEFAULTS["bi_xy_std"], DEFAULTS["bi_rgb_std"]))
    pos = _BruteKernel(_features(torch.from_numpy(small), DEFAULTS["pos_xy_std"], None))
    qs = sprobs.reshape(c, ns).t().contiguous()
    brute_iter, _ = timed(lambda: (bi.filter(qs), pos.filter(qs)), args.runs)
    factor = (n / ns) ** 2
    emit(kind="brute_force", small_size=[sh, sw], small_per_iteration_seconds=brute_iter,
         extrapolated_per_iteration_seconds=brute_iter * factor,
         extrapolated_5_iterations_seconds=5 * brute_iter * factor, kernel_matrix_gb=2 * n * n * 4 / 1e9,
         speedup_vs_lattice_per_iteration=brute_iter * factor / per_iter)

    exact = dense_crf(small, sprobs, args.iterations, method="brute", **DEFAULTS)
    for version, fn in (("new", dense_crf), ("v0", dense_crf_v0)):
        fast = fn(small, sprobs, args.iterations, **DEFAULTS)
        emit(kind="lattice_vs_brute_crf", version=version, small_size=[sh, sw],
             mean_abs_dq=(exact - fast).abs().mean().item(), max_abs_dq=(exact - fast).abs().max().item(),
             argmax_agreement=(exact.argmax(0) == fast.argmax(0)).float().mean().item())

    g = torch.Generator().manual_seed(0)
    large = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None].float(), size=tuple(args.large),
                          mode="bilinear", align_corners=False)[0].permute(1, 2, 0).round().clamp(0, 255)
    cases = [("native", image, probs, args.runs),
             ("large", large.to(torch.uint8).numpy(),
              torch.softmax(3 * F.interpolate(torch.randn(1, 19, 32, 64, generator=g), size=tuple(args.large),
                                              mode="bilinear", align_corners=False)[0], 0), args.large_runs)]
    profile_case("large", cases[1][1], cases[1][2], args.large_runs, args.iterations, emit)
    for name, img, prob, runs in cases:
        fns = {"v0": lambda: dense_crf_v0(img, prob, 5, **DEFAULTS), "new": lambda: dense_crf(img, prob, 5, **DEFAULTS)}
        best = best_of_interleaved(fns, runs)
        old, new = fns["v0"](), fns["new"]()
        emit(kind="before_after", case=name, size=list(img.shape[:2]), labels=prob.shape[0], iterations=5,
             v0_seconds=round(best["v0"], 3), new_seconds=round(best["new"], 3),
             speedup=round(best["v0"] / best["new"], 2), max_abs_dq=(old - new).abs().max().item(),
             argmax_agreement=(old.argmax(0) == new.argmax(0)).float().mean().item())


if __name__ == "__main__":
    main()
