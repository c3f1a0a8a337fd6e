"""Mask R-CNN (He et al., ICCV 2017) and PANet (Liu et al., CVPR 2018): fitting a tiny batch and then
finding its objects, images of different sizes, full-size parameter counts, torchvision's layout and
checkpoint conversion."""
from __future__ import annotations

import pytest
import torch
from torchvision_fakes import fake_state, keys

import seglab
from seglab.convert.torchvision import convert_model_state_dict
from seglab.data.instances import masks_to_boxes
from seglab.errors import SeglabError

NUM_CLASSES = 3
TINY = {"width": 8, "fpn_channels": 32, "representation_size": 64, "mask_channels": 16, "mask_layers": 2,
        "anchor_sizes": ((8,), (16,), (32,), (64,), (128,)), "rpn_pre_nms_top_n_train": 200,
        "rpn_post_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
        "box_batch_size_per_image": 64}


def shapes_batch(size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """Two noisy images with three shapes each: squares/rectangles (class 0), discs (1), triangles (2),
    each class with its own colour."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    colours = torch.tensor([[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0], [-1.0, -1.0, 1.5]])
    scenes = [[(0, (8, 8, 30, 26)), (1, (40, 36, 14)), (2, (34, 6, 58, 24))],
              [(1, (20, 44, 12)), (0, (36, 30, 60, 58)), (2, (4, 34, 22, 60))]]
    images, targets = [], []
    for objects in scenes:
        image = 0.3 * torch.randn(3, size, size, generator=g)
        masks = []
        for cls, p in objects:
            if cls == 1:
                masks.append((yy - p[0]) ** 2 + (xx - p[1]) ** 2 <= p[2] ** 2)
            else:
                y0, x0, y1, x1 = p
                m = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
                masks.append(m & ((xx - x0) >= (yy - y0) * (x1 - x0) / (y1 - y0)) if cls == 2 else m)
            image[:, masks[-1]] += colours[cls][:, None]
        masks = torch.stack(masks)
        images.append(image)
        targets.append({"boxes": masks_to_boxes(masks), "labels": torch.tensor([c for c, _ in objects]),
                        "masks": masks, "iscrowd": torch.zeros(len(objects), dtype=torch.bool)})
    return torch.stack(images), targets


def test_fits_a_tiny_batch_and_then_finds_its_objects():
    torch.manual_seed(0)
    model = seglab.create_model("mask_rcnn_resnet18_fpn", num_classes=NUM_CLASSES, **TINY).train()
    images, targets = shapes_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        losses = model(images, targets)
        assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                               "loss_mask"}
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.3 * sum(history[:2]) / 2, history
    with torch.no_grad():
        results = model.eval()(images)
    found = 0
    for result, target in zip(results, targets):
        for mask, label in zip(target["masks"], target["labels"]):
            same = result.masks[result.labels == label]
            iou = (same & mask).flatten(1).sum(1) / (same | mask).flatten(1).sum(1).clamp(min=1)
            found += bool(iou.numel() and iou.max() > 0.5)
    assert found >= 5, f"only {found} of 6 objects found with mask IoU > 0.5 and the right class"


def test_images_of_different_sizes_get_results_at_their_own_size():
    model = seglab.create_model("mask_rcnn_resnet18_fpn", num_classes=NUM_CLASSES, **TINY).eval()
    images = [torch.randn(3, 45, 70), torch.randn(3, 81, 33)]
    with torch.no_grad():
        results = model(images)
    assert [tuple(r.masks.shape[1:]) for r in results] == [(45, 70), (81, 33)]
    _, sizes, pyramid = model.extract_features(images)
    assert sizes == [(45, 70), (81, 33)] and pyramid[0].shape[-2:] == (96 // 4, 96 // 4)  # padded to 96 x 96
    assert len(pyramid) == 5 and pyramid[-1].shape[-2:] == (2, 2)  # P2..P6
    masks = torch.zeros(1, 45, 70, dtype=torch.bool)
    masks[0, 5:30, 10:50] = True
    targets = [{"boxes": masks_to_boxes(masks), "labels": torch.tensor([1]), "masks": masks},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                "masks": torch.zeros(0, 81, 33, dtype=torch.bool)}]  # an image without objects
    losses = model.train()(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(SeglabError, match="masks"):
        model([images[0]], [{**targets[0], "masks": torch.zeros(1, 40, 40, dtype=torch.bool)}])


def test_entrypoint_argument_errors():
    with pytest.raises(SeglabError, match="aux_loss"):
        seglab.create_model("mask_rcnn_resnet18_fpn", num_classes=3, aux_loss=True, **TINY)
    with pytest.raises(SeglabError, match="output_stride"):
        seglab.create_model("mask_rcnn_resnet18_fpn", num_classes=3, output_stride=8, **TINY)


def _count(name: str, num_classes: int) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = seglab.create_model(name, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, num_classes, expected", [
    ("mask_rcnn_resnet50_fpn", 21, 44_083_155),
    # torchvision's maskrcnn_resnet50_fpn (91 classes with background) has 44,401,393 parameters; it
    # keeps the trunk's 53,120 BatchNorm weights and biases as FrozenBatchNorm2d buffers.
    ("mask_rcnn_resnet50_fpn", 90, 44_401_393 + 53_120),
    ("mask_rcnn_resnet18_fpn", 21, 31_014_355),
    # + the bottom-up path's 3,540,480 and the fully-connected mask fusion's 20,554,896
    ("panet_resnet50_fpn", 21, 68_178_531),
])
def test_full_size_parameter_counts(name, num_classes, expected):
    assert _count(name, num_classes) == expected


def test_torchvision_layout_and_checkpoint_conversion():
    with torch.device("meta"):
        model = seglab.create_model("mask_rcnn_resnet50_fpn", num_classes=90)
        state = fake_state("maskrcnn_resnet50_fpn_frozenbn", "meta")
    own = model.state_dict()
    tv = keys("maskrcnn_resnet50_fpn_frozenbn")
    heads = {k: s for k, s in tv.items() if k.startswith(("rpn.", "roi_heads."))}
    assert len(heads) == 26 and all(list(own[k].shape) == s for k, s in heads.items())
    fpn = {k: s for k, s in tv.items() if k.startswith("backbone.fpn.")}
    assert len(fpn) == 16 and all(list(own["fpn." + k[13:]].shape) == s for k, s in fpn.items())
    mapped = convert_model_state_dict(model, state)
    assert set(mapped) == set(own) and all(mapped[k].shape == own[k].shape for k in own)
    # every trunk tensor comes from backbone.body.*; only the BatchNorm step counters are filled in
    filled = {k for k in own if k.startswith("backbone.") and "backbone.body." + k[9:] not in tv}
    assert filled and all(k.endswith("num_batches_tracked") for k in filled)


def test_torchvision_checkpoint_loads_into_mask_rcnn(tmp_path):
    state = fake_state("maskrcnn_resnet50_fpn_frozenbn", seed=0)
    path = tmp_path / "maskrcnn_resnet50_fpn.pth"
    torch.save(state, path)
    model = seglab.create_model("mask_rcnn_resnet50_fpn", num_classes=90, weights=str(path))
    own = model.state_dict()
    for ours, theirs in [("backbone.layer3.5.conv2.weight", "backbone.body.layer3.5.conv2.weight"),
                         ("backbone.bn1.running_var", "backbone.body.bn1.running_var"),
                         ("fpn.layer_blocks.2.0.weight", "backbone.fpn.layer_blocks.2.0.weight"),
                         ("rpn.head.conv.0.0.weight", "rpn.head.conv.0.0.weight"),
                         ("roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.weight"),
                         ("roi_heads.mask_predictor.mask_fcn_logits.bias",
                          "roi_heads.mask_predictor.mask_fcn_logits.bias")]:
        assert torch.equal(own[ours], state[theirs]), ours
    assert int(own["backbone.layer1.0.bn1.num_batches_tracked"]) == 0
    with pytest.raises(SeglabError, match="num_classes"):  # torchvision's heads have 91 = 90 + 1 classes
        seglab.create_model("mask_rcnn_resnet50_fpn", num_classes=91, weights=str(path))


@pytest.mark.parametrize("name", ["mask_rcnn_resnet18_fpn", "panet_resnet50_fpn"])
def test_bf16_autocast_training_and_inference(name):
    model = seglab.create_model(name, num_classes=NUM_CLASSES, **{**TINY, "width": 4}).train()
    images, targets = shapes_batch(48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        result = model.eval()(images)[0]
    assert result.masks.shape[1:] == (48, 48) and result.boxes.dtype == torch.float32


def test_channels_last_inference_gives_the_same_detections():
    """predict_instances converts Mask R-CNN's weights to channels-last (inference_layout): the same
    detections as the NCHW forward, up to float rounding."""
    import copy

    from seglab.inference.instances import inference_layout, predict_instances

    torch.manual_seed(0)
    model = seglab.create_model("mask_rcnn_resnet18_fpn", num_classes=NUM_CLASSES, box_score_thresh=0.0,
                                **TINY).eval()
    images, _ = shapes_batch()
    plain = copy.deepcopy(model)
    with torch.no_grad():
        want = plain([images[0]])[0]
    got = predict_instances(model, images[0])
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert inference_layout(model) is model
    assert got.boxes.shape[0] == want.boxes.shape[0] > 0
    torch.testing.assert_close(got.boxes, want.boxes, rtol=0, atol=1e-3)
    torch.testing.assert_close(got.scores, want.scores, rtol=0, atol=1e-4)
    assert torch.equal(got.labels, want.labels)
    assert (got.masks ^ want.masks).float().mean() < 1e-3


def test_instance_predictor_keeps_the_layout_of_a_training_model():
    """Validation during training hands the predictor a model in training mode: its weights stay NCHW (the
    training run never switches memory format); a model handed over in eval mode is converted."""
    from seglab.inference.instances import InstancePredictor

    model = seglab.create_model("mask_rcnn_resnet18_fpn", num_classes=NUM_CLASSES, **TINY)
    InstancePredictor(model.train())
    assert not model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    InstancePredictor(model.eval())
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
