import pytest
import torch
from torch import nn

from seglab.backbones import MobileNetV2, Xception65, create_backbone, list_backbones

TINY = {"xception65": {"width_mult": 1 / 16}, "mobilenetv2": {"width_mult": 0.25}}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered():
    assert {"xception65", "mobilenetv2"} <= set(list_backbones())


@pytest.mark.parametrize("name", ["xception65", "mobilenetv2"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_strides_match_feature_sizes(name, output_stride):
    net = create_backbone(name, output_stride=output_stride, **TINY[name]).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 97, 131))
    assert len(feats) == len(net.strides) == len(net.out_channels) == 5
    assert net.strides == [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    for f, s, c in zip(feats, net.strides, net.out_channels):
        assert f.shape[1] == c
        assert f.shape[-2:] == (-(-97 // s), -(-131 // s))


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_rejects_others(output_stride):
    for cls in (Xception65, MobileNetV2):
        with pytest.raises(ValueError):
            cls(output_stride=output_stride + 1)


# ---------------------------------------------------------------- Xception-65

def _xc_rates(net):
    """(stride of the third separable conv, its dilation) per module."""
    return [(b.stack.conv3.conv_dw.stride[0], b.stack.conv3.conv_dw.dilation[0]) for b in net.blocks]


def test_xception_dilation_follows_tf_stack_blocks_dense():
    os32, os16, os8 = (Xception65(output_stride=s, width_mult=1 / 16) for s in (32, 16, 8))
    mg = Xception65(output_stride=16, multi_grid=(1, 2, 4), width_mult=1 / 16)
    middle = list(range(3, 19))
    assert _xc_rates(os32) == [(2, 1)] * 3 + [(1, 1)] * 16 + [(2, 1), (1, 1)]
    # OS 16: exit module 1 loses its stride (rate 1), exit module 2 runs at rate 2
    assert _xc_rates(os16) == [(2, 1)] * 3 + [(1, 1)] * 16 + [(1, 1), (1, 2)]
    assert os16.blocks[19].shortcut.conv.stride == (1, 1)
    # OS 8: entry module 3 loses its stride, middle flow and exit module 1 at rate 2, exit module 2 at 4
    assert _xc_rates(os8) == [(2, 1)] * 2 + [(1, 1)] + [(1, 2)] * 16 + [(1, 2), (1, 4)]
    assert all(os8.blocks[i].stack.conv1.conv_dw.dilation == (2, 2) for i in middle)
    assert os8.blocks[2].shortcut.conv.stride == (1, 1)
    # every dilated 3x3 keeps 'same' padding
    for m in os8.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            assert m.padding == m.dilation
    # multi-grid multiplies the last module's three rates (TF unit_rate_list)
    assert [getattr(mg.blocks[20].stack, f"conv{i}").conv_dw.dilation[0] for i in (1, 2, 3)] == [2, 4, 8]


def test_xception_structure_and_taps():
    net = Xception65(width_mult=1 / 16).eval()
    assert [b.skip for b in net.blocks] == ["conv"] * 3 + ["sum"] * 16 + ["conv", "none"]
    # extra BN after every depthwise conv; ReLU placement as the official code: pre-activation in
    # the residual modules, ReLU inside the separable convs of the last module only
    for i, b in enumerate(net.blocks):
        for k in (1, 2, 3):
            sep = getattr(b.stack, f"conv{k}")
            assert isinstance(sep.bn_dw, nn.BatchNorm2d) and sep.bn_dw.eps == 1e-3
            assert isinstance(sep.act_dw, nn.ReLU) == isinstance(sep.act_pw, nn.ReLU) == (i == 20)
        assert hasattr(b.stack, "act1") == (i != 20)
    paper = Xception65(width_mult=1 / 16, relu_after_depthwise=True)
    assert all(isinstance(b.stack.conv2.act_dw, nn.ReLU) for b in paper.blocks)
    # the maps returned are entry modules 1-3 / exit module 1's second separable conv (TF end points,
    # the stride-4 one is DeepLab v3+'s decoder input) and the final output
    seen = {}

    def keep(i):
        return lambda module, args, out: seen.__setitem__(i, out.clone())

    hooks = [net.blocks[i].stack.conv2.register_forward_hook(keep(i)) for i in (0, 1, 2, 19)]
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    for f, i in zip(feats, (0, 1, 2, 19)):
        torch.testing.assert_close(f, seen[i])
    assert feats[1].shape[1] == round(256 / 16) and feats[-1].min() >= 0


def _separable(cin, cout):  # depthwise 3x3 + BN + pointwise 1x1 + BN
    return 9 * cin + 2 * cin + cin * cout + 2 * cout


def test_xception65_parameter_count():
    with torch.device("meta"):
        net = create_backbone("xception65", output_stride=16)
    n = _count(net)
    # hand count of the layout in the module docstring
    stem = 3 * 32 * 9 + 2 * 32 + 32 * 64 * 9 + 2 * 64

    def module(cin, couts, shortcut):
        total, c = 0, cin
        for d in couts:
            total, c = total + _separable(c, d), d
        return total + (cin * couts[-1] + 2 * couts[-1] if shortcut else 0)

    expected = (stem + module(64, (128,) * 3, True) + module(128, (256,) * 3, True)
                + module(256, (728,) * 3, True) + 16 * module(728, (728,) * 3, False)
                + module(728, (728, 1024, 1024), True) + module(1024, (1536, 1536, 2048), False))
    assert n == expected == 37_867_312
    # timm's port of the TF ImageNet checkpoint (xception65.tf_in1k) lists 39.9M parameters with its
    # 1000-class classifier (2048 * 1000 + 1000); the trunk must be within 1% of 39.9M - 2.049M
    assert abs(n - (39.9e6 - 2_049_000)) / (39.9e6 - 2_049_000) < 0.01


# ---------------------------------------------------------------- MobileNetV2

def _dw(net):
    return [(blk.conv[-3][0].stride[0], blk.conv[-3][0].dilation[0]) for blk in list(net.features)[1:]]


def test_mobilenetv2_dilation_on_depthwise_convs():
    os32, os16, os8 = (MobileNetV2(output_stride=s, width_mult=0.25) for s in (32, 16, 8))
    # features.1..17; first strides of the stages at features.2, 4, 7, 14
    s32 = [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1), (2, 1)] + [(1, 1)] * 6 + [(2, 1)] + [(1, 1)] * 3
    assert _dw(os32) == s32
    assert _dw(os16) == s32[:13] + [(1, 1)] + [(1, 2)] * 3
    assert _dw(os8) == s32[:6] + [(1, 1)] + [(1, 2)] * 6 + [(1, 2)] + [(1, 4)] * 3
    for m in os8.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            assert m.padding == m.dilation
    with torch.device("meta"):  # residuals at width 1: stride 1 and equal channels
        full = MobileNetV2(output_stride=8)
    residual = [b.use_res_connect for b in list(full.features)[1:]]
    assert [i + 1 for i, r in enumerate(residual) if r] == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]


def test_mobilenetv2_torchvision_layout_and_count():
    with torch.device("meta"):
        net = create_backbone("mobilenetv2")
    sd = net.state_dict()
    assert len(net.features) == 18  # features.18 (1280 conv) is dropped
    # a few shapes of torchvision's mobilenet_v2 state dict
    expect = {"features.0.0.weight": (32, 3, 3, 3), "features.0.1.running_var": (32,),
              "features.1.conv.0.0.weight": (32, 1, 3, 3), "features.1.conv.1.weight": (16, 32, 1, 1),
              "features.1.conv.2.bias": (16,), "features.2.conv.0.0.weight": (96, 16, 1, 1),
              "features.2.conv.1.0.weight": (96, 1, 3, 3), "features.2.conv.2.weight": (24, 96, 1, 1),
              "features.2.conv.3.weight": (24,), "features.17.conv.2.weight": (320, 960, 1, 1)}
    assert {k: tuple(sd[k].shape) for k in expect} == expect
    assert not any(k.startswith(("features.18", "classifier")) for k in sd)
    assert net.out_channels == [16, 24, 32, 96, 320]
    # torchvision mobilenet_v2: 3,504,872 parameters = trunk + features.18 (320*1280 conv + 2*1280 BN)
    # + classifier (1280*1000 + 1000)
    assert _count(net) == 3_504_872 - 1_281_000 - 409_600 - 2_560 == 1_811_712


def test_mobilenetv2_width_mult_rounds_like_reference():
    # 24 * 0.75 = 18 rounds to 16, which is < 90% of 18, so it becomes 24
    net = MobileNetV2(width_mult=0.75)
    assert net.out_channels == [16, 24, 24, 72, 240]
    assert net.features[0][0].out_channels == 24


@pytest.mark.parametrize("name", ["xception65", "mobilenetv2"])
def test_forward_backward_tiny(name):
    torch.manual_seed(0)
    net = create_backbone(name, output_stride=8, in_channels=4, **TINY[name]).train()
    feats = net(torch.randn(1, 4, 97, 131))
    sum(f.square().mean() for f in feats).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
