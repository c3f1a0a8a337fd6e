"""DeconvNet (Noh, Hong & Han, ICCV 2015): the decoder unpools at the encoder's pooling switches, fc6/fc7
are a 7x7 / 1x1 convolution mirrored by a 7x7 deconvolution, VGG-16 weights map in, a tiny model fits a
batch, and the full model has the paper's 252M parameters."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from unpool_checks import assert_unpooled_at_argmax

import seglab
from seglab.errors import SeglabError

TINY = dict(width_div=16, fc_channels=32)


def _switch_maps(model, x):
    """(encoder stage output before pooling, decoder stage input after unpooling) per level, shallowest first."""
    enc, dec = [], {}
    hooks = [model.pool.register_forward_pre_hook(lambda m, i: enc.append(i[0].detach()))]
    hooks += [s.register_forward_pre_hook(lambda m, i, k=k: dec.__setitem__(k, i[0].detach()))
              for k, s in enumerate(model.decoder)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [(enc[k], dec[len(enc) - 1 - k]) for k in range(len(enc))]


def test_decoder_unpools_at_the_pooling_switches():
    torch.manual_seed(0)
    model = seglab.create_model("deconvnet_vgg16", num_classes=3, **TINY).eval()
    for m in model.modules():  # BN with non-trivial statistics, so maps are neither all-positive nor sparse
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    pairs = _switch_maps(model, torch.randn(2, 3, 97, 131))
    assert len(pairs) == 5
    for level, (e, u) in enumerate(pairs):
        assert_unpooled_at_argmax(e, u, level)
    # the same positions as the encoder's own argmax indices
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pool5, switches = model.encode(x)
    idx, size = switches[-1]
    assert size == (4, 4) and pool5.shape[-2:] == (2, 2)
    probe = model.unpool(torch.arange(1.0, pool5.numel() + 1).view_as(pool5), idx, size).flatten(2)
    assert torch.equal(probe.gather(2, idx.flatten(2)), torch.arange(1.0, pool5.numel() + 1).view_as(idx.flatten(2)))
    assert int((probe != 0).sum()) == pool5.numel()  # each value at its switch, zeros elsewhere


def test_fc6_fc7_are_7x7_and_1x1_convolutions_mirrored_by_a_7x7_deconvolution():
    with torch.device("meta"):
        model = seglab.create_model("deconvnet_vgg16", num_classes=21)
    fc6, fc7, dfc6 = model.fc6[0], model.fc7[0], model.deconv_fc6[0]
    assert (fc6.in_channels, fc6.out_channels, fc6.kernel_size, fc6.padding) == (512, 4096, (7, 7), (0, 0))
    assert (fc7.out_channels, fc7.kernel_size) == (4096, (1, 1))
    assert isinstance(dfc6, nn.ConvTranspose2d) and (dfc6.in_channels, dfc6.out_channels, dfc6.kernel_size) == \
        (4096, 512, (7, 7))
    # Table 1's decoder: deconv5-1 ... deconv1-2, all 3x3 transposed convolutions
    widths = [[layer[0].out_channels for layer in stage] for stage in model.decoder]
    assert widths == [[512, 512, 512], [512, 512, 256], [256, 256, 128], [128, 64], [64, 64]]
    assert all(isinstance(layer[0], nn.ConvTranspose2d) and layer[0].kernel_size == (3, 3)
               for stage in model.decoder for layer in stage)
    # a 224x224 input: pool5 7x7 -> fc6/fc7 1x1 -> deconv-fc6 7x7 (Table 1)
    seen = {}
    model.fc7.register_forward_hook(lambda m, i, o: seen.update(fc7=tuple(o.shape)))
    model.deconv_fc6.register_forward_hook(lambda m, i, o: seen.update(dfc6=tuple(o.shape)))
    out = model.eval()(torch.empty(1, 3, 224, 224, device="meta"))
    assert seen == {"fc7": (1, 4096, 1, 1), "dfc6": (1, 512, 7, 7)} and out.shape == (1, 21, 224, 224)


def test_parameter_count_is_the_paper_s_252m():
    with torch.device("meta"):
        model = seglab.create_model("deconvnet_vgg16", num_classes=21)
    count = sum(p.numel() for p in model.parameters())
    assert count == 251_805_653 and round(count / 1e6) == 252
    big = sum(p.numel() for m in (model.fc6[0], model.deconv_fc6[0]) for p in m.parameters())
    assert big == 2 * 512 * 49 * 4096 + 4096 + 512  # the two 7x7 layers: 205.5M


def test_vgg16_weights_reach_encoder_and_fc_layers(tmp_path):
    from seglab.backbones import create_backbone

    vgg = create_backbone("vgg16", **TINY)  # torchvision's layout at 1/16 width, fc6 / fc7 as Linear
    state = {k: torch.randn_like(v) for k, v in vgg.state_dict().items() if k.startswith("features.")}
    state["classifier.0.weight"], state["classifier.0.bias"] = torch.randn(32, 32 * 49), torch.randn(32)
    state["classifier.3.weight"], state["classifier.3.bias"] = torch.randn(32, 32), torch.randn(32)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    model = seglab.create_model("deconvnet_vgg16", num_classes=3, backbone_weights=str(path), **TINY)
    for tv_idx, conv in zip([0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28], model.encoder_convs()):
        assert torch.equal(conv.weight, state[f"features.{tv_idx}.weight"])
    assert torch.equal(model.fc6[0].weight, state["classifier.0.weight"].reshape(32, 32, 7, 7))
    assert torch.equal(model.fc7[0].weight[:, :, 0, 0], state["classifier.3.weight"])
    with pytest.raises(SeglabError, match="fc_channels"):
        seglab.create_model("deconvnet_vgg16", num_classes=3, backbone_weights=str(path), width_div=16, fc_channels=16)


def test_a_few_steps_fit_a_tiny_batch(fit_tiny_batch):
    torch.manual_seed(0)
    # 8-channel first stage: at 1/16 width (4 channels) the skip-free 28-layer path learns too slowly for a test
    model = seglab.create_model("deconvnet_vgg16", num_classes=3, width_div=8, fc_channels=64)
    losses = fit_tiny_batch(model, steps=20, lr=3e-3, size=48)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
