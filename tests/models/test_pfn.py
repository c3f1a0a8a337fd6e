"""Proposal-free network (seglab.models.pfn): location targets by hand, the clustering recovers the
instances from perfect predictions (touching instances of one class included), the loss falls on a tiny
batch, parameter counts; the shared instance contract is in test_instance_contract.py."""
from __future__ import annotations

import pytest
import torch
from instance_scenes import fit, objects_found, two_object_scenes

import seglab
from seglab import SeglabError
from seglab.models.pfn import location_targets, pfn_instances

TINY = {"width": 8, "head_channels": 32, "location_channels": 16, "count_channels": 16}


def test_location_targets_by_hand():
    ids = torch.zeros(4, 8, dtype=torch.long)
    ids[1:3, 0:2] = 1
    ids[0:4, 4:8] = 2
    ids[3, 0] = -1  # ignored
    target, valid = location_targets(ids)
    assert valid.sum() == 4 + 16
    # instance 1: x in [0, 2) of 8, y in [1, 3) of 4 -> centre (1/8, 2/4)
    assert torch.allclose(target[:, 1, 0], torch.tensor([0.125, 0.5, 0.0, 0.25, 0.25, 0.75]))
    assert torch.allclose(target[:, 0, 7], torch.tensor([0.75, 0.5, 0.5, 0.0, 1.0, 1.0]))
    assert (target[:, 0, 0] == 0).all()


def test_clustering_recovers_the_instances_from_perfect_predictions():
    """Three instances, two of them touching and of the same class: one-hot confidences, exact location
    vectors and counts give back exactly the three masks."""
    ids = torch.zeros(40, 48, dtype=torch.long)
    ids[4:20, 4:20], ids[4:20, 20:36], ids[24:38, 10:44] = 1, 2, 3
    classes = torch.tensor([0, 2, 2, 1])  # id -> class (0 background); ids 1 and 2 share class 2
    probs = torch.nn.functional.one_hot(classes[ids], 4).permute(2, 0, 1).float()
    location, _ = location_targets(ids)
    result = pfn_instances(probs, location, torch.tensor([1.2, 1.9, 0.0]), min_area=4)
    assert sorted(result.labels.tolist()) == [0, 1, 1]
    found = {tuple(m.nonzero().min(0).values.tolist() + m.nonzero().max(0).values.tolist()) for m in result.masks}
    assert found == {(4, 4, 19, 19), (4, 20, 19, 35), (24, 10, 37, 43)}
    for m in result.masks:
        assert len(ids[m].unique()) == 1 and int(m.sum()) == int((ids == ids[m][0]).sum())
    assert torch.allclose(result.scores, torch.ones(3))


def test_loss_falls_and_the_counts_are_learned_on_a_tiny_batch():
    torch.manual_seed(0)
    model = seglab.create_model("pfn_resnet18", num_classes=3, **TINY).train()
    images, targets = two_object_scenes()
    history = fit(model, images, targets, steps=60, lr=2e-3)
    first, last = torch.tensor(history[:2]).mean(0), torch.tensor(history[-3:]).mean(0)
    assert (last < 0.5 * first).all(), (first, last)
    with torch.no_grad():  # training mode: BatchNorm keeps the batch statistics it was fitted with
        out = model.predict(images)
        results = model.postprocess(out, [(64, 64)] * 2)
    assert torch.allclose(out["count"], torch.tensor([[1.0, 1, 0], [1, 0, 1]]), atol=0.25)  # one of each
    assert objects_found(results, targets) >= 2


def test_parameter_counts_and_settings():
    counts = {}
    for name in ("pfn_resnet50", "pfn_resnet18"):
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in seglab.create_model(name, num_classes=21).parameters())
    assert counts == {"pfn_resnet50": 50_089_339, "pfn_resnet18": 20_505_467}
    with pytest.raises(SeglabError, match="location_stages"):
        seglab.create_model("pfn_resnet18", num_classes=3, location_stages=[1], **TINY)
    with pytest.raises(SeglabError, match="aux_loss"):
        seglab.create_model("pfn_resnet18", num_classes=3, aux_loss=True, **TINY)
