"""Affinity + graph merge network (Liu et al., ECCV 2018): affinity targets by hand, the balanced loss,
training on a tiny synthetic batch, the instance contract (losses with targets, InstanceResults at the
image size without), full-size parameter counts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from seglab.data import generate_synthetic
from seglab.data.synthetic import SYNTHETIC_THING_IDS
from seglab.errors import SeglabError
from seglab.inference.graph_merge import affinity_offsets
from seglab.losses.affinity import affinity_targets, balanced_affinity_loss
from seglab.structures import InstanceResult

TINY = {"width": 8, "fpn_channels": 16, "head_channels": 16, "distances": (1, 2, 4)}
NUM_CLASSES = 3


def test_affinity_targets_by_hand_on_4x4():
    ids = torch.tensor([[1, 1, 0, 2],
                        [1, 1, 0, 2],
                        [0, 0, 0, 2],
                        [3, 0, -1, 2]])
    target, valid = affinity_targets(ids, (1, 2))
    offsets = affinity_offsets((1, 2))
    right1, down2 = offsets.index((0, 1)), offsets.index((2, 0))
    # towards the right neighbour: background-background and ignore (-1) pairs and the border are unsupervised
    assert target[0, right1].tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert valid[0, right1].int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    # two rows down
    assert target[0, down2].tolist() == [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert valid[0, down2].int().tolist() == [[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_affinity_targets_agree_from_both_ends():
    """The pair (p, q) gets the same target and mask from p (direction k) and from q (direction 7 - k)."""
    ids = torch.randint(-1, 4, (9, 11))
    distances = (1, 2, 4)
    target, valid = affinity_targets(ids, distances)
    for c, (dy, dx) in enumerate(affinity_offsets(distances)):
        opposite = c - c % 8 + 7 - c % 8
        for y in range(9):
            for x in range(11):
                if 0 <= y + dy < 9 and 0 <= x + dx < 11:
                    assert target[0, c, y, x] == target[0, opposite, y + dy, x + dx]
                    assert valid[0, c, y, x] == valid[0, opposite, y + dy, x + dx]


def test_balanced_loss_weighs_positives_and_negatives_equally():
    """1 positive and 10 negatives in one channel, only negatives in the other: (bce_pos + bce_neg) / 2
    and bce_neg, averaged; the count of negatives does not matter."""
    logits = torch.zeros(1, 2, 1, 11)
    logits[0, 0, 0, 0] = 1.0  # the positive: bce = log(1 + e^-1)
    logits[0, :, 0, 1:] = -2.0  # negatives: bce = log(1 + e^-2)
    logits[0, 1, 0, 0] = -2.0
    target = torch.zeros(1, 2, 1, 11)
    target[0, 0, 0, 0] = 1
    valid = torch.ones(1, 2, 1, 11, dtype=torch.bool)
    pos, neg = np.log1p(np.exp(-1.0)), np.log1p(np.exp(-2.0))
    expected = ((pos + neg) / 2 + neg) / 2
    assert balanced_affinity_loss(logits, target, valid).item() == pytest.approx(expected, rel=1e-5)
    valid[0, 0, 0, 5:] = False  # fewer negatives: same value
    assert balanced_affinity_loss(logits, target, valid).item() == pytest.approx(expected, rel=1e-5)


def synthetic_batch(root: Path, names: list[str]) -> tuple[torch.Tensor, list[dict]]:
    """A tiny loader of `generate_synthetic` output: image, and per instance a mask and a thing label."""
    images, targets = [], []
    for name in names:
        image = np.asarray(Image.open(root / "images" / name), dtype=np.float32) / 127.5 - 1
        inst = np.asarray(Image.open(root / "instances" / name)).astype(np.int64)
        classes = np.asarray(Image.open(root / "labels" / name)).astype(np.int64)
        ids = np.arange(1, inst.max() + 1)
        masks = inst[None] == ids[:, None, None]
        labels = [SYNTHETIC_THING_IDS.index(int(classes[m][0])) for m in masks]
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        targets.append({"masks": torch.from_numpy(masks), "labels": torch.tensor(labels, dtype=torch.int64)})
    return torch.stack(images), targets


def test_losses_fall_on_a_tiny_synthetic_batch(tmp_path):
    root = generate_synthetic(tmp_path / "syn", num_train=2, num_val=0, size=(48, 48), seed=3, workers=1)
    images, targets = synthetic_batch(root, ["train_00000.png", "train_00001.png"])
    model = seglab.create_model("affinity_resnet18", num_classes=NUM_CLASSES, **TINY).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        losses = model(images, targets)
        assert set(losses) == {"loss_semantic", "loss_affinity"}
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append([v.item() for v in losses.values()])
    first, last = np.array(history[:2]).mean(0), np.array(history[-3:]).mean(0)
    assert (last < 0.6 * first).all(), history


def test_train_forward_backward_at_odd_size_reaches_every_parameter():
    model = seglab.create_model("affinity_resnet18", num_classes=NUM_CLASSES, **TINY).train()
    images = torch.randn(2, 3, 37, 45)
    masks = torch.zeros(2, 37, 45, dtype=torch.bool)
    masks[0, 3:20, 5:30] = True
    masks[1, 10:35, 20:44] = True
    targets = [{"masks": masks[:1], "labels": torch.tensor([1])},
               {"instance_map": masks[1].long(), "labels": torch.tensor([2])}]  # the optional id-map form
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_eval_returns_instance_results_at_the_image_size():
    model = seglab.create_model("affinity_resnet18", num_classes=NUM_CLASSES, **TINY).eval()
    results = model(torch.randn(2, 3, 37, 45))
    assert len(results) == 2
    for r in results:
        assert isinstance(r, InstanceResult)
        k = r.labels.numel()
        assert r.masks.shape == (k, 37, 45) and r.masks.dtype == torch.bool
        assert r.boxes.shape == (k, 4) and r.scores.shape == (k,) and r.labels.dtype == torch.int64


def test_postprocess_turns_perfect_predictions_into_the_instances():
    """Logits that encode a known stride-4 instance map come back as those instances at the image size."""
    model = seglab.create_model("affinity_resnet18", num_classes=NUM_CLASSES, **TINY).eval()
    grid = torch.zeros(10, 12, dtype=torch.long)  # image 40x48 at stride 4
    grid[0:4, 0:4], grid[0:4, 4:8], grid[6:10, 2:10] = 1, 2, 3  # 1 and 2 touch, same class
    classes = torch.tensor([0, 2, 2, 1])  # class map value per id (0 = background)
    semantic = 10.0 * torch.nn.functional.one_hot(classes[grid], NUM_CLASSES + 1).permute(2, 0, 1).float()
    target, _ = affinity_targets(grid, TINY["distances"])
    (result,) = model.postprocess(semantic[None], 10.0 * (2 * target - 1), (40, 48))
    expected = grid.repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert result.labels.tolist() == [1, 1, 0]
    for k in range(3):  # bilinear class logits round the outer corners off (a pixel or two per instance)
        inside = expected == k + 1
        assert not (result.masks[k] & ~inside).any()
        assert (inside & ~result.masks[k]).sum() <= 2
    assert result.boxes.tolist() == [[0, 0, 16, 16], [16, 0, 32, 16], [8, 24, 40, 40]]
    assert result.scores.min() > 0.99


def test_full_size_parameter_counts():
    """No published figure (the paper trains two separate networks); ours: trunk + FPN + two
    Panoptic-FPN heads (22 and 56 outputs at 21 classes)."""
    counts = {}
    for name in ("affinity_resnet50", "affinity_resnet18"):
        with torch.device("meta"):
            model = seglab.create_model(name, num_classes=21)
        counts[name] = sum(p.numel() for p in model.parameters())
    assert counts == {"affinity_resnet50": 30_110_094, "affinity_resnet18": 17_041_294}


def test_registered_as_instance_models_and_bad_arguments_raise():
    assert {"affinity_resnet18", "affinity_resnet50"} <= set(seglab.list_models(task="instance"))
    with pytest.raises(SeglabError):
        seglab.create_model("affinity_resnet18", num_classes=2, not_an_option=1)
    with pytest.raises(SeglabError, match="auxiliary"):
        seglab.create_model("affinity_resnet18", num_classes=2, aux_loss=True)


def test_save_load_round_trip(tmp_path):
    model = seglab.create_model("affinity_resnet18", num_classes=NUM_CLASSES, **TINY).eval()
    loaded = seglab.load_model(seglab.save_model(model, tmp_path / "m.safetensors"))
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        a, b = model.backbone(x)[-1], loaded.backbone(x)[-1]
    assert torch.equal(a, b) and loaded.distances == (1, 2, 4)
