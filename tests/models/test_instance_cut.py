"""InstanceCut (seglab.models.instance_cut): boundary targets by hand, the edge block's pooling and
context network, the loss falls on a tiny batch and the fitted model finds the objects, parameter counts
(the multicut and the partitioning are tested in tests/inference/test_multicut.py; the shared instance
contract in test_instance_contract.py)."""
from __future__ import annotations

import pytest
import torch
from instance_scenes import fit, objects_found, two_object_scenes

import seglab
from seglab import SeglabError
from seglab.models.instance_cut import ContextModule, EdgeDetectionBlock, instance_boundaries

TINY = {"width": 8, "head_channels": 32, "mlp_channels": 32, "context_channels": 16}


def test_instance_boundaries_by_hand():
    ids = torch.tensor([[0, 0, 0, 0, 0],
                        [0, 1, 1, 2, 0],
                        [0, 1, 1, 2, 0],
                        [0, 0, 0, -1, 0]])
    expected = torch.tensor([[0, 1, 1, 1, 0],
                             [1, 1, 1, 1, 1],
                             [1, 1, 1, 1, 1],
                             [0, 1, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(instance_boundaries(ids[None])[0], expected)
    assert not instance_boundaries(torch.zeros(1, 3, 3, dtype=torch.long)).any()


def test_edge_block_pools_every_map_to_the_smallest_and_sees_far():
    block = EdgeDetectionBlock([3, 4, 5], [2, 4, 8], mlp_channels=6, context_channels=4)
    out = block([torch.randn(1, 3, 32, 40), torch.randn(1, 4, 16, 20), torch.randn(1, 5, 8, 10)])
    assert out.shape == (1, 1, 8, 10)
    # the context network's receptive field: 1 + 2 * (1 + 1 + 2 + 4 + 8 + 16 + 1) = 67 cells
    torch.manual_seed(0)
    module = ContextModule(8, 1)
    x = torch.randn(1, 8, 81, 81, requires_grad=True)
    module(x)[0, 0, 40, 40].backward()
    rows = torch.where(x.grad[0].abs().sum((0, 2)) > 0)[0]
    assert rows.min().item() == 40 - 33 and rows.max().item() == 40 + 33


def test_loss_falls_and_the_fitted_model_finds_the_objects():
    torch.manual_seed(0)
    model = seglab.create_model("instance_cut_resnet18", num_classes=3, **TINY).train()
    images, targets = two_object_scenes()
    history = fit(model, images, targets, steps=60, lr=3e-3)
    first, last = torch.tensor(history[:2]).mean(0), torch.tensor(history[-3:]).mean(0)
    assert last[0] < 0.3 * first[0] and last[1] < 0.8 * first[1], (first, last)
    with torch.no_grad():  # training mode: BatchNorm keeps the batch statistics it was fitted with
        results = model(images)
    assert objects_found(results, targets) >= 3


def test_parameter_counts_and_settings():
    counts = {}
    for name in ("instance_cut_resnet50", "instance_cut_resnet18"):
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in seglab.create_model(name, num_classes=21).parameters())
    assert counts == {"instance_cut_resnet50": 44_730_263, "instance_cut_resnet18": 17_505_687}
    with pytest.raises(SeglabError, match="partition_stride"):
        seglab.create_model("instance_cut_resnet18", num_classes=3, partition_stride=3, **TINY)
    with pytest.raises(SeglabError, match="aux_loss"):
        seglab.create_model("instance_cut_resnet18", num_classes=3, aux_loss=True, **TINY)
