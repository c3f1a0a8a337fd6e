"""UPSNet's heads: the deformable semantic head (shared subnet, per-level independence, size, parameter
count) and the parameter-free panoptic head, checked by hand on tiny tensors."""
from __future__ import annotations

import pytest
import torch

from seglab.errors import SeglabError
from seglab.heads.panoptic.upsnet import (
    DeformableSemanticHead,
    UPSNetPanopticHead,
    labels_in_boxes,
    select_instances,
)
from seglab.layers.deform_conv import DeformConv2d
from seglab.layers.mask_paste import paste_masks_in_image


def pyramid(channels: int = 8, size=(25, 33)) -> list[torch.Tensor]:
    h, w = size
    out = []
    for _ in range(4):
        out.append(torch.randn(2, channels, h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return out


def test_semantic_head_shapes_and_shared_subnet():
    head = DeformableSemanticHead(8, 5, channels=4)
    levels = pyramid()
    out = head(levels)
    assert out.shape == (2, 5, 25, 33)
    deform = [m for m in head.modules() if isinstance(m, DeformConv2d)]
    assert len(deform) == 2  # one subnet of two deformable convs, shared by the four levels
    assert head.features(levels).shape == (2, 4 * 4, 25, 33)


def test_semantic_head_feature_blocks_read_only_their_level():
    head = DeformableSemanticHead(8, 3, channels=4)
    levels = [p.requires_grad_() for p in pyramid()]
    feats = head.features(levels)
    feats[:, 8:12].sum().backward()  # block 2 = P4's branch
    assert levels[2].grad.abs().sum() > 0
    assert all(levels[i].grad is None or levels[i].grad.abs().sum() == 0 for i in (0, 1, 3))


def test_semantic_head_full_size_parameter_count():
    head = DeformableSemanticHead(256, 133, channels=128, num_layers=2)
    first = 256 * 128 * 9 + (256 * 18 * 9 + 18) + 2 * 128  # deform conv (no bias) + offset conv + GN
    second = 128 * 128 * 9 + (128 * 18 * 9 + 18) + 2 * 128
    score = 512 * 133 + 133
    assert sum(p.numel() for p in head.parameters()) == first + second + score == 573_353
    # The release's COCO head: three deformable convs (256 -> 256 -> 128 -> 128) with biases, no norm.
    release_coco = DeformableSemanticHead(256, 133, num_layers=3, norm=False)
    offsets = (256 * 18 * 9 + 18) * 2 + 128 * 18 * 9 + 18
    convs = 256 * 256 * 9 + 256 + 256 * 128 * 9 + 128 + 128 * 128 * 9 + 128
    assert sum(p.numel() for p in release_coco.parameters()) == offsets + convs + score == 1_204_667


def test_roi_logits_and_labels_in_boxes():
    head = DeformableSemanticHead(8, 3, channels=4)
    levels = pyramid()
    feats = head.features(levels)
    boxes = [torch.tensor([[4.0, 8.0, 40.0, 60.0]]), torch.tensor([[0.0, 0.0, 20.0, 20.0], [10, 10, 90, 70]])]
    assert head.roi_logits(feats, boxes, 0.25, 7).shape == (3, 3, 7, 7)
    labels = torch.zeros(6, 8, dtype=torch.long)
    labels[:, 4:] = 1
    # A 2x2 grid over box x 2..6, y 0..4: bin centres at x = 3, 5 (columns 3 and 5), y = 1, 3.
    got = labels_in_boxes(labels, torch.tensor([[2.0, 0.0, 6.0, 4.0]]), 2)
    assert torch.equal(got, torch.tensor([[[0, 1], [0, 1]]]))


# ---- panoptic head ----------------------------------------------------------------------------

H, W = 6, 8
BOX = torch.tensor([[2.0, 1.0, 6.0, 5.0]])  # columns 2..5, rows 1..4


def scene():
    """One stuff class (logit 1 everywhere), one thing class: logit 2 inside the box, 4 in a patch that no
    instance covers (rows 0..1, column 7); one instance whose pasted mask logits are +3 on its left half."""
    semantic = torch.zeros(2, H, W)
    semantic[0] = 1.0
    semantic[1, 1:5, 2:6] = 2.0
    semantic[1, 0:2, 7] = 4.0
    mask = torch.full((1, H, W), -5.0)
    mask[0, 1:5, 2:4] = 3.0
    return semantic, mask


def test_panoptic_logits_by_hand():
    head = UPSNetPanopticHead(1, 1)
    assert list(head.parameters()) == []  # parameter-free
    semantic, mask = scene()
    z = head(semantic, BOX, torch.tensor([0]), mask)
    assert z.shape == (1 + 1 + 1, H, W)
    assert torch.equal(z[0], semantic[0])  # stuff logits unchanged
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[1:5, 2:6] = True
    expected_instance = torch.where(inside, mask[0] + semantic[1], torch.zeros(H, W))
    assert torch.equal(z[1], expected_instance)  # mask logits + cropped thing logits, zero outside
    assert torch.equal(z[2], semantic[1] - semantic[1] * inside)  # max thing logit - max cropped one

    winner = z.argmax(0)
    instance = torch.zeros(H, W, dtype=torch.bool)
    instance[1:5, 2:4] = True  # 3 + 2 = 5 beats stuff's 1 only where the mask logits are positive
    assert torch.equal(winner == 1, instance)
    unknown = torch.zeros(H, W, dtype=torch.bool)
    unknown[0:2, 7] = True  # thing logit 4, no instance: unknown (4 - 0) beats stuff (1)
    assert torch.equal(winner == 2, unknown)
    assert torch.equal(winner == 0, ~instance & ~unknown)


def test_predict_makes_segments_with_void_unknown():
    head = UPSNetPanopticHead(1, 1)
    semantic, mask = scene()
    z = head(semantic, BOX, torch.tensor([0]), mask)
    result = head.predict(z, torch.tensor([0]), torch.tensor([0.9]))
    assert result.segments.shape == (H, W)
    assert result.segments_info == [
        {"id": 1, "category_id": 1, "isthing": True, "area": 8, "score": pytest.approx(0.9)},
        {"id": 2, "category_id": 0, "isthing": False, "area": H * W - 8 - 2},
    ]
    assert int((result.segments == 0).sum()) == 2  # the unknown pixels are void
    assert int((result.segments == 1).sum()) == 8
    small = head.predict(z, torch.tensor([0]), stuff_area_limit=H * W)
    assert [s["category_id"] for s in small.segments_info] == [1]  # stuff below the limit -> void
    assert int((small.segments == 0).sum()) == H * W - 8


def test_without_unknown_and_without_instances():
    semantic, _ = scene()
    plain = UPSNetPanopticHead(1, 1, unknown=False)
    z = plain(semantic, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 28, 28))
    assert z.shape == (1, H, W)
    z = UPSNetPanopticHead(1, 1)(semantic, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                                 torch.zeros(0, 28, 28))
    assert torch.equal(z[1], semantic[1])  # nothing explains the thing logits: unknown = X_thing


def test_mask_logits_of_the_grid_size_are_pasted_when_asked():
    head = UPSNetPanopticHead(1, 1, unknown=False)
    semantic = torch.zeros(2, 4, 4)
    mask = torch.arange(16.0).view(1, 4, 4)
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])  # the top-left 2 x 2 pixels
    as_is = head(semantic, box, torch.tensor([0]), mask)  # 4 x 4 = the grid: taken as already pasted
    assert torch.equal(as_is[1, :2, :2], mask[0, :2, :2]) and as_is[1, 2:].abs().sum() == 0
    resampled = head(semantic, box, torch.tensor([0]), mask, pasted=False)  # 4 x 4 cells squeezed into 2 x 2
    expected = paste_masks_in_image(mask, box, (4, 4), padding=0)[0]
    assert torch.equal(resampled[1], expected) and not torch.equal(resampled[1], as_is[1])
    with pytest.raises(SeglabError, match="pasted"):
        head(semantic, box, torch.tensor([0]), torch.zeros(1, 3, 3), pasted=True)


