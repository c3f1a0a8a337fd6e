"""Anchor generator: torchvision's base anchors (hand-written), counts, order and centres per level."""
from __future__ import annotations

import pytest
import torch

from seglab.errors import ConfigError
from seglab.layers.anchors import AnchorGenerator


def test_base_anchors_size_32_match_torchvision():
    # w = 32 / sqrt(r), h = 32 * sqrt(r), halved and rounded: ratio 0.5 -> 45.25 x 22.63 -> [-23, -11, 23, 11].
    base = AnchorGenerator.generate_anchors((32,), (0.5, 1.0, 2.0))
    assert base.tolist() == [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]
    # Several sizes: ratio-major order (all sizes of ratio 0.5 first).
    two = AnchorGenerator.generate_anchors((32, 64), (0.5, 1.0))
    assert two.tolist() == [[-23.0, -11.0, 23.0, 11.0], [-45.0, -23.0, 45.0, 23.0],
                            [-16.0, -16.0, 16.0, 16.0], [-32.0, -32.0, 32.0, 32.0]]


def test_fpn_levels_count_order_and_centres():
    gen = AnchorGenerator()  # FPN defaults: sizes 32..512 on 5 levels, 3 ratios each
    assert gen.num_anchors_per_location() == [3] * 5
    image = (64, 96)
    feature_sizes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # strides 4, 8, 16, 32, (64, 48)
    per_level = gen.grid_anchors(feature_sizes, [(64 // h, 96 // w) for h, w in feature_sizes])
    assert [len(a) for a in per_level] == [h * w * 3 for h, w in feature_sizes]
    for (h, w), anchors, size in zip(feature_sizes, per_level, (32, 64, 128, 256, 512)):
        centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).view(h, w, 3, 2)
        sy, sx = 64 // h, 96 // w
        # Row-major locations, centred on the top-left corner of each cell (torchvision's offset 0).
        assert torch.equal(centres[..., 0], (torch.arange(w) * sx).float()[None, :, None].expand(h, w, 3))
        assert torch.equal(centres[..., 1], (torch.arange(h) * sy).float()[:, None, None].expand(h, w, 3))
        sides = (anchors[:, 2:] - anchors[:, :2]).view(h, w, 3, 2)[0, 0]
        assert sides[1].tolist() == [size, size]  # ratio 1 is a square of the level's size
        assert sides[0, 0] > sides[0, 1] and sides[2, 0] < sides[2, 1]  # ratio = height / width
    all_anchors = gen(image, [torch.zeros(1, 8, h, w) for h, w in feature_sizes])
    assert torch.equal(all_anchors, torch.cat(per_level))
    assert torch.equal(gen(image, feature_sizes), all_anchors)  # sizes instead of tensors


def test_flat_sizes_and_errors():
    gen = AnchorGenerator(sizes=(16, 32), aspect_ratios=(1.0,))
    assert gen.sizes == ((16,), (32,)) and gen.aspect_ratios == ((1.0,), (1.0,))
    assert gen((8, 8), [(4, 4), (2, 2)]).shape == (16 + 4, 4)
    with pytest.raises(ConfigError, match="levels"):
        AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((1.0,),) * 3)
    with pytest.raises(ConfigError, match="positive"):
        AnchorGenerator(sizes=((0,),), aspect_ratios=((1.0,),))
