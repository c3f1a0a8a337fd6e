"""The instance-model contract (DESIGN.md, 'Contracts'), applied to every registered instance model.

Each model is built tiny from tests/models/tiny_instance/*.yaml and checked for:
- training `forward(images, targets)` on a batch of two odd-size images (97x131) with rectangle and
  disc instances -> a dict of finite scalar losses whose sum reaches every parameter (exceptions with
  a reason in `NO_GRAD_EXCEPTIONS`);
- eval `forward(images)` -> one `InstanceResult` per image: boxes (K, 4), scores (K,), labels in
  [0, num_classes), bool masks (K, H, W) at the image size; a list of images works as well as a Tensor;
- `save_model` / `load_model` round trip gives the same eval results;
- `create_model` with an unknown keyword fails with `SeglabError`.

A newly registered instance model fails here until its tiny settings are added.
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
from seglab.structures import InstanceResult

TINY_KWARGS: dict[str, dict] = load_tiny_settings("tiny_instance")

# {entrypoint: {parameter name prefix: why it gets no gradient in a training step}}.
NO_GRAD_EXCEPTIONS: dict[str, dict[str, str]] = {}

NUM_CLASSES = 3
SIZE = (97, 131)
MODELS = seglab.list_models(task="instance")


def _build(name: str) -> torch.nn.Module:
    if name not in TINY_KWARGS:
        pytest.fail(f"instance model {name!r} has no tiny settings: add `{name}: {{...}}` to a YAML file in "
                    f"tests/models/tiny_instance/")
    torch.manual_seed(0)
    return seglab.create_model(name, num_classes=NUM_CLASSES, **TINY_KWARGS[name])


def _batch() -> tuple[torch.Tensor, list[dict]]:
    torch.manual_seed(1)
    h, w = SIZE
    images = torch.randn(2, 3, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    targets = []
    for i in range(2):
        rect = (yy >= 10 + 5 * i) & (yy < 50) & (xx >= 8) & (xx < 60 + 10 * i)
        disc = (yy - 65) ** 2 + (xx - 95) ** 2 < (20 + 3 * i) ** 2
        masks = torch.stack([rect, disc])
        images[i, :, rect] += 2.0
        images[i, :, disc] -= 2.0
        targets.append({"boxes": masks_to_boxes(masks), "labels": torch.tensor([i % NUM_CLASSES, 2]),
                        "masks": masks, "iscrowd": torch.zeros(2, dtype=torch.bool), "image_id": i})
    return images, targets


def _check_results(results, images: torch.Tensor) -> None:
    assert isinstance(results, list) and len(results) == images.shape[0]
    for r in results:
        assert isinstance(r, InstanceResult)
        k = r.scores.shape[0]
        assert r.boxes.shape == (k, 4) and r.labels.shape == (k,)
        assert r.masks.shape == (k, *images.shape[-2:]) and r.masks.dtype == torch.bool
        assert bool(((r.labels >= 0) & (r.labels < NUM_CLASSES)).all())
        assert bool(torch.isfinite(r.scores).all()) and bool(torch.isfinite(r.boxes).all())


@pytest.mark.parametrize("name", MODELS)
def test_training_losses_reach_every_parameter(name):
    model = _build(name).train()
    images, targets = _batch()
    losses = model(images, targets)
    assert isinstance(losses, dict) and losses, "training forward must return a non-empty dict of losses"
    for key, value in losses.items():
        assert value.dim() == 0 and bool(torch.isfinite(value)), f"loss {key} = {value}"
    sum(losses.values()).backward()
    allowed = NO_GRAD_EXCEPTIONS.get(name, {})
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and p.grad is None and not any(n.startswith(a) for a in allowed)]
    assert not missing, f"no gradient for {missing[:5]} ({len(missing)} parameters)"


@pytest.mark.parametrize("name", MODELS)
def test_eval_results_and_save_load_round_trip(name):
    model = _build(name).eval()
    images, _ = _batch()
    with torch.no_grad():
        results = model(images)
        from_list = model(list(images))
    _check_results(results, images)
    for a, b in zip(results, from_list):
        assert torch.equal(a.masks, b.masks) and torch.allclose(a.scores, b.scores)
    with tempfile.TemporaryDirectory() as tmp:
        path = seglab.save_model(model, Path(tmp) / "m.safetensors")
        loaded = seglab.load_model(path).eval()
    with torch.no_grad():
        again = loaded(images)
    for a, b in zip(results, again):
        assert torch.equal(a.masks, b.masks) and torch.allclose(a.scores, b.scores, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_keyword_is_an_error(name):
    with pytest.raises(SeglabError):
        seglab.create_model(name, num_classes=NUM_CLASSES, **TINY_KWARGS.get(name, {}), no_such_option=1)