def test_gradients_reach_semantic_and_mask_logits():
    head = UPSNetPanopticHead(2, 3)
    semantic = torch.randn(5, 16, 20, requires_grad=True)
    masks = torch.randn(2, 28, 28, requires_grad=True)
    boxes = torch.tensor([[2.0, 3.0, 12.5, 11.0], [8.0, 1.0, 19.0, 15.0]])
    z = head(semantic, boxes, torch.tensor([2, 0]), masks)
    target = torch.randint(0, z.shape[0], (16, 20))
    head.loss(z, target).backward()
    assert masks.grad.abs().sum(dim=(1, 2)).gt(0).all()
    # Stuff channels, both instances' classes (2 -> channel 4, 0 -> channel 2) get gradients; thing class
    # 1 (channel 3) only through the unknown channel's max.
    assert semantic.grad[[0, 1, 2, 4]].abs().sum(dim=(1, 2)).gt(0).all()


def test_panoptic_target_by_hand():
    head = UPSNetPanopticHead(2, 2)
    semantic = torch.tensor([[0, 0, 2, 2, 3],
                             [1, 1, 2, 2, 3],
                             [255, 1, 3, 3, 3]])
    slot0 = semantic == 2
    slot1 = torch.zeros_like(slot0)
    slot1[2, 2:4] = True  # covers part of the class-3 thing; the rest of it was dropped -> unknown
    target = head.panoptic_target(semantic, torch.stack([slot0, slot1]))
    assert torch.equal(target, torch.tensor([[0, 0, 2, 2, 4],
                                             [1, 1, 2, 2, 4],
                                             [255, 1, 3, 3, 4]]))
    crowd = torch.zeros(1, 3, 5, dtype=torch.bool)
    crowd[0, :, 4] = True
    target = UPSNetPanopticHead(2, 2, unknown=False).panoptic_target(semantic, torch.stack([slot0, slot1]), crowd)
    assert torch.equal(target[:, 4], torch.full((3,), 255))
    assert torch.equal(target[:, :4], torch.tensor([[0, 0, 2, 2], [1, 1, 2, 2], [255, 1, 3, 3]]))


