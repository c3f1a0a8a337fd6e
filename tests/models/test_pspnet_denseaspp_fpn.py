"""PSPNet (PPM), DenseASPP and semantic FPN: defining properties, fitting a tiny batch, full-size counts."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import seglab
from seglab.backbones import create_backbone
from seglab.losses import SegmentationLoss
from seglab.necks.dense_aspp import DenseASPP
from seglab.necks.fpn import FeaturePyramidNetwork
from seglab.necks.ppm import PyramidPoolingModule

TINY = {
    "pspnet_resnet50": dict(width=8, channels=16, aux_channels=8),
    "denseaspp_resnet50": dict(width=8, inter_channels=16, growth=8),
    "fpn_resnet50": dict(width=8, fpn_channels=16, head_channels=16),
}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _full(name: str, **kw) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init time
        return seglab.create_model(name, num_classes=21, **kw)


# ---------------------------------------------------------------- PSPNet / Pyramid Pooling Module

def test_ppm_bins_and_channels():
    ppm = PyramidPoolingModule(8).eval()
    x = torch.randn(2, 8, 13, 17)
    pooled = ppm.pooled(x)
    assert [tuple(p.shape) for p in pooled] == [(2, 2, b, b) for b in (1, 2, 3, 6)]  # C/4 channels each
    with torch.no_grad():
        out = ppm(x)
    assert out.shape == (2, 16, 13, 17) and ppm.out_channels == 16  # 2C
    assert torch.equal(out[:, :8], x)  # the input itself comes first
    # The 1x1 bin is a global average: constant over the map.
    g = out[:, 8:10]
    assert torch.allclose(g, g[..., :1, :1].expand_as(g))


def test_pspnet_full_size_layout():
    m = _full("pspnet_resnet50")
    assert m.ppm.bins == (1, 2, 3, 6)
    assert [s[0].out_channels for s in m.ppm.stages] == [512] * 4 and m.ppm.out_channels == 4096
    conv = m.classifier[0][0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (4096, 512, (3, 3))
    assert m.classifier[1].p == 0.1
    aux = m.aux_classifier[0][0]
    assert (aux.in_channels, aux.out_channels) == (1024, 256)  # on layer3 ("res4")
    assert m.backbone.output_stride == 8


def test_pspnet_aux_only_in_training():
    model = seglab.create_model("pspnet_resnet50", num_classes=3, **TINY["pspnet_resnet50"])
    x = torch.randn(2, 3, 97, 131)
    out = model.train()(x)
    assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 3, 97, 131)
    (out["out"].mean() + out["aux"].mean()).backward()
    with torch.no_grad():
        ev = model.eval()(x)
    assert isinstance(ev, torch.Tensor) and ev.shape == (2, 3, 97, 131)
    plain = seglab.create_model("pspnet_resnet50", num_classes=3, aux_loss=False, **TINY["pspnet_resnet50"])
    assert plain.aux_classifier is None and isinstance(plain.train()(x), torch.Tensor)


# ---------------------------------------------------------------- DenseASPP

def test_dense_aspp_connectivity_and_rates():
    block = DenseASPP(32, inter_channels=16, growth=8)
    assert block.rates == (3, 6, 12, 18, 24)
    for k, layer in enumerate(block.layers):
        convs = [m for m in layer if isinstance(m, nn.Conv2d)]
        assert layer.in_channels == convs[0].in_channels == 32 + k * 8
        assert convs[0].kernel_size == (1, 1) and convs[0].out_channels == 16
        assert convs[1].dilation == (block.rates[k],) * 2 and convs[1].out_channels == 8
    assert block.out_channels == 32 + 5 * 8
    with torch.no_grad():
        out = block.eval()(torch.randn(1, 32, 11, 13))
    assert out.shape == (1, 72, 11, 13)
    full = _full("denseaspp_resnet50").aspp
    assert [layer.in_channels for layer in full.layers] == [2048 + k * 128 for k in range(5)]
    assert full.out_channels == 2048 + 5 * 128


def test_dense_aspp_receptive_field_grows():
    """Layer k's output at a pixel depends on inputs exactly sum(rates[:k+1]) pixels away, no further."""
    block = DenseASPP(4, inter_channels=8, growth=4).eval()
    with torch.no_grad():  # all-positive weights: no ReLU can hide a path, gradients are exact supports
        for p in block.parameters():
            p.abs_().add_(0.01)
    width, c = 141, 70
    x = (torch.rand(1, 4, 1, width) + 0.1).requires_grad_()
    out = block(x)
    extents = []
    for k in range(5):
        (grad,) = torch.autograd.grad(out[0, 4 + 4 * k: 8 + 4 * k, 0, c].sum(), x, retain_graph=True)
        hit = grad[0].abs().sum(0)[0].nonzero().flatten()
        extents.append(int(c - hit.min()))
        assert int(hit.max() - c) == extents[-1]
    assert extents == [3, 9, 21, 39, 63]  # receptive field 2 * 63 + 1 = 127 for the whole block


