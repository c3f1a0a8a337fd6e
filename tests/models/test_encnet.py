"""EncNet (Zhang et al., CVPR 2018): the encoding layer against its definition and its orderless
property, the featuremap attention, training outputs with the SE head, fitting a tiny batch with the
SE-loss in the criterion, full-size layout and parameter counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seglab
from seglab.losses.cross_entropy import SegmentationLoss
from seglab.necks.encoding import EncModule, Encoding

TINY = {"width": 8, "channels": 16, "num_codes": 4}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _full(name: str, **kw) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init time
        return seglab.create_model(name, num_classes=21, **kw)


def _shuffle_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """The same pixels in another spatial order (a permutation of the flattened H*W positions)."""
    return x.flatten(2)[:, :, perm].reshape(x.shape)


# ---------------------------------------------------------------- Encoding layer

def test_encoding_matches_the_definition():
    """e_k = sum_i a_ik (x_i - d_k), a_ik = softmax_k(scale_k ||x_i - d_k||^2), pixel by pixel."""
    torch.manual_seed(0)
    enc = Encoding(6, num_codes=5)
    assert enc.codewords.shape == (5, 6) and enc.scale.shape == (5,)
    assert (enc.scale < 0).all()  # the release's sign: scale_k = -s_k, s_k > 0 smooths
    x = torch.randn(2, 6, 3, 4)
    expected = torch.zeros(2, 5, 6)
    for b in range(2):
        for i in range(12):
            xi = x[b].flatten(1)[:, i]
            r = xi - enc.codewords  # (K, D) residuals
            a = torch.softmax(enc.scale * r.pow(2).sum(1), 0)
            expected[b] += a[:, None] * r
    with torch.no_grad():
        torch.testing.assert_close(enc(x), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(enc(x.flatten(2)), expected, rtol=1e-4, atol=1e-5)  # (B, D, N) too


def test_encoding_hand_computed_cases():
    enc = Encoding(2, num_codes=2)
    pts = torch.tensor([[1.0, 0.0], [-1.0, 2.0], [9.0, 1.0]]).t()[None]  # (1, D=2, N=3)
    with torch.no_grad():
        enc.codewords.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
        enc.scale.fill_(-100.0)  # sharp smoothing: each point goes to its nearest codeword
        e = enc(pts)[0]
    torch.testing.assert_close(e, torch.tensor([[0.0, 2.0], [-1.0, 1.0]]))
    one = Encoding(2, num_codes=1)  # a single codeword takes every point: e = sum_i x_i - N d
    with torch.no_grad():
        torch.testing.assert_close(one(pts)[0, 0], pts[0].sum(1) - 3 * one.codewords[0])


def test_encoding_is_invariant_to_the_spatial_order_of_pixels():
    torch.manual_seed(0)
    enc = Encoding(8, num_codes=4)
    x = torch.randn(2, 8, 5, 7)
    perm = torch.randperm(35)
    assert not torch.equal(perm, torch.arange(35))
    with torch.no_grad():
        e = enc(x)
        torch.testing.assert_close(enc(_shuffle_pixels(x, perm)), e)
        torch.testing.assert_close(enc(x.reshape(2, 8, 7, 5)), e)  # another layout of the same pixels
        # ...but it does see the pixels: changing one changes the encoding.
        y = x.clone()
        y[0, :, 2, 3] += 1.0
        assert not torch.allclose(enc(y)[0], e[0])


def test_gradients_reach_codewords_and_smoothing_factors():
    torch.manual_seed(0)
    enc = Encoding(4, num_codes=3)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    (enc(x) * torch.randn(2, 3, 4)).sum().backward()
    for grad in (enc.codewords.grad, enc.scale.grad, x.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert enc.scale.grad.shape == (3,) and (enc.scale.grad != 0).all()  # each codeword's own factor


def test_encoding_rejects_wrong_channels():
    with pytest.raises(ValueError, match="Encoding expects"):
        Encoding(4, 2)(torch.randn(1, 5, 3, 3))


# ---------------------------------------------------------------- EncModule

def test_enc_module_encoded_vector_is_orderless_and_attention_rescales_channels():
    torch.manual_seed(0)
    module = EncModule(8, num_codes=4).eval()
    with torch.no_grad():  # BN running stats away from identity, so the test is not trivial
        module.code_norm.running_mean.uniform_(-0.1, 0.1)
    x = torch.rand(2, 8, 5, 6) + 0.1  # positive: relu(x + x * gamma) = x * (1 + gamma)
    perm = torch.randperm(30)
    with torch.no_grad():
        out, encoded = module(x)
        out_p, encoded_p = module(_shuffle_pixels(x, perm))
        gamma = module.attention(encoded)
    assert encoded.shape == (2, 8)
    torch.testing.assert_close(encoded_p, encoded)
    torch.testing.assert_close(out_p, _shuffle_pixels(out, perm))  # the feature map just moves along
    ratio = out / x  # one factor per (image, channel), the same at every pixel, in (1, 2)
    torch.testing.assert_close(ratio, (1 + gamma)[:, :, None, None].expand_as(ratio))
    assert ((ratio > 1) & (ratio < 2)).all()
    assert not torch.allclose(gamma[0], gamma[1])  # image-dependent re-weighting


# ---------------------------------------------------------------- EncNet model

def test_training_outputs_and_heads():
    x = torch.randn(2, 3, 37, 45)
    model = seglab.create_model("encnet_resnet50", num_classes=3, **TINY)
    out = model.train()(x)
    assert set(out) == {"out", "aux", "se"}
    assert out["out"].shape == out["aux"].shape == (2, 3, 37, 45) and out["se"].shape == (2, 3)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3, 37, 45)
    no_aux = seglab.create_model("encnet_resnet50", num_classes=3, aux_loss=False, **TINY)
    assert set(no_aux.train()(x)) == {"out", "se"}
    plain = seglab.create_model("encnet_resnet50", num_classes=3, aux_loss=False, se_loss=False, **TINY)
    assert plain.se_classifier is None and isinstance(plain.train()(x), torch.Tensor)


def test_fits_a_tiny_batch_with_the_se_loss(fit_tiny_batch):
    torch.manual_seed(0)
    model = seglab.create_model("encnet_resnet50", num_classes=3, **TINY)
    images = torch.randn(2, 3, 48, 48)
    parts = SegmentationLoss()(model.train()(images), torch.randint(0, 3, (2, 48, 48)))
    assert set(parts) == {"loss", "loss_ce", "loss_aux", "loss_se"}  # fit_tiny_batch's criterion
    se_logits: list[torch.Tensor] = []
    model.se_classifier.register_forward_hook(lambda mod, inp, out: se_logits.append(out.detach()))
    losses = fit_tiny_batch(model, steps=15, lr=3e-3, size=48)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses
    # Both colour-block images hold all three classes, so the SE head should learn "all present".
    se = [F.binary_cross_entropy_with_logits(s, torch.ones_like(s)).item() for s in se_logits]
    assert len(se) == 15 and se[-1] < 0.8 * se[0], se


def test_full_size_layout():
    m = _full("encnet_resnet50")
    assert m.backbone.output_stride == 8
    conv = m.conv5[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (2048, 512, (3, 3))
    assert m.enc.encoding.codewords.shape == (32, 512) and m.enc.code_norm.num_features == 32
    assert m.enc.project[0].kernel_size == (1, 1)
    assert isinstance(m.enc.attention[1], nn.Sigmoid) and m.enc.attention[0].out_features == 512
    assert (m.se_classifier.in_features, m.se_classifier.out_features) == (512, 21)
    assert m.classifier[0].p == 0.1
    assert (m.aux_classifier[0].in_channels, m.aux_classifier[0].out_channels) == (1024, 256)


def test_parameter_counts():
    c, k, n = 512, 32, 21
    enc_module = (c * c + 2 * c) + (k * c + k) + 2 * k + (c * c + c)  # 1x1 conv+BN, codebook, BN1d, FC
    head = (2048 * c * 9 + 2 * c) + enc_module + (c * n + n)  # conv5 + EncModule + classifier
    se, aux = c * n + n, (1024 * 256 * 9 + 2 * 256) + (256 * n + n)
    model = _full("encnet_resnet50")
    assert _count(model.enc) == enc_module == 542_304
    assert _count(model) == 35_875_295 == _count(model.backbone) + head + se + aux
    assert _count(_full("encnet_resnet50", aux_loss=False, se_loss=False)) == 33_499_317
    assert _count(_full("encnet_resnet101")) == 54_867_423
    assert _count(_full("encnet_resnet101", aux_loss=False, se_loss=False)) == 52_491_445
