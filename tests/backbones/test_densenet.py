"""DenseNet-121/161 (Huang et al., CVPR 2017) with DenseASPP's dilation: torchvision's key layout (key
lists in tests/fixtures/torchvision_keys/densenet*.json, written from torchvision's documented
architecture), conversion of the published ImageNet checkpoint form, output strides 8/16/32."""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn
from torchvision_fakes import fake_state, keys

from seglab.backbones import create_backbone
from seglab.backbones.densenet import DenseLayer
from seglab.errors import SeglabError

TORCHVISION_PARAMS = {"densenet121": 7_978_856, "densenet161": 28_681_000}  # torchvision's num_params
TINY = dict(growth_rate=4, block_config=(2, 2, 2, 2), num_init_features=8, bn_size=2)


def _published_form(state: dict) -> dict:
    """The ImageNet .pth files' keys: `denselayerN.norm.1.weight` for `norm1`, no BatchNorm step counters."""
    return {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()
            if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("name", ["densenet121", "densenet161"])
def test_key_lists_match_torchvision_counts_and_our_layout(name):
    tv = keys(name)
    learnable = [s for k, s in tv.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert sum(math.prod(s) for s in learnable) == TORCHVISION_PARAMS[name]
    with torch.device("meta"):
        net = create_backbone(name)
    own = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert own == {k: s for k, s in tv.items() if not k.startswith("classifier.")}
    assert sum(p.numel() for p in net.parameters()) == TORCHVISION_PARAMS[name] - (tv["classifier.weight"][1] + 1) * 1000


def test_published_imagenet_checkpoint_loads_strictly(tmp_path):
    state = fake_state("densenet121", seed=0)
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(_published_form(state), path)
    assert "features.denseblock1.denselayer1.norm.1.weight" in torch.load(path, weights_only=True)
    for output_stride in (32, 8):  # average pools hold no weights: the same file at every stride
        net = create_backbone("densenet121", weights=str(path), output_stride=output_stride)
        own = net.state_dict()
        for k, v in own.items():
            if k.endswith("num_batches_tracked"):
                assert int(v) == 0, k
            else:
                assert torch.equal(v, state[k]), k
    # DenseASPP's trunk has no norm5 (its head brings its own): the checkpoint's norm5 is left out
    trunk = create_backbone("densenet121", weights=str(path), output_stride=8, final_norm=False)
    assert not any(k.startswith("features.norm5.") for k in trunk.state_dict())


def test_imagenet_forward_matches_torchvision_s_classifier_path(tmp_path):
    """At output stride 32 the last feature is what torchvision's classifier pools: ReLU(norm5(features))."""
    net = create_backbone("densenet121", **TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        last = net(x)[-1]
        want = torch.relu(net.features(x))  # nn.Sequential over torchvision's module order
    torch.testing.assert_close(last, want)


def test_wrong_checkpoint_is_one_clear_line(tmp_path):
    path = tmp_path / "d161.pth"
    torch.save(_published_form(fake_state("densenet161")), path)
    with pytest.raises(SeglabError, match=r"d161\.pth.*densenet121") as e:
        create_backbone("densenet121", weights=str(path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("output_stride, dilations, pooled", [
    (32, (1, 1), (True, True, True)), (16, (1, 2), (True, True, False)), (8, (2, 4), (True, False, False))])
def test_output_stride_by_dilation_as_denseaspp(output_stride, dilations, pooled):
    net = create_backbone("densenet161", output_stride=output_stride, **TINY).eval()
    assert net.out_channels == [8, 16, 16, 16, 16]
    f = net.features
    assert tuple(hasattr(getattr(f, f"transition{i}"), "pool") for i in (1, 2, 3)) == pooled
    for block, rate in zip((f.denseblock3, f.denseblock4), dilations):
        convs = [m.conv2 for m in block.values()]
        assert all(c.dilation == (rate, rate) and c.padding == (rate, rate) for c in convs)
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 97, 131))
    assert net.strides == [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    sizes = [(49, 66), (25, 33), (12, 16), (6, 8), (3, 4)]  # conv/max pool round up, average pools down
    expected = sizes[:2] + [sizes[min(i, {32: 4, 16: 3, 8: 2}[output_stride])] for i in (2, 3, 4)]
    assert [tuple(t.shape[-2:]) for t in feats] == expected
    assert [t.shape[1] for t in feats] == net.out_channels


def test_dense_connectivity():
    layer = DenseLayer(6, growth_rate=3, bn_size=2)
    assert (layer.conv1.in_channels, layer.conv1.out_channels, layer.conv2.out_channels) == (6, 6, 3)
    net = create_backbone("densenet121", **TINY)
    block = net.features.denseblock2
    assert [m.conv1.in_channels for m in block.values()] == [8, 12]  # transition1 halved 16 -> 8; +4 per layer
    x = torch.randn(1, 8, 5, 5)
    out = block.eval()(x)
    assert out.shape[1] == 16 and torch.equal(out[:, :8], x)  # the block's input is passed on unchanged
    assert isinstance(net.features.transition1.pool, nn.AvgPool2d)
