"""MNC (seglab.models.mnc): parameter counts, settings, the end-to-end gradient through the RoI warping
into the box regressions (the cascade's defining property), RoI targets, and fitting a tiny batch (the
shared instance contract is in test_instance_contract.py)."""
from __future__ import annotations

import pytest
import torch
from instance_scenes import fit, objects_found, two_object_scenes

import seglab
from seglab import SeglabError

TINY = {"width": 8, "feature_channels": 32, "mask_hidden": 64, "representation_size": 64,
        "anchor_sizes": [16, 32], "rpn_post_nms_top_n_train": 64, "rpn_post_nms_top_n_test": 32}


def _count(name: str, num_classes: int = 21, part: str | None = None, **kwargs) -> int:
    with torch.device("meta"):
        model = seglab.create_model(name, num_classes=num_classes, **kwargs)
    module = getattr(model, part) if part else model
    return sum(p.numel() for p in module.parameters())


def test_full_size_parameter_counts():
    assert _count("mnc_resnet50") == 300_018_346
    assert _count("mnc_resnet18") == 278_017_706
    # stage 2: fc 512*14*14 -> 256, fc 256 -> 21*21 (the release's mask_pred)
    assert _count("mnc_resnet50", part="mask_estimator") == (512 * 196 * 256 + 256) + (256 * 441 + 441)
    # stage 3: two pathways of fc6 (512*7*7 -> 4096) + fc7, then 22 + 22 + 88 outputs from the 8192 concat
    pathway = (512 * 49 * 4096 + 4096) + (4096 * 4096 + 4096)
    assert _count("mnc_resnet50", part="classifier") == 2 * pathway + 8193 * (22 + 22 + 88) - 8192 * 0
    # the 5-stage cascade shares stages 4-5 with 2-3: no new parameters
    assert _count("mnc_resnet50", stages=5) == _count("mnc_resnet50")


def test_settings_that_cannot_work_raise():
    with pytest.raises(SeglabError, match="aux_loss"):
        seglab.create_model("mnc_resnet18", num_classes=3, aux_loss=True, **TINY)
    with pytest.raises(SeglabError, match="stages"):
        seglab.create_model("mnc_resnet18", num_classes=3, stages=4, **TINY)
    with pytest.raises(SeglabError, match="output_stride"):
        seglab.create_model("mnc_resnet18", num_classes=3, output_stride=8, **TINY)


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("box_grad", [True, False])
def test_mask_loss_trains_the_rpn_box_regression_through_the_warping(box_grad):
    """Sec. 3.4: the RoIs of stage 2 are the RPN's boxes, so the mask loss alone reaches the RPN's box
    regression (and with 5 stages, stage 5's mask loss reaches stage 3's box regression); with
    box_grad=False the boxes are constants."""
    torch.manual_seed(0)
    model = seglab.create_model("mnc_resnet18", num_classes=3, stages=5, box_grad=box_grad, **TINY).train()
    images, targets = two_object_scenes()
    losses = model(images, targets)
    losses["loss_mask"].backward(retain_graph=True)
    assert (_grad_norm(model.rpn.head.bbox_pred) > 0) == box_grad
    assert _grad_norm(model.classifier.bbox_pred) == 0  # stage 3's deltas do not feed stage 2
    model.zero_grad()
    losses["loss_mask_s5"].backward()
    assert (_grad_norm(model.classifier.bbox_pred) > 0) == box_grad


def test_ground_truth_rois_get_their_class_mask_and_zero_box_targets():
    torch.manual_seed(0)
    model = seglab.create_model("mnc_resnet18", num_classes=3, **TINY)
    _, targets = two_object_scenes()
    rois, labels, masks, box_targets, matched = model.stage_targets(torch.zeros(0, 5), targets, sample=True)
    assert rois[:, 0].tolist() == [0, 0, 1, 1]
    assert torch.equal(rois[:, 1:], torch.cat([t["boxes"] for t in targets]))
    assert labels.tolist() == [1, 2, 3, 1] and matched.tolist() == [0, 1, 0, 1]
    assert bool((masks[0] == 1).all()) and bool((masks[2] == 1).all())  # rectangles fill their box
    assert masks[1, 10, 10] == 1 and masks[1, 0, 0] == 0  # a disc leaves the corners out
    assert torch.allclose(box_targets, torch.zeros_like(box_targets), atol=1e-6)


def test_sampling_keeps_the_release_fractions():
    torch.manual_seed(0)
    model = seglab.create_model("mnc_resnet18", num_classes=3, **TINY)
    _, targets = two_object_scenes()
    gt = targets[0]["boxes"][0]
    jitter = torch.rand(400, 4) * 40 - 20
    boxes = torch.cat([gt + jitter[:200] * 0.1, (gt + jitter[200:]).clamp(0, 64)])
    boxes = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:] - 1), boxes[:, 2:]], 1)
    keep, labels, _, iou = model.label_rois(boxes, targets[0], sample=True)
    assert keep.numel() == 64 and int((labels > 0).sum()) == round(64 * 0.3)
    background = iou[labels == 0]
    assert bool((background < 0.5).all()) and int((background >= 0.1).sum()) == round(45 * 0.85)


def test_loss_falls_and_the_fitted_model_finds_the_objects():
    torch.manual_seed(0)
    model = seglab.create_model("mnc_resnet18", num_classes=3, stages=5, **TINY).train()
    images, targets = two_object_scenes()
    history = [sum(step) for step in fit(model, images, targets, steps=120, lr=2e-3)]
    assert sum(history[-5:]) / 5 < 0.5 * history[0]
    with torch.no_grad():  # training mode: BatchNorm keeps the batch statistics it was fitted with
        model.rpn.training = False  # but the test-time proposal counts
        results = model.postprocess(*_features_and_proposals(model, images))
    found = objects_found(results, targets)
    assert found >= 3, f"only {found} of 4 objects found with mask IoU > 0.5"


def _features_and_proposals(model, images):
    features = model.backbone(images)
    proposals, _ = model.rpn([features[-2]], [tuple(images.shape[-2:])] * images.shape[0])
    return model.reduce(features[-1]), proposals, [tuple(images.shape[-2:])] * images.shape[0]


def test_only_foreground_rois_move_their_boxes():
    """A background RoI has no box to move towards: with the classifier's loss flowing into every sampled
    box, the RPN's deltas drifted (mean |dw| 3.52 after 345 iterations) and no proposal kept an object."""
    torch.manual_seed(0)
    model = seglab.create_model("mnc_resnet18", num_classes=3, **TINY).train()
    feature = torch.randn(1, 32, 8, 8)
    rois = torch.tensor([[0, 8.0, 8.0, 60.0, 60.0], [0, 30.0, 20.0, 100.0, 90.0]], requires_grad=True)
    mask_logits, outputs = model.run_stages(feature, rois, gate=torch.tensor([True, False]))
    (mask_logits.sum() + outputs.class_logits.sum() + outputs.seg_class_logits.sum()).backward()
    assert rois.grad[0, 1:].abs().sum() > 0  # foreground: the warping's gradient reaches the box
    assert torch.equal(rois.grad[1], torch.zeros(5))  # background: none
