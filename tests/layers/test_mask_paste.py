"""Mask pasting: a mask of ones fills its box exactly, and values equal grid_sample's bilinear paste."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.errors import ConfigError, SeglabError
from seglab.layers.mask_paste import paste_masks_in_image


def box_image(box, size):
    out = torch.zeros(size)
    x1, y1, x2, y2 = (int(v) for v in box)
    out[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 1.0
    return out


def test_ones_fill_integer_box_exactly():
    masks = torch.ones(4, 8, 8)
    # padding=1 (default): exact for boxes up to the mask size; padding=0: exact for any box.
    boxes = torch.tensor([[2.0, 3.0, 10.0, 11.0], [0.0, 0.0, 4.0, 8.0], [12.0, 5.0, 16.0, 9.0], [-3.0, 10.0, 5.0, 18.0]])
    pasted = paste_masks_in_image(masks, boxes, (15, 20))
    assert pasted.shape == (4, 15, 20)
    for p, b in zip(pasted, boxes):
        assert torch.equal(p, box_image(b, (15, 20)))
    large = torch.tensor([[1.0, 2.0, 18.0, 13.0], [-4.0, -4.0, 30.0, 7.0]])
    hard = paste_masks_in_image(masks[:2], large, (15, 20), padding=0)
    soft = paste_masks_in_image(masks[:2], large, (15, 20), padding=1)
    for h, s, b in zip(hard, soft, large):
        assert torch.equal(h, box_image(b, (15, 20)))
        assert torch.equal((s > 0.5).float(), box_image(b, (15, 20)))  # after the 0.5 threshold


def grid_sample_paste(masks, boxes, size):
    """Reference: sample every image pixel centre of every mask with grid_sample (zeros padding)."""
    height, width = size
    ys, xs = torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5
    out = []
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.tolist()):
        gx = (xs - x1) / (x2 - x1) * 2 - 1
        gy = (ys - y1) / (y2 - y1) * 2 - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
        out.append(F.grid_sample(mask[None, None], grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)[0, 0])
    return torch.stack(out)


@pytest.mark.parametrize("padding", [1, 2])
def test_equals_grid_sample_reference(padding):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 6, 6, generator=g, dtype=torch.float64)
    xy = torch.rand(5, 2, generator=g, dtype=torch.float64) * 30 - 5
    boxes = torch.cat([xy, xy + torch.rand(5, 2, generator=g, dtype=torch.float64) * 25 + 0.5], dim=1)
    got = paste_masks_in_image(masks, boxes, (21, 27), padding=padding)
    torch.testing.assert_close(got, grid_sample_paste(masks, boxes, (21, 27)), rtol=0, atol=1e-12)


def test_shapes_dtypes_and_errors():
    assert paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6)).shape == (0, 5, 6)
    one = paste_masks_in_image(torch.ones(1, 1, 4, 4, dtype=torch.uint8), torch.tensor([[0.0, 0, 4, 4]]), (6, 6))
    assert one.dtype == torch.float32 and one.sum() == 16
    with pytest.raises(SeglabError, match="boxes"):
        paste_masks_in_image(torch.ones(2, 4, 4), torch.zeros(3, 4), (6, 6))
    with pytest.raises(ConfigError, match="padding"):
        paste_masks_in_image(torch.ones(1, 4, 4), torch.zeros(1, 4), (6, 6), padding=-1)


@pytest.mark.parametrize("padding", [0, 1])
def test_thresholded_box_by_box_paste_equals_the_dense_paste(padding):
    """The bool fast path (rows and columns each mask reaches, box by box) against thresholding the dense
    batched paste: equal wherever the value is not within float rounding of the threshold."""
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(40, 28, 28, generator=g)
    xy = torch.rand(40, 2, generator=g) * 140 - 20                 # some boxes cross or leave the image
    boxes = torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 80 + 0.3], dim=1)
    dense = paste_masks_in_image(masks, boxes, (100, 130), padding=padding)
    fast = paste_masks_in_image(masks, boxes, (100, 130), padding=padding, threshold=0.5)
    assert fast.dtype == torch.bool and fast.shape == (40, 100, 130)
    clear = (dense - 0.5).abs() > 1e-5
    assert torch.equal(fast[clear], (dense >= 0.5)[clear]) and fast.any()
    assert torch.equal(paste_masks_in_image(masks, boxes, (100, 130), threshold=0.0), dense >= 0)
    assert paste_masks_in_image(masks[:0], boxes[:0], (5, 6), threshold=0.5).dtype == torch.bool
