"""torchvision checkpoints -> seglab, tested with fake checkpoints built from torchvision's key/shape
lists (tests/fixtures/torchvision_keys, copied from the project's reference data)."""

import pytest
import torch
import torch.nn.functional as F

import seglab
from seglab.backbones import create_backbone
from seglab.convert.torchvision import convert_model_state_dict, map_backbone_state_dict
from seglab.errors import SeglabError

from torchvision_fakes import fake_state  # noqa: E402  (tests/ is on pytest's path)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_imagenet_checkpoint_loads_strictly(name, tmp_path):
    state = fake_state(name)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    net = create_backbone(name, weights=str(path), output_stride=8)
    torch.testing.assert_close(net.layer1[0].conv1.weight, state["layer1.0.conv1.weight"], rtol=0, atol=0)
    for k, v in net.state_dict().items():  # everything but fc.* arrives unchanged
        assert torch.equal(v, state[k]), k
    assert set(state) - set(net.state_dict()) == {"fc.weight", "fc.bias"}


def test_resnet101_mapping_matches_the_model_layout():
    with torch.device("meta"):  # shapes only: a full-size model and checkpoint without memory or time
        net = create_backbone("resnet101")
        mapped = map_backbone_state_dict(net, "resnet101", fake_state("resnet101", "meta"))
    own = net.state_dict()
    assert set(mapped) == set(own)
    assert all(mapped[k].shape == own[k].shape for k in own)


@pytest.fixture(scope="module")
def vgg16_checkpoint(tmp_path_factory):
    state = fake_state("vgg16")
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return state, str(path)


def test_vgg16_checkpoint_fc_layers_become_convolutions(vgg16_checkpoint):
    state, path = vgg16_checkpoint
    net = create_backbone("vgg16", weights=path)
    assert torch.equal(net.features[28].weight, state["features.28.weight"])
    assert torch.equal(net.fc6.weight, state["classifier.0.weight"].reshape(4096, 512, 7, 7))
    assert torch.equal(net.fc7.weight[:, :, 0, 0], state["classifier.3.weight"])
    assert torch.equal(net.fc7.bias, state["classifier.3.bias"])


def test_vgg16_checkpoint_is_subsampled_for_deeplab_largefov(vgg16_checkpoint):
    state, path = vgg16_checkpoint
    net = create_backbone("vgg16", weights=path, atrous=True)
    fc6 = state["classifier.0.weight"].reshape(4096, 512, 7, 7)
    assert torch.equal(net.fc6.weight, fc6[::4, :, ::3, ::3])
    assert torch.equal(net.fc6.bias, state["classifier.0.bias"][::4])
    assert torch.equal(net.fc7.weight[:, :, 0, 0], state["classifier.3.weight"][::4, ::4])


def test_vgg16_backbone_weights_reach_fcn8s(vgg16_checkpoint):
    state, path = vgg16_checkpoint
    model = seglab.create_model("fcn8s_vgg16", num_classes=21, backbone_weights=path)
    assert torch.equal(model.backbone.fc6.bias, state["classifier.0.bias"])
    assert sum(p.numel() for p in model.parameters()) == 134_489_759


def test_backbone_mismatch_is_one_clear_line(tmp_path, vgg16_checkpoint):
    path = tmp_path / "r18.pth"
    torch.save(fake_state("resnet18"), path)
    with pytest.raises(SeglabError, match=r"r18\.pth.*layer1\.0\.conv3\.weight") as e:
        create_backbone("resnet50", weights=str(path), width=8)
    assert "\n" not in str(e.value)
    with pytest.raises(SeglabError, match="shape"):  # a tiny trunk cannot take ImageNet weights
        create_backbone("vgg16", weights=vgg16_checkpoint[1], width_div=16, fc_channels=32)


@pytest.fixture(scope="module")
def fcn_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fcn")
    out = {}
    for name in ("fcn_resnet50", "fcn_resnet50_aux"):
        out[name] = (fake_state(name), str(folder / f"{name}.pth"))
        torch.save(out[name][0], out[name][1])
    return out


def _head(x, state, prefix):
    """torchvision's FCNHead in eval mode, written out with functional ops."""
    p = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    x = F.conv2d(x, p["0.weight"], padding=1)
    x = F.batch_norm(x, p["1.running_mean"], p["1.running_var"], p["1.weight"], p["1.bias"], False, 0.0, 1e-5)
    return F.conv2d(F.relu(x), p["4.weight"], p["4.bias"])


def test_fcn_resnet50_checkpoint_matches_manual_forward(fcn_checkpoints):
    state, path = fcn_checkpoints["fcn_resnet50_aux"]
    model = seglab.create_model("fcn_resnet50", num_classes=21, aux_loss=True, weights=path).eval()
    backbone = create_backbone("resnet50", output_stride=8).eval()
    backbone.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("backbone.")})
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        got = model(x)
        feats = backbone(x)
        want = F.interpolate(_head(feats[-1], state, "classifier."), size=(37, 45), mode="bilinear",
                             align_corners=False)
        aux_got = model.aux_classifier(feats[-2])  # eval mode: dropout off, BN running stats
        aux_want = _head(feats[-2], state, "aux_classifier.")
    assert got.shape == (1, 21, 37, 45) and torch.isfinite(got).all()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(aux_got, aux_want)


def test_fcn_resnet50_aux_checkpoint_into_model_without_aux(fcn_checkpoints):
    state, path = fcn_checkpoints["fcn_resnet50_aux"]
    model = seglab.create_model("fcn_resnet50", num_classes=21, weights=path)
    assert model.aux_classifier is None
    assert torch.equal(model.classifier[4].weight, state["classifier.4.weight"])


def test_fcn_checkpoint_errors(fcn_checkpoints):
    with pytest.raises(SeglabError, match="num_classes"):
        seglab.create_model("fcn_resnet50", num_classes=3, weights=fcn_checkpoints["fcn_resnet50_aux"][1])
    with pytest.raises(SeglabError, match="aux_loss=False"):
        seglab.create_model("fcn_resnet50", num_classes=21, aux_loss=True, weights=fcn_checkpoints["fcn_resnet50"][1])


def test_convert_is_identity_for_matching_layouts():
    model = seglab.create_model("fcn_resnet18", num_classes=3, width=8, aux_loss=True)
    state = model.state_dict()
    assert convert_model_state_dict(model, state).keys() == state.keys()
