"""Panoptic FPN (Kirillov et al., CVPR 2019) and UPSNet (Xiong et al., CVPR 2019): the loss falls on a
tiny batch, each model's own loss is wired as its paper says, and full-size parameter counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import seglab
from seglab.data.instances import masks_to_boxes
from seglab.layers import resize_to
from seglab.models.upsnet import _sample_grid

NUM_STUFF, NUM_THINGS = 2, 3
TINY = {"width": 8, "fpn_channels": 16, "representation_size": 32, "mask_channels": 16, "mask_layers": 1,
        "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)), "rpn_pre_nms_top_n_train": 200,
        "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
        "box_batch_size_per_image": 64, "semantic_channels": 8, "stuff_area_limit": 0}


def scene_batch(size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """Two noisy images: stuff classes 0 (top) and 1 (bottom) in their own colours, one square (thing 0)
    and one disc (thing 2) on top, each class with its own colour."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    colours = torch.tensor([[0.8, 0.8, 0.0], [0.0, 0.8, 0.8], [1.5, -1.0, -1.0], [-1.0, 1.5, -1.0],
                            [-1.0, -1.0, 1.5]])
    images, targets = [], []
    for square, disc in (((6, 8, 28, 30), (44, 40, 12)), ((34, 30, 58, 56), (18, 20, 13))):
        semantic = (yy >= size // 2).long()
        y0, x0, y1, x1 = square
        masks = torch.stack([(yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1),
                             (yy - disc[0]) ** 2 + (xx - disc[1]) ** 2 <= disc[2] ** 2])
        labels = torch.tensor([0, 2])
        for m, label in zip(masks, labels):
            semantic[m] = NUM_STUFF + label
        images.append(colours[semantic].permute(2, 0, 1) + 0.3 * torch.randn(3, size, size, generator=g))
        targets.append({"boxes": masks_to_boxes(masks), "labels": labels, "masks": masks,
                        "iscrowd": torch.zeros(2, dtype=torch.bool), "semantic": semantic})
    return torch.stack(images), targets


@pytest.mark.parametrize("name, extra", [("panoptic_fpn_resnet18", {}),
                                         ("upsnet_resnet18", {"semantic_loss_weight": 1.0, "semantic_channels": 16,
                                                              "panoptic_loss_weight": 1.0})])
def test_loss_falls_on_a_tiny_batch(name, extra):
    torch.manual_seed(0)
    model = seglab.create_model(name, num_classes=NUM_STUFF + NUM_THINGS, num_things=NUM_THINGS,
                                **{**TINY, **extra}).train()
    images, targets = scene_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(20):
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    total = [sum(h.values()) for h in history]
    assert sum(total[-3:]) / 3 < 0.5 * sum(total[:2]) / 2, total
    for key in ("loss_semantic", "loss_panoptic") if "upsnet" in name else ("loss_semantic",):
        assert sum(h[key] for h in history[-3:]) < 0.5 * sum(h[key] for h in history[:3]), key


def test_panoptic_fpn_semantic_loss_is_stuff_plus_one_things_class():
    torch.manual_seed(0)
    model = seglab.create_model("panoptic_fpn_resnet18", num_classes=5, num_things=3, **TINY).train()
    assert model.semantic_head.predictor.out_channels == NUM_STUFF + 1
    images, targets = scene_batch()
    losses = model(images, targets)
    # The same forward by hand: thing pixels (classes 2..4) are the single "things" class 2.
    _, _, pyramid = model.extract_features(images)
    logits = resize_to(model.semantic_head(pyramid[:4]), images.shape[-2:])
    target = torch.stack([t["semantic"] for t in targets]).clamp(max=NUM_STUFF)
    torch.testing.assert_close(losses["loss_semantic"], 0.5 * F.cross_entropy(logits, target))


def test_upsnet_panoptic_loss_trains_the_mask_head_on_gt_boxes_not_the_box_head():
    torch.manual_seed(0)
    model = seglab.create_model("upsnet_resnet18", num_classes=5, num_things=3, **TINY).train()
    images, targets = scene_batch()
    model(images, targets)["loss_panoptic"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["roi_heads.mask_predictor.mask_fcn_logits.weight"].abs().sum() > 0
    assert grads["semantic_head.score.weight"].abs().sum() > 0
    assert all(grads[n] is None for n in grads if n.startswith(("roi_heads.box_", "rpn.")))


@pytest.mark.parametrize("name", ["panoptic_fpn_resnet18", "upsnet_resnet18"])
def test_images_of_different_sizes_and_an_image_without_things(name):
    model = seglab.create_model(name, num_classes=5, num_things=3, **TINY)
    images, targets = scene_batch()
    small = images[1, :, :40, :45]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, 40, 45, dtype=torch.bool), "semantic": targets[1]["semantic"][:40, :45] * 0}
    losses = model.train()([images[0], small], [targets[0], empty])
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    with torch.no_grad():
        results = model.eval()([images[0], small])
    assert [tuple(r.segments.shape) for r in results] == [(64, 64), (40, 45)]


def test_upsnet_targets_are_sampled_at_stride_4_cell_centres():
    labels = torch.arange(10 * 7).view(10, 7)
    got = _sample_grid(labels, 0.25, (3, 2))  # cells of 4 px: centres at 2, 6, 10 -> clamped to 9
    assert torch.equal(got, labels[[2, 6, 9]][:, [2, 6]])


def _count(name: str, num_classes: int, num_things: int) -> int:
    with torch.device("meta"):  # shapes only
        model = seglab.create_model(name, num_classes=num_classes, num_things=num_things)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, num_classes, num_things, expected", [
    # Mask R-CNN R50-FPN at 80 thing classes (44,400,693) + the FPN semantic branch at 53 + 1 classes
    # (4 x 3x3 conv 256->128 + 3 x 3x3 conv 128->128 with GroupNorm, 1x1 conv: 1,630,774).
    ("panoptic_fpn_resnet50", 133, 80, 46_031_467),
    ("panoptic_fpn_resnet50", 21, 20, 45_701_839),
    ("panoptic_fpn_resnet18", 133, 80, 32_962_667),
    # Mask R-CNN + the deformable semantic head at 133 classes (573,353); the panoptic head has none.
    ("upsnet_resnet50", 133, 80, 44_974_046),
    ("upsnet_resnet50", 21, 20, 44_593_670),
    ("upsnet_resnet18", 133, 80, 31_905_246),
])
def test_full_size_parameter_counts(name, num_classes, num_things, expected):
    assert _count(name, num_classes, num_things) == expected
