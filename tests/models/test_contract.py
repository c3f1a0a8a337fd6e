"""The semantic-model contract (DESIGN.md, 'Contracts'), applied to every registered semantic model.

Each model is built tiny from `TINY_KWARGS` and checked for:
- eval `forward(images)` at an odd size (97x131) -> finite logits (2, num_classes, 97, 131);
- training forward + backward: a Tensor, or `{"out": ..., "aux": Tensor | list}` all at input size,
  and a gradient on every parameter that requires one (exceptions must be listed, with a reason,
  in `NO_GRAD_EXCEPTIONS`); the dict may also (or instead of "aux") hold `"se"`: (N, num_classes)
  per-image class-presence logits (EncNet's SE-loss, `seglab.losses.se_loss`), trained here with
  binary cross-entropy against the classes present in the target;
- `save_model` / `load_model` round trip gives identical eval logits (BN running stats included);
- `create_model` with an unknown keyword fails with `SeglabError`;
- `in_channels` other than 3 works.

A newly registered model fails here until its tiny settings are added in tests/models/tiny/*.yaml.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_settings import load_tiny_settings

import seglab
from seglab import SeglabError
from seglab.losses.cross_entropy import downsample_labels

# Tiny-width settings per entrypoint, one YAML file per model family in tests/models/tiny/: enough to
# exercise every code path in well under a second.
TINY_KWARGS: dict[str, dict] = load_tiny_settings("tiny")

# {entrypoint: {parameter name: why it gets no gradient in a training step}}. Keep this empty unless a
# parameter is unused in training by design.
NO_GRAD_EXCEPTIONS: dict[str, dict[str, str]] = {}

NUM_CLASSES = 5
SIZE = (97, 131)
MODELS = seglab.list_models(task="semantic")


def _tiny(name: str) -> dict:
    if name not in TINY_KWARGS:
        pytest.fail(f"model {name!r} is registered but has no tiny settings: add "
                    f"`{name}: {{...}}` to a YAML file in tests/models/tiny/ "
                    f"(small widths so the contract runs in well under a second)")
    return dict(TINY_KWARGS[name])


def _build(name: str, **extra) -> torch.nn.Module:
    return seglab.create_model(name, num_classes=NUM_CLASSES, **{**_tiny(name), **extra})


def _outputs(out) -> list[torch.Tensor]:
    """Flatten a training-mode output into its logits tensors, checking the contract's form."""
    if isinstance(out, torch.Tensor):
        return [out]
    assert isinstance(out, dict) and set(out) in ({"out", "aux"}, {"out", "se"}, {"out", "aux", "se"}), \
        f"training output must be a Tensor or {{'out', 'aux'}} (+ optional 'se'), got {type(out).__name__} " \
        f"{sorted(out) if isinstance(out, dict) else ''}"
    if "se" in out:
        assert out["se"].shape == out["out"].shape[:2], "'se' must be (N, num_classes) presence logits"
    if "aux" not in out:
        return [out["out"]]
    aux = out["aux"] if isinstance(out["aux"], (list, tuple)) else [out["aux"]]
    assert len(aux) >= 1
    return [out["out"], *aux]


def _check_sizes(outs: list[torch.Tensor]) -> None:
    """The main output at the input's size; auxiliary heads at it or at their own coarser size."""
    assert outs[0].shape == (2, NUM_CLASSES, *SIZE), "the main output is at the input's size"
    for o in outs[1:]:
        assert o.shape[:2] == (2, NUM_CLASSES) and all(a <= b for a, b in zip(o.shape[2:], SIZE)), o.shape


def _se_loss(out, target: torch.Tensor) -> torch.Tensor | float:
    """BCE of the "se" presence logits against the classes in `target` (0 when there are none)."""
    if not isinstance(out, dict) or "se" not in out:
        return 0.0
    present = F.one_hot(target.flatten(1), NUM_CLASSES).amax(1).float()
    return F.binary_cross_entropy_with_logits(out["se"], present)


def test_every_registered_model_has_tiny_settings():
    missing = [n for n in MODELS if n not in TINY_KWARGS]
    assert not missing, f"add tiny settings to TINY_KWARGS in tests/models/test_contract.py for: {missing}"


@pytest.mark.parametrize("name", MODELS)
def test_eval_forward_odd_size(name):
    model = _build(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *SIZE))
    assert isinstance(out, torch.Tensor), f"eval forward must return a Tensor, got {type(out).__name__}"
    assert out.shape == (2, NUM_CLASSES, *SIZE)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_train_forward_backward_reaches_every_parameter(name):
    model = _build(name).train()
    x = torch.randn(2, 3, *SIZE)
    target = torch.randint(0, NUM_CLASSES, (2, *SIZE))
    out = model(x)
    outs = _outputs(out)
    _check_sizes(outs)
    (sum(F.cross_entropy(o, downsample_labels(target, o.shape[2:])) for o in outs)
     + _se_loss(out, target)).backward()

    allowed = NO_GRAD_EXCEPTIONS.get(name, {})
    no_grad = [n for n, p in model.named_parameters()
               if p.requires_grad and p.grad is None and n not in allowed]
    assert not no_grad, (f"{len(no_grad)} parameters got no gradient in a training step (unused "
                         f"modules?): {no_grad[:8]}; list deliberate ones in NO_GRAD_EXCEPTIONS with a reason")
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:8]}"


@pytest.mark.parametrize("name", MODELS)
def test_aux_loss_outputs(name):
    """Models that take `aux_loss=True` return the aux logits in training and a Tensor in eval."""
    try:
        model = _build(name, aux_loss=True)
    except SeglabError as e:
        pytest.skip(f"{name} has no auxiliary head ({e})")
    x = torch.randn(2, 3, *SIZE)
    out = model.train()(x)
    assert isinstance(out, dict) and "aux" in out, "aux_loss=True: training forward must return {'out', 'aux'}"
    outs = _outputs(out)
    _check_sizes(outs)
    (sum(o.float().mean() for o in outs) + (out["se"].mean() if "se" in out else 0)).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        assert isinstance(model.eval()(x), torch.Tensor)


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name, tmp_path):
    model = _build(name)
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        model.train()(x)  # move BN running statistics away from their init, so buffers are checked too
        expected = model.eval()(x)
    path = seglab.save_model(model, tmp_path / "m.safetensors")
    loaded = seglab.load_model(path)
    assert not loaded.training
    assert loaded.seglab_config["name"] == name
    with torch.no_grad():
        got = loaded(x)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_kwarg_is_a_seglab_error(name):
    with pytest.raises(SeglabError):
        _build(name, not_a_real_option=1)


@pytest.mark.parametrize("name", MODELS)
def test_in_channels(name):
    model = _build(name, in_channels=1).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 33, 47))
    assert out.shape == (1, NUM_CLASSES, 33, 47)
