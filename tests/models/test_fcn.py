import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import seglab
from seglab.errors import SeglabError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_keys"

TINY_VGG = dict(width_div=16, fc_channels=32)
TINY = {
    "fcn32s_vgg16": TINY_VGG,
    "fcn16s_vgg16": TINY_VGG,
    "fcn8s_vgg16": TINY_VGG,
    "fcn_resnet18": dict(width=8),
    "fcn_resnet34": dict(width=8),
    "fcn_resnet50": dict(width=8, aux_loss=True),
    "fcn_resnet101": dict(width=4),
}


def test_every_fcn_entrypoint_is_covered():
    # fcn32s/16s/8s_vgg16 and fcn_resnet*; other families (efficientfcn, the RGB-HHA two-stream
    # fcn*_rgbhha_*) have their own test files
    names = {n for n in seglab.list_models("fcn") if n.startswith("fcn") and "rgbhha" not in n}
    assert names == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_eval_forward_at_odd_size(name):
    model = seglab.create_model(name, num_classes=3, **TINY[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 97, 131))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 97, 131)


@pytest.mark.parametrize("name", sorted(TINY))
def test_train_forward_backward(name):
    model = seglab.create_model(name, num_classes=3, **TINY[name]).train()
    out = model(torch.randn(2, 3, 45, 61))
    if TINY[name].get("aux_loss"):
        assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 3, 45, 61)
        loss = out["out"].square().mean() + out["aux"].square().mean()
    else:
        assert isinstance(out, torch.Tensor)
        loss = out.square().mean() + out.mean()  # score layers may start at zero: keep a gradient
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    head = model.score_fr if hasattr(model, "score_fr") else model.classifier[4]
    assert head.weight.grad.abs().sum() > 0


def test_vgg_fcn_has_no_aux_head():
    with pytest.raises(SeglabError, match="aux"):
        seglab.create_model("fcn8s_vgg16", num_classes=3, aux_loss=True, **TINY_VGG)


def test_score_layers_start_at_zero_and_upsamplers_at_bilinear():
    model = seglab.create_model("fcn8s_vgg16", num_classes=3, **TINY_VGG)
    for conv in (model.score_fr, model.score_pool4, model.score_pool3):
        assert not conv.weight.any() and not conv.bias.any()
    x = torch.randn(1, 3, 6, 7)
    for up, f in ((model.upscore2, 2), (model.upscore_pool4, 2), (model.upscore, 8)):
        with torch.no_grad():
            y = up(x)
        ref = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
        assert y.shape == ref.shape
        # Interior only: the transposed conv zero-pads at the border where interpolate replicates.
        torch.testing.assert_close(y[..., f:-f, f:-f], ref[..., f:-f, f:-f])


def test_skip_scale_follows_the_at_once_release():
    assert (seglab.create_model("fcn8s_vgg16", num_classes=3, **TINY_VGG).pool3_scale) == 1e-4
    off = seglab.create_model("fcn16s_vgg16", num_classes=3, skip_scale=False, **TINY_VGG)
    assert (off.pool4_scale, off.pool3_scale) == (1.0, 1.0)


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_steps_fit_a_tiny_batch(name, fit_tiny_batch):
    # Trained from scratch (no ImageNet features), the release's skip scaling and dropout 0.5 only
    # slow a 30-step fit down; the architecture under test is the same.
    extra = dict(dropout=0.0, skip_scale=False) if "vgg" in name else {}
    model = seglab.create_model(name, num_classes=3, **TINY[name], **extra).train()
    losses = fit_tiny_batch(model, steps=30, lr=3e-3)
    # Training-mode losses: eval mode's BN running statistics lag after 30 steps on tiny nets.
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


def _param_count(json_name: str) -> int:
    shapes = json.loads((FIXTURES / json_name).read_text())
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(buffers))


def test_full_width_fcn_resnet50_parameter_count_matches_torchvision():
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = seglab.create_model("fcn_resnet50", num_classes=21, aux_loss=True)
        plain = seglab.create_model("fcn_resnet50", num_classes=21)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 35.3e6) < 0.01 * 35.3e6
    assert n == _param_count("fcn_resnet50_aux.json") == 35_322_218
    assert sum(p.numel() for p in plain.parameters()) == _param_count("fcn_resnet50.json")
