"""Late-fusion RGB-HHA FCNs (models/fcn_rgbd.py) and early-fusion RGB-D input (FCN, Long et al.,
CVPR 2015, Sec. 5, NYUDv2 table).

The shared contract (tests/models/test_contract.py) builds these models from tests/models/tiny/
fcn_rgbd.yaml with in_channels: 3 (split 2 colour + 1 other), because it feeds 3-channel images; its
in_channels=1 test passes because both streams then read the one channel. Its aux-loss test is skipped
for the VGG variants: FCN-VGG has no auxiliary head. The default 6-channel input is covered here.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seglab
from seglab.errors import ConfigError, SeglabError
from seglab.models.fcn_rgbd import LateFusion, split_channels

TINY_VGG = {"width_div": 16, "fc_channels": 32}
TINY = {
    "fcn32s_rgbhha_vgg16": TINY_VGG,
    "fcn16s_rgbhha_vgg16": TINY_VGG,
    "fcn_rgbhha_resnet18": {"width": 8},
}
# The single-modality FCN each stream is.
STREAM = {"fcn32s_rgbhha_vgg16": "fcn32s_vgg16", "fcn16s_rgbhha_vgg16": "fcn16s_vgg16",
          "fcn_rgbhha_resnet18": "fcn_resnet18"}


def _tiny(name: str, **kw) -> LateFusion:
    return seglab.create_model(name, num_classes=3, **TINY[name], **kw)


def _first_conv(stream: nn.Module) -> nn.Conv2d:
    return next(m for m in stream.modules() if isinstance(m, nn.Conv2d))


def _classifiers(stream: nn.Module) -> list[nn.Conv2d]:
    """The layers that produce class scores: FCN-VGG's score_* convs, FCN-ResNet's last 1x1 conv."""
    if hasattr(stream, "score_fr"):
        return [m for n, m in stream.named_children() if n.startswith("score_")]
    return [stream.classifier[4]]


def _randomise_classifiers(model: LateFusion, seed: int = 0) -> None:
    # FCN-VGG's score layers start at zero (FCN Sec. 4.1), which would make every output 0.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stream in (model.rgb, model.hha):
            for conv in _classifiers(stream):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)


def test_every_late_fusion_entrypoint_is_covered():
    assert {n for n in seglab.list_models("rgbhha")} == set(TINY)


@pytest.mark.parametrize("in_channels, split", [(6, (3, 3)), (4, (3, 1)), (3, (2, 1)), (2, (1, 1)), (1, (1, 1))])
def test_channels_split_rgb_first(in_channels, split):
    assert split_channels(in_channels) == split
    model = _tiny("fcn32s_rgbhha_vgg16", in_channels=in_channels)
    assert (_first_conv(model.rgb).in_channels, _first_conv(model.hha).in_channels) == split


def test_bad_in_channels_and_wrong_input_are_clear_errors():
    with pytest.raises(ConfigError, match="in_channels"):
        _tiny("fcn32s_rgbhha_vgg16", in_channels=0)
    model = _tiny("fcn32s_rgbhha_vgg16").eval()  # default: 6 channels
    with pytest.raises(SeglabError, match="3 colour \\+ 3 HHA"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name", sorted(TINY))
def test_default_six_channel_input_at_odd_size(name):
    model = _tiny(name, aux_loss=name.endswith("resnet18"))
    x = torch.randn(2, 6, 37, 45)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3, 37, 45)
    out = model.train()(x)
    if isinstance(out, dict):  # ResNet streams with aux heads: summed aux logits
        assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 3, 37, 45)
        out = out["out"]
    assert out.shape == (2, 3, 37, 45)


@pytest.mark.parametrize("name", sorted(TINY))
def test_output_is_rgb_stream_on_rgb_plus_hha_stream_on_hha(name):
    """The defining property of late fusion: each stream sees only its own channels, scores add."""
    model = _tiny(name)
    _randomise_classifiers(model)
    model.eval()
    x = torch.randn(2, 6, 37, 45)
    # Each stream is exactly the single-modality FCN: its weights load strictly into one.
    single = {}
    for part in ("rgb", "hha"):
        single[part] = seglab.create_model(STREAM[name], num_classes=3, **TINY[name]).eval()
        single[part].load_state_dict(getattr(model, part).state_dict(), strict=True)
    with torch.no_grad():
        rgb, hha = single["rgb"](x[:, :3]), single["hha"](x[:, 3:])
        torch.testing.assert_close(model(x), rgb + hha)
        assert rgb.abs().mean() > 1e-3 and hha.abs().mean() > 1e-3  # both terms matter

        # Silence the HHA stream's classifier: the output is the RGB stream's alone, blind to HHA.
        for conv in _classifiers(model.hha):
            conv.weight.zero_()
            conv.bias.zero_()
        x_other_hha = torch.cat([x[:, :3], torch.randn(2, 3, 37, 45)], 1)
        x_other_rgb = torch.cat([torch.randn(2, 3, 37, 45), x[:, 3:]], 1)
        torch.testing.assert_close(model(x), rgb)
        assert torch.equal(model(x_other_hha), model(x))
        assert not torch.equal(model(x_other_rgb), model(x))


def test_late_fusion_learns_labels_that_need_both_modalities():
    """Labels that colour and HHA only determine together: colour gives one bit, the HHA channels the
    other. The colour stream alone cannot beat log 2 per pixel on this batch (twin images share their
    colour input but not their labels), nor can the HHA stream; the fused net does."""
    images, labels = _two_bit_batch(extra_channels=3)
    model = _he_init(seglab.create_model("fcn32s_rgbhha_vgg16", num_classes=4, dropout=0.0, skip_scale=False,
                                         **TINY_VGG))
    losses = _fit(model, images, labels, steps=40, lr=1e-3)
    assert losses[0] > 1.3 and sum(losses[-3:]) / 3 < 0.6 * math.log(2), losses


def test_resnet_late_fusion_fits_the_tiny_batch(fit_tiny_batch):
    # 3-channel colour blocks: 2 channels to the colour stream, 1 to the other (see the split rule).
    model = _tiny("fcn_rgbhha_resnet18", in_channels=3, aux_loss=True)
    losses = fit_tiny_batch(model, steps=30, lr=3e-3)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


def test_early_fusion_rgbd_fcn8s_trains_on_depth():
    """FCN's "RGBD" row: depth as a 4th input channel of a plain FCN-8s. The labels need the depth
    channel (twin images share their colour input), so the loss only drops below log 2 if the 4th
    channel is used."""
    model = seglab.create_model("fcn8s_vgg16", num_classes=40, in_channels=4, dropout=0.0, skip_scale=False,
                                **TINY_VGG)
    assert _first_conv(model).in_channels == 4
    images, labels = _two_bit_batch(extra_channels=1)
    losses = _fit(_he_init(model), images, labels, steps=60, lr=3e-3)
    assert losses[0] > math.log(40) - 0.1  # zero-initialised score layers: uniform over 40 classes
    assert sum(losses[-3:]) / 3 < 0.6 * math.log(2), losses


def _two_bit_batch(extra_channels: int, size: int = 48):
    """Four images of 2x2 blocks, label = 2 * colour bit + depth bit, laid out so that no input part
    alone tells both bits: images 0 / 1 (and 2 / 3) have identical colour channels, images 0 / 2 (and
    1 / 3) identical extra (depth / HHA) channels, and every block position sees all four labels."""
    g = torch.Generator().manual_seed(0)
    colour_bit = torch.tensor([[0, 0], [1, 1]])
    depth_bit = torch.tensor([[0, 1], [0, 1]])
    colour_bits = torch.stack([colour_bit, colour_bit, 1 - colour_bit, 1 - colour_bit])
    depth_bits = torch.stack([depth_bit, 1 - depth_bit, depth_bit, 1 - depth_bit])
    labels = (2 * colour_bits + depth_bits).repeat_interleave(size // 2, 1).repeat_interleave(size // 2, 2)
    palette = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]])
    colour = palette[labels // 2].permute(0, 3, 1, 2)
    colour = colour + 0.2 * torch.randn(2, 3, size, size, generator=g).repeat_interleave(2, 0)  # twins 0/1, 2/3
    other = (2.0 * (labels % 2) - 1.0)[:, None].expand(-1, extra_channels, -1, -1)
    other = other + 0.2 * torch.randn(2, extra_channels, size, size, generator=g).repeat(2, 1, 1, 1)  # 0/2, 1/3
    assert torch.equal(colour[0], colour[1]) and torch.equal(other[0], other[2])
    return torch.cat([colour, other], 1), labels


def _he_init(model: nn.Module) -> nn.Module:
    """He-normal init of every non-zero conv. PyTorch's default init lets the signal fade through the
    15 plain convs of an untrained tiny VGG, so it barely reads its input; an ImageNet-trained trunk
    would not have that problem. Score layers stay at zero, as FCN initialises them."""
    with torch.no_grad():
        for m in model.modules():
            if type(m) is nn.Conv2d and m.weight.any():
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return model


def _fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_full_size_parameter_counts():
    with torch.device("meta"):  # shapes only
        counts = {name: _count(seglab.create_model(name, num_classes=21)) for name in TINY}
        single = {name: _count(seglab.create_model(STREAM[name], num_classes=21)) for name in TINY}
        aux = _count(seglab.create_model("fcn_rgbhha_resnet18", num_classes=21, aux_loss=True))
        nyud32 = _count(seglab.create_model("fcn32s_rgbhha_vgg16", num_classes=40))
    assert counts == {"fcn32s_rgbhha_vgg16": 272_305_834, "fcn16s_rgbhha_vgg16": 269_631_988,
                      "fcn_rgbhha_resnet18": 23_538_602}
    assert aux == 23_836_500
    assert all(counts[n] == 2 * single[n] for n in TINY)  # two complete single-modality FCNs
    # The release's nyud-fcn32s-color-hha at 40 classes, layer by layer: per stream VGG-16 convs
    # (14,714,688) + fc6 (512*7*7*4096 + 4096) + fc7 (4096*4096 + 4096) + score_fr (4096*40 + 40), and
    # one shared 64x64 upscore without bias (40*40*64*64). Ours adds the second stream's upscore.
    stream = 14_714_688 + (512 * 49 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 40 + 40)
    release = 2 * stream + 40 * 40 * 64 * 64
    assert release == 275_402_448
    assert nyud32 == release + 40 * 40 * 64 * 64
