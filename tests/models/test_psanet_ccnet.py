"""PSANet (point-wise spatial attention) and CCNet (criss-cross attention): defining properties,
fitting a tiny batch, full-size parameter counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import seglab
from seglab.errors import ConfigError
from seglab.necks.criss_cross import CrissCrossAttention, RecurrentCrissCross
from seglab.necks.psa import PointwiseSpatialAttention, gather_window

TINY = {
    "psanet_resnet50": {"width": 8, "psa_channels": 16, "channels": 16, "aux_channels": 8, "mask_size": (7, 7)},
    "ccnet_resnet50": {"width": 8, "inter_channels": 16, "channels": 16, "aux_channels": 8},
}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _full(name: str, **kw) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init time
        return seglab.create_model(name, num_classes=21, **kw)


def _cca(channels: int = 16) -> CrissCrossAttention:
    torch.manual_seed(0)
    cca = CrissCrossAttention(channels).eval()
    with torch.no_grad():
        cca.gamma.fill_(1.0)  # gamma starts at 0 (identity); make the attention path visible
    return cca


def _input_support(module: nn.Module, x: torch.Tensor, pixel: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool: which input pixels the output at `pixel` has a nonzero gradient from."""
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(module(x)[0, :, pixel[0], pixel[1]].sum(), x)
    return grad[0].abs().sum(0) > 0


def _cross(h: int, w: int, pixel: tuple[int, int]) -> torch.Tensor:
    cross = torch.zeros(h, w, dtype=torch.bool)
    cross[pixel[0], :] = True
    cross[:, pixel[1]] = True
    return cross


# ---------------------------------------------------------------- criss-cross attention

def test_criss_cross_output_reads_only_its_row_and_column():
    cca, x, pixel = _cca(), torch.randn(1, 16, 7, 9), (3, 5)
    assert torch.equal(_input_support(cca, x, pixel), _cross(7, 9, pixel))
    with torch.no_grad():
        base = cca(x)[0, :, 3, 5]
        off, on = x.clone(), x.clone()
        off[0, :, 1, 2] += 5.0  # neither row 3 nor column 5
        on[0, :, 6, 5] += 5.0  # same column
        torch.testing.assert_close(cca(off)[0, :, 3, 5], base, rtol=0, atol=1e-6)
        assert (cca(on)[0, :, 3, 5] - base).abs().max() > 1e-2


def test_recurrence_two_reaches_every_pixel():
    x, pixel = torch.randn(1, 16, 6, 8), (2, 3)
    one, two = RecurrentCrissCross(16, recurrence=1), RecurrentCrissCross(16, recurrence=2)
    two.load_state_dict(one.state_dict())
    with torch.no_grad():
        for m in (one, two):
            m.cca.gamma.fill_(1.0)
    assert torch.equal(_input_support(one.eval(), x, pixel), _cross(6, 8, pixel))
    assert _input_support(two.eval(), x, pixel).all()
    assert _count(two) == _count(one) == _count(two.cca)  # the loops share one module's weights


def test_criss_cross_weights_against_naive_loop():
    """Softmax over the H + W - 1 cross positions, jointly; the pixel itself counted once."""
    cca, x = _cca(), torch.randn(2, 16, 5, 7)
    h, w = 5, 7
    with torch.no_grad():
        att = cca.attention(x)
        out = cca(x)
        q, k, v = cca.query(x), cca.key(x), cca.value(x)
    assert att.shape == (2, h, w, h + w)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, h, w))
    assert ((att > 0).sum(-1) == h + w - 1).all()
    for i, j in [(0, 0), (2, 3), (4, 6)]:
        assert att[:, i, j, i].eq(0).all()  # self in the column part is masked ...
        assert att[:, i, j, h + j].gt(0).all()  # ... and kept in the row part
        cross = [(g, j) for g in range(h) if g != i] + [(i, c) for c in range(w)]
        energy = torch.stack([(q[:, :, i, j] * k[:, :, a, b]).sum(1) for a, b in cross], dim=1)
        weights = energy.softmax(dim=1)
        expected = x[:, :, i, j] + sum(weights[:, n, None] * v[:, :, a, b] for n, (a, b) in enumerate(cross))
        torch.testing.assert_close(out[:, :, i, j], expected, rtol=1e-5, atol=1e-5)


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_criss_cross_never_materialises_pixel_by_pixel_matrix():
    cca, x = _cca(8), torch.randn(1, 8, 24, 24, requires_grad=True)
    n = 24 * 24
    with _LargestTensor() as probe:
        cca(x).sum().backward()
    assert probe.numel <= n * (24 + 24)  # O(N (H + W)); a non-local N x N matrix is 12x larger
    assert probe.numel < n * n // 4


