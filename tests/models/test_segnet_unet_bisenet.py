"""Defining properties of SegNet (Badrinarayanan et al., TPAMI 2017), U-Net (Ronneberger et al., MICCAI
2015) and BiSeNet V2 (Yu et al., IJCV 2021), beyond the shared contract in test_contract.py:

- SegNet's decoder upsamples with the encoder's pooling indices: every unpooled map is zero except at
  the argmax of each pooling window, where it holds the pooled value; the VGG-16 key mapping;
- U-Net logits match the input size with padded and with valid (overlap-tile) convolutions, and the
  valid network maps 572x572 to 388x388 as in the paper's Fig. 1;
- BiSeNet V2's branch strides (detail 8; semantic 4/8/16/32) and its four booster heads in training;
- each model fits a tiny synthetic batch (loss falls clearly in a few steps);
- full-width parameter counts: measured values, checked against the papers.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from unpool_checks import assert_unpooled_at_argmax

import seglab
from seglab import SeglabError
from seglab.losses.cross_entropy import downsample_labels
from seglab.layers.unpool import IndexedMaxPool2d, MaxUnpool2d


# ---------------------------------------------------------------------------------------------- SegNet
def test_unpool_hand_computed_odd_size():
    x = torch.tensor([[1., 5., 2.],
                      [3., 4., 9.],
                      [7., 0., 6.]])[None, None]
    y, idx, size = IndexedMaxPool2d(2)(x)
    assert size == (3, 3)
    assert y[0, 0].tolist() == [[5., 9.], [7., 6.]]  # ceil mode: the last row / column pool alone
    up = MaxUnpool2d(2)(y, idx, size)
    assert up[0, 0].tolist() == [[0., 5., 0.],
                                 [0., 0., 9.],
                                 [7., 0., 6.]]


def _segnet_switch_maps(model, x):
    """(encoder stage output before pooling, decoder stage input after unpooling) for every level."""
    enc, dec = {}, {}
    hooks = [s.register_forward_hook(lambda m, i, o, k=k: enc.__setitem__(k, o.detach()))
             for k, s in enumerate(model.encoder)]
    hooks += [s.register_forward_pre_hook(lambda m, i, k=k: dec.__setitem__(k, i[0].detach()))
              for k, s in enumerate(model.decoder)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [(enc[k], dec[k]) for k in range(len(model.encoder))]


def test_segnet_decoder_uses_pooling_indices():
    model = seglab.create_model("segnet_vgg16", num_classes=3, width_div=16).eval()
    pairs = _segnet_switch_maps(model, torch.randn(2, 3, 97, 131))
    assert len(pairs) == 5
    for level, (e, u) in enumerate(pairs):
        assert_unpooled_at_argmax(e, u, level)
    # At the bottom, the unpooled values are the encoder's own pooled maxima, back in place.
    e, u = pairs[-1]
    nz = u != 0
    assert torch.equal(u[nz], e[nz])
    assert torch.equal(F.max_pool2d(u, 2, ceil_mode=True), F.max_pool2d(e, 2, ceil_mode=True))


def test_segnet_loads_vgg16_encoder_weights(tmp_path):
    # A torchvision-layout VGG-16 checkpoint (`features.N.weight/bias`, classifier.*) at 1/16 width.
    from seglab.backbones import create_backbone

    vgg = create_backbone("vgg16", width_div=16, fc=False)
    state = {k: torch.randn_like(v) for k, v in vgg.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(8, 8)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    model = seglab.create_model("segnet_vgg16", num_classes=3, width_div=16, backbone_weights=str(path))
    convs = model.encoder_convs()
    assert len(convs) == 13
    for tv_idx, conv in zip([0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28], convs):
        assert torch.equal(conv.weight, state[f"features.{tv_idx}.weight"])
    with pytest.raises(SeglabError, match="width_div"):
        seglab.create_model("segnet_vgg16", num_classes=3, width_div=8, backbone_weights=str(path))


# ----------------------------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize("padding", [True, False])
@pytest.mark.parametrize("size", [(97, 131), (64, 64), (5, 300)])
def test_unet_output_matches_input_size(padding, size):
    model = seglab.create_model("unet", num_classes=2, base_channels=2, padding=padding).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 2, *size)
    assert torch.isfinite(out).all()


def test_unet_valid_convolutions_as_in_the_paper():
    """Fig. 1: with unpadded convolutions a 572x572 tile gives a 388x388 segmentation map."""
    model = seglab.create_model("unet", num_classes=2, base_channels=1, padding=False, norm=False).eval()
    with torch.no_grad():
        assert model._forward_net(torch.randn(1, 3, 572, 572)).shape == (1, 2, 388, 388)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(m.padding == (0, 0) for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_unet_valid_mode_trains_at_odd_size():
    model = seglab.create_model("unet", num_classes=2, base_channels=2, padding=False).train()
    out = model(torch.randn(2, 3, 37, 29))
    assert out.shape == (2, 2, 37, 29)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------------------------------ BiSeNet V2
def test_bisenetv2_branch_strides_and_widths():
    model = seglab.create_model("bisenetv2", num_classes=3, width_mult=0.25, head_channels=8).eval()
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        detail = model.detail(x)
        semantic = model.semantic(x)
    assert detail.shape == (1, 32, 32, 40)  # 128 * 0.25 channels at stride 8
    expected = [(4, 4), (8, 8), (16, 16), (32, 32), (32, 32)]  # (channels * 4, stride) at width 1/4
    for f, (c, s) in zip(semantic, expected):
        assert f.shape == (1, c, 256 // s, 320 // s)


def test_bisenetv2_aux_heads_in_training():
    model = seglab.create_model("bisenetv2", num_classes=3, width_mult=0.125, head_channels=16,
                                aux_channels=8)
    x = torch.randn(2, 3, 65, 93)
    out = model.train()(x)
    assert isinstance(out, dict) and len(out["aux"]) == 4  # stem, S3, S4, S5 (before CE)
    assert out["out"].shape == (2, 3, 65, 93)
    # the aux logits stay at their heads' strides 4, 8, 16, 32 (every conv pads: ceil(size / stride))
    assert [a.shape[2:] for a in out["aux"]] == [(17, 24), (9, 12), (5, 6), (3, 3)]
    with torch.no_grad():
        assert isinstance(model.eval()(x), torch.Tensor)
    plain = seglab.create_model("bisenetv2", num_classes=3, width_mult=0.125, head_channels=16,
                                aux_loss=False)
    assert isinstance(plain.train()(x), torch.Tensor)
    assert not any("aux" in n for n, _ in plain.named_parameters())


def test_bisenetv2_trains_with_a_batch_of_one():
    """The CE block's BNs see one value per channel per image; a batch of one must still train."""
    model = seglab.create_model("bisenetv2", num_classes=3, width_mult=0.125, head_channels=16,
                                aux_channels=8).train()
    ce_bn = model.semantic.ce.bn
    before = ce_bn.running_mean.clone()
    out = model(torch.randn(1, 3, 40, 56))
    sum(o.mean() for o in [out["out"], *out["aux"]]).backward()
    assert torch.equal(ce_bn.running_mean, before)  # not updated from a single value
    model(torch.randn(2, 3, 40, 56))
    assert not torch.equal(ce_bn.running_mean, before)  # batches of two use batch statistics


