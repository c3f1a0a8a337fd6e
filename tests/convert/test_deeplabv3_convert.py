"""torchvision deeplabv3_resnet50/101 checkpoints -> seglab, with fake checkpoints built from torchvision's
key/shape lists (tests/fixtures/torchvision_keys/deeplabv3_resnet50*.json, copied from the project's
reference data). The expected logits come from an independent functional forward of torchvision's
DeepLabHead (F.conv2d, F.batch_norm, ...), reusing only seglab's ResNet trunk
(whose weights are checked equal to the checkpoint's)."""

import pytest
import torch
import torch.nn.functional as F

import seglab
from seglab.convert.torchvision import convert_model_state_dict
from seglab.errors import SeglabError

from torchvision_fakes import fake_state, keys  # noqa: E402  (tests/ is on pytest's path)

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One random aux checkpoint; the plain one is the same tensors without `aux_classifier.*`, which is
    exactly torchvision's deeplabv3_resnet50 key list (checked)."""
    folder = tmp_path_factory.mktemp("deeplabv3")
    aux = fake_state("deeplabv3_resnet50_aux", seed=0)
    plain = {k: v for k, v in aux.items() if not k.startswith("aux_classifier.")}
    assert {k: list(v.shape) for k, v in plain.items()} == keys("deeplabv3_resnet50")
    out = {}
    for name, state in (("deeplabv3_resnet50", plain), ("deeplabv3_resnet50_aux", aux)):
        out[name] = (state, str(folder / f"{name}.pth"))
        torch.save(state, out[name][1])
    return out


def _bn(x, p, prefix):
    return F.batch_norm(x, p[prefix + "running_mean"], p[prefix + "running_var"], p[prefix + "weight"],
                        p[prefix + "bias"], False, 0.0, 1e-5)


def _deeplab_head(x, state, rates=(12, 24, 36)):
    """torchvision's DeepLabHead (ASPP + 3x3 conv + BN + ReLU + 1x1 conv) in eval mode, written out."""
    p = {k[len("classifier."):]: v for k, v in state.items() if k.startswith("classifier.")}
    branches = [F.relu(_bn(F.conv2d(x, p["0.convs.0.0.weight"]), p, "0.convs.0.1."))]
    for i, r in enumerate(rates, start=1):
        y = F.conv2d(x, p[f"0.convs.{i}.0.weight"], padding=r, dilation=r)
        branches.append(F.relu(_bn(y, p, f"0.convs.{i}.1.")))
    pooled = F.conv2d(x.mean(dim=(2, 3), keepdim=True), p["0.convs.4.1.weight"])
    branches.append(F.relu(_bn(pooled, p, "0.convs.4.2.")).expand(-1, -1, *x.shape[-2:]))
    y = F.relu(_bn(F.conv2d(torch.cat(branches, 1), p["0.project.0.weight"]), p, "0.project.1."))
    y = F.relu(_bn(F.conv2d(y, p["1.weight"], padding=1), p, "2."))
    return F.conv2d(y, p["4.weight"], p["4.bias"])


def _fcn_head(x, state, prefix="aux_classifier."):
    p = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    y = F.relu(_bn(F.conv2d(x, p["0.weight"], padding=1), p, "1."))
    return F.conv2d(y, p["4.weight"], p["4.bias"])


def test_deeplabv3_resnet50_aux_checkpoint_matches_manual_forward(checkpoints):
    state, path = checkpoints["deeplabv3_resnet50_aux"]
    model = seglab.create_model("deeplabv3_resnet50", num_classes=21, aux_loss=True, weights=path).eval()
    for k, v in model.state_dict().items():  # strict, unrenamed: every tensor arrives unchanged
        assert torch.equal(v, state[k]), k
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        got = model(x)
        feats = model.backbone(x)  # the trunk's weights were checked equal to the checkpoint's above
        want = F.interpolate(_deeplab_head(feats[-1], state), size=(37, 45), mode="bilinear",
                             align_corners=False)
        aux_got = model.aux_classifier(feats[-2])
        aux_want = _fcn_head(feats[-2], state)
    assert got.shape == (1, 21, 37, 45) and torch.isfinite(got).all() and got.std() > 0
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(aux_got, aux_want)


def test_deeplabv3_resnet50_checkpoint_without_aux(checkpoints):
    state, path = checkpoints["deeplabv3_resnet50"]
    model = seglab.create_model("deeplabv3_resnet50", num_classes=21, weights=path).eval()
    assert model.aux_classifier is None
    assert torch.equal(model.classifier[0].convs[4][1].weight, state["classifier.0.convs.4.1.weight"])
    x = torch.randn(1, 3, 33, 29)
    with torch.no_grad():
        got = model(x)
        want = F.interpolate(_deeplab_head(model.backbone(x)[-1], state), size=(33, 29), mode="bilinear",
                             align_corners=False)
    torch.testing.assert_close(got, want)


def test_deeplabv3_aux_checkpoint_into_model_without_aux_and_errors(checkpoints):
    state, path = checkpoints["deeplabv3_resnet50_aux"]
    # meta device: the shape/key checks run before any tensor is copied, so no full-size init is paid
    with torch.device("meta"):
        model = seglab.create_model("deeplabv3_resnet50", num_classes=21)
        with pytest.raises(SeglabError, match="aux_loss=False"):
            seglab.create_model("deeplabv3_resnet50", num_classes=21, aux_loss=True,
                                weights=checkpoints["deeplabv3_resnet50"][1])
        with pytest.raises(SeglabError, match="num_classes"):
            seglab.create_model("deeplabv3_resnet50", num_classes=3, weights=path)
    assert model.aux_classifier is None
    mapped = convert_model_state_dict(model, state)  # the aux head is dropped, the rest kept as is
    assert set(mapped) == set(model.state_dict()) == set(keys("deeplabv3_resnet50"))
    assert all(mapped[k] is state[k] for k in mapped)


@pytest.mark.parametrize("aux", [False, True])
def test_deeplabv3_resnet101_mapping_matches_the_model_layout(aux):
    name = "deeplabv3_resnet101" + ("_aux" if aux else "")
    with torch.device("meta"):  # shapes only: a full-size model and checkpoint without memory or time
        model = seglab.create_model("deeplabv3_resnet101", num_classes=21, aux_loss=aux)
        mapped = convert_model_state_dict(model, fake_state(name, "meta", seed=0))
    own = model.state_dict()
    assert set(mapped) == set(own)
    assert all(mapped[k].shape == own[k].shape for k in own)
    n = sum(torch.Size(s).numel() for k, s in keys(name).items() if not k.endswith(BUFFERS))
    assert sum(p.numel() for p in model.parameters()) == n == (60_996_202 if aux else 58_630_997)
