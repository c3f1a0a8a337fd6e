"""MNC's differentiable RoI warping (seglab.layers.roi_warp): it equals crop + bilinear resize, it is
differentiable w.r.t. the box coordinates (checked against finite differences), RoIs of several images
in any order, and bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.errors import SeglabError
from seglab.layers import RoIWarp, roi_warp


@pytest.mark.parametrize("box,size", [((2, 3, 12, 10), (5, 7)), ((0, 0, 16, 12), (4, 4)), ((5, 1, 11, 7), (6, 6))])
def test_equals_crop_then_bilinear_resize(box, size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 16, dtype=torch.float64)
    x1, y1, x2, y2 = box
    rois = torch.tensor([[1.0, *box]], dtype=torch.float64)
    expected = F.interpolate(x[1:2, :, y1:y2, x1:x2], size=size, mode="bilinear", align_corners=False)
    assert torch.allclose(roi_warp(x, rois, size), expected, atol=1e-12)
    # the same box in image pixels of a stride-4 map
    assert torch.allclose(roi_warp(x, rois * torch.tensor([1, 4, 4, 4, 4]), size, spatial_scale=0.25), expected,
                          atol=1e-12)


def test_gradients_wrt_box_coordinates_and_features_match_finite_differences():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[1.3, 2.2, 8.7, 7.4], [0.6, 0.9, 5.1, 8.2]], dtype=torch.float64, requires_grad=True)

    def warp(features, b):
        return roi_warp(features, torch.cat([torch.zeros(2, 1, dtype=b.dtype), b], 1), (4, 5))

    assert torch.autograd.gradcheck(warp, (x, boxes), eps=1e-6, atol=1e-6)


def test_moving_the_box_onto_a_bright_square_follows_the_gradient():
    """Gradient ascent on the mean warped value moves a box onto a bright region: the box coordinates
    get a useful gradient (MNC's point: later stages train the box regression through the warp)."""
    x = torch.zeros(1, 1, 32, 32)
    x[..., 16:26, 16:26] = 1.0
    x = F.avg_pool2d(x, 5, 1, 2)  # smooth edges, so the sampled points see a slope
    box = torch.tensor([[9.0, 9.0, 19.0, 19.0]], requires_grad=True)
    start = roi_warp(x, torch.cat([torch.zeros(1, 1), box], 1), 7).mean().item()
    for _ in range(60):
        value = roi_warp(x, torch.cat([torch.zeros(1, 1), box], 1), 7).mean()
        (grad,) = torch.autograd.grad(value, box)
        with torch.no_grad():
            box += 20.0 * grad
    assert value.item() > start + 0.3
    assert box[0, 0].item() > 12 and box[0, 1].item() > 12


def test_rois_of_several_images_in_any_order():
    torch.manual_seed(2)
    x = torch.randn(3, 4, 10, 10)
    rois = torch.tensor([[2, 0, 0, 8, 8], [0, 1, 1, 9, 5], [2, 3, 2, 7, 9], [1, 0, 0, 10, 10], [0, 2, 2, 4, 4.0]])
    out = RoIWarp(3, 1.0)(x, rois)
    for k in range(len(rois)):
        assert torch.allclose(out[k:k + 1], roi_warp(x, rois[k:k + 1], 3), atol=1e-6)
    assert roi_warp(x, torch.zeros(0, 5), 3).shape == (0, 4, 3, 3)


def test_bad_input_raises():
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(SeglabError, match=r"\(K, 5\)"):
        roi_warp(x, torch.zeros(2, 4), 3)
    with pytest.raises(SeglabError, match="batch indices"):
        roi_warp(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 3)
    with pytest.raises(SeglabError, match=r"\(N, C, H, W\)"):
        roi_warp(x[0], torch.tensor([[0.0, 0, 0, 2, 2]]), 3)
