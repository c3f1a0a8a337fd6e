"""GloRe and GCU graph reasoning units: defining properties, fitting a tiny batch, full-size counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import seglab
from seglab.errors import ConfigError, SeglabError
from seglab.necks.graph_reasoning import GloRe, GraphConvolutionalUnit, ParallelGCU

TINY = {
    "glore_resnet50": {"width": 8, "channels": 16},
    "gcu_resnet50": {"width": 8, "gcu_channels": 8, "channels": 16},
}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _full(name: str, **kw) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init time
        return seglab.create_model(name, num_classes=21, **kw)


def _randomise(module: nn.Module, seed: int = 0) -> None:
    """Random weights and BN statistics everywhere, so no zero-initialised layer hides a path."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if t.ndim == 1 else
                        torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)


# ---------------------------------------------------------------- GloRe

def test_glore_graph_convolution_is_i_minus_ag_v_wg():
    unit = GloRe(16)
    _randomise(unit)
    v = torch.randn(2, unit.num_nodes, unit.state_channels)
    a_g = unit.adjacency.weight[:, :, 0]  # (N, N), mixes nodes
    w_g = unit.state_update.weight[:, :, 0].T  # (C', C'), right-multiplies the states
    expected = (torch.eye(unit.num_nodes) - a_g) @ v @ w_g
    torch.testing.assert_close(unit.reason(v), expected)
    assert not torch.allclose(unit.reason(v), (torch.eye(unit.num_nodes) + a_g) @ v @ w_g, atol=1e-3)


@pytest.mark.parametrize("normalize", [True, False])
def test_glore_unit_equals_explicit_matrices(normalize):
    """Y = B^T Z with the projection's own B: the whole unit recomputed by hand from its weights."""
    unit = GloRe(8, normalize=normalize)
    _randomise(unit, seed=1)
    unit.eval()
    x = torch.randn(2, 8, 5, 7)
    pixels = x.flatten(2)  # (n, C, L)
    states = torch.einsum("sc,ncl->nsl", unit.state_conv.weight[:, :, 0, 0], pixels) + unit.state_conv.bias[:, None]
    b = torch.einsum("kc,ncl->nkl", unit.projection_conv.weight[:, :, 0, 0], pixels) \
        + unit.projection_conv.bias[:, None]
    v = b @ states.transpose(1, 2) / (35 if normalize else 1)  # (n, N, C')
    z = (torch.eye(unit.num_nodes) - unit.adjacency.weight[:, :, 0]) @ v @ unit.state_update.weight[:, :, 0].T
    y = (b.transpose(1, 2) @ z).transpose(1, 2)  # reverse projection with the same B
    ext = torch.einsum("cs,nsl->ncl", unit.extend.weight[:, :, 0, 0], y)
    bn = unit.extend_norm
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected = x + (scale[:, None] * (ext - bn.running_mean[:, None]) + bn.bias[:, None]).reshape(x.shape)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), expected, rtol=1e-4, atol=1e-5)


def test_glore_is_the_identity_when_its_output_conv_is_zero():
    x = torch.randn(2, 16, 6, 9)
    fresh = GloRe(16)  # the BN scale starts at zero (the release's "blocker")
    assert torch.equal(fresh(x), x)
    unit = GloRe(16)
    _randomise(unit, seed=2)
    with torch.no_grad():
        assert not torch.allclose(unit.eval()(x), x, atol=1e-2)  # a working unit changes its input
        nn.init.zeros_(unit.extend.weight)
        nn.init.zeros_(unit.extend_norm.bias)
    assert torch.equal(unit.train()(x), x)  # training-mode BN of an all-zero map is its bias


def test_glore_sizes_follow_the_release():
    unit = GloRe(512)
    assert (unit.state_channels, unit.num_nodes) == (256, 128)  # C' = C/2, N = C/4
    phi, theta = 512 * 256 + 256, 512 * 128 + 128
    assert _count(unit) == phi + theta + 128 * 128 + 256 * 256 + 256 * 512 + 2 * 512 == 411_008
    with pytest.raises(ConfigError):
        GloRe(2)


# ---------------------------------------------------------------- GCU

def _naive_gcu_graph(gcu: GraphConvolutionalUnit, x: torch.Tensor):
    """Q and Z straight from the paper's formulas, with an explicit (L, |V|, d) difference tensor."""
    pixels = x.flatten(2).transpose(1, 2)[0]  # (L, d)
    sigma = gcu.log_scales.exp()
    diff = (pixels[:, None, :] - gcu.centres[None]) / sigma[None]  # (L, V, d)
    q = torch.softmax(-0.5 * (diff ** 2).sum(-1), dim=1)
    z = (q[:, :, None] * diff).sum(0) / q.sum(0)[:, None]
    return q, z / z.norm(dim=1, keepdim=True)


