"""Mask R-CNN RoI heads (He et al., ICCV 2017): mask targets by hand, the per-class mask and box losses
touch only the ground-truth class, inference labels are 0..C-1, PANet's adaptive pooling reads every
level."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.heads.instance.roi_heads import RoIHeads, drop_crowd, project_masks_on_boxes

NUM_CLASSES = 3
IMAGE = (64, 64)


def _heads(representation_size: int = 16, **kwargs) -> RoIHeads:
    torch.manual_seed(0)
    return RoIHeads(8, NUM_CLASSES, representation_size=representation_size, mask_channels=8, mask_layers=2,
                    **kwargs)


def _features(channels: int = 8) -> list[torch.Tensor]:
    """P2..P5 of a 64x64 image (strides 4..32)."""
    torch.manual_seed(1)
    return [torch.randn(1, channels, 64 // s, 64 // s, requires_grad=True) for s in (4, 8, 16, 32)]


def test_box_aligned_square_mask_gives_an_all_ones_target():
    masks = torch.zeros(2, *IMAGE, dtype=torch.bool)
    masks[0, 10:38, 20:48] = True  # 28 x 28 pixels; its pixel-edge box is [20, 10, 48, 38]
    masks[1, 5:50, 5:50] = True
    boxes = torch.tensor([[20.0, 10.0, 48.0, 38.0],  # exactly the first mask's box
                          [20.0, 10.0, 76.0, 38.0]])  # twice as wide, left half on mask 0
    target = project_masks_on_boxes(masks, boxes, torch.tensor([0, 0]), 28)
    assert target.shape == (2, 28, 28)
    assert torch.equal(target[0], torch.ones(28, 28))
    assert torch.equal(target[1, :, :14], torch.ones(28, 14)) and target[1, :, 14:].sum() == 0
    # matched index 1 picks the second mask (x < 50): cells of 2 pixels from x = 20, 15 of them inside
    other = project_masks_on_boxes(masks, boxes[1:], torch.tensor([1]), 28)[0]
    assert torch.equal(other[:, :15], torch.ones(28, 15)) and other[:, 15:].sum() == 0


def test_mask_loss_reads_only_the_ground_truth_class_channel():
    heads = _heads()
    masks = torch.zeros(1, *IMAGE, dtype=torch.bool)
    masks[0, 10:38, 20:48] = True
    boxes = torch.tensor([[20.0, 10.0, 48.0, 38.0], [18.0, 12.0, 46.0, 40.0]])
    labels = torch.tensor([2, 3])  # internal labels (class + 1)
    logits = torch.randn(2, NUM_CLASSES + 1, 28, 28, requires_grad=True)
    loss = heads.mask_loss(logits, [boxes], [labels], [torch.tensor([0, 0])], [{"masks": masks}])
    loss.backward()
    for roi, label in enumerate(labels.tolist()):
        grads = logits.grad[roi].flatten(1).abs().sum(1)
        assert grads[label] > 0 and grads.sum() == grads[label]  # other classes' channels get no gradient
    target = project_masks_on_boxes(masks, boxes, torch.tensor([0, 0]), 28)
    expected = F.binary_cross_entropy_with_logits(logits[[0, 1], [2, 3]], target)
    torch.testing.assert_close(loss, expected)


def test_box_regression_uses_the_ground_truth_class_deltas_only():
    heads = _heads()
    labels = torch.tensor([2, 0, 1])  # RoI 1 is background: no box loss
    targets = torch.randn(3, 4)
    class_logits = torch.randn(3, NUM_CLASSES + 1, requires_grad=True)
    deltas = torch.randn(3, 4 * (NUM_CLASSES + 1), requires_grad=True)
    loss_cls, loss_box = heads.box_loss(class_logits, deltas, labels, targets)
    loss_box.backward()
    grad = deltas.grad.view(3, NUM_CLASSES + 1, 4).abs().sum(2)
    assert grad[0, 2] > 0 and grad[2, 1] > 0 and grad.sum() == grad[0, 2] + grad[2, 1]
    picked = deltas.view(3, -1, 4)[[0, 2], [2, 1]]
    expected = F.smooth_l1_loss(picked, targets[[0, 2]], beta=1 / 9, reduction="sum") / 3
    torch.testing.assert_close(loss_box, expected)
    torch.testing.assert_close(loss_cls, F.cross_entropy(class_logits, labels))


def test_inference_labels_are_zero_based_and_background_is_dropped():
    heads = _heads().eval()
    with torch.no_grad():
        heads.box_predictor.cls_score.weight.zero_()
        heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 8.0]))  # last class wins
        heads.box_predictor.bbox_pred.weight.zero_()
        heads.box_predictor.bbox_pred.bias.zero_()
    proposals = [torch.tensor([[4.0, 4.0, 30.0, 30.0], [34.0, 30.0, 60.0, 62.0]])]
    features = [f.detach() for f in _features()]
    with torch.no_grad():
        detections, losses = heads(features, proposals, [IMAGE])
    d = detections[0]
    assert losses == {} and d["labels"].tolist() == [NUM_CLASSES - 1] * 2
    torch.testing.assert_close(d["boxes"], proposals[0])  # zero deltas decode to the proposals
    assert d["mask_probs"].shape == (2, 28, 28) and d["mask_logits"].shape == (2, 28, 28)
    torch.testing.assert_close(d["mask_probs"], d["mask_logits"].sigmoid())
    with torch.no_grad():
        heads.box_predictor.cls_score.bias.copy_(torch.tensor([8.0, 0.0, 0.0, 0.0]))  # background wins
        assert heads(features, proposals, [IMAGE])[0][0]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("branch", ["box", "mask"])
def test_adaptive_pooling_reads_every_level(branch):
    box = [torch.tensor([[8.0, 8.0, 40.0, 40.0]])]  # one RoI; FPN eq. 1 maps it to P2 alone
    used = {}
    outputs = {}
    for adaptive in (False, True):
        # max fusion passes each fc6 unit's gradient to one level: enough units that every level wins some
        heads = _heads(256, adaptive_pooling=adaptive)
        features = _features()
        forward = heads.box_forward if branch == "box" else heads.mask_forward
        out = forward(features, box, [IMAGE])
        out = out[0] if branch == "box" else out
        out.sum().backward()
        used[adaptive] = [f.grad is not None and bool(f.grad.abs().sum() > 0) for f in features]
        outputs[adaptive] = out.detach()
    assert used[False] == [True, False, False, False]
    assert used[True] == [True, True, True, True]
    assert not torch.allclose(outputs[False], outputs[True])  # same weights (seed), different pooling


def test_training_returns_the_three_losses_and_ignores_crowd_instances():
    heads = _heads(batch_size_per_image=32)
    masks = torch.zeros(2, *IMAGE, dtype=torch.bool)
    masks[0, 4:30, 4:30] = True
    masks[1, 34:60, 30:62] = True
    target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0], [30.0, 34.0, 62.0, 60.0]]),
              "labels": torch.tensor([0, 2]), "masks": masks, "iscrowd": torch.tensor([False, True])}
    assert drop_crowd([target])[0]["labels"].tolist() == [0]
    proposals = [torch.tensor([[30.0, 34.0, 62.0, 60.0], [5.0, 5.0, 29.0, 31.0]])]
    rois, labels, _, _ = heads.select_training_samples(proposals, drop_crowd([target]))
    # the crowd box's proposal is background; the other proposal and the added gt box are class 0 (+1)
    by_box = {tuple(r.tolist()): int(lab) for r, lab in zip(rois[0], labels[0])}
    assert by_box[(30.0, 34.0, 62.0, 60.0)] == 0 and by_box[(5.0, 5.0, 29.0, 31.0)] == 1
    assert by_box[(4.0, 4.0, 30.0, 30.0)] == 1
    _, losses = heads(_features(), proposals, [IMAGE], [target])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())


def test_fully_connected_fusion_adds_one_class_agnostic_map():
    heads = _heads(mask_fc_fusion=True)
    features, box = _features(), [torch.tensor([[8.0, 8.0, 40.0, 40.0], [30.0, 20.0, 60.0, 50.0]])]
    logits = heads.mask_forward(features, box, [IMAGE])
    fcn_only = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, box, [IMAGE])))
    added = logits - fcn_only  # (2, C + 1, 28, 28): the fc branch's map, the same for every class
    assert added.abs().amax() > 0
    torch.testing.assert_close(added, added[:, :1].expand_as(added))
    torch.testing.assert_close(added[:, 0], heads.mask_fc_fusion(
        heads.mask_head.run(heads.mask_roi_pool(features, box, [IMAGE]), tap=0)[1])[:, 0])


@pytest.mark.parametrize("kwargs", [{}, {"mask_fc_fusion": True}, {"adaptive_pooling": True}])
def test_labelled_mask_forward_is_the_chosen_channel_of_the_full_one(kwargs):
    """Inference computes only each RoI's class map (channels-last head, one batched row product); it
    must equal that channel of the all-class logits the simple path computes."""
    heads = _heads(**kwargs).eval()
    features = [f.detach() for f in _features()]
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0], [30.0, 20.0, 60.0, 50.0], [2.0, 3.0, 12.0, 60.0]])]
    labels = torch.tensor([2, 0, 3])
    with torch.no_grad():
        full = heads.mask_forward(features, boxes, [IMAGE])
        chosen = heads.mask_forward(features, boxes, [IMAGE], labels=labels)
    assert chosen.shape == (3, 28, 28)
    torch.testing.assert_close(chosen, full[torch.arange(3), labels], rtol=1e-5, atol=1e-5)
