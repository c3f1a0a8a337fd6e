"""Deformable convolution v1: zero offsets are the regular convolution bit for bit, an integer offset is
a shifted convolution, fractional offsets match a per-sample reference written from torchvision's CPU
kernel (deform_conv2d_kernel.cpp: bilinear_interpolate), and gradients pass gradcheck."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.errors import SeglabError
from seglab.layers.deform_conv import DeformConv2d, deform_conv2d


def integer_tensor(*shape: int) -> torch.Tensor:
    # Small integers: every product and sum is exact in float32, so equality is exact, not approximate.
    return torch.randint(-3, 4, shape).float()


@pytest.mark.parametrize("stride,padding,dilation,groups,size", [
    (1, 0, 1, 1, (7, 9)), (1, 1, 1, 1, (11, 13)), (2, 1, 1, 1, (11, 13)), (1, 2, 2, 1, (10, 7)),
    (2, 3, 2, 2, (9, 12)), ((2, 1), (0, 2), (1, 3), 1, (8, 11)),
])
def test_zero_offsets_equal_conv2d_exactly(stride, padding, dilation, groups, size):
    x = integer_tensor(2, 4, *size)
    weight = integer_tensor(6, 4 // groups, 3, 3)
    bias = integer_tensor(6)
    expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    offset = torch.zeros(2, 2 * 9, *expected.shape[-2:])
    assert torch.equal(deform_conv2d(x, offset, weight, bias, stride, padding, dilation), expected)


def test_offset_of_one_column_is_conv_of_input_shifted_left():
    # Tap (i, j) of output (y, x) reads column x - 1 + j + 1: the regular conv of the input shifted left
    # by one column (zero padding then starts one column later on the left and ends one later on the right).
    x = integer_tensor(1, 3, 9, 10)
    weight = integer_tensor(5, 3, 3, 3)
    offset = torch.zeros(1, 2 * 9, 9, 10)
    offset[:, 1::2] = 1.0  # dx = 1, dy = 0 at every tap
    shifted = F.pad(x, (0, 2, 1, 1))
    assert torch.equal(deform_conv2d(x, offset, weight, padding=1), F.conv2d(shifted, weight))


def reference_deform_conv2d(x, offset, weight, bias, stride, padding, dilation):
    """Per output pixel, per tap, per channel loops with torchvision's bilinear_interpolate (float64)."""
    n, channels, height, width = x.shape
    out_c, group_in, kh, kw = weight.shape
    groups = offset.shape[1] // (2 * kh * kw)
    out_h, out_w = offset.shape[-2:]

    def sample(plane, h, w):
        if h <= -1 or h >= height or w <= -1 or w >= width:
            return 0.0
        h_low, w_low = int(torch.floor(torch.tensor(h))), int(torch.floor(torch.tensor(w)))
        lh, lw = h - h_low, w - w_low
        value = 0.0
        for yy, xx, wt in ((h_low, w_low, (1 - lh) * (1 - lw)), (h_low, w_low + 1, (1 - lh) * lw),
                           (h_low + 1, w_low, lh * (1 - lw)), (h_low + 1, w_low + 1, lh * lw)):
            if 0 <= yy < height and 0 <= xx < width:
                value += wt * plane[yy][xx]
        return value

    data, off = x.double().tolist(), offset.double().tolist()
    out = torch.zeros(n, out_c, out_h, out_w, dtype=torch.float64)
    cols = torch.zeros(n, channels, kh * kw, out_h, out_w, dtype=torch.float64)
    for b in range(n):
        for c in range(channels):
            g = c // (channels // groups)
            for i in range(kh):
                for j in range(kw):
                    k = i * kw + j
                    for y in range(out_h):
                        for x_ in range(out_w):
                            dy = off[b][2 * (g * kh * kw + k)][y][x_]
                            dx = off[b][2 * (g * kh * kw + k) + 1][y][x_]
                            h = y * stride - padding + i * dilation + dy
                            w = x_ * stride - padding + j * dilation + dx
                            cols[b, c, k, y, x_] = sample(data[b][c], h, w)
    wgroups = channels // group_in
    per = out_c // wgroups
    for o in range(out_c):
        g = o // per
        block = cols[:, g * group_in:(g + 1) * group_in].reshape(n, group_in * kh * kw, out_h * out_w)
        out[:, o] = (weight[o].double().reshape(1, -1) @ block).view(n, out_h, out_w) + bias[o].double()
    return out


