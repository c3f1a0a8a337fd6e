"""RoIAlign: hand-computed cases, defining properties and an independent per-RoI, per-bin reference
written from torchvision's CPU kernel (roi_align_kernel.cpp / roi_align_common.h)."""
from __future__ import annotations

import importlib
import math

import pytest
import torch

from seglab.errors import SeglabError
from seglab.layers.roi_align import (
    MultiScaleRoIAlign,
    RoIAlign,
    map_rois_to_fpn_levels,
    roi_align,
)

# The package re-exports the function under the module's name, so fetch the module itself.
roi_align_module = importlib.import_module("seglab.layers.roi_align")


def reference_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """torchvision's kernel as plain Python loops over RoIs, bins and samples (float64 scalars)."""
    ph_out, pw_out = output_size
    _, channels, height, width = input.shape
    data = input.tolist()
    out = torch.zeros(len(rois), channels, ph_out, pw_out, dtype=torch.float64)

    def bilinear(plane, y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return 0.0
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1.0 - ly, 1.0 - lx
        return (hy * hx * plane[y_low][x_low] + hy * lx * plane[y_low][x_high]
                + ly * hx * plane[y_high][x_low] + ly * lx * plane[y_high][x_high])

    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        offset = 0.5 if aligned else 0.0
        start_w, start_h = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_w, roi_h = x2 * spatial_scale - offset - start_w, y2 * spatial_scale - offset - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / ph_out, roi_w / pw_out
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph_out)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw_out)
        count = max(grid_h * grid_w, 1)
        for c in range(channels):
            plane = data[int(b)][c]
            for ph in range(ph_out):
                for pw in range(pw_out):
                    total = 0.0
                    for iy in range(grid_h):
                        y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            total += bilinear(plane, y, x)
                    out[k, c, ph, pw] = total / count
    return out


def random_rois(num, batch, height, width, scale, seed):
    """RoIs in image coordinates: mostly inside, some partly or fully outside, some degenerate."""
    g = torch.Generator().manual_seed(seed)
    h_img, w_img = height / scale, width / scale
    x1 = torch.rand(num, generator=g, dtype=torch.float64) * (w_img * 1.4) - 0.2 * w_img
    y1 = torch.rand(num, generator=g, dtype=torch.float64) * (h_img * 1.4) - 0.2 * h_img
    w = torch.rand(num, generator=g, dtype=torch.float64) * w_img * 0.8 - 0.05 * w_img  # a few negative
    h = torch.rand(num, generator=g, dtype=torch.float64) * h_img * 0.8 - 0.05 * h_img
    b = torch.randint(0, batch, (num,), generator=g).to(torch.float64)
    return torch.stack([b, x1, y1, x1 + w, y1 + h], dim=1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
@pytest.mark.parametrize("gather", ["corners", "window"])
def test_matches_reference_kernel(aligned, sampling_ratio, gather, monkeypatch):
    # Force one of the two gathering strategies (4 neighbours per sample, or row windows), and a small
    # budget so that every sampling-grid group is split into several chunks.
    monkeypatch.setattr(roi_align_module, "_WINDOW_PER_SAMPLE", 0.0 if gather == "corners" else 1e9)
    monkeypatch.setattr(roi_align_module, "_GATHER_BUDGET", 512)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    rois = random_rois(24, 2, 9, 11, 0.5, seed=3 + sampling_ratio)
    got = roi_align(x, rois, (3, 4), spatial_scale=0.5, sampling_ratio=sampling_ratio, aligned=aligned)
    want = reference_roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned)
    assert got.shape == (24, 3, 3, 4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_float32_matches_reference():
    x = torch.randn(1, 4, 12, 10)
    rois = random_rois(16, 1, 12, 10, 1.0, seed=11).float()
    got = roi_align(x, rois, 5, sampling_ratio=-1)
    want = reference_roi_align(x.double(), rois.double(), (5, 5), 1.0, -1, False)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_linear_ramp_is_exact_at_bin_centres(sampling_ratio):
    # Bilinear interpolation of a linear function is exact, and a symmetric sample grid averages to the
    # bin centre; with aligned=True the centre of bin (i, j) is start + (i + 0.5) * bin_size.
    height, width = 12, 16
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    ramp = (0.7 * xx - 1.3 * yy + 2.0)[None, None]
    scale = 0.5
    boxes = torch.tensor([[2.0, 3.0, 20.0, 17.0], [1.0, 1.0, 31.0, 23.0], [9.5, 4.25, 13.5, 21.0]], dtype=torch.float64)
    out = roi_align(ramp, [boxes], (3, 5), spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=True)
    x1, y1, x2, y2 = (boxes[:, i, None] * scale - 0.5 for i in range(4))
    cx = x1 + (torch.arange(5, dtype=torch.float64) + 0.5) * (x2 - x1) / 5  # (K, 5)
    cy = y1 + (torch.arange(3, dtype=torch.float64) + 0.5) * (y2 - y1) / 3  # (K, 3)
    want = 0.7 * cx[:, None, :] - 1.3 * cy[:, :, None] + 2.0
    torch.testing.assert_close(out[:, 0], want, rtol=0, atol=1e-12)


def test_single_pixel_roi_returns_that_pixel():
    x = torch.randn(2, 3, 5, 7)
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(7.0), indexing="ij")
    boxes = torch.stack([xs, ys, xs + 1, ys + 1], dim=-1).reshape(-1, 4)  # pixel (y, x) = [x, x+1) x [y, y+1)
    for ratio in (1, -1):  # adaptive: ceil(1 / 1) = 1 sample at the pixel centre
        out = roi_align(x, [boxes, boxes], 1, sampling_ratio=ratio, aligned=True)
        want = torch.cat([x[0].permute(1, 2, 0).reshape(-1, 3), x[1].permute(1, 2, 0).reshape(-1, 3)])
        torch.testing.assert_close(out[:, :, 0, 0], want, rtol=0, atol=1e-6)


