"""DenseASPP on DenseNet (Yang et al., CVPR 2018) as the authors' release builds it: dilated DenseNet at
output stride 8 (or 16 + x2 upsampling), the extra stride-1 transition and norm5, the DenseASPP block on
half the DenseNet channels; ImageNet weights reach the trunk; a tiny model fits a batch; full-size counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision_fakes import fake_state

import seglab
from seglab.errors import SeglabError

from backbones.test_densenet import _published_form  # noqa: E402  (tests/ is on pytest's path)

TINY = dict(growth_rate=4, block_config=(2, 2, 2, 2), num_init_features=8, bn_size=2, inter_channels=16, growth=8)


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_release_layout_at_full_size():
    with torch.device("meta"):
        model = seglab.create_model("denseaspp_densenet161", num_classes=19)
    trunk = model.backbone
    assert trunk.output_stride == 8 and not trunk.final_norm
    assert [m.conv2.dilation[0] for m in trunk.features.denseblock3.values()] == [2] * 36
    assert [m.conv2.dilation[0] for m in trunk.features.denseblock4.values()] == [4] * 24
    assert (model.transition4.conv.in_channels, model.transition4.conv.out_channels) == (2208, 1104)
    assert not hasattr(model.transition4, "pool") and model.norm5.num_features == 1104
    assert [layer.in_channels for layer in model.aspp.layers] == [1104 + 128 * k for k in range(5)]
    assert model.aspp.layers[0][0].out_channels == 512 and model.aspp.rates == (3, 6, 12, 18, 24)
    assert model.classifier[1].in_channels == 1104 + 5 * 128 == 1744
    assert _count(model) == 35_395_427
    # the release's DenseASPP161 checkpoint is 142.7 MB: parameters + BatchNorm statistics in float32
    floats = sum(v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert floats == 35_634_083 and abs(4 * floats / 1e6 - 142.7) < 0.2
    with torch.device("meta"):
        small = seglab.create_model("denseaspp_densenet121", num_classes=19)
    assert (small.norm5.num_features, small.aspp.layers[0][0].out_channels, small.aspp.growth) == (512, 128, 64)
    assert _count(small) == 8_280_851


def test_forward_is_trunk_transition_block_classifier():
    model = seglab.create_model("denseaspp_densenet161", num_classes=3, **TINY).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        block4 = model.backbone(x)[-1]
        assert block4.shape[-2:] == (12, 16)  # stride 8 (average pools round down)
        features = model.norm5(model.transition4(block4))
        aspp = model.aspp(features)
        assert torch.equal(aspp[:, :features.shape[1]], features)  # the block's input is concatenated as is
        want = F.interpolate(model.classifier(aspp), size=(97, 131), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x), want)


def test_output_stride_16_upsamples_to_stride_8_before_the_block():
    model = seglab.create_model("denseaspp_densenet121", num_classes=3, output_stride=16, **TINY).eval()
    seen = {}
    model.aspp.register_forward_pre_hook(lambda m, i: seen.update(size=tuple(i[0].shape[-2:])))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 160))
    assert model.backbone.strides[-1] == 16 and seen["size"] == (16, 20) and out.shape == (1, 3, 128, 160)
    with pytest.raises(SeglabError, match="output_stride"):
        seglab.create_model("denseaspp_densenet121", num_classes=3, output_stride=32, **TINY)


def test_imagenet_weights_reach_the_trunk(tmp_path):
    state = fake_state("densenet121", seed=1)
    path = tmp_path / "densenet121.pth"
    torch.save(_published_form(state), path)
    model = seglab.create_model("denseaspp_densenet121", num_classes=19, backbone_weights=str(path))
    own = model.backbone.state_dict()
    assert torch.equal(own["features.denseblock4.denselayer16.conv2.weight"],
                       state["features.denseblock4.denselayer16.conv2.weight"])
    assert "features.norm5.weight" not in own  # the head's own norm5 (512 channels) replaces it


def test_a_few_steps_fit_a_tiny_batch(fit_tiny_batch):
    torch.manual_seed(0)
    model = seglab.create_model("denseaspp_densenet161", num_classes=3, **TINY)
    losses = fit_tiny_batch(model, steps=15, lr=3e-3, size=48)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