def test_criss_cross_starts_as_identity_and_validates():
    cca = CrissCrossAttention(16)
    assert cca.gamma.item() == 0.0
    assert cca.query.out_channels == cca.key.out_channels == 2 and cca.value.out_channels == 16
    x = torch.randn(1, 16, 4, 5)
    with torch.no_grad():
        assert torch.equal(cca(x), x)
    with pytest.raises(ConfigError):
        RecurrentCrissCross(16, recurrence=0)


# ---------------------------------------------------------------- point-wise spatial attention

def _naive_window(y: torch.Tensor, mask: tuple[int, int]) -> torch.Tensor:
    n, _, h, w = y.shape
    out = torch.full((n, h * w, h * w), float("-inf"))
    for i in range(h):
        for j in range(w):
            for k in range(h):
                for m in range(w):
                    dh, dw = k - i + (mask[0] - 1) // 2, m - j + (mask[1] - 1) // 2
                    if 0 <= dh < mask[0] and 0 <= dw < mask[1]:
                        out[:, i * w + j, k * w + m] = y[:, dh * mask[1] + dw, i, j]
    return out


@pytest.mark.parametrize("mask", [(5, 7), (3, 3), (9, 5)])
def test_gather_window_matches_naive_loop(mask):
    """Entry [p, q] is p's over-completed map at offset q - p; mask (5, 7) is exactly (2h-1, 2w-1)."""
    y = torch.randn(2, mask[0] * mask[1], 3, 4)
    got = gather_window(y, mask)
    assert torch.equal(got, _naive_window(y, mask))
    assert torch.isfinite(got).all() == (mask[0] >= 5 and mask[1] >= 7)


def test_collect_and_distribute_attention_are_transposed_relations():
    torch.manual_seed(0)
    psa = PointwiseSpatialAttention(8, 4, mask_size=(5, 5)).eval()
    r = torch.randn(1, 4, 3, 3)
    with torch.no_grad():
        collect, distribute = psa.collect_attention(r), psa.distribute_attention(r)
        y_col = _naive_window(psa.attention_collect(r), (5, 5))[0]  # [p, q]: p's map at q - p
        y_dis = _naive_window(psa.attention_distribute(r), (5, 5))[0]
    torch.testing.assert_close(collect[0], y_col.softmax(dim=1))  # p gathers with its own map
    torch.testing.assert_close(distribute[0], y_dis.t().softmax(dim=1))  # p receives what q's map sends
    assert not torch.allclose(distribute[0], y_dis.softmax(dim=1), atol=1e-3)
    torch.testing.assert_close(collect.sum(2), torch.ones(1, 9))


def test_psa_module_shapes_shrink_and_window():
    torch.manual_seed(0)
    psa = PointwiseSpatialAttention(8, 4, mask_size=(5, 5)).eval()
    seen = []
    psa.attention_collect.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    x = torch.randn(2, 8, 13, 17)
    with torch.no_grad():
        out = psa(x)
        attention = psa.collect_attention(torch.randn(1, 4, 7, 9))
    assert seen[0] == (2, 25, 7, 9)  # attention on the map shrunk by 2: (13-1)//2+1, (17-1)//2+1
    assert out.shape == (2, 16, 13, 17) and psa.out_channels == 16
    assert torch.equal(out[:, :8], x)
    # 7x9 map, 5x5 mask: p = (0, 0) sees only offsets up to 2 rows / 2 columns away.
    weights = attention[0, 0].reshape(7, 9)
    assert (weights[:3, :3] > 0).all() and weights[3:].eq(0).all() and weights[:, 3:].eq(0).all()
    with pytest.raises(ConfigError):
        PointwiseSpatialAttention(8, 4, mask_size=(4, 5))


# ---------------------------------------------------------------- models

