"""Deformable convolution (`seglab.layers.deform_conv2d`) against a plain convolution of the same shape.

For each shape (N, C_in -> C_out, 3x3, padding 1, H x W): F.conv2d, the deformable convolution as it
was before (`old_deform_conv2d` below: one index_select of the 4 corners of every sample, a batched
(1 x 4) @ (4 x C) to weight them, a reordering copy, a matmul; kept here as the reference) and as it
is now (one F.embedding_bag that sums the weighted corner rows straight into the im2col matrix, one
matmul with the weight reordered instead of the columns), forward alone and forward + backward (grads
for input, offsets, weight and bias). Offsets are random in [-2, 2] pixels. The old and new outputs
and all four gradients are compared (max abs difference; float32, the two sum in different orders).
Each figure is the minimum over --runs rounds in which the variants take turns (the least disturbed
run on a shared machine, the same load for all).

    python benchmarks/deform_conv_speed.py                      # 2 threads
    python benchmarks/deform_conv_speed.py --runs 3 --threads 1
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from speed import best_of_interleaved, cpu_name  # benchmarks/speed.py (the script's folder is on sys.path)

from seglab.layers.deform_conv import deform_conv2d

# (N, C_in, C_out, H, W): the shape of the layer's old docstring figure, and UPSNet's first
# deformable layer on P2 of a 512 x 512 image (FPN width 256 -> 128).
SHAPES = [(1, 128, 128, 64, 128), (1, 256, 128, 128, 128)]


def old_deform_conv2d(input, offset, weight, bias, padding: int = 1):
    """The implementation this benchmark replaced (stride 1, dilation 1, one offset and weight group)."""
    n, channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    taps = kh * kw
    off = offset.reshape(n, 1, taps, 2, out_h, out_w)
    tap_y = torch.arange(kh, dtype=input.dtype).repeat_interleave(kw)
    tap_x = torch.arange(kw, dtype=input.dtype).repeat(kh)
    rows = (torch.arange(out_h, dtype=input.dtype) - padding)[None, :, None] + tap_y[:, None, None] + off[:, :, :, 0]
    cols = (torch.arange(out_w, dtype=input.dtype) - padding)[None, None, :] + tap_x[:, None, None] + off[:, :, :, 1]
    table = input.view(n, 1, channels, height * width).transpose(2, 3).reshape(-1, channels)
    y0, x0 = rows.floor(), cols.floor()
    fy, fx = rows - y0, cols - x0
    y0, x0 = y0.long(), x0.long()
    corner_y = torch.stack([y0, y0, y0 + 1, y0 + 1])
    corner_x = torch.stack([x0, x0 + 1, x0, x0 + 1])
    weights = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
    weights = weights * ((corner_y >= 0) & (corner_y < height) & (corner_x >= 0) & (corner_x < width))
    plane = torch.arange(n).view(1, n, 1, 1, 1, 1) * (height * width)
    index = plane + corner_y.clamp(0, height - 1) * width + corner_x.clamp(0, width - 1)
    index = index.permute(1, 4, 5, 2, 3, 0).reshape(-1)
    weights = weights.permute(1, 4, 5, 2, 3, 0).unsqueeze(-2)
    samples = table.index_select(0, index).view(n, out_h, out_w, 1, taps, 4, channels)
    values = (weights @ samples).squeeze(-2)
    columns = values.transpose(-1, -2).reshape(n, out_h * out_w, channels * taps)
    out = columns @ weight.reshape(out_channels, -1).t()
    return out.transpose(1, 2).reshape(n, out_channels, out_h, out_w) + bias.view(1, -1, 1, 1)


def no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def forward_backward(fn, tensors, grad):
    for t in tensors:
        t.grad = None
    fn(*tensors).backward(grad)
    return [t.grad for t in tensors]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    machine = {"machine": cpu_name(), "threads": args.threads, "torch": torch.__version__}
    for n, c_in, c_out, h, w in SHAPES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c_in, h, w, generator=g).requires_grad_()
        offset = (torch.rand(n, 18, h, w, generator=g) * 4 - 2).requires_grad_()
        weight = (torch.randn(c_out, c_in, 3, 3, generator=g) / (3 * c_in ** 0.5)).requires_grad_()
        bias = torch.randn(c_out, generator=g).requires_grad_()
        grad = torch.randn(n, c_out, h, w, generator=g)
        variants = {
            "conv2d": (lambda a, o, wt, b: F.conv2d(a, wt, b, padding=1), [x, weight, bias]),
            "old": (lambda a, o, wt, b: old_deform_conv2d(a, o, wt, b), [x, offset, weight, bias]),
            "new": (lambda a, o, wt, b: deform_conv2d(a, o, wt, b, padding=1), [x, offset, weight, bias]),
        }
        fns = {}
        for name, (fn, _) in variants.items():
            fns[f"{name}_forward_ms"] = (lambda fn=fn: no_grad(fn, x, offset, weight, bias))
            fns[f"{name}_forward_backward_ms"] = (
                lambda fn=fn: forward_backward(lambda *t: fn(x, offset, weight, bias), [x, offset, weight, bias], grad))
        times = {k: 1000 * v for k, v in best_of_interleaved(fns, args.runs).items()}
        old = [forward_backward(lambda *t: variants["old"][0](*t), [x, offset, weight, bias], grad)]
        new = [forward_backward(lambda *t: variants["new"][0](*t), [x, offset, weight, bias], grad)]
        with torch.no_grad():
            diffs = {"output": (old_deform_conv2d(x, offset, weight, bias)
                                - deform_conv2d(x, offset, weight, bias, padding=1)).abs().max().item()}
        for name, a, b in zip(("grad_input", "grad_offset", "grad_weight", "grad_bias"), old[0], new[0]):
            diffs[name] = (a - b).abs().max().item()
        print(json.dumps({"bench": "deform_conv2d", "shape": [n, c_in, c_out, h, w], "kernel": 3,
                          **{k: round(v, 2) for k, v in times.items()},
                          "new_over_conv_forward": round(times["new_forward_ms"] / times["conv2d_forward_ms"], 2),
                          "new_over_conv_forward_backward": round(
                              times["new_forward_backward_ms"] / times["conv2d_forward_backward_ms"], 2),
                          "old_over_conv_forward": round(times["old_forward_ms"] / times["conv2d_forward_ms"], 2),
                          "old_over_conv_forward_backward": round(
                              times["old_forward_backward_ms"] / times["conv2d_forward_backward_ms"], 2),
                          "max_abs_diff_old_new": diffs, **machine}), flush=True)


if __name__ == "__main__":
    main()
