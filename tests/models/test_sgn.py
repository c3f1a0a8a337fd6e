"""SGN (seglab.models.sgn, seglab.heads.instance.sgn): LineNet scans rows and columns, the loss falls on a
tiny batch and the fitted model finds the objects, parameter counts (the grouping itself is tested in
tests/inference/test_sequential_grouping.py, the instance contract in test_instance_contract.py)."""
from __future__ import annotations

import pytest
import torch
from instance_scenes import fit, objects_found, two_object_scenes

import seglab
from seglab import SeglabError
from seglab.heads.instance.sgn import LineNet

TINY = {"width": 8, "decoder_channels": 32, "line_hidden": 16, "merger_channels": 16, "merger_hidden": 32}


def test_linenet_scans_rows_and_columns():
    torch.manual_seed(0)
    net = LineNet(3, 4)
    grid = torch.randn(2, 3, 5, 7)
    rows = net.scan(grid, vertical=False)
    assert rows.shape == (2, 5, 7)
    assert torch.allclose(rows[1, 3], net(grid[1, :, 3].T[None])[0])  # row 3 of image 1, read left to right
    columns = net.scan(grid, vertical=True)
    assert torch.allclose(columns[0, :, 6], net(grid[0, :, :, 6].T[None])[0])  # column 6, read top to bottom
    # the bidirectional GRU sees the whole line: changing the last cell changes the first output
    changed = grid.clone()
    changed[1, :, 3, -1] += 5
    assert not torch.allclose(net.scan(changed, vertical=False)[1, 3, 0], rows[1, 3, 0])


def test_loss_falls_and_the_fitted_model_finds_the_objects():
    torch.manual_seed(0)
    model = seglab.create_model("sgn_resnet18", num_classes=3, **TINY).train()
    images, targets = two_object_scenes()
    history = fit(model, images, targets, steps=40, lr=3e-3)
    first, last = torch.tensor(history[:2]).mean(0), torch.tensor(history[-3:]).mean(0)
    assert (last[:3] < 0.7 * first[:3]).all() and last[3] <= first[3], (first, last)
    with torch.no_grad():  # training mode: BatchNorm keeps the batch statistics it was fitted with
        results = model(images)
    assert objects_found(results, targets) >= 3


def test_parameter_counts_and_settings():
    counts = {}
    for name in ("sgn_resnet50", "sgn_resnet18"):
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in seglab.create_model(name, num_classes=21).parameters())
    assert counts == {"sgn_resnet50": 25_378_603, "sgn_resnet18": 12_644_651}
    with pytest.raises(SeglabError, match="aux_loss"):
        seglab.create_model("sgn_resnet18", num_classes=3, aux_loss=True, **TINY)
    with pytest.raises(SeglabError, match="output_stride"):
        seglab.create_model("sgn_resnet18", num_classes=3, output_stride=16, **TINY)