def test_head_checks_shapes():
    head = UPSNetPanopticHead(1, 2)
    with pytest.raises(SeglabError, match="channels"):
        head(torch.zeros(2, 4, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4, 4))
    with pytest.raises(SeglabError, match="labels"):
        head(torch.zeros(3, 4, 4), torch.zeros(1, 4), torch.zeros(2, dtype=torch.long), torch.zeros(1, 28, 28))


def test_select_instances_filters_like_the_release():
    masks = torch.zeros(6, 10, 10, dtype=torch.bool)
    masks[0, 0:5, 0:5] = True                  # best
    masks[1, 0:5, 2:7] = True                  # same class, 15 of 25 pixels (60%) under mask 0: dropped
    masks[2, 2:7, 0:5] = True                  # 15 of 25 pixels under mask 0 but another class: kept
    masks[3, 6:10, 6:10] = True                # score below the threshold
    masks[4, 5:10, 0:4] = True                 # same class as 0, no overlap: kept
    masks[5, 0:5, 0:5] = True                  # another class on box 0: class-agnostic NMS drops it
    boxes = torch.tensor([[0, 0, 5, 5], [2, 0, 7, 5], [0, 2, 5, 7], [6, 6, 10, 10], [0, 5, 4, 10],
                          [0, 0, 5, 5]]).float()
    # Boxes 1 and 2 have IoU 15 / 35 < 0.5 with box 0 and 9 / 41 with each other, so NMS keeps them.
    labels = torch.tensor([0, 0, 1, 0, 0, 1])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.5, 0.65, 0.85])
    assert select_instances(boxes, labels, scores, masks).tolist() == [0, 2, 4]
    assert select_instances(boxes, labels, scores, masks, overlap_thresh=0.7).tolist() == [0, 1, 2, 4]
    assert select_instances(boxes, labels, scores, masks, nms_thresh=1.0).tolist() == [0, 5, 4]