@pytest.mark.parametrize("offset_groups,weight_groups,stride,padding,dilation", [
    (1, 1, 1, 1, 1), (2, 1, 2, 1, 1), (2, 2, 1, 2, 2),
])
def test_fractional_offsets_match_reference(offset_groups, weight_groups, stride, padding, dilation):
    x = torch.randn(2, 4, 6, 7)
    weight = torch.randn(4, 4 // weight_groups, 3, 3)
    bias = torch.randn(4)
    out_h = (6 + 2 * padding - 2 * dilation - 1) // stride + 1
    out_w = (7 + 2 * padding - 2 * dilation - 1) // stride + 1
    # Offsets up to +-3 pixels: many samples land partly or wholly outside the 6 x 7 input.
    offset = 3 * (2 * torch.rand(2, 2 * offset_groups * 9, out_h, out_w) - 1)
    got = deform_conv2d(x, offset, weight, bias, stride, padding, dilation)
    expected = reference_deform_conv2d(x, offset, weight, bias, stride, padding, dilation)
    assert got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offset_groups,weight_groups", [(2, 1), (1, 2)])
def test_gradcheck_input_offset_weight_bias(offset_groups, weight_groups):
    """The gradients of the embedding_bag gather (scatter into the input, dot products for the corner
    weights, autograd from there to the offsets) against finite differences, both matmul layouts."""
    torch.manual_seed(3)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 2 // weight_groups, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    # Fractional offsets (the output is piecewise linear in them, kinks at integer positions).
    offset = (torch.rand(1, 2 * offset_groups * 9, 5, 2, dtype=torch.float64) * 2.4 - 1.2).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, o, w, b: deform_conv2d(a, o, w, b, stride=(1, 2), padding=1, dilation=(1, 1)),
        (x, offset, weight, bias), eps=1e-6, atol=1e-6)


def test_bf16_input_samples_at_float32_positions():
    # bf16 cannot hold 300.25 (its spacing there is 2), so positions are computed in float32: the bf16
    # result matches the float32 one within bf16 rounding, sampled at the same places.
    torch.manual_seed(4)
    x = torch.randn(1, 3, 4, 320)
    weight = torch.randn(2, 3, 3, 3)
    offset = torch.full((1, 18, 4, 320), 0.25)
    want = deform_conv2d(x, offset, weight, padding=1)
    got = deform_conv2d(x.bfloat16(), offset.bfloat16(), weight.bfloat16(), padding=1)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.15)


def test_odd_sizes_and_module_starts_as_regular_conv():
    layer = DeformConv2d(3, 5, 3, stride=2, padding=2, dilation=2, offset_groups=3)
    x = torch.randn(2, 3, 13, 17)
    out = layer(x)
    expected = F.conv2d(x, layer.weight, layer.bias, 2, 2, 2)
    assert out.shape == expected.shape == (2, 5, 7, 9)
    torch.testing.assert_close(out, expected)
    # Zero-initialised offsets still get a gradient (bilinear interpolation is differentiable in them).
    out.square().sum().backward()
    assert layer.conv_offset.weight.grad.abs().sum() > 0
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_learned_offsets_change_the_output():
    layer = DeformConv2d(2, 2, 3, padding=1)
    x = torch.randn(1, 2, 8, 8)
    before = layer(x)
    with torch.no_grad():
        layer.conv_offset.bias.fill_(0.5)
    assert not torch.allclose(layer(x), before)


def test_bad_shapes_raise():
    x = torch.randn(1, 4, 8, 8)
    weight = torch.randn(2, 4, 3, 3)
    with pytest.raises(SeglabError, match="offset"):
        deform_conv2d(x, torch.zeros(1, 17, 6, 6), weight)
    with pytest.raises(SeglabError, match="offset"):
        deform_conv2d(x, torch.zeros(1, 18, 8, 8), weight)  # wrong output size (padding 0 gives 6 x 6)
    with pytest.raises(SeglabError, match="offset"):
        deform_conv2d(x, torch.zeros(1, 3 * 18, 6, 6), weight)  # 3 offset groups do not divide 4 channels
    with pytest.raises(SeglabError, match="weight"):
        deform_conv2d(x, torch.zeros(1, 18, 6, 6), torch.randn(2, 3, 3, 3))
    with pytest.raises(SeglabError, match="offset_groups"):
        DeformConv2d(4, 2, 3, offset_groups=3)
