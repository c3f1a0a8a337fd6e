"""Region proposal network: hand-computed targets, proposal selection, losses, one and five levels."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seglab.errors import SeglabError
from seglab.heads.instance.rpn import RegionProposalNetwork, RPNHead

# One level of 32x32 square anchors every 16 pixels: on a 64x64 image the 4x4 grid has anchor centres
# at 0, 16, 32, 48 on each axis.
ONE_SQUARE = {"anchor_sizes": ((32,),), "aspect_ratios": (1.0,)}


class FixedHead(nn.Module):
    """Stands in for RPNHead: returns the given per-level logits and deltas whatever the features."""

    def __init__(self, logits: list[torch.Tensor], deltas: list[torch.Tensor]):
        super().__init__()
        self.logits, self.deltas = logits, deltas

    def forward(self, features):
        return self.logits, self.deltas


def test_head_layout_matches_torchvision_keys():
    head = RPNHead(256, 3)
    shapes = {f"rpn.head.{k}": list(v.shape) for k, v in head.state_dict().items()}
    # From torchvision's maskrcnn_resnet50_fpn state dict (shared/reference/torchvision_keys).
    assert shapes == {"rpn.head.conv.0.0.weight": [256, 256, 3, 3], "rpn.head.conv.0.0.bias": [256],
                      "rpn.head.cls_logits.weight": [3, 256, 1, 1], "rpn.head.cls_logits.bias": [3],
                      "rpn.head.bbox_pred.weight": [12, 256, 1, 1], "rpn.head.bbox_pred.bias": [12]}
    # 3x3 conv + 1x1 objectness (3) + 1x1 deltas (12): 590,080 + 771 + 3,084, torchvision's figure.
    assert sum(p.numel() for p in head.parameters()) == 593_935
    logits, deltas = head([torch.zeros(2, 256, 5, 7), torch.zeros(2, 256, 3, 4)])
    assert [t.shape for t in logits] == [(2, 3, 5, 7), (2, 3, 3, 4)]
    assert [t.shape for t in deltas] == [(2, 12, 5, 7), (2, 12, 3, 4)]


def test_matched_anchors_get_the_encoded_regression_target():
    rpn = RegionProposalNetwork(4, **ONE_SQUARE)
    anchors = rpn.anchor_generator.grid_anchors([(4, 4)], [(16, 16)])[0]
    gt = torch.tensor([[10.0, 12.0, 42.0, 44.0]])  # 32x32, centre (26, 28)
    labels, targets = rpn.assign_targets(anchors, [{"boxes": gt}])
    # Its best anchor is [16, 16, 48, 48] (row 2, column 2; IoU 728 / 1320 = 0.55 < 0.7: a low-quality
    # match, kept); dx = (26 - 32) / 32, dy = (28 - 32) / 32, dw = dh = log(32 / 32).
    best = 2 * 4 + 2
    assert anchors[best].tolist() == [16.0, 16.0, 48.0, 48.0]
    assert labels[0][best] == 1 and int((labels[0] == 1).sum()) == 1
    assert targets[0][best].tolist() == [-0.1875, -0.125, 0.0, 0.0]
    # The anchor left of it, [0, 16, 32, 48], overlaps 616 / 1432 = 0.43: between the thresholds.
    assert labels[0][best - 1] == -1
    assert labels[0][0] == 0  # [-16, -16, 16, 16]: IoU 0.03 -> background


def test_proposals_contain_the_box_the_deltas_decode_to():
    rpn = RegionProposalNetwork(4, **ONE_SQUARE, post_nms_top_n_test=1).eval()
    deltas = torch.randn(1, 4, 4, 4)
    deltas[0, :, 2, 2] = torch.tensor([-0.1875, -0.125, math.log(1.25), math.log(0.75)])
    logits = torch.zeros(1, 1, 4, 4)
    logits[0, 0, 2, 2] = 5.0  # the best-scoring anchor
    rpn.head = FixedHead([logits], [deltas])
    proposals, losses = rpn([torch.zeros(1, 4, 4, 4)], [(64, 64)])
    # Centre (26, 28), size 40 x 24 around anchor [16, 16, 48, 48].
    assert losses == {}
    assert torch.allclose(proposals[0], torch.tensor([[6.0, 16.0, 46.0, 40.0]]), atol=1e-5)


def test_proposals_stay_inside_each_image_and_respect_post_nms_top_n():
    sizes = [(61, 45), (37, 64)]  # odd sizes, padded to 64 x 64 (features of stride 8 and 16)
    rpn = RegionProposalNetwork(4, anchor_sizes=((16,), (32,)), post_nms_top_n_train=7, post_nms_top_n_test=3,
                                pre_nms_top_n_test=20)
    logits = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    deltas = [3 * torch.randn(2, 12, 8, 8), 3 * torch.randn(2, 12, 4, 4)]  # far-reaching boxes
    rpn.head = FixedHead(logits, deltas)
    features = [torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 4, 4)]
    for mode, expected in ((True, 7), (False, 3)):
        proposals, _ = rpn.train(mode)(features, sizes)
        for boxes, (h, w) in zip(proposals, sizes):
            assert 0 < len(boxes) <= expected
            assert bool((boxes >= 0).all()) and bool((boxes[:, 0::2] <= w).all()) and bool((boxes[:, 1::2] <= h).all())
            assert bool((boxes[:, 2:] > boxes[:, :2]).all())
    assert len(rpn.train()(features, sizes)[0][0]) == 7  # plenty of candidates: exactly the cap


@pytest.mark.parametrize("levels", [1, 5])
def test_one_and_five_level_configurations_at_odd_sizes(levels):
    # FCIS: one stride-16 map, 4 sizes x 3 ratios; FPN: P2..P6 with one size per level.
    kwargs = {"anchor_sizes": ((32, 64, 128, 256),)} if levels == 1 else {}
    strides = (16,) if levels == 1 else (4, 8, 16, 32, 64)
    rpn = RegionProposalNetwork(6, **kwargs, pre_nms_top_n_train=50, post_nms_top_n_train=40)
    sizes = [(75, 53), (67, 91)]  # padded to 75 x 91; maps of ceil(size / stride) cells
    grids = [(math.ceil(75 / s), math.ceil(91 / s)) for s in strides]
    assert rpn.level_strides(grids, sizes) == [(s, s) for s in strides]
    features = [torch.randn(2, 6, h, w, requires_grad=True) for h, w in grids]
    targets = [{"boxes": torch.tensor([[5.0, 7.0, 40.0, 50.0]]), "labels": torch.tensor([0])},
               {"boxes": torch.tensor([[30.0, 2.0, 88.0, 60.0], [0.0, 30.0, 20.0, 66.0]]), "labels": torch.tensor([1, 2])}]
    proposals, losses = rpn(features, sizes, targets)
    assert rpn.head.cls_logits.out_channels == (12 if levels == 1 else 3)
    assert [p.shape[1] for p in proposals] == [4, 4] and all(0 < len(p) <= 40 for p in proposals)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values()) and float(losses["loss_rpn_box_reg"].detach()) > 0
    sum(losses.values()).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)
    assert not any(p.requires_grad for p in proposals)


def test_image_without_boxes_gives_only_negatives():
    rpn = RegionProposalNetwork(4, **ONE_SQUARE)
    anchors = rpn.anchor_generator.grid_anchors([(4, 4)], [(16, 16)])[0]
    crowd_only = {"boxes": torch.tensor([[10.0, 12.0, 42.0, 44.0]]), "iscrowd": torch.tensor([True])}
    for target in ({"boxes": torch.zeros(0, 4)}, crowd_only):
        labels, _ = rpn.assign_targets(anchors, [target])
        assert bool((labels[0] == 0).all())
        with torch.no_grad():
            _, losses = rpn([torch.randn(1, 4, 4, 4)], [(64, 64)], [target])
        assert torch.isfinite(losses["loss_objectness"]) and float(losses["loss_objectness"]) > 0
        assert float(losses["loss_rpn_box_reg"]) == 0.0


def test_losses_fall_when_training_a_tiny_rpn():
    # Sampling every anchor (batch_size_per_image covers them all) makes each step deterministic.
    rpn = RegionProposalNetwork(8, anchor_sizes=((16,), (32,)), batch_size_per_image=1000, positive_fraction=1.0)
    features = [torch.randn(2, 8, 12, 12), torch.randn(2, 8, 6, 6)]
    sizes = [(48, 48), (45, 41)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 24.0, 22.0], [20.0, 18.0, 46.0, 44.0]])},
               {"boxes": torch.tensor([[10.0, 3.0, 38.0, 40.0]])}]
    optimizer = torch.optim.Adam(rpn.parameters(), lr=1e-2)
    history = []
    for _ in range(30):
        _, losses = rpn(features, sizes, targets)
        total = sum(losses.values())
        assert all(torch.isfinite(v) for v in losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    for key in ("loss_objectness", "loss_rpn_box_reg"):
        assert history[-1][key] < 0.5 * history[0][key], (key, history[0][key], history[-1][key])


def test_level_count_must_match_the_anchor_levels():
    rpn = RegionProposalNetwork(4)  # five FPN levels
    with pytest.raises(SeglabError, match="5 anchor levels"):
        rpn([torch.zeros(1, 4, 8, 8)], [(32, 32)])


def test_proposals_are_float32_under_bf16_autocast():
    """bf16 boxes would round coordinates of large images to several pixels."""
    rpn = RegionProposalNetwork(8, anchor_sizes=((64,),), post_nms_top_n_test=50).eval()
    feats = [torch.randn(1, 8, 50, 60)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        proposals, _ = rpn(feats, [(800, 960)])
    assert proposals[0].dtype == torch.float32
    assert bool((proposals[0] != proposals[0].to(torch.bfloat16).float()).any())
