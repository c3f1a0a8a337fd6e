"""FCIS's position-sensitive assembling and joint mask / classification (seglab.heads.instance.fcis)."""
from __future__ import annotations

import pytest
import torch

from seglab.errors import ConfigError
from seglab.heads.instance.fcis import (
    FCISHead,
    FCISOutputs,
    assemble_position_sensitive,
    fcis_losses,
    ohem_select,
)
from seglab.layers import roi_align

K, S, STRIDE = 3, 9, 4


def _group_constant_maps(groups: int, k: int, size=(24, 32), batch: int = 2) -> torch.Tensor:
    """Maps where channel (g, i, j) of image n is the constant 1000 n + 100 g + i * k + j."""
    n = torch.arange(batch).view(batch, 1, 1, 1)
    g = torch.arange(groups).view(1, groups, 1, 1)
    cell = torch.arange(k * k).view(1, 1, k, k)
    values = (1000 * n + 100 * g + cell).float().reshape(batch, groups * k * k, 1, 1)
    return values.expand(-1, -1, *size).contiguous()


@pytest.mark.parametrize("k,roi_size", [(3, 9), (7, 21), (2, 2)])
def test_cell_ij_copies_score_group_ij(k, roi_size):
    """The defining property: cell (i, j) of every assembled map holds group (i, j)'s value, for RoIs
    of several sizes and positions, on both images of the batch."""
    maps = _group_constant_maps(2, k)
    rois = torch.tensor([[0, 8.0, 12.0, 100.0, 80.0], [1, 3.5, 5.25, 17.0, 33.0], [0, 40.0, 2.0, 120.0, 90.0],
                         [1, 0.0, 0.0, 127.0, 95.0], [0, 60.0, 60.0, 66.0, 63.0]])
    out = assemble_position_sensitive(maps, rois, k=k, roi_size=roi_size, spatial_scale=1 / STRIDE)
    assert out.shape == (5, 2, roi_size, roi_size)
    cell_of_pixel = torch.arange(roi_size) // (roi_size // k)
    expected_cell = (cell_of_pixel[:, None] * k + cell_of_pixel[None, :]).float()
    for r in range(5):
        for g in range(2):
            expected = 1000 * rois[r, 0] + 100 * g + expected_cell
            assert torch.allclose(out[r, g], expected, atol=1e-3), (r, g)


def test_each_cell_is_roi_align_of_the_whole_roi_on_its_own_channels():
    """Random maps: cell (i, j) equals RoIAlign of the whole RoI at S x S on channels (g, i, j), read
    at the cell's rows and columns, i.e. every RoI reads the shared maps and nothing else."""
    torch.manual_seed(0)
    maps = torch.randn(2, 2 * K * K, 24, 32)
    rois = torch.tensor([[0, 9.0, 13.0, 101.0, 77.0], [1, 30.0, 6.0, 70.0, 50.0]])
    out = assemble_position_sensitive(maps, rois, k=K, roi_size=S, spatial_scale=1 / STRIDE)
    whole = roi_align(maps, rois, S, spatial_scale=1 / STRIDE, aligned=True).view(2, 2, K, K, S, S)
    s = S // K
    for i in range(K):
        for j in range(K):
            block = out[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s]
            ref = whole[:, :, i, j, i * s:(i + 1) * s, j * s:(j + 1) * s]
            assert torch.allclose(block, ref, atol=1e-5), (i, j)


def test_translation_of_roi_and_maps_together_gives_the_same_assembled_map():
    torch.manual_seed(1)
    base = torch.randn(1, 4 * K * K, 40, 40)
    dy, dx = 3, 5  # feature cells
    maps_a, maps_b = base[..., :32, :32], base[..., dy:dy + 32, dx:dx + 32]
    roi_a = torch.tensor([[0, 30.0, 22.0, 101.0, 95.0], [0, 25.5, 20.25, 57.0, 41.0]])
    roi_b = roi_a - torch.tensor([0, dx * STRIDE, dy * STRIDE, dx * STRIDE, dy * STRIDE])
    a = assemble_position_sensitive(maps_a, roi_a, k=K, roi_size=S, spatial_scale=1 / STRIDE)
    b = assemble_position_sensitive(maps_b, roi_b, k=K, roi_size=S, spatial_scale=1 / STRIDE)
    assert torch.allclose(a, b, atol=1e-5)
    # ... while a translated RoI on the same maps reads other values.
    c = assemble_position_sensitive(maps_a, roi_b, k=K, roi_size=S, spatial_scale=1 / STRIDE)
    assert not torch.allclose(a, c, atol=1e-2)