# ---------------------------------------------------------------- FPN

def test_fpn_levels_at_odd_size():
    backbone = create_backbone("resnet50", width=8)
    feats = backbone(torch.randn(1, 3, 97, 131))[1:]
    fpn = FeaturePyramidNetwork(backbone.out_channels[1:], 16, extra_pool=True)
    pyramid = fpn(feats)
    assert fpn.strides == [4, 8, 16, 32, 64] and fpn.out_channels == [16] * 5
    expected = [(math.ceil(97 / s), math.ceil(131 / s)) for s in (4, 8, 16, 32, 64)]
    assert [tuple(p.shape[-2:]) for p in pyramid] == expected
    assert all(p.shape[1] == 16 for p in pyramid)


def test_semantic_fpn_branches_are_summed():
    model = seglab.create_model("fpn_resnet50", num_classes=3, **TINY["fpn_resnet50"]).eval()
    assert [len(s) for s in model.head.scale_heads] == [1, 1, 2, 3]  # P2 conv only ... P5 three stages
    gn = model.head.scale_heads[3][2][1]
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 16
    assert _full("fpn_resnet50").head.scale_heads[0][0][1].num_groups == 32
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        pyramid = model.fpn(model.backbone(x)[1:])
        branches = model.head.branches(pyramid)
        assert all(b.shape == (1, 16, 25, 33) for b in branches)  # all at stride 4
        logits = model.head.predictor(branches[0] + branches[1] + branches[2] + branches[3])
        torch.testing.assert_close(model(x), nn.functional.interpolate(
            logits, size=(97, 131), mode="bilinear", align_corners=False))


# ---------------------------------------------------------------- training

@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_steps_fit_a_tiny_batch(name, fit_tiny_batch):
    assert SegmentationLoss().aux_weight == 0.4  # PSPNet's deep-supervision weight is the default
    model = seglab.create_model(name, num_classes=3, **TINY[name])
    losses = fit_tiny_batch(model, steps=15, lr=3e-3, size=48)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


# ---------------------------------------------------------------- full-size parameter counts (21 classes)

def test_pspnet_parameter_count_against_mmseg():
    with_aux, plain = _full("pspnet_resnet50"), _full("pspnet_resnet50", aux_loss=False)
    assert _count(with_aux) == 48_957_802
    assert _count(plain) == 46_592_597 == 48_957_802 - (1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21)
    assert _count(_full("pspnet_resnet101")) == 67_949_930
    assert _count(_full("pspnet_resnet101", aux_loss=False)) == 65_584_725
    # mmseg pspnet_r50-d8 (19 Cityscapes classes): 48.98M. Its ResNetV1c deep stem (3x3 convs
    # 3->32->32->64 with BN) replaces torchvision's 7x7 conv + BN; the rest of the network is the same.
    with torch.device("meta"):
        at19 = _count(seglab.create_model("pspnet_resnet50", num_classes=19))
    v1c_stem = (3 * 32 * 9 + 2 * 32) + (32 * 32 * 9 + 2 * 32) + (32 * 64 * 9 + 2 * 64)
    tv_stem = 3 * 64 * 49 + 2 * 64
    assert round((at19 - tv_stem + v1c_stem) / 1e6, 2) == 48.98
    assert abs(_count(with_aux) - 48.98e6) < 0.01 * 48.98e6


def test_denseaspp_parameter_count():
    # No published count for a ResNet DenseASPP (the paper's are DenseNets): check the block against
    # its own definition, the whole against the measured total.
    c, d0, g, k = 2048, 512, 128, 21
    block = sum((2 * (c + i * g) if i else 0) + (c + i * g) * d0 + d0 + 2 * d0 + d0 * g * 9 + g
                for i in range(5))
    model = _full("denseaspp_resnet50")
    assert _count(model.aspp) == block == 8_874_624
    assert _count(model) == 32_439_125 == _count(model.backbone) + block + (c + 5 * g) * k + k
    assert _count(_full("denseaspp_resnet101")) == 51_431_253


def test_fpn_parameter_count_against_torchvision():
    model = _full("fpn_resnet50")
    assert _count(model) == 28_478_933
    assert _count(_full("fpn_resnet101")) == 47_471_061
    # torchvision's fasterrcnn_resnet50_fpn has num_params 41,755,286: its ResNet-50 body (BN affine
    # frozen into buffers, so not counted) + this same FPN + RPN head + two-MLP box head + predictor.
    bn = sum(_count(m) for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    body = _count(model.backbone) - bn
    rpn = (256 * 256 * 9 + 256) + (256 * 3 + 3) + (256 * 12 + 12)
    box = (256 * 7 * 7 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 91 + 91) + (1024 * 364 + 364)
    assert body + _count(model.fpn) + rpn + box == 41_755_286
    gn_conv = 2 * 128
    head = 4 * (256 * 128 * 9 + gn_conv) + 3 * (128 * 128 * 9 + gn_conv) + 128 * 21 + 21
    assert _count(model.head) == head
