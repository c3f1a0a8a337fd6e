"""OCNet (Base-OC, Pyramid-OC, ASP-OC): the object context's defining properties, layouts, fitting a tiny
batch, and full-size parameter counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seglab
from seglab.necks.object_context import (
    ASPOC,
    BaseOC,
    ObjectContext,
    PyramidOC,
    region_bounds,
)

TINY = {"width": 8, "channels": 16, "aux_channels": 8}
FORMS = ("base", "pyramid", "asp")


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _full(name: str, **kw) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init time
        return seglab.create_model(name, num_classes=21, **kw)


def _with_context(module: nn.Module) -> nn.Module:
    """Random weights for every object context's output conv (the release zero-initialises it, so a
    fresh module adds no context and locality tests would pass vacuously) and larger key weights (at
    the default init the attention is nearly uniform, every pixel's context nearly the mean); eval mode.
    tests/conftest.py seeds every test, so weights and inputs are the same on every run."""
    for m in module.modules():
        if isinstance(m, ObjectContext):
            nn.init.normal_(m.out.weight, std=0.5)
            nn.init.normal_(m.key[0].weight)
    return module.eval()


# ---------------------------------------------------------------- the object context itself

def test_similarity_rows_are_softmax_weights_of_a_shared_key():
    oc = _with_context(ObjectContext(6, 4, 5))
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        sim = oc.similarity(x)
        keys = oc.key(x).flatten(2)
        values = oc.value(x).flatten(2)
        context = oc.context(x)
    assert sim.shape == (2, 35, 35)
    assert (sim > 0).all()
    torch.testing.assert_close(sim.sum(-1), torch.ones(2, 35))
    # query = key (one shared transform), scaled by 1/sqrt(key_channels) = 1/2, softmax over positions j
    torch.testing.assert_close(sim, torch.softmax(keys.transpose(1, 2) @ keys / 2, dim=-1))
    # the fused attention path gives the same similarity-weighted values
    torch.testing.assert_close(context.flatten(2), values @ sim.transpose(1, 2))


@pytest.mark.parametrize("kw", [{}, {"grid": 3}, {"downsample": 2}], ids=["global", "grid3", "pooled"])
def test_context_is_a_convex_combination_of_values(kw):
    oc = _with_context(ObjectContext(6, 4, 3, **kw))
    x = torch.randn(2, 6, 11, 13)
    with torch.no_grad():
        pooled = F.max_pool2d(x, 2, ceil_mode=True) if kw.get("downsample") else x  # odd sizes keep all
        values = oc.value(pooled)
        context = oc.context(x)
        assert context.shape == (2, 3, *pooled.shape[-2:])
        lo, hi = values.amin(dim=(2, 3), keepdim=True), values.amax(dim=(2, 3), keepdim=True)
        assert (context >= lo - 1e-5).all() and (context <= hi + 1e-5).all()
        # constant values (whatever the keys): the context is that constant at every position
        oc.value.weight.zero_()
        oc.value.bias.copy_(torch.tensor([1.5, -2.0, 0.25]))
        context = oc.context(x)
    torch.testing.assert_close(context, oc.value.bias.view(1, 3, 1, 1).expand_as(context))


def test_region_bounds_follow_the_release():
    assert region_bounds(13, 6) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 13)]
    assert region_bounds(14, 3) == [(0, 4), (4, 8), (8, 14)]
    assert region_bounds(7, 1) == [(0, 7)]
    assert region_bounds(4, 6) == [(0, 1), (1, 2), (2, 3), (3, 4)]  # shorter than the grid: 1-pixel cells


# pixel (5, 9) of a 13 x 14 map: the cell holding it in each partition (rows, cols), worked out by hand
CELLS = {1: ((0, 13), (0, 14)), 2: ((0, 6), (7, 14)), 3: ((4, 8), (8, 14)), 6: ((4, 6), (8, 10))}


@pytest.mark.parametrize("grid", sorted(CELLS))
def test_region_context_reads_exactly_its_cell(grid):
    oc = _with_context(ObjectContext(3, 4, 3, grid=grid))
    x = torch.randn(1, 3, 13, 14, requires_grad=True)
    (grad,) = torch.autograd.grad(oc(x)[0, :, 5, 9].sum(), x)
    (r0, r1), (c0, c1) = CELLS[grid]
    expected = torch.zeros(13, 14, dtype=torch.bool)
    expected[r0:r1, c0:c1] = True
    assert torch.equal(grad[0].abs().sum(0) > 0, expected)


def test_pyramid_oc_perturbation_outside_the_finest_cell():
    """Moving pixel (3, 3) of a 12 x 12 map changes the 1x1, 2x2 and 3x3 levels' context at (1, 1) (same
    cell there) but not the 6x6 level's (cell rows/cols [0, 2)); a 6x6-only Pyramid-OC is therefore
    local at (1, 1) and a 1x1-only one global."""
    x = torch.randn(1, 4, 12, 12)
    moved = x.clone()
    moved[..., 3, 3] += 3.0
    pyramid = _with_context(PyramidOC(4, 6))
    with torch.no_grad():
        for grid, oc in zip(pyramid.grids, pyramid.contexts):
            same = torch.allclose(oc(x)[..., 1, 1], oc(moved)[..., 1, 1])
            assert same == (grid == 6), f"grid {grid}"
        assert not torch.allclose(pyramid(x)[..., 1, 1], pyramid(moved)[..., 1, 1])
        local = _with_context(PyramidOC(4, 6, grids=(6,)))
        torch.testing.assert_close(local(x)[..., 1, 1], local(moved)[..., 1, 1], rtol=0, atol=0)
        assert not torch.equal(local(x)[..., 3, 3], local(moved)[..., 3, 3])
        glob = _with_context(PyramidOC(4, 6, grids=(1,)))
        assert not torch.allclose(glob(x)[..., 1, 1], glob(moved)[..., 1, 1])


def test_base_oc_is_permutation_equivariant_and_global():
    """No positional operation in Base-OC (1x1 convs and attention over all pixels): permuting the pixels
    permutes the output. It is not pointwise: a far pixel changes the output at (0, 0)."""
    base = _with_context(BaseOC(6, 5, key_channels=4, value_channels=3))
    x = torch.randn(2, 6, 5, 7)
    perm = torch.randperm(35)
    with torch.no_grad():
        out = base(x)
        out_of_permuted = base(x.flatten(2)[..., perm].view_as(x))
        torch.testing.assert_close(out_of_permuted.flatten(2), out.flatten(2)[..., perm])
        moved = x.clone()
        moved[..., 4, 6] += 3.0
        assert not torch.allclose(base(moved)[..., 0, 0], out[..., 0, 0])


def test_asp_oc_object_context_branch_replaces_image_pooling():
    aspoc = _with_context(ASPOC(8, 4, 6))
    assert aspoc.atrous_rates == (12, 24, 36)
    x = (3 * torch.randn(1, 8, 11, 12)).requires_grad_()
    branches = aspoc.branches(x)
    assert [tuple(b.shape) for b in branches] == [(1, 4, 11, 12)] * 5
    # the OC branch at (1, 1) reads the far corner; the 1x1 branch reads only (1, 1)
    (grad_oc,) = torch.autograd.grad(branches[0][0, :, 1, 1].sum(), x, retain_graph=True)
    (grad_1x1,) = torch.autograd.grad(branches[1][0, :, 1, 1].sum(), x)
    assert grad_oc[0, :, 10, 11].abs().sum() > 0
    assert (grad_1x1[0].abs().sum(0) > 0).nonzero().tolist() == [[1, 1]]
    # unlike image pooling's constant map (std 0 up to rounding), the object context varies over pixels
    context = aspoc.object_context[:2](x)
    assert context.std(dim=(2, 3)).min() > 1e-3
    assert aspoc(x).shape == (1, 6, 11, 12)


# ---------------------------------------------------------------- full-size layouts

def test_full_size_layouts_follow_the_release():
    base = _full("ocnet_base_resnet50")
    assert base.backbone.output_stride == 8
    assert (base.reduce[0].in_channels, base.reduce[0].out_channels, base.reduce[0].kernel_size) == (2048, 512, (3, 3))
    oc = base.context.object_context
    assert (oc.key[0].out_channels, oc.value.out_channels, oc.out.out_channels, oc.grid) == (256, 256, 512, 1)
    assert (base.context.fuse[0][0].in_channels, base.context.fuse[1].p) == (1024, 0.05)
    aux = base.aux_classifier
    assert (aux[0][0].in_channels, aux[0][0].out_channels, aux[1].p) == (1024, 512, 0.05)  # on layer3
    assert base.classifier.in_channels == 512

    pyramid = _full("ocnet_pyramid_resnet50").context
    assert pyramid.grids == (1, 2, 3, 6)
    assert [(c.key[0].out_channels, c.value.out_channels, c.grid) for c in pyramid.contexts] == \
        [(256, 512, g) for g in (1, 2, 3, 6)]
    assert (pyramid.expand[0].out_channels, pyramid.fuse[0][0].in_channels, pyramid.out_channels) == (2048, 4096, 512)

    asp = _full("ocnet_asp_resnet50")
    head = asp.context
    assert head.atrous_rates == (12, 24, 36)
    assert [c[0].dilation for c in head.convs] == [(1, 1), (12, 12), (24, 24), (36, 36)]
    oc = head.object_context[1]
    assert (oc.key[0].in_channels, oc.key[0].out_channels, oc.value.out_channels, oc.downsample) == (256, 128, 256, 2)
    assert (head.fuse[0][0].in_channels, head.out_channels, head.fuse[1].p, asp.aux_classifier[1].p) == \
        (1280, 512, 0.1, 0.1)
    assert _full("ocnet_asp_resnet50", output_stride=16).context.atrous_rates == (6, 12, 18)


# ---------------------------------------------------------------- training

@pytest.mark.parametrize("form", FORMS)
def test_a_few_steps_fit_a_tiny_batch(form, fit_tiny_batch):
    model = seglab.create_model(f"ocnet_{form}_resnet50", num_classes=3, **TINY)
    losses = fit_tiny_batch(model, steps=15, lr=3e-3, size=48)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


# ---------------------------------------------------------------- full-size parameter counts (21 classes)

# {form: (resnet50 with aux, resnet50 without aux)}; ResNet-101 adds 18,992,128 to each.
COUNTS = {"base": (38_607_210, 33_876_821), "pyramid": (43_465_834, 38_735_445), "asp": (43_426_666, 38_696_277)}


@pytest.mark.parametrize("form", FORMS)
def test_parameter_counts(form):
    with_aux, plain = _full(f"ocnet_{form}_resnet50"), _full(f"ocnet_{form}_resnet50", aux_loss=False)
    assert (_count(with_aux), _count(plain)) == COUNTS[form]
    deeper = 18_992_128  # ResNet-101: 17 more layer3 bottlenecks of 1,117,184 parameters each
    assert deeper == 17 * (1024 * 256 + 256 * 256 * 9 + 256 * 1024 + 2 * (256 + 256 + 1024))
    assert _count(_full(f"ocnet_{form}_resnet101")) == COUNTS[form][0] + deeper
    assert _count(_full(f"ocnet_{form}_resnet101", aux_loss=False)) == COUNTS[form][1] + deeper
    # the pieces, from their definitions: aux = 3x3 conv 1024->512 + BN + 1x1 to 21 classes
    assert COUNTS[form][0] - COUNTS[form][1] == 1024 * 512 * 9 + 2 * 512 + 512 * 21 + 21
    assert _count(plain.reduce) == 2048 * 512 * 9 + 2 * 512


def _oc(c_in: int, key: int, value: int, out: int) -> int:
    """ObjectContext: key 1x1 conv + BN, value 1x1 conv (bias), out 1x1 conv (bias)."""
    return c_in * key + 2 * key + c_in * value + value + value * out + out


def test_head_counts_from_the_definitions():
    assert _count(_full("ocnet_base_resnet50").context) == _oc(512, 256, 256, 512) + 1024 * 512 + 2 * 512
    assert _count(_full("ocnet_pyramid_resnet50").context) == \
        4 * _oc(512, 256, 512, 512) + (512 * 2048 + 2 * 2048) + (4096 * 512 + 2 * 512)
    branch = 512 * 256 * 9 + 2 * 256
    oc_branch = branch + _oc(256, 128, 256, 256) + 256 * 256 + 2 * 256
    assert _count(_full("ocnet_asp_resnet50").context) == \
        oc_branch + (512 * 256 + 2 * 256) + 3 * branch + (1280 * 512 + 2 * 512)


# The release (OCNet.pytorch) publishes no counts. Its layout differs from ours by a deep stem (3x3 convs
# 3->64->64->128 + BNs instead of a 7x7 conv + BN), layer1's first block fed 128 channels (conv1 and
# shortcut), and conv biases before BN: the 2048->512 reduction and the aux 3x3 conv (512 each), plus
# Base-OC key 256 + fuse 512; Pyramid-OC keys 4 x 256 + widening 2048 + fuse 512; ASP-OC 3x3 conv 256 +
# key 128 + the OC branch's 1x1 conv 256.
STEM_AND_LAYER1 = ((3 * 64 * 9 + 128) + (64 * 64 * 9 + 128) + (64 * 128 * 9 + 256) - (3 * 64 * 49 + 128)
                   + 64 * 64 + 64 * 256)
RELEASE_BIASES = {"base": 512 + 512 + 256 + 512, "pyramid": 512 + 512 + 4 * 256 + 2048 + 512,
                  "asp": 512 + 512 + 256 + 128 + 256}
RELEASE_RESNET101 = {"base": 57_724_906, "pyramid": 62_586_346, "asp": 62_544_234}  # with the aux head


@pytest.mark.parametrize("form", FORMS)
def test_count_in_the_release_layout(form):
    ours = _count(_full(f"ocnet_{form}_resnet101"))
    assert STEM_AND_LAYER1 == 123_776
    assert ours + STEM_AND_LAYER1 + RELEASE_BIASES[form] == RELEASE_RESNET101[form]