def test_mask_and_class_scores_come_from_the_same_inside_outside_maps():
    torch.manual_seed(2)
    num_classes = 2
    head = FCISHead(8, num_classes, mid_channels=8, k=K, roi_size=S, spatial_scale=1 / STRIDE)
    maps = head.score_maps(torch.randn(1, 8, 20, 20))
    assert maps.shape == (1, (2 * (num_classes + 1) + 4) * K * K, 20, 20)
    roi = torch.tensor([[0, 10.0, 14.0, 60.0, 70.0]])
    out = head(maps, roi)
    assembled = assemble_position_sensitive(maps, roi, k=K, roi_size=S, spatial_scale=1 / STRIDE)[0]
    for c in range(num_classes + 1):
        inside, outside = assembled[2 * c], assembled[2 * c + 1]
        # mask probability = softmax over (inside, outside) per pixel
        prob = torch.stack([inside, outside]).softmax(0)[0]
        assert torch.allclose(torch.sigmoid(out.mask_logits[0, c]), prob, atol=1e-6)
        # class logit = average over the RoI of max(inside, outside)
        assert torch.allclose(out.class_logits[0, c], torch.maximum(inside, outside).mean(), atol=1e-6)
    box_maps = assembled[2 * (num_classes + 1):]
    assert torch.allclose(out.box_deltas[0], box_maps.mean((-2, -1)), atol=1e-6)
    # Raising class 1's inside maps changes both its mask and its class score, and no other class's.
    bumped = maps.clone()
    bumped[:, 2 * K * K:3 * K * K] += 1.0  # group 2 = (class 1, inside)
    again = head(bumped, roi)
    assert (again.mask_logits[0, 1] > out.mask_logits[0, 1]).all()
    assert again.class_logits[0, 1] > out.class_logits[0, 1]
    assert torch.equal(again.class_logits[0, [0, 2]], out.class_logits[0, [0, 2]])
    assert torch.equal(again.mask_logits[0, [0, 2]], out.mask_logits[0, [0, 2]])


def _outputs(num_rois: int, classes: int, requires_grad: bool = True) -> FCISOutputs:
    torch.manual_seed(3)
    return FCISOutputs(class_logits=torch.randn(num_rois, classes + 1, requires_grad=requires_grad),
                       mask_logits=torch.randn(num_rois, classes + 1, S, S, requires_grad=requires_grad),
                       box_deltas=torch.randn(num_rois, 4, requires_grad=requires_grad))


def test_mask_loss_reads_only_the_ground_truth_class_of_positive_rois():
    out = _outputs(4, 3)
    labels = torch.tensor([2, 0, 3, 0])
    mask_targets = (torch.rand(4, S, S) > 0.5).float()
    losses = fcis_losses(out, labels, mask_targets, torch.randn(4, 4))
    losses["loss_mask"].backward()
    grad = out.mask_logits.grad.abs().flatten(2).sum(2)  # (R, C + 1)
    used = torch.zeros_like(grad, dtype=torch.bool)
    used[0, 2] = used[2, 3] = True
    assert (grad[used] > 0).all() and (grad[~used] == 0).all()
    # The value: softmax cross-entropy of the (inside, outside) pair, averaged over the positives' pixels.
    pair = torch.stack([out.mask_logits, torch.zeros_like(out.mask_logits)], 2)  # log-odds vs 0
    ce = [torch.nn.functional.cross_entropy(pair[r, c][None], (1 - mask_targets[r]).long()[None])
          for r, c in ((0, 2), (2, 3))]
    assert torch.allclose(losses["loss_mask"], torch.stack(ce).mean(), atol=1e-6)


def test_losses_without_positives_stay_on_the_graph_and_ohem_keeps_the_hardest():
    out = _outputs(3, 2)
    losses = fcis_losses(out, torch.zeros(3, dtype=torch.long), torch.zeros(3, S, S), torch.zeros(3, 4))
    assert losses["loss_mask"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    sum(losses.values()).backward()
    assert out.box_deltas.grad is not None and out.mask_logits.grad is not None
    keep = ohem_select(torch.tensor([0.1, 5.0, 0.3, 2.0, 9.0, 1.0]), torch.tensor([0, 0, 0, 1, 1, 1]), 2)
    assert sorted(keep.tolist()) == [1, 2, 3, 4]


def test_roi_size_must_split_into_equal_cells():
    with pytest.raises(ConfigError):
        FCISHead(8, 2, mid_channels=8, k=7, roi_size=20)
