"""The panoptic-model contract (DESIGN.md, 'Contracts'), applied to every registered panoptic model.

Each model is built tiny from tests/models/tiny_panoptic/*.yaml with `num_classes` stuff + thing classes
(the last `num_things` are things) and checked for:
- training `forward(images, targets)` on two odd-size images (97x131) with stuff halves, a rectangle and a
  disc instance and a crowd instance -> a dict of finite scalar losses whose sum reaches every parameter;
- eval `forward(images)` -> one `PanopticResult` per image: int segment map at the image size, one
  segments_info entry per non-zero id with its true area, category ids in range, isthing consistent with
  the stuff/thing split; a list of images gives the same results as a Tensor;
- `save_model` / `load_model` round trip gives the same results;
- an unknown keyword or a bad `num_things` fails with `SeglabError`.

A newly registered panoptic model fails here until its tiny settings are added.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from tiny_settings import load_tiny_settings

import seglab
from seglab import SeglabError
from seglab.data.instances import masks_to_boxes
from seglab.structures import PanopticResult

TINY_KWARGS: dict[str, dict] = load_tiny_settings("tiny_panoptic")

NUM_STUFF, NUM_THINGS = 2, 3
SIZE = (97, 131)
MODELS = seglab.list_models(task="panoptic")


def _build(name: str) -> torch.nn.Module:
    if name not in TINY_KWARGS:
        pytest.fail(f"panoptic model {name!r} has no tiny settings: add `{name}: {{...}}` to a YAML file in "
                    f"tests/models/tiny_panoptic/")
    torch.manual_seed(0)
    return seglab.create_model(name, num_classes=NUM_STUFF + NUM_THINGS, num_things=NUM_THINGS, **TINY_KWARGS[name])


def panoptic_batch() -> tuple[torch.Tensor, list[dict]]:
    torch.manual_seed(1)
    h, w = SIZE
    images = torch.randn(2, 3, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    targets = []
    for i in range(2):
        rect = (yy >= 10 + 5 * i) & (yy < 50) & (xx >= 8) & (xx < 60 + 10 * i)
        disc = (yy - 65) ** 2 + (xx - 95) ** 2 < (20 + 3 * i) ** 2
        crowd = (yy >= 80) & (xx < 30)
        masks = torch.stack([rect, disc, crowd])
        labels = torch.tensor([i % NUM_THINGS, 2, 1])
        semantic = (xx >= w // 2).long()  # two stuff classes, left and right
        for m, label in zip(masks, labels):
            semantic[m] = NUM_STUFF + label
        semantic[:3] = 255  # a void band
        images[i, :, rect] += 2.0
        images[i, :, disc] -= 2.0
        targets.append({"boxes": masks_to_boxes(masks), "labels": labels, "masks": masks,
                        "iscrowd": torch.tensor([False, False, True]), "image_id": i, "semantic": semantic})
    return images, targets


def _check_results(results, images: torch.Tensor) -> None:
    assert isinstance(results, list) and len(results) == images.shape[0]
    for r in results:
        assert isinstance(r, PanopticResult)
        assert r.segments.shape == images.shape[-2:] and not r.segments.is_floating_point()
        ids = [s["id"] for s in r.segments_info]
        assert len(set(ids)) == len(ids) and 0 not in ids
        present = set(torch.unique(r.segments).tolist()) - {0}
        assert present == set(ids), "every segment id in the map has exactly one segments_info entry"
        for s in r.segments_info:
            assert s["area"] == int((r.segments == s["id"]).sum())
            assert 0 <= s["category_id"] < NUM_STUFF + NUM_THINGS
            assert s["isthing"] == (s["category_id"] >= NUM_STUFF)


def _same(a: list[PanopticResult], b: list[PanopticResult]) -> None:
    for x, y in zip(a, b):
        assert torch.equal(x.segments, y.segments)
        assert [(s["id"], s["category_id"], s["area"]) for s in x.segments_info] == \
               [(s["id"], s["category_id"], s["area"]) for s in y.segments_info]


@pytest.mark.parametrize("name", MODELS)
def test_training_losses_reach_every_parameter(name):
    model = _build(name).train()
    images, targets = panoptic_batch()
    losses = model(images, targets)
    assert isinstance(losses, dict) and losses, "training forward must return a non-empty dict of losses"
    for key, value in losses.items():
        assert value.dim() == 0 and bool(torch.isfinite(value)), f"loss {key} = {value}"
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]} ({len(missing)} parameters)"


@pytest.mark.parametrize("name", MODELS)
def test_eval_results_and_save_load_round_trip(name):
    model = _build(name).eval()
    images, _ = panoptic_batch()
    with torch.no_grad():
        results = model(images)
        from_list = model(list(images))
    _check_results(results, images)
    assert any(r.segments_info for r in results)
    _same(results, from_list)
    with tempfile.TemporaryDirectory() as tmp:
        path = seglab.save_model(model, Path(tmp) / "m.safetensors")
        loaded = seglab.load_model(path).eval()
    with torch.no_grad():
        _same(results, loaded(images))


@pytest.mark.parametrize("name", MODELS)
def test_argument_errors(name):
    kwargs = TINY_KWARGS.get(name, {})
    with pytest.raises(SeglabError):
        seglab.create_model(name, num_classes=5, num_things=3, **kwargs, no_such_option=1)
    with pytest.raises(SeglabError, match="num_things"):
        seglab.create_model(name, num_classes=5, num_things=6, **kwargs)
    with pytest.raises(SeglabError, match="num_things"):
        seglab.create_model(name, num_classes=5, **kwargs)
