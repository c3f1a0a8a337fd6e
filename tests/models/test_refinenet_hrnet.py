"""RefineNet (Lin et al., CVPR 2017) blocks and models; HRNet backbone and HRNetV2 (Wang et al., TPAMI 2020)."""
import pytest
import torch
import torch.nn.functional as F

import seglab
from seglab.backbones import create_backbone
from seglab.backbones.hrnet import HighResolutionModule
from seglab.errors import SeglabError
from seglab.layers import resize_to
from seglab.layers.refine import (ChainedResidualPooling, MultiResolutionFusion, RefineNetBlock,
                                  ResidualConvUnit)

TINY = {
    "refinenet_resnet50": dict(width=4, channels=8),
    "refinenet_resnet101": dict(width=4, channels=8),
    "hrnetv2_w18": dict(width=4, stem_channels=8, num_modules=(1, 1, 1), num_blocks=1),
    "hrnetv2_w48": dict(width=4, stem_channels=8, num_modules=(1, 1, 1), num_blocks=1),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets gain nothing from a second thread, and on a shared 2-core machine the thread hand-off
    makes each step many times slower; restore the session's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dirac_(conv):
    with torch.no_grad():
        torch.nn.init.dirac_(conv.weight)
        if conv.bias is not None:
            conv.bias.zero_()


def _n(model):
    return sum(p.numel() for p in model.parameters())


def test_every_entrypoint_is_covered():
    assert set(seglab.list_models("refinenet")) | set(seglab.list_models("hrnet")) == set(TINY)


# --- RefineNet blocks ---------------------------------------------------------------------------------

def test_rcu_is_residual():
    torch.manual_seed(0)
    rcu = ResidualConvUnit(6)
    x = torch.randn(2, 6, 9, 11)
    branch = rcu.conv2(F.relu(rcu.conv1(F.relu(x))))
    torch.testing.assert_close(rcu(x), x + branch)
    for conv in (rcu.conv1, rcu.conv2):
        torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(rcu.conv1.bias)
    assert torch.equal(rcu(x), x)  # zero convs -> identity, negative inputs included (no ReLU on the skip)


@pytest.mark.parametrize("stages", [2, 4])
def test_chained_residual_pooling_chains_stride_1_pools(stages):
    crp = ChainedResidualPooling(5, stages)
    assert len(crp.convs) == stages
    assert crp.pool.kernel_size == 5 and crp.pool.stride == 1 and crp.pool.padding == 2
    x = torch.randn(1, 5, 13, 7)
    assert crp(x).shape == x.shape
    for conv in crp.convs:
        _dirac_(conv)
    r, top, expected = F.relu(x), F.relu(x), F.relu(x)
    for _ in range(stages):  # each block pools the previous block's output; all are summed onto relu(x)
        top = F.max_pool2d(top, 5, 1, 2)
        expected = expected + top
    torch.testing.assert_close(crp(x), expected)
    assert not torch.equal(expected, r)


def test_default_crp_has_two_pooling_blocks_as_in_the_paper_figure():
    assert len(RefineNetBlock([4], 4).crp.convs) == 2
    model = seglab.create_model("refinenet_resnet50", num_classes=3, crp_stages=4, **TINY["refinenet_resnet50"])
    assert len(model.refine1.crp.convs) == 4


def test_fusion_upsamples_to_the_largest_resolution_and_sums():
    fusion = MultiResolutionFusion([3, 6])  # paper: to the smallest width of the inputs
    assert [c.out_channels for c in fusion.convs] == [3, 3]
    hi, lo = torch.randn(1, 3, 9, 11), torch.randn(1, 6, 5, 6)
    out = fusion([hi, lo])
    assert out.shape == (1, 3, 9, 11)
    swapped = MultiResolutionFusion([6, 3])
    assert swapped([lo, hi]).shape == (1, 3, 9, 11)  # the largest resolution wins, whatever the order
    for conv in fusion.convs:
        _dirac_(conv)
    torch.testing.assert_close(fusion([hi, lo]), hi + resize_to(lo[:, :3], (9, 11)))


def test_refinenet_block_layout():
    block = RefineNetBlock([8, 16], 8)
    assert [len(r) for r in block.rcus] == [2, 2] and len(block.output_conv) == 1
    assert [r[0].conv1.in_channels for r in block.rcus] == [8, 16]  # RCUs keep each path's width
    assert block(torch.randn(1, 8, 10, 12), torch.randn(1, 16, 5, 6)).shape == (1, 8, 10, 12)
    assert RefineNetBlock([16], 16).fusion is None  # a single path skips the fusion
    with pytest.raises(ValueError):
        RefineNetBlock([16], 8)


def test_refinenet_widths_and_classifier_stride():
    with torch.device("meta"):
        model = seglab.create_model("refinenet_resnet101", num_classes=21)
    assert model.backbone.output_stride == 32
    assert [a.out_channels for a in model.adapters] == [256, 256, 256, 512]
    assert model.refine4.crp.convs[0].in_channels == 512
    assert [c.in_channels for c in model.refine3.fusion.convs] == [256, 512]
    assert all(c.out_channels == 256 for b in (model.refine3, model.refine2, model.refine1) for c in b.fusion.convs)
    tiny = seglab.create_model("refinenet_resnet50", num_classes=3, **TINY["refinenet_resnet50"]).eval()
    seen = []
    tiny.classifier.register_forward_hook(lambda m, i, o: seen.append(o.shape[-2:]))
    with torch.no_grad():
        assert tiny(torch.randn(1, 3, 97, 131)).shape == (1, 3, 97, 131)
    assert tuple(seen[0]) == (25, 33)  # the classifier runs at stride 4


# --- HRNet ----------------------------------------------------------------------------------------------

def test_hrnet_branch_strides_and_widths_at_odd_size():
    net = create_backbone("hrnet_w18", width=4, stem_channels=8, num_modules=(1, 2, 1), num_blocks=2)
    feats = net(torch.randn(1, 3, 97, 131))
    assert net.strides == [2, 4, 8, 16, 32] and net.out_channels == [8, 4, 8, 16, 32]
    for f, s, c in zip(feats, net.strides, net.out_channels):
        assert f.shape == (1, c, -(-97 // s), -(-131 // s))


def test_hrnet_configuration_follows_the_release():
    with torch.device("meta"):
        w18, w48 = create_backbone("hrnet_w18"), create_backbone("hrnet_w48")
    assert w18.out_channels == [64, 18, 36, 72, 144] and w48.out_channels == [64, 48, 96, 192, 384]
    assert (w18.conv1.stride, w18.conv2.stride, w18.conv1.out_channels) == ((2, 2), (2, 2), 64)
    assert len(w18.layer1) == 4 and w18.layer1[-1].conv3.out_channels == 256
    assert [len(w18.stage2), len(w18.stage3), len(w18.stage4)] == [1, 4, 3]
    assert [len(m.branches) for m in w18.stage4] == [4, 4, 4]
    assert all(len(b) == 4 for m in w18.stage4 for b in m.branches)


def test_exchange_units_connect_every_pair():
    torch.manual_seed(0)
    module = HighResolutionModule([4, 8, 16, 32], num_blocks=1)
    for i, row in enumerate(module.fuse_layers):
        for j, layer in enumerate(row):
            assert (layer is None) == (i == j)
            if j < i:  # i - j strided 3x3 convs down
                assert len(layer) == i - j and all(s[0].stride == (2, 2) for s in layer)
            if j > i:  # 1x1 conv to branch i's width, upsampled in forward
                assert layer[0].kernel_size == (1, 1) and layer[0].out_channels == 4 * 2 ** i
    sizes = [(25, 33), (13, 17), (7, 9), (4, 5)]
    for i in range(4):
        xs = [torch.randn(1, 4 * 2 ** k, *s, requires_grad=True) for k, s in enumerate(sizes)]
        out = module(xs)
        assert [tuple(o.shape[-2:]) for o in out] == sizes
        out[i].sum().backward()
        assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in xs), f"output {i}"


def test_hrnetv2_concatenates_all_resolutions():
    with torch.device("meta"):
        w18 = seglab.create_model("hrnetv2_w18", num_classes=19)
        w48 = seglab.create_model("hrnetv2_w48", num_classes=19)
    assert w18.last_layer[0].in_channels == w18.last_layer[0].out_channels == 270  # 15C
    assert w48.last_layer[0].in_channels == 720
    assert w48.last_layer[3].kernel_size == (1, 1)


def test_hrnetv2_loads_official_imagenet_layout(tmp_path):
    tiny = TINY["hrnetv2_w18"]
    source = create_backbone("hrnet_w18", **tiny)
    state = dict(source.state_dict())
    state["classifier.weight"] = torch.zeros(1000, 2048)  # the ImageNet head is dropped on loading
    state["incre_modules.0.0.conv1.weight"] = torch.zeros(32, 4, 1, 1)
    path = tmp_path / "hrnet_w18_imagenet.pth"
    torch.save(state, path)
    model = seglab.create_model("hrnetv2_w18", num_classes=3, backbone_weights=path, **tiny)
    for k, v in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    with pytest.raises(SeglabError, match="HRNet checkpoint"):
        seglab.create_model("hrnetv2_w18", num_classes=3, backbone_weights=path, **{**tiny, "width": 8})


@pytest.mark.parametrize("name", sorted(TINY))
def test_no_aux_head(name):
    with pytest.raises(SeglabError, match="aux"):
        seglab.create_model(name, num_classes=3, aux_loss=True, **TINY[name])


# --- training ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_at_odd_size_and_loss_falls(name, fit_tiny_batch):
    torch.manual_seed(0)
    model = seglab.create_model(name, num_classes=3, **TINY[name]).train()
    out = model(torch.randn(2, 3, 97, 131))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 97, 131)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())

    losses = fit_tiny_batch(model, steps=20, lr=3e-3, size=48)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses


