"""YOLACT (Bolya et al., ICCV 2019): anchors, the release's matching, OHEM, the cropped and box-normalised
mask loss, masks as sigmoid of a linear combination of prototypes, Fast NMS at inference, fitting a tiny
synthetic batch, full-size parameter counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from seglab.data import generate_synthetic
from seglab.data.instances import masks_to_boxes
from seglab.data.synthetic import SYNTHETIC_THING_IDS
from seglab.errors import ConfigError, SeglabError
from seglab.models.yolact import (
    crop_masks,
    force_best_anchors,
    mask_loss,
    ohem_negatives,
    yolact_anchors,
)

NUM_CLASSES = 3
TINY = {"width": 8, "fpn_channels": 16, "head_channels": 16, "num_prototypes": 8,
        "anchor_sizes": (12, 24, 48, 96, 192)}


def _tiny(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return seglab.create_model("yolact_resnet18", num_classes=NUM_CLASSES, **{**TINY, **kwargs})


def test_full_size_parameter_counts():
    """Eval (without the training-only semantic conv) and total, at 21 classes; eval at COCO's 80."""
    counts = {}
    for classes, names in ((21, ("yolact_resnet101", "yolact_resnet50", "yolact_resnet18")),
                           (80, ("yolact_resnet101", "yolact_resnet50"))):
        for name in names:
            with torch.device("meta"):
                model = seglab.create_model(name, num_classes=classes)
            total = sum(p.numel() for p in model.parameters())
            counts[name, classes] = (total - sum(p.numel() for p in model.semantic_conv.parameters()), total)
    assert counts["yolact_resnet101", 21] == (49_728_526, 49_733_923)
    assert counts["yolact_resnet50", 21] == (30_736_398, 30_741_795)
    assert counts["yolact_resnet18", 21] == (17_716_750, 17_722_147)
    assert counts["yolact_resnet101", 80][0] == 50_136_511
    assert counts["yolact_resnet50", 80][0] == 31_144_383
    # the shared head once: 3x3 conv 256 + class (81 * 3), box (4 * 3), coefficient (32 * 3) 3x3 convs
    head = 256 * 256 * 9 + 256 + sum(256 * 9 * c + c for c in (81 * 3, 4 * 3, 32 * 3))
    assert head == 1_399_135


def test_anchors_are_centred_on_cells_with_the_paper_ratios():
    anchors = yolact_anchors([(8, 8), (4, 4)], (64, 64), (16, 32), (1.0, 0.5, 2.0))
    assert anchors.shape == (3 * (64 + 16), 4)
    assert anchors[0].tolist() == [-4.0, -4.0, 12.0, 12.0]  # cell (0, 0) of stride 8, size 16, ratio 1
    w, h = (anchors[1, 2:] - anchors[1, :2]).tolist()  # ratio 1/2 (width / height): w = 16 / sqrt(2)
    assert w == pytest.approx(16 / math.sqrt(2)) and h == pytest.approx(16 * math.sqrt(2))
    assert ((anchors[3, :2] + anchors[3, 2:]) / 2).tolist() == [12.0, 4.0]  # next cell along x
    assert ((anchors[192, :2] + anchors[192, 2:]) / 2).tolist() == [8.0, 8.0]  # first cell of stride 16


def test_each_gt_box_gets_its_own_best_anchor():
    """Two gt boxes whose best anchor is the same anchor 1: the higher IoU takes it, the other gets its
    next best (anchor 2) although that IoU is below the negative threshold."""
    iou = torch.tensor([[0.10, 0.45, 0.05, 0.00],
                        [0.00, 0.30, 0.20, 0.00]])
    matches = torch.tensor([-1, -2, -1, -1])
    assert force_best_anchors(iou, matches).tolist() == [-1, 0, 1, -1]


def test_ohem_keeps_three_hardest_negatives_per_positive():
    torch.manual_seed(0)
    logits = torch.randn(3, 60, NUM_CLASSES + 1)
    labels = torch.zeros(3, 60, dtype=torch.long)
    labels[0, :4] = 2  # 4 positives
    labels[0, 4:10] = -1  # ignored: never negatives
    labels[2, :50] = 1  # 50 positives, only 10 negatives left
    neg = ohem_negatives(logits, labels)
    assert neg.sum(1).tolist() == [12, 0, 10]
    assert not (neg & (labels != 0)).any()
    background_loss = torch.logsumexp(logits[0], -1) - logits[0, :, 0]
    candidates = background_loss[labels[0] == 0]
    assert background_loss[neg[0]].min() >= candidates.sort(descending=True).values[11]


