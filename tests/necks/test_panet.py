"""PANet's bottom-up path augmentation: shapes at odd sizes, N2 = P2, gradients, the short path."""
from __future__ import annotations

import math

import pytest
import torch

from seglab.errors import SeglabError
from seglab.necks.panet import BottomUpPathAugmentation


def pyramid(height: int, width: int, channels: int = 8, levels: int = 4) -> list[torch.Tensor]:
    """P2..P5 as an FPN on a ResNet gives them: ceil(size / stride) cells at strides 4..32."""
    return [torch.randn(1, channels, math.ceil(height / 2 ** i), math.ceil(width / 2 ** i)) for i in range(2, 2 + levels)]


def test_parameter_count_at_256_channels():
    # 3 levels x 2 convs (3x3 stride 2, 3x3) x (256 * 256 * 9 weights + 256 biases).
    neck = BottomUpPathAugmentation(256, 4)
    assert sum(p.numel() for p in neck.parameters()) == 3 * 2 * (256 * 256 * 9 + 256) == 3_540_480


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (29, 98)])
def test_shapes_at_odd_sizes_and_n2_is_p2(size):
    neck = BottomUpPathAugmentation(8, 4)
    p = pyramid(*size)
    n = neck(p)
    assert [t.shape for t in n] == [t.shape for t in p]
    assert n[0] is p[0]
    assert neck.strides == [4, 8, 16, 32] and neck.out_channels == [8] * 4


def test_mismatched_level_sizes_are_resized_to_the_lateral():
    # A P3 one cell smaller than the stride-2 conv's output (e.g. a floor-rounding backbone).
    neck = BottomUpPathAugmentation(4, 2)
    n = neck([torch.randn(1, 4, 9, 11), torch.randn(1, 4, 4, 5)])
    assert n[1].shape == (1, 4, 4, 5)


def test_extra_pool_appends_a_stride_64_level():
    neck = BottomUpPathAugmentation(8, 4, extra_pool=True)
    p = pyramid(45, 61)
    n = neck(p + [torch.nn.functional.max_pool2d(p[-1], 1, 2)])
    assert len(n) == 5 and neck.strides == [4, 8, 16, 32, 64]
    assert torch.equal(n[4], torch.nn.functional.max_pool2d(n[3], 1, 2))


def test_gradient_reaches_every_level():
    neck = BottomUpPathAugmentation(8, 4)
    p = [t.requires_grad_() for t in pyramid(33, 41)]
    sum(t.sum() for t in neck(p)[1:]).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in p)


def test_a_change_confined_to_p2_reaches_n5():
    # The point of the augmented path: the finest level reaches the top in a few layers, not through
    # the backbone's hundred. A change in P2 alone must change N5; P3..P5 untouched.
    torch.manual_seed(0)
    neck = BottomUpPathAugmentation(8, 4).eval()
    p = pyramid(256, 256)  # P2 64x64 ... P5 8x8
    changed = [p[0].clone()] + p[1:]
    changed[0][..., :4, :4] += 5.0  # a corner patch of P2 only
    with torch.no_grad():
        before, after = neck(p), neck(changed)
    assert not torch.allclose(before[3], after[3])
    # ... and the change travels only through the bottom-up path: the bottom-right corner of N5 lies
    # outside the patch's reach (rows and columns 0..3 of every N_i), so it is unchanged.
    assert torch.equal(before[3][..., -1, -1], after[3][..., -1, -1])


def test_wrong_number_of_levels_raises():
    with pytest.raises(SeglabError, match="4 levels"):
        BottomUpPathAugmentation(8, 4)(pyramid(32, 32, levels=3))
