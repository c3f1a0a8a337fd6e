import pytest
import torch

from seglab.backbones import create_backbone
from seglab.errors import SeglabError


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_resnet_strides_match_feature_sizes(name, output_stride):
    net = create_backbone(name, output_stride=output_stride, width=16)
    x = torch.randn(1, 3, 97, 131)
    feats = net(x)
    assert len(feats) == len(net.strides) == len(net.out_channels) == 5
    for f, s, c in zip(feats, net.strides, net.out_channels):
        assert f.shape[1] == c
        assert f.shape[-2:] == (-(-97 // s), -(-131 // s))


def test_resnet_dilation_follows_torchvision_and_multigrid():
    net = create_backbone("resnet50", output_stride=8)
    assert [b.conv2.dilation[0] for b in net.layer3] == [1] + [2] * 5
    assert [b.conv2.dilation[0] for b in net.layer4] == [2, 4, 4]
    mg = create_backbone("resnet50", output_stride=16, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in mg.layer4] == [2, 4, 8]
    assert all(b.conv2.stride == (1, 1) for b in mg.layer4)


def test_vgg16_atrous_keeps_stride_8_and_dilates_conv5():
    net = create_backbone("vgg16", atrous=True, width_div=16, fc_channels=32)
    feats = net(torch.randn(1, 3, 97, 131))
    assert net.strides == [2, 4, 8, 8, 8]
    assert feats[-1].shape[-2:] == (13, 17)
    conv5 = [m for m in net.features if isinstance(m, torch.nn.Conv2d)][-3:]
    assert all(c.dilation == (2, 2) for c in conv5)
    assert net.fc6.dilation == (12, 12) and net.fc6.kernel_size == (3, 3)


def test_unknown_backbone_suggests_close_name():
    with pytest.raises(SeglabError, match="resnet50"):
        create_backbone("resnet05")


def test_resnet_group_norm_is_batch_independent_and_keeps_names():
    from seglab.backbones import create_backbone

    bn = create_backbone("resnet18", width=16)
    gn = create_backbone("resnet18", width=16, norm="gn")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gn.modules())
    assert gn.layer1[0].bn1.num_groups == 4 and gn.layer4[0].bn1.num_groups == 32  # 16 and 128 channels
    assert set(gn.state_dict()) == {k for k in bn.state_dict() if "running_" not in k and "num_batches" not in k}
    x = torch.randn(3, 3, 32, 32)
    gn.train()
    alone, batched = gn(x[:1])[-1], gn(x)[-1][:1]
    assert torch.allclose(alone, batched, atol=1e-5)  # a sample's features do not depend on the batch
    with pytest.raises(ValueError, match="norm must be one of"):
        create_backbone("resnet18", norm="ln")