def test_gcu_assignments_and_nodes_match_the_paper_formulas():
    torch.manual_seed(0)
    gcu = GraphConvolutionalUnit(6, 4, num_nodes=3)
    with torch.no_grad():
        gcu.log_scales.uniform_(-0.5, 0.5)  # scales of order 1: assignments far from uniform
    x = torch.randn(1, 6, 5, 4)
    q, z, _ = gcu.graph(x)
    q_ref, z_ref = _naive_gcu_graph(gcu, x)
    torch.testing.assert_close(q[0], q_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z[0], z_ref, rtol=1e-4, atol=1e-5)
    assert q.shape == (1, 20, 3) and q.max() > 0.9  # some pixel is clearly assigned
    torch.testing.assert_close(q.sum(-1), torch.ones(1, 20))  # a distribution over nodes per pixel


def test_gcu_adjacency_is_symmetric_cosine_similarity():
    gcu = GraphConvolutionalUnit(8, 4, num_nodes=5)
    _, _, adjacency = gcu.graph(torch.randn(2, 8, 6, 7))
    torch.testing.assert_close(adjacency, adjacency.transpose(1, 2))
    torch.testing.assert_close(torch.diagonal(adjacency, dim1=1, dim2=2), torch.ones(2, 5))  # unit-norm nodes
    assert (adjacency.abs() <= 1 + 1e-5).all()


def test_gcu_is_pixel_order_equivariant():
    """Nodes pool over all pixels, so permuting pixels permutes the output the same way."""
    torch.manual_seed(0)
    gcu = GraphConvolutionalUnit(8, 4, num_nodes=4)
    with torch.no_grad():
        gcu.log_scales.zero_()  # sharp assignments, so a wrong pixel pairing would show
    x = torch.randn(1, 8, 5, 7)
    perm = torch.randperm(35)
    x_perm = x.flatten(2)[:, :, perm].reshape(x.shape)
    with torch.no_grad():
        out, out_perm = gcu(x), gcu(x_perm)
        _, z, adjacency = gcu.graph(x)
        _, z_perm, adjacency_perm = gcu.graph(x_perm)
    torch.testing.assert_close(out_perm.flatten(2), out.flatten(2)[:, :, perm])
    torch.testing.assert_close(z_perm, z)  # node features do not depend on pixel order
    torch.testing.assert_close(adjacency_perm, adjacency)
    assert out.flatten(2).std(-1).max() > 0.1  # the output is not a constant map


def test_parallel_gcu_concatenates_the_input_first():
    block = ParallelGCU(8, 3, node_counts=(2, 4))
    assert block.out_channels == 8 + 2 * 3 and [u.num_nodes for u in block.units] == [2, 4]
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        out = block(x)
        assert out.shape == (2, 14, 5, 6) and torch.equal(out[:, :8], x)
        torch.testing.assert_close(out[:, 11:], block.units[1](x))
    for bad in [(), (2, 0)]:
        with pytest.raises(ConfigError):
            ParallelGCU(8, 3, node_counts=bad)
    with pytest.raises(SeglabError):
        seglab.create_model("gcu_resnet50", num_classes=3, node_counts=[], **TINY["gcu_resnet50"])


# ---------------------------------------------------------------- models

def test_full_size_layouts():
    glore = _full("glore_resnet50")
    assert glore.backbone.output_stride == 8
    assert (glore.reduce[0].in_channels, glore.reduce[0].out_channels, glore.reduce[0].kernel_size) == \
        (2048, 512, (3, 3))
    assert (glore.glore.state_channels, glore.glore.num_nodes) == (256, 128)
    assert glore.aux_classifier[0].in_channels == 1024  # on layer3 ("res4")
    gcu = _full("gcu_resnet50")
    assert gcu.gcus.node_counts == (2, 4, 8, 32) and gcu.gcus.out_channels == 4096
    assert [u.out_channels for u in gcu.gcus.units] == [512] * 4
    assert gcu.aux_classifier[0].in_channels == 1024


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_steps_fit_a_tiny_batch(name, fit_tiny_batch):
    torch.manual_seed(0)
    model = seglab.create_model(name, num_classes=3, **TINY[name])
    losses = fit_tiny_batch(model, steps=15, lr=3e-3, size=48)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


def test_parameter_counts():
    # No published counts (neither paper gives one for its segmentation network): check the units
    # against their definitions and the totals against the measured integers (21 classes).
    aux = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21
    glore = _full("glore_resnet50")
    head = (2048 * 512 * 9 + 2 * 512) + 411_008 + (512 * 21 + 21)
    assert _count(glore) == _count(glore.backbone) + head + aux == 35_733_226
    assert _count(_full("glore_resnet50", aux_loss=False)) == 33_368_021
    assert _count(_full("glore_resnet101")) == 54_725_354
    assert _count(_full("glore_resnet101", aux_loss=False)) == 52_360_149

    gcu = _full("gcu_resnet50")
    units = sum(2 * v * 2048 + 2048 * 512 for v in (2, 4, 8, 32))  # centres, scales, W_g
    assert _count(gcu.gcus) == units == 4_382_720
    head = units + (4096 * 512 * 9 + 2 * 512) + (512 * 21 + 21)
    assert _count(gcu) == _count(gcu.backbone) + head + aux == 49_142_122
    assert _count(_full("gcu_resnet50", aux_loss=False)) == 46_776_917
    assert _count(_full("gcu_resnet101")) == 68_134_250
    assert _count(_full("gcu_resnet101", aux_loss=False)) == 65_769_045
