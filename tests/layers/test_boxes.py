"""Box ops and the Faster R-CNN box coder: hand-computed values and round trips."""
from __future__ import annotations

import math

import pytest
import torch

from seglab.errors import ConfigError, SeglabError
from seglab.layers.boxes import (
    BoxCoder,
    box_area,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
)


def test_area_and_iou_hand_computed():
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 25]])
    b = torch.tensor([[5.0, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    assert box_area(a).tolist() == [100.0, 200.0]
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    # a0 vs b0: inter 5 x 10 = 50, union 150; a1 vs b0: inter 10 x 5 = 50, union 250; a1 vs b1: 0.
    torch.testing.assert_close(iou, torch.tensor([[1 / 3, 0.0, 1.0], [0.2, 0.0, 25 / 275]]))


def test_clip_and_remove_small():
    boxes = torch.tensor([[-5.0, -2, 30, 12], [3, 4, 3.5, 9], [10, 10, 40, 50]])
    assert clip_boxes_to_image(boxes, (20, 32)).tolist() == [[0, 0, 30, 12], [3, 4, 3.5, 9], [10, 10, 32, 20]]
    assert clip_boxes_to_image(boxes[None], (20, 32)).shape == (1, 3, 4)  # any leading shape
    assert remove_small_boxes(boxes, 1.0).tolist() == [0, 2]  # box 1 is 0.5 wide
    assert remove_small_boxes(boxes, 0.5).tolist() == [0, 1, 2]  # >= keeps the equal size


def test_encode_hand_computed():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    proposal = torch.tensor([[0.0, 0, 10, 20]])  # centre (5, 10), size 10 x 20
    target = torch.tensor([[2.0, 4, 22, 24]])  # centre (12, 14), size 20 x 20
    codes = coder.encode(target, proposal)
    want = [10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]
    torch.testing.assert_close(codes, torch.tensor([want]))


@pytest.mark.parametrize("weights", [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)])
def test_decode_inverts_encode(weights):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100
    proposals = torch.cat([xy, xy + torch.rand(50, 2, generator=g, dtype=torch.float64) * 60 + 1], 1)
    xy = xy + torch.randn(50, 2, generator=g, dtype=torch.float64) * 5
    targets = torch.cat([xy, xy + torch.rand(50, 2, generator=g, dtype=torch.float64) * 60 + 1], 1)
    coder = BoxCoder(weights)
    codes = coder.encode(targets, proposals)
    decoded = coder.decode(codes, proposals)
    assert decoded.shape == (50, 1, 4)
    torch.testing.assert_close(decoded[:, 0], targets, rtol=0, atol=1e-9)
    # Per-image lists split the same way; class-specific codes (N, 4 * C) decode to (N, C, 4).
    parts = coder.encode([targets[:20], targets[20:]], [proposals[:20], proposals[20:]])
    assert [p.shape[0] for p in parts] == [20, 30] and torch.equal(torch.cat(parts), codes)
    assert coder.decode(codes.repeat(1, 3), [proposals[:20], proposals[20:]]).shape == (50, 3, 4)


def test_decode_clamps_large_scales():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    out = coder.decode_single(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([[0.0, 0, 16, 16]]))
    side = 16 * 1000 / 16  # exp(log(1000 / 16)) * 16
    torch.testing.assert_close(out, torch.tensor([[8 - side / 2, 8 - side / 2, 8 + side / 2, 8 + side / 2]]))
    assert torch.isfinite(out).all()


def test_errors_name_the_value():
    with pytest.raises(ConfigError, match="weights"):
        BoxCoder((1.0, 1.0, 1.0))
    with pytest.raises(SeglabError, match=r"\(K, 4\)"):
        box_iou(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(SeglabError, match="rel_codes"):
        BoxCoder().decode_single(torch.zeros(3, 5), torch.zeros(3, 4))