def test_roi_partly_outside_the_map():
    # Rows are identical, so only x matters; one sample per bin at the bin centre.
    x = torch.tensor([10.0, 20.0, 30.0, 40.0]).expand(1, 1, 2, 4).contiguous()
    rois = torch.tensor([[0, -3.0, 0, 1.0, 2], [0, 2.0, 0, 6.0, 2], [0, -1.5, 0, 4.5, 2]])
    left, right, edges = (roi_align(x, r[None], (1, n), sampling_ratio=1)[0, 0, 0] for r, n in zip(rois, (4, 4, 6)))
    # samples at x = -2.5, -1.5 (< -1: zero), -0.5 (clamped to 0), 0.5 (between 10 and 20)
    assert left.tolist() == [0.0, 0.0, 10.0, 15.0]
    # x = 2.5, 3.5 (at the last column), 4.5 and 5.5 (> W = 4: zero)
    assert right.tolist() == [35.0, 40.0, 0.0, 0.0]
    # x = -1 and x = W exactly are still inside and clamp to the border pixels
    assert edges.tolist() == [10.0, 10.0, 20.0, 30.0, 40.0, 40.0]


def test_adaptive_equals_explicit_when_grids_coincide():
    x = torch.randn(1, 2, 20, 20)
    # Every RoI is 3..4 pixels per bin at scale 1 with 2 bins: ceil(size / 2) == 2 in both directions.
    rois = torch.tensor([[0, 1.0, 2.0, 4.5, 6.0], [0, 5.0, 5.0, 9.0, 8.2], [0, 10.0, 0.5, 13.1, 4.0]])
    adaptive = roi_align(x, rois, 2, sampling_ratio=-1)
    explicit = roi_align(x, rois, 2, sampling_ratio=2)
    assert torch.equal(adaptive, explicit)
    assert not torch.equal(adaptive, roi_align(x, rois, 2, sampling_ratio=3))


def test_list_of_boxes_equals_roi_tensor_and_module():
    x = torch.randn(2, 3, 8, 8)
    a, b = torch.tensor([[0.0, 0, 5, 5], [1, 2, 7, 6]]), torch.tensor([[2.0, 2, 6, 8]])
    rois = torch.tensor([[0, 0.0, 0, 5, 5], [0, 1, 2, 7, 6], [1, 2, 2, 6, 8]])
    want = roi_align(x, rois, (2, 3), 1.0, 2, True)
    assert torch.equal(roi_align(x, [a, b], (2, 3), 1.0, 2, True), want)
    assert torch.equal(RoIAlign((2, 3), 1.0, 2, aligned=True)(x, rois), want)


@pytest.mark.parametrize("gather", ["corners", "window"])
def test_gradcheck_wrt_input(gather, monkeypatch):
    monkeypatch.setattr(roi_align_module, "_WINDOW_PER_SAMPLE", 0.0 if gather == "corners" else 1e9)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.6, 4.2, 3.9], [1, -1.0, 1.0, 3.0, 7.0], [0, 2.0, 2.0, 2.5, 2.1]],
                        dtype=torch.float64)
    for aligned, ratio in ((False, 2), (True, -1)):
        assert torch.autograd.gradcheck(lambda t, r=ratio, a=aligned: roi_align(t, rois, (2, 3), 0.9, r, a), (x,))


def test_empty_rois_and_bad_input():
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), 7)
    assert out.shape == (0, 3, 7, 7) and out.requires_grad
    with pytest.raises(SeglabError, match="batch indices"):
        roi_align(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 2)
    with pytest.raises(SeglabError, match=r"\(K, 5\)"):
        roi_align(x, torch.zeros(3, 4), 2)


def test_fpn_level_mapping_eq1():
    sides = torch.tensor([224.0, 112.0, 111.0, 448.0, 10.0, 2000.0])
    boxes = torch.stack([torch.zeros(6), torch.zeros(6), sides, sides], dim=1)
    # k = floor(4 + log2(side / 224)), clamped to [2, 5], returned relative to k_min = 2.
    assert map_rois_to_fpn_levels(boxes).tolist() == [2, 1, 0, 3, 0, 3]
    assert map_rois_to_fpn_levels(boxes, k_min=3, k_max=4).tolist() == [1, 0, 0, 1, 0, 1]


def test_multiscale_pools_each_box_from_its_level():
    feats = {"p2": torch.randn(2, 3, 64, 64), "p3": torch.randn(2, 3, 32, 32), "unused": torch.randn(2, 3, 8, 8)}
    small, large = torch.tensor([[10.0, 10, 50, 60]]), torch.tensor([[0.0, 0, 200, 180], [30, 40, 70, 90]])
    pooler = MultiScaleRoIAlign(["p2", "p3"], 4, 2, canonical_scale=112, canonical_level=3)
    out = pooler(feats, [small, large], [(256, 256), (250, 240)])
    assert out.shape == (3, 3, 4, 4)
    # sqrt(area) < 112 -> level 2 (stride 4); the 200 x 180 box -> level 3 (stride 8)
    rois = torch.tensor([[0, 10.0, 10, 50, 60], [1, 0, 0, 200, 180], [1, 30, 40, 70, 90]])
    assert torch.equal(out[[0, 2]], roi_align(feats["p2"], rois[[0, 2]], 4, 0.25, 2))
    assert torch.equal(out[[1]], roi_align(feats["p3"], rois[[1]], 4, 0.125, 2))