# --- full-size parameter counts ---------------------------------------------------------------------------

def _release_refinenet_head(num_classes: int) -> int:
    """Parameters of the released RefineNet head (DrSleep/refinenet-pytorch `rf101`), by hand: 3x3 dimred
    convs (no bias); RCUs = two 3x3 convs, the first with bias; CRP = 4 bias-free 3x3 convs; bias-free
    3x3 fusion convs; a 3x3 classifier with bias. RefineNet-4 runs at 512 channels, the rest at 256."""
    def rcu(w):
        return 2 * 9 * w * w + w
    head = 9 * (2048 * 512 + 1024 * 256 + 512 * 256 + 256 * 256)    # dimred
    head += 5 * rcu(512) + 4 * 9 * 512 * 512 + 9 * 512 * 256          # adapt, crp, output, fusion out
    head += 3 * (5 * rcu(256) + 9 * 256 * 256 + 4 * 9 * 256 * 256)   # RefineNet-3..1
    head += 2 * 9 * 256 * 256                                         # fusion convs of the coarser input
    return head + 9 * 256 * num_classes + num_classes


def test_full_size_parameter_counts():
    with torch.device("meta"):
        r101 = seglab.create_model("refinenet_resnet101", num_classes=21)
        r101_release = seglab.create_model("refinenet_resnet101", num_classes=21, crp_stages=4)
        r50 = seglab.create_model("refinenet_resnet50", num_classes=21)
        w18_19, w18 = (seglab.create_model("hrnetv2_w18", num_classes=c) for c in (19, 21))
        w48_19, w48 = (seglab.create_model("hrnetv2_w48", num_classes=c) for c in (19, 21))
    # RefineNet: with the release's 4-block CRP, exactly the released ResNet-101 model.
    assert _n(r101_release) == _n(r101_release.backbone) + _release_refinenet_head(21) == 118_052_437
    assert _n(r101) == 109_794_901  # paper figure: 2 pooling blocks per CRP
    assert _n(r50) == 90_802_773
    # HRNetV2-W48: 65.9M in the paper's Cityscapes table (19 classes) and the release's model zoo.
    assert abs(_n(w48_19) - 65.9e6) / 65.9e6 < 0.01
    assert (_n(w48_19), _n(w48)) == (65_859_379, 65_860_821)
    assert (_n(w18_19), _n(w18)) == (9_641_119, 9_641_661)  # the full W18 (not W18-Small)