def test_mask_loss_is_cropped_to_the_gt_box_and_normalised_by_its_area():
    torch.manual_seed(0)
    logits, gt = torch.randn(1, 16, 16), torch.rand(1, 16, 16) > 0.5
    box = torch.tensor([[2.0, 3.0, 6.0, 8.0]])  # cells x 2..5, y 3..7
    inside = crop_masks(box, 16, 16)[0]
    assert inside.sum() == 20 and inside[3:8, 2:6].all()
    loss = mask_loss(logits, gt, box)
    outside_changed = torch.where(inside, logits, logits + 5 * torch.randn(16, 16))
    assert torch.equal(mask_loss(outside_changed, gt, box), loss)
    assert not torch.allclose(mask_loss(logits + 1.0 * inside, gt, box), loss)
    # logits 0: BCE log 2 in every cell; the sum over the box / its area is log 2 for any box size
    zeros = torch.zeros(2, 16, 16)
    boxes = torch.tensor([[2.0, 3.0, 6.0, 8.0], [0.0, 0.0, 16.0, 16.0]])
    assert mask_loss(zeros, torch.ones(2, 16, 16, dtype=torch.bool), boxes).tolist() == pytest.approx([math.log(2)] * 2)


def test_model_mask_loss_has_no_gradient_outside_the_gt_box():
    model = _tiny().train()
    images = torch.randn(1, 3, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 20:40, 16:44] = True
    targets = [{"boxes": masks_to_boxes(masks), "labels": torch.tensor([1]), "masks": masks}]
    raw = model.forward_raw(images, semantic=True)
    raw["prototypes"].retain_grad()
    model.losses(raw, targets, [(64, 64)])["loss_mask"].backward()
    grad = raw["prototypes"].grad[0].abs().sum(0)  # prototypes at stride 4: 16x16 cells
    assert grad[5:10, 4:11].gt(0).all()  # the box 16..44 x 20..40 covers cells 4..10 x 5..9
    grad[5:10, 4:11] = 0
    assert grad.eq(0).all()


def _confident(raw: dict, anchor: int, label: int, box: torch.Tensor, model) -> None:
    """Make `anchor` of image 0 predict class `label` (0..C-1) with probability ~1 and decode to `box`."""
    raw["class_logits"][0, anchor] = -10.0
    raw["class_logits"][0, anchor, label + 1] = 10.0
    raw["box_deltas"][0, anchor] = model.box_coder.encode_single(box[None], raw["anchors"][anchor][None])[0]


def _background_everywhere(model, size=(64, 64)) -> dict:
    with torch.no_grad():
        raw = model.forward_raw(torch.randn(1, 3, *size))
    raw["class_logits"][...] = -10.0
    raw["class_logits"][..., 0] = 10.0
    return raw


def test_instance_mask_is_sigmoid_of_the_linear_combination_of_prototypes():
    """Two detections (two classes, boxes = the whole image, so no crop): each mask is exactly
    sigmoid(sum_k c_k P_k) of its own coefficients, upsampled x4 and thresholded at 0.5."""
    model = _tiny().eval()
    raw = _background_everywhere(model)
    torch.manual_seed(1)
    raw["prototypes"] = torch.rand_like(raw["prototypes"]) * 3
    for anchor in (100, 200):  # zero-mean coefficients: about half of the pixels above 0.5
        c = torch.randn(raw["coefficients"].shape[-1])
        raw["coefficients"][0, anchor] = (c - c.mean()).clamp(-1, 1)
    whole = torch.tensor([0.0, 0.0, 64.0, 64.0])
    _confident(raw, 100, 0, whole, model)
    _confident(raw, 200, 2, whole, model)
    (result,) = model.postprocess(raw, [(64, 64)])
    assert result.labels.tolist() == [0, 2] or result.labels.tolist() == [2, 0]
    for mask, label in zip(result.masks, result.labels):
        c = raw["coefficients"][0, 100 if label == 0 else 200]
        explicit = torch.sigmoid(torch.einsum("khw,k->hw", raw["prototypes"][0], c))
        expected = torch.nn.functional.interpolate(explicit[None, None], size=(64, 64), mode="bilinear",
                                                   align_corners=False)[0, 0] > 0.5
        assert 0.05 < expected.float().mean() < 0.95  # a mask with both values: the comparison means something
        assert torch.equal(mask, expected)