def test_full_size_layouts():
    psa = _full("psanet_resnet50")
    assert psa.backbone.output_stride == 8
    assert (psa.psa.reduce_collect[0].in_channels, psa.psa.reduce_collect[0].out_channels) == (2048, 512)
    assert psa.psa.attention_distribute[1].out_channels == 59 * 59
    assert (psa.psa.project[0].in_channels, psa.psa.project[0].out_channels) == (1024, 2048)
    assert psa.classifier[0][0].in_channels == 4096 and psa.classifier[0][0].kernel_size == (3, 3)
    assert (psa.aux_classifier[0][0].in_channels, psa.aux_classifier[0][0].out_channels) == (1024, 256)
    cc = _full("ccnet_resnet50")
    assert cc.backbone.output_stride == 8
    assert (cc.head.reduce[0].in_channels, cc.head.reduce[0].out_channels) == (2048, 512)
    assert cc.head.rcca.recurrence == 2 and cc.head.rcca.cca.query.out_channels == 64
    assert cc.head.classifier[0][0].in_channels == 2560 and cc.head.classifier[1].p == 0.1
    assert (cc.aux_classifier[0][0].in_channels, cc.aux_classifier[0][0].out_channels) == (1024, 512)


@pytest.mark.parametrize("name", sorted(TINY))
def test_aux_only_in_training(name):
    model = seglab.create_model(name, num_classes=3, **TINY[name])
    x = torch.randn(2, 3, 57, 43)
    out = model.train()(x)
    assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 3, 57, 43)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 3, 57, 43)
    plain = seglab.create_model(name, num_classes=3, aux_loss=False, **TINY[name])
    assert plain.aux_classifier is None and isinstance(plain.train()(x), torch.Tensor)


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_steps_fit_a_tiny_batch(name, fit_tiny_batch):
    torch.manual_seed(0)
    model = seglab.create_model(name, num_classes=3, **TINY[name])
    losses = fit_tiny_batch(model, steps=15, lr=3e-3, size=48)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


# ---------------------------------------------------------------- full-size parameter counts (21 classes)

# The authors' releases use a deep stem (3x3 convs 3->64->64->128, BN each) and so a 128-channel
# input to layer1's first block, where torchvision's stem is one 7x7 conv 3->64 + BN.
DEEP_STEM_EXTRA = ((3 * 64 * 9 + 128) + (64 * 64 * 9 + 128) + (64 * 128 * 9 + 256) - (3 * 64 * 49 + 128)
                   + (128 - 64) * 64 + (128 - 64) * 256)


def test_psanet_parameter_count():
    model, plain = _full("psanet_resnet50"), _full("psanet_resnet50", aux_loss=False)
    assert _count(model) == 53_050_730 and _count(plain) == 50_685_525
    c, m, k = 2048, 512, 21
    branch = (c * m + 2 * m) + (m * m + 2 * m) + m * 59 * 59
    assert _count(model.psa) == 2 * branch + (2 * m * c + 2 * c)
    head = 2 * c * m * 9 + 2 * m + m * k + k
    aux = 1024 * 256 * 9 + 2 * 256 + 256 * k + k
    assert _count(model) == _count(model.backbone) + _count(model.psa) + head + aux
    assert _count(_full("psanet_resnet101")) == 72_042_858
    assert _count(_full("psanet_resnet101", aux_loss=False)) == 69_677_653
    # No published count; hszhao/semseg's layout (deep stem) would have 53,174,506.
    assert DEEP_STEM_EXTRA == 123_776 and _count(model) + DEEP_STEM_EXTRA == 53_174_506


def test_ccnet_parameter_count():
    model, plain = _full("ccnet_resnet50"), _full("ccnet_resnet50", aux_loss=False)
    assert _count(model) == 52_173_547 and _count(plain) == 47_443_158
    c, m, k = 2048, 512, 21
    cca = 2 * (m * m // 8 + m // 8) + (m * m + m) + 1
    assert _count(model.head.rcca) == cca == 328_321
    head = (c * m * 9 + 2 * m) + cca + (m * m * 9 + 2 * m) + ((c + m) * m * 9 + 2 * m) + m * k + k
    assert _count(model.head) == head
    assert _count(model) - _count(plain) == 1024 * 512 * 9 + 2 * 512 + 512 * k + k
    assert _count(_full("ccnet_resnet101")) == 71_165_675
    assert _count(_full("ccnet_resnet101", aux_loss=False)) == 66_435_286
    # speedinghzl/CCNet's layout: deep stem, and a bias on the dsn conv in front of its BN.
    assert _count(model) + DEEP_STEM_EXTRA + 512 == 52_297_835