# ------------------------------------------------------------------------------------------- training
def _synthetic_batch():
    """Two 48x64 images: a bright rectangle (class 1) and a dark disc (class 2) on textured ground."""
    g = torch.Generator().manual_seed(0)
    img = 0.1 * torch.randn(2, 3, 48, 64, generator=g)
    target = torch.zeros(2, 48, 64, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")
    for i, (cy, cx) in enumerate([(20, 22), (28, 40)]):
        rect = ((yy - cy).abs() < 9) & ((xx - cx).abs() < 12)
        disc = (yy - (47 - cy)) ** 2 + (xx - (63 - cx)) ** 2 < 81
        target[i][rect], target[i][disc] = 1, 2
        img[i, :, rect] += torch.tensor([1.0, 0.5, 0.0])[:, None]
        img[i, :, disc] -= torch.tensor([0.0, 0.5, 1.0])[:, None]
    return img, target


# Over seeds 0-4 these settings end at 0.05-0.25 of the first loss after 20 steps; the bar is 0.7.
@pytest.mark.parametrize("name,kwargs,lr", [
    ("segnet_vgg16", dict(width_div=8), 1e-2),
    ("unet", dict(base_channels=4), 3e-2),
    ("bisenetv2", dict(width_mult=0.25, head_channels=32, aux_channels=16), 1e-2),
])
def test_loss_falls_on_a_tiny_batch(name, kwargs, lr):
    model = seglab.create_model(name, num_classes=3, **kwargs).train()
    img, target = _synthetic_batch()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(20):
        out = model(img)
        main = out["out"] if isinstance(out, dict) else out
        loss = F.cross_entropy(main, target)
        total = loss + (0.4 * sum(F.cross_entropy(a, downsample_labels(target, a.shape[2:])) for a in out["aux"])
                        if isinstance(out, dict) else 0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


# --------------------------------------------------------------------------------- parameter counts
def _num_params(name, **kwargs) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = seglab.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,kwargs,measured,paper,paper_tol", [
    # Table 6 of the SegNet paper: 29.5M (encoder-decoder with BN, 11 CamVid classes).
    ("segnet_vgg16", dict(num_classes=11), 29_472_779, 29.5e6, 0.01),
    # U-Net as in Fig. 1 (2 classes): 31.0M without BN; BN adds one parameter per 3x3-conv channel
    # (gamma and beta replace the conv bias): +5,888.
    ("unet", dict(num_classes=2), 31_037_698, 31.0e6, 0.01),
    ("unet", dict(num_classes=2, norm=False), 31_031_810, 31.0e6, 0.01),
    # BiSeNet V2 reference implementations: ~3.3-3.4M at 19 classes for inference (no booster heads).
    ("bisenetv2", dict(num_classes=19, aux_loss=False), 3_358_627, 3.35e6, 0.02),
    ("bisenetv2", dict(num_classes=11, aux_loss=False), 3_350_427, 3.35e6, 0.02),
    ("bisenetv2", dict(num_classes=21, aux_loss=False), 3_360_677, 3.35e6, 0.02),
    # With the four training-only booster heads (aux_channels=128).
    ("bisenetv2", dict(num_classes=11), 3_633_607, None, None),
    ("bisenetv2", dict(num_classes=21), 3_649_017, None, None),
])
def test_full_width_parameter_counts(name, kwargs, measured, paper, paper_tol):
    n = _num_params(name, **kwargs)
    assert abs(n - measured) <= 0.001 * measured, f"{name} {kwargs}: {n:,} parameters, measured {measured:,}"
    if paper is not None:
        assert abs(n - paper) <= paper_tol * paper, f"{name} {kwargs}: {n:,} parameters, paper {paper:,.0f}"
