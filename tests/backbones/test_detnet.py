"""DetNet-59 (Li et al., ECCV 2018): the extra stage 6 keeps stride 16, the new stages are dilated
bottlenecks whose first block has the 1x1 projection shortcut, full-size parameter count and cost."""
from __future__ import annotations

import math

import torch
from torch import nn

from seglab.backbones import create_backbone
from seglab.backbones.detnet import DilatedBottleneck


def test_stage_6_keeps_stride_16_at_odd_sizes():
    net = create_backbone("detnet59", width=8).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 97, 131))
    assert net.strides == [2, 4, 8, 16, 16, 16] and len(feats) == 6
    assert net.out_channels == [8, 32, 64, 128, 128, 128]
    for f, s, c in zip(feats, net.strides, net.out_channels):
        assert f.shape[1] == c and f.shape[-2:] == (math.ceil(97 / s), math.ceil(131 / s))


def test_new_stages_are_dilated_bottlenecks_with_a_projection_first():
    net = create_backbone("detnet59")  # the paper's widths
    for stage in (net.layer4, net.layer5):
        assert len(stage) == 3 and all(isinstance(b, DilatedBottleneck) for b in stage)
        assert [b.extra_conv is not None for b in stage] == [True, False, False]  # Fig. 2B, 2A, 2A
        proj = stage[0].extra_conv[0]
        assert proj.kernel_size == (1, 1) and (proj.in_channels, proj.out_channels) == (1024, 1024)
        for b in stage:
            assert b.conv2.dilation == (2, 2) and b.conv2.stride == (1, 1) and b.conv2.padding == (2, 2)
            assert (b.conv1.out_channels, b.conv2.out_channels, b.conv3.out_channels) == (256, 256, 1024)
    # every stride-2 convolution is in stages 1-3 (stem, layer2, layer3): nothing downsamples after 1/16
    strided = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert strided == ["conv1", "layer2.0.conv2", "layer2.0.downsample.0", "layer3.0.conv2",
                       "layer3.0.downsample.0"]


def test_projection_shortcut_is_used_and_identity_elsewhere():
    block = DilatedBottleneck(16, 4, projection=True).eval()
    plain = DilatedBottleneck(16, 4).eval()
    x = torch.randn(1, 16, 9, 11)
    with torch.no_grad():
        for b in (block, plain):  # zero residual branch: the output is the (projected) shortcut, relu'd
            nn.init.zeros_(b.bn3.weight)
        torch.testing.assert_close(block(x), torch.relu(block.extra_conv(x)))
        torch.testing.assert_close(plain(x), torch.relu(x))


def _conv_macs(net: nn.Module, size: int = 224) -> int:
    """Multiply-adds of every convolution for one size x size image (shapes only, on the meta device)."""
    total = 0

    def hook(m, _, out):
        nonlocal total
        total += out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    net(torch.empty(1, 3, size, size, device="meta"))
    for h in handles:
        h.remove()
    return total


def test_full_size_parameters_and_cost():
    with torch.device("meta"):
        detnet, resnet = create_backbone("detnet59"), create_backbone("resnet50")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # stages 1-4 are ResNet-50's; each new stage: block B (1x1 in, 3x3 dilated, 1x1 out, 1x1 projection,
    # 3 BNs + 1) and two blocks A
    bn = lambda c: 2 * c  # noqa: E731
    block_a = 1024 * 256 + 256 * 256 * 9 + 256 * 1024 + bn(256) * 2 + bn(1024)
    block_b = block_a + 1024 * 1024 + bn(1024)
    assert count(detnet) == count(resnet) - count(resnet.layer4) + 2 * (block_b + 2 * block_a) == 17_347_648
    assert count(detnet) + 1024 * 1000 + 1000 == 18_372_648  # with the ImageNet classifier (fc 1024 -> 1000)
    # The paper's cost: 4.8 GFLOPs for DetNet-59 against 3.8 for ResNet-50 (the original stride-in-1x1
    # ResNet); counted here for the stride-in-3x3 layout we share with torchvision: 5.00G against 4.09G.
    assert round(_conv_macs(detnet) / 1e9, 2) == 5.00 and round(_conv_macs(resnet) / 1e9, 2) == 4.09