def test_inference_uses_fast_nms():
    """Same class: A, B, C in a row with IoU(A, B) = IoU(B, C) = 2/3 and IoU(A, C) = 3/7. Greedy NMS keeps A
    and C; Fast NMS lets the suppressed B still remove C, leaving A only. A duplicate of A of another
    class stays (per-class NMS)."""
    model = _tiny().eval()
    raw = _background_everywhere(model)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 50.0], [16.0, 20.0, 46.0, 50.0], [22.0, 20.0, 52.0, 50.0]])
    for anchor, box, logit in zip((30, 31, 32), boxes, (10.0, 9.0, 8.0)):
        _confident(raw, anchor, 1, box, model)
        raw["class_logits"][0, anchor, 2] = logit
    _confident(raw, 33, 0, boxes[0], model)
    (result,) = model.postprocess(raw, [(64, 64)])
    assert sorted(result.labels.tolist()) == [0, 1]
    assert torch.allclose(result.boxes, boxes[0].expand(2, 4), atol=1e-3)


def _synthetic_batch(tmp_path, size: int = 96):
    root = generate_synthetic(tmp_path / "syn", num_train=2, num_val=0, size=(size, size), seed=3, workers=1)
    images, targets = [], []
    for name in ("train_00000.png", "train_00001.png"):
        image = np.asarray(Image.open(root / "images" / name), dtype=np.float32) / 127.5 - 1
        inst = np.asarray(Image.open(root / "instances" / name)).astype(np.int64)
        classes = np.asarray(Image.open(root / "labels" / name)).astype(np.int64)
        masks = torch.from_numpy(inst[None] == np.arange(1, inst.max() + 1)[:, None, None])
        labels = torch.tensor([SYNTHETIC_THING_IDS.index(int(classes[m][0])) for m in masks.numpy()])
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        targets.append({"boxes": masks_to_boxes(masks), "labels": labels, "masks": masks,
                        "iscrowd": torch.zeros(len(labels), dtype=torch.bool)})
    return torch.stack(images), targets


def test_losses_fall_and_the_fitted_model_finds_the_objects(tmp_path):
    images, targets = _synthetic_batch(tmp_path)
    model = _tiny().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        losses = model(images, targets)
        assert set(losses) == {"loss_class", "loss_box", "loss_mask", "loss_semantic"}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append([v.item() for v in losses.values()])
    first, last = np.array(history[:2]).mean(0), np.array(history[-3:]).mean(0)
    assert (last < 0.5 * first).all(), history
    with torch.no_grad():  # training-mode BN: the running statistics lag behind after 40 steps
        results = model(images)
    found = total = 0
    for result, target in zip(results, targets):
        for mask, label in zip(target["masks"], target["labels"]):
            same = result.masks[result.labels == label]
            iou = (same & mask).flatten(1).sum(1) / (same | mask).flatten(1).sum(1).clamp(min=1)
            found += int(iou.numel() > 0 and iou.max() > 0.5)
            total += 1
    assert total >= 8 and found >= 0.75 * total, (found, total)


def test_images_of_different_sizes_give_results_at_their_own_sizes():
    model = _tiny().eval()
    with torch.no_grad():
        results = model([torch.randn(3, 37, 45), torch.randn(3, 50, 29)])
    assert [tuple(r.masks.shape[1:]) for r in results] == [(37, 45), (50, 29)]
    for r, (h, w) in zip(results, [(37, 45), (50, 29)]):
        assert (r.boxes[:, 0::2] <= w).all() and (r.boxes[:, 1::2] <= h).all()


def test_bad_arguments_raise():
    with pytest.raises(SeglabError, match="auxiliary"):
        seglab.create_model("yolact_resnet18", num_classes=2, aux_loss=True)
    with pytest.raises(SeglabError):
        seglab.create_model("yolact_resnet18", num_classes=2, no_such_option=1)
    with pytest.raises(ConfigError, match="anchor_sizes"):
        seglab.create_model("yolact_resnet18", num_classes=2, anchor_sizes=(8, 16))
    model = _tiny().train()
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 4:20, 4:20] = True
    target = {"boxes": masks_to_boxes(masks), "labels": torch.tensor([0]), "masks": masks}
    with pytest.raises(SeglabError, match="targets"):
        model(torch.randn(2, 3, 64, 64), [target])
    with pytest.raises(SeglabError, match="labels must be in"):
        model(torch.randn(2, 3, 64, 64), [target, {**target, "labels": torch.tensor([3])}])
    with pytest.raises(SeglabError, match="image size"):
        model(torch.randn(2, 3, 64, 64), [target, {**target, "masks": masks[:, :40]}])
