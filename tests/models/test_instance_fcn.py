"""InstanceFCN (seglab.models.instance_fcn, seglab.heads.instance.instance_fcn): the assembling module
copies each sub-window from its relative position's score map, window targets, parameter counts,
fitting a tiny batch (segment proposals by AR and detections); the shared instance contract is in
test_instance_contract.py."""
from __future__ import annotations

import pytest
import torch
from instance_scenes import fit, objects_found, two_object_scenes

import seglab
from seglab import SeglabError
from seglab.heads.instance.instance_fcn import assemble_instances, relative_position_channels, window_boxes
from seglab.metrics.proposals import average_recall

TINY = {"width": 8, "mid_channels": 32, "feature_channels": 32, "representation_size": 64, "k": 3, "m": 6,
        "scales": [1.0], "positive_scale_range": [0.35, 0.7], "post_nms_top_n": 50}


def test_assembling_copies_each_sub_window_from_its_relative_position_map():
    """Score map c holds 10000 c + 100 y + x; a 7x7 window (k = 3: sub-windows of rows 0-2, 3-4, 5-6)
    at cell (4, 5) must read map floor(3u / 7) * 3 + floor(3v / 7) at pixel (4 - 3 + u, 5 - 3 + v), and 0
    outside the map."""
    k, m, h, w = 3, 7, 9, 8
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    maps = torch.stack([10000.0 * c + 100 * yy + xx for c in range(k * k)])[None].repeat(2, 1, 1, 1)
    maps[1] += 0.5  # the second image is told apart
    out = assemble_instances(maps, torch.tensor([[1, 4, 5], [0, 0, 0]]), m=m, k=k)
    assert out.shape == (2, m, m)
    assert relative_position_channels(m, k)[:, 0].tolist() == [0, 0, 0, 3, 3, 6, 6]
    for u in range(m):
        for v in range(m):
            c, y, x = (u * k // m) * k + v * k // m, 1 + u, 2 + v
            expected = 10000 * c + 100 * y + x + 0.5 if x < w else 0.0
            assert out[0, u, v].item() == expected
    # the window at (0, 0) reaches 3 cells past the top-left corner: zeros there
    assert (out[1, :3] == 0).all() and (out[1, :, :3] == 0).all() and out[1, 3, 3].item() == 10000 * 4
    assert window_boxes(torch.tensor([[0, 4, 5]]), m, 8).tolist() == [[16.0, 8.0, 72.0, 64.0]]


def test_assembled_gradient_reaches_only_the_copied_scores():
    maps = torch.zeros(1, 4, 6, 6, requires_grad=True)
    assemble_instances(maps, torch.tensor([[0, 2, 2]]), m=4, k=2).sum().backward()
    grad = maps.grad[0]
    assert grad[0, 0:2, 0:2].eq(1).all() and grad[3, 2:4, 2:4].eq(1).all()  # top-left map, bottom-right map
    assert grad.sum().item() == 16  # 4 x 4 copied values, each once


def test_window_targets_pick_the_centred_instance_of_the_right_scale():
    model = seglab.create_model("instance_fcn_resnet18", num_classes=3, **TINY)  # window 6 x 8 = 48 pixels
    target = {"boxes": torch.tensor([[8.0, 8.0, 32.0, 32.0], [40.0, 40.0, 44.0, 44.0]])}  # 24 px fits, 4 px does not
    matched, boxes = model.window_targets(target, (8, 8))
    positive = torch.where(matched >= 0)[0]
    assert matched[positive].unique().tolist() == [0]
    centres = (boxes[positive, :2] + boxes[positive, 2:]) / 2
    assert ((centres - 20).abs() <= 48 / 6).all()  # within half a sub-window of the instance's centre
    assert len(positive) == 4  # window centres every 8 px: (16 | 24) x (16 | 24)


def test_parameter_counts():
    def count(name, part=None):
        with torch.device("meta"):
            model = seglab.create_model(name, num_classes=21)
        return sum(p.numel() for p in (getattr(model, part) if part else model).parameters())

    assert count("instance_fcn_resnet50") == 274_431_600
    assert count("instance_fcn_resnet18") == 253_449_328
    with torch.device("meta"):
        model = seglab.create_model("instance_fcn_resnet50", num_classes=21)
    assert sum(p.numel() for p in model.head.segment[2].parameters()) == 512 * 9 * 25 + 25  # the paper's ~0.1M


def test_settings_that_cannot_work_raise():
    with pytest.raises(SeglabError, match="window"):
        seglab.create_model("instance_fcn_resnet18", num_classes=3, **{**TINY, "m": 2})
    with pytest.raises(SeglabError, match="positive_scale_range"):
        seglab.create_model("instance_fcn_resnet18", num_classes=3, **{**TINY, "positive_scale_range": [0.8, 0.4]})
    with pytest.raises(SeglabError, match="aux_loss"):
        seglab.create_model("instance_fcn_resnet18", num_classes=3, aux_loss=True, **TINY)


def test_loss_falls_and_the_proposals_recall_the_objects():
    torch.manual_seed(0)
    model = seglab.create_model("instance_fcn_resnet18", num_classes=3, **TINY).train()
    images, targets = two_object_scenes()
    history = fit(model, images, targets, steps=60, lr=2e-3)
    first, last = torch.tensor(history[:3]).mean(0), torch.tensor(history[-3:]).mean(0)
    assert (last < 0.5 * first).all(), history[-1]
    with torch.no_grad():  # training mode: BatchNorm keeps the batch statistics it was fitted with
        proposals = model.propose(images)
        results = model.postprocess(images, [(64, 64)] * 2)
    ar = average_recall([p["masks"] for p in proposals], [t["masks"] for t in targets], (10,))
    assert ar["AR@10"] >= 0.4, ar
    assert objects_found(results, targets) >= 3
