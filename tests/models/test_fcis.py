"""FCIS (seglab.models.fcis): sizes, settings, RoI targets, fitting a tiny batch (the shared instance
contract is in test_instance_contract.py)."""
from __future__ import annotations

import pytest
import torch
from instance_scenes import objects_found, two_object_scenes

import seglab
from seglab import SeglabError

TINY = {"width": 8, "mid_channels": 32, "k": 3, "roi_size": 9, "anchor_sizes": [16, 32],
        "rpn_post_nms_top_n_train": 64, "rpn_post_nms_top_n_test": 32, "batch_size_per_image": 32}


def _count(name: str, num_classes: int = 21, part: str | None = None) -> int:
    with torch.device("meta"):
        model = seglab.create_model(name, num_classes=num_classes)
    module = getattr(model, part) if part else model
    return sum(p.numel() for p in module.parameters())


def test_full_size_parameter_counts():
    assert _count("fcis_resnet101") == 56_508_844
    assert _count("fcis_resnet50") == 37_516_716
    assert _count("fcis_resnet18") == 14_718_124
    # head: 2048 -> 1024 (1x1) + 2 * 7^2 * 22 inside/outside maps + 4 * 7^2 box maps
    assert _count("fcis_resnet101", part="head") == (2048 * 1024 + 1024) + (1024 * 2156 + 2156) + (1024 * 196 + 196)
    # RPN on conv4 (1024 channels), 12 anchors: 3x3 conv + 12 objectness + 48 deltas
    assert _count("fcis_resnet101", part="rpn") == (1024 * 1024 * 9 + 1024) + (1024 * 12 + 12) + (1024 * 48 + 48)
    assert _count("fcis_resnet101", num_classes=80) == 62_435_394


def test_settings_that_cannot_work_raise():
    with pytest.raises(SeglabError, match="aux_loss"):
        seglab.create_model("fcis_resnet18", num_classes=3, aux_loss=True, **TINY)
    with pytest.raises(SeglabError, match="multiple of k"):
        seglab.create_model("fcis_resnet18", num_classes=3, **{**TINY, "roi_size": 10})
    with pytest.raises(SeglabError):
        seglab.create_model("fcis_resnet18", num_classes=3, **TINY)(torch.zeros(3, 32, 32))


def test_ground_truth_rois_get_their_class_cropped_mask_and_zero_box_targets():
    torch.manual_seed(0)
    model = seglab.create_model("fcis_resnet18", num_classes=3, **TINY)
    _, targets = two_object_scenes()
    targets = [model._without_crowd(t, torch.device("cpu")) for t in targets]
    no_proposals = [torch.zeros(0, 4), torch.zeros(0, 4)]
    rois, labels, mask_targets, box_targets = model.sample_rois(no_proposals, targets)
    assert rois[:, 0].tolist() == [0, 0, 1, 1]
    assert torch.equal(rois[:, 1:], torch.cat([t["boxes"] for t in targets]))
    assert labels.tolist() == [1, 2, 3, 1]  # class + 1
    assert bool((mask_targets[0] == 1).all()) and bool((mask_targets[2] == 1).all())  # rectangles fill their box
    disc = mask_targets[1]
    assert disc[4, 4] == 1 and disc[0, 0] == 0 and disc[-1, -1] == 0  # a disc leaves the corners out
    assert torch.allclose(box_targets, torch.zeros_like(box_targets), atol=1e-6)


def test_images_of_different_sizes_give_masks_at_their_own_size():
    torch.manual_seed(0)
    model = seglab.create_model("fcis_resnet18", num_classes=3, **TINY).eval()
    with torch.no_grad():
        results = model([torch.randn(3, 50, 70), torch.randn(3, 37, 29)])
    assert results[0].masks.shape[1:] == (50, 70) and results[1].masks.shape[1:] == (37, 29)
    assert bool((results[1].boxes[:, 2] <= 29).all()) and bool((results[1].boxes[:, 3] <= 37).all())


def test_loss_falls_and_the_fitted_model_finds_the_objects():
    torch.manual_seed(0)
    model = seglab.create_model("fcis_resnet18", num_classes=3, **TINY).train()
    images, targets = two_object_scenes()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(150):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[25:30]) / 5 < 0.6 * history[0]
    # Inference in training mode: BatchNorm keeps the batch statistics it was fitted with.
    with torch.no_grad():
        results = model(images)
    found = objects_found(results, targets)
    assert found >= 3, f"only {found} of 4 objects found with mask IoU > 0.5"
