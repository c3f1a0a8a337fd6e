"""GINet (graph interaction unit) and EfficientFCN (holistically-guided decoder): defining properties,
fitting a tiny batch, full-size parameter counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import seglab
from seglab.errors import ConfigError
from seglab.necks.graph_interaction import GraphInteractionUnit
from seglab.necks.holistic_decoder import HolisticallyGuidedDecoder

TINY = {
    "ginet_resnet50": {"width": 8, "channels": 16, "node_channels": 8, "num_nodes": 6, "embed_dim": 8},
    "efficientfcn_resnet50": {"width": 8, "channels": 16, "codeword_channels": 16, "num_codewords": 8},
}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _full(name: str, **kw) -> nn.Module:
    with torch.device("meta"):  # shapes only: no memory, no init time
        return seglab.create_model(name, num_classes=21, **kw)


# ---------------------------------------------------------------- GINet / Graph Interaction unit

def _unit(**kw) -> GraphInteractionUnit:
    torch.manual_seed(0)
    unit = GraphInteractionUnit(16, 5, node_channels=8, num_nodes=6, embed_dim=8, **kw).eval()
    with torch.no_grad():  # the residual gates start at 0; open them so both reasoning steps act
        unit.beta_s2v.fill_(1.0)
        if unit.beta_v2s is not None:
            unit.beta_v2s.fill_(1.0)
    return unit


def test_visual_assignments_sum_to_one():
    unit = _unit()
    x = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        q = unit.graphs(x).assignments
    assert q.shape == (2, 6, 63)  # N visual nodes x H*W pixels
    assert (q > 0).all()
    torch.testing.assert_close(q.sum(1), torch.ones(2, 63))
    assert not torch.allclose(q.sum(2), q.sum(2)[:, :1])  # nodes do not get equal shares: learned


def test_semantic_graph_one_node_per_class_and_image_dependent_update():
    unit = _unit()
    embedding_before = unit.class_embedding.detach().clone()
    a, b = torch.randn(1, 16, 7, 9), torch.randn(1, 16, 7, 9)
    with torch.no_grad():
        state = unit.graphs(torch.cat([a, b, a]))
    assert unit.class_embedding.shape == (5, 8)  # one learned embedding per class
    assert state.semantic.shape == state.semantic_out.shape == (3, 5, 8)  # one node per class
    # Before the visual-to-semantic step the semantic graph is the same for every image ...
    torch.testing.assert_close(state.semantic[0], state.semantic[1])
    # ... after it, it depends on the image (and only on the image).
    assert not torch.allclose(state.semantic_out[0], state.semantic_out[1], atol=1e-4)
    torch.testing.assert_close(state.semantic_out[0], state.semantic_out[2])
    assert torch.equal(unit.class_embedding, embedding_before)  # the forward pass does not touch them
    with torch.no_grad():  # the change is the visual-to-semantic step: closing its gate removes it
        unit.beta_v2s.zero_()
        torch.testing.assert_close(unit.graphs(torch.cat([a, b])).semantic_out, state.semantic[:2])


def test_semantic_nodes_guide_the_visual_graph():
    unit = _unit()
    x = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        before = unit.graphs(x)
        unit.class_embedding.add_(torch.randn(5, 8))
        after = unit.graphs(x)
        y, _ = unit(x)
    torch.testing.assert_close(after.visual, before.visual)  # visual nodes alone ignore the classes
    assert not torch.allclose(after.visual_out, before.visual_out, atol=1e-4)  # semantic-to-visual
    assert y.shape == x.shape


def test_unit_without_semantic_update():
    unit = _unit(semantic_update=False)
    assert unit.v2s_value is None and unit.beta_v2s is None
    y, semantic_out = unit(torch.randn(1, 16, 5, 6))
    assert semantic_out is None and y.shape == (1, 16, 5, 6)


def _presence_batch(size: int = 32):
    """Image 0 holds classes 0 and 1 (left/right halves), image 1 only class 2; colours as conftest."""
    labels = torch.zeros(2, size, size, dtype=torch.long)
    labels[0, :, size // 2:] = 1
    labels[1] = 2
    colours = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 0.0, -1.0]])
    images = colours[labels].permute(0, 3, 1, 2) + 0.2 * torch.randn(2, 3, size, size,
                                                                      generator=torch.Generator().manual_seed(0))
    return images, labels, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_ginet_semantic_context_loss_learns_class_presence():
    torch.manual_seed(0)
    model = seglab.create_model("ginet_resnet50", num_classes=3, se_loss=True, **TINY["ginet_resnet50"])
    images, labels, present = _presence_batch()
    out = model.train()(images)
    assert set(out) == {"out", "aux", "se"} and out["se"].shape == (2, 3)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    bce = []
    for _ in range(20):
        out = model(images)
        loss_sc = F.binary_cross_entropy_with_logits(out["se"], present)
        loss = F.cross_entropy(out["out"], labels) + 0.2 * loss_sc
        opt.zero_grad()
        loss.backward()
        opt.step()
        bce.append(loss_sc.item())
    # Per class, presence is 1 in one image and 0 in the other: a constant per class cannot go below
    # log 2 = 0.693, so getting well under it needs the image-dependent semantic nodes.
    assert bce[-1] < 0.4 and bce[-1] < bce[0], bce
    assert torch.equal((out["se"] > 0).float(), present)  # the last step's presence calls are all right
    with torch.no_grad():
        assert isinstance(model.eval()(images), torch.Tensor)


def test_ginet_full_size_layout():
    m = _full("ginet_resnet50")
    assert m.backbone.output_stride == 8
    conv = m.reduce[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (2048, 512, (3, 3))
    unit = m.gi_unit
    assert unit.num_nodes == 84 and unit.assign.out_channels == 84 and unit.reduce.out_channels == 256
    assert unit.class_embedding.shape == (21, 300) and unit.class_embedding.requires_grad
    assert unit.semantic_mlp[0].out_features == 128 and unit.semantic_gcn.node_mix.in_features == 21
    assert unit.v2s_value is not None and m.presence.centroids.shape == (21, 256)  # SC-loss on by default
    lean = _full("ginet_resnet50", se_loss=False)
    assert lean.gi_unit.v2s_value is None and lean.presence is None
    assert (m.aux_classifier[0].in_channels, m.aux_classifier[0].out_channels) == (1024, 256)


# ---------------------------------------------------------------- EfficientFCN / holistically-guided decoder

def _decoder() -> HolisticallyGuidedDecoder:
    torch.manual_seed(0)
    return HolisticallyGuidedDecoder((8, 12, 16), channels=8, codeword_channels=12, num_codewords=5).eval()


def test_codewords_ignore_the_spatial_order_of_os32_pixels():
    decoder = _decoder()
    m32 = torch.randn(2, 8 + 2 * 8, 4, 5)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    shuffled = m32.flatten(2)[..., perm].view_as(m32)
    with torch.no_grad():
        codewords, mean = decoder.codewords(m32)
        codewords_shuffled, mean_shuffled = decoder.codewords(shuffled)
        changed, _ = decoder.codewords(torch.cat([m32[..., :1, :], shuffled[..., 1:, :]], 2))
    assert codewords.shape == (2, 12, 5)  # codeword_channels x n codewords
    torch.testing.assert_close(codewords_shuffled, codewords)
    torch.testing.assert_close(mean_shuffled, mean)
    assert not torch.allclose(changed, codewords, atol=1e-4)  # but they do depend on the pixels' content


def test_upsampled_features_assemble_the_codewords():
    decoder = _decoder()
    feats = [torch.randn(2, 8, 13, 17), torch.randn(2, 12, 7, 9), torch.randn(2, 16, 4, 5)]
    captured = {}
    decoder.fuse.register_forward_hook(lambda mod, inp, out: captured.update(x=inp[0]))
    with torch.no_grad():
        out = decoder(feats)
        m8, m32 = decoder.fused_maps(feats)
        codewords, mean = decoder.codewords(m32)
        coeffs, guide = decoder.assembly_coefficients(m8, mean)
    assert m8.shape == (2, 24, 13, 17) and m32.shape == (2, 24, 4, 5)
    assert coeffs.shape == (2, 5, 13, 17) and out.shape == (2, 12, 13, 17)
    expected = torch.zeros(2, 12, 13, 17)
    for i in range(5):  # f(p) = n^-1/2 sum_i W_i(p) c_i, written out codeword by codeword
        expected += coeffs[:, i:i + 1] * codewords[:, :, i, None, None] / 5 ** 0.5
    torch.testing.assert_close(captured["x"][:, :12], expected)
    torch.testing.assert_close(captured["x"][:, 12:], guide)


def test_efficientfcn_full_size_layout():
    m = _full("efficientfcn_resnet50")
    assert m.backbone.output_stride == 32 and m.backbone.strides[-3:] == [8, 16, 32]
    d = m.decoder
    assert d.num_codewords == 256 and d.out_channels == 1024
    assert (d.bases[0].in_channels, d.bases[0].out_channels) == (512 + 512 + 512, 1024)
    assert d.weighting[1][0].out_channels == 256 and d.coefficients[1][0].out_channels == 256
    assert m.aux_classifier is None and m.classifier[1].in_channels == 1024
    with pytest.raises(ConfigError):
        seglab.create_model("efficientfcn_resnet50", num_classes=3, output_stride=8, **TINY["efficientfcn_resnet50"])


# ---------------------------------------------------------------- training

@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_steps_fit_a_tiny_batch(name, fit_tiny_batch):
    torch.manual_seed(0)
    model = seglab.create_model(name, num_classes=3, **TINY[name])
    losses = fit_tiny_batch(model, steps=15, lr=1e-2, size=48)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


# ---------------------------------------------------------------- full-size parameter counts (21 classes)

def test_ginet_parameter_count():
    model = _full("ginet_resnet50")  # aux head and semantic context loss included
    assert _count(model) == 36_048_906
    assert _count(_full("ginet_resnet50", aux_loss=False, se_loss=False)) == 33_612_491  # eval-time weights
    assert _count(_full("ginet_resnet101")) == 55_041_034
    assert _count(_full("ginet_resnet101", aux_loss=False, se_loss=False)) == 52_604_619
    # The authors' GIHead (PaddleSeg port) term by term, with K = 21 classes:
    k, c, d, n = 21, 512, 256, 84
    release_head = ((2048 * c * 9 + 2 * c)                                       # conv5 + BN
                    + k * 300 + (300 * 128 + 128 + 2 * 128) + (128 * d + d + 2 * d)  # word vectors, fc1, fc2
                    + (c * n + n) + (c * d + d)                                   # conv_theta, conv_phi
                    + (n * n + n + d * d) + (k * k + k + d * d)                   # vis_gcn, word_gcn
                    + 2 * (d * d // 2 + d // 2) + 2 * (d * d + d) + n + k         # transfer, gammas
                    + d * c + 2 * c + (c * k + k))                                # extend_dim + BN, conv6
    assert _count(model.reduce) + _count(model.gi_unit) + _count(model.classifier) == release_head == 10_170_272
    assert _count(model.presence) == k * d + k
    assert _count(model) == _count(model.backbone) + release_head + k * d + k + _count(model.aux_classifier)


def test_efficientfcn_parameter_count():
    model = _full("efficientfcn_resnet50")
    assert _count(model) == 31_141_973
    assert _count(_full("efficientfcn_resnet50", aux_loss=True)) == 33_507_178
    assert _count(_full("efficientfcn_resnet101")) == 50_134_101
    # The release's HGDecoder term by term (1x1 convs without bias, BN = 2 per channel), K = 21:
    k, c, cw, n = 21, 512, 1024, 256
    fused = 3 * c  # layer2's 512 channels + two reduced maps
    release_head = ((2048 * c + 2 * c) + (1024 * c + 2 * c)                     # conv50, conv40
                    + (fused * cw + 2 * cw)                                       # conv_cat (bases)
                    + (fused * n + 2 * n + n * n + 2 * n)                         # conv_center
                    + (fused * cw + 2 * cw)                                       # conv_affinity0 (guide)
                    + (cw * n + 2 * n + n * n + 2 * n)                            # conv_affinity1
                    + (2 * cw * cw + 2 * cw)                                      # conv_up
                    + (cw * k + k))                                               # conv_pred3
    assert _count(model.decoder) + _count(model.classifier) == release_head == 7_633_941
    assert _count(model) == _count(model.backbone) + release_head
