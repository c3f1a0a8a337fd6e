"""DeepLab v1 / v2 / v3 / v3+ (src/seglab/models/deeplab_v*.py) and ASPP (src/seglab/necks/aspp.py)."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import seglab
from seglab.errors import SeglabError
from seglab.layers import SeparableConvNormAct
from seglab.models.deeplab_v1 import MScHead
from seglab.necks.aspp import ASPP, ASPPPooling, ASPPScores, aspp_rates

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_keys"
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

TINY = {
    "deeplabv1_vgg16": dict(width_div=16, fc_channels=32, msc=True, msc_channels=8),
    "deeplabv2_resnet50": dict(width=8),
    "deeplabv2_resnet101": dict(width=4),
    "deeplabv3_resnet50": dict(width=8, channels=16, aux_loss=True),
    "deeplabv3_resnet101": dict(width=4, channels=16),
    "deeplabv3plus_resnet50": dict(width=8, channels=16, low_level_channels=8),
    "deeplabv3plus_resnet101": dict(width=4, channels=16, low_level_channels=8),
    "deeplabv3plus_xception65": dict(width_mult=0.0625, channels=16, low_level_channels=8),
    "deeplabv3plus_mobilenetv2": dict(width_mult=0.25, channels=16, low_level_channels=8),
}


def _tiny(name, **extra):
    return seglab.create_model(name, num_classes=3, **{**TINY[name], **extra})


def test_every_deeplab_entrypoint_is_covered():
    assert set(seglab.list_models("deeplab")) == set(TINY)


# --- ASPP -------------------------------------------------------------------------------------------

def test_aspp_branches_rates_and_torchvision_names():
    aspp = ASPP(32, 16, (6, 12, 18))
    assert len(aspp.convs) == 5 and aspp.atrous_rates == (6, 12, 18)
    assert aspp.convs[0][0].kernel_size == (1, 1)
    for branch, r in zip(aspp.convs[1:4], (6, 12, 18)):
        assert branch[0].kernel_size == (3, 3) and branch[0].dilation == (r, r) and branch[0].padding == (r, r)
    assert isinstance(aspp.convs[4], ASPPPooling)
    assert aspp.project[0].in_channels == 5 * 16 and aspp.project[0].out_channels == 16
    assert aspp.project[3].p == 0.5
    names = set(aspp.state_dict())
    assert {"convs.4.1.weight", "convs.4.2.running_var", "project.0.weight", "project.1.bias"} <= names
    plain = ASPP(32, 16, (6, 12, 18), image_pooling=False)
    assert len(plain.convs) == 4 and plain.project[0].in_channels == 4 * 16


def test_aspp_image_pooling_branch_is_spatially_constant():
    aspp = ASPP(8, 4, (1, 2, 3)).eval()
    seen = {}
    aspp.convs[4][3].register_forward_hook(lambda m, i, o: seen.setdefault("pooled", o))
    aspp.convs[4][2].register_forward_hook(lambda m, i, o: seen.setdefault("bn", []).append(o.clone()))
    x = torch.randn(2, 8, 9, 13)
    with torch.no_grad():
        out = aspp.convs[4](x)
        aspp(x)
    assert seen["pooled"].shape == (2, 4, 1, 1)  # before upsampling: one value per image and channel
    assert out.shape == (2, 4, 9, 13)
    torch.testing.assert_close(out, seen["pooled"].expand_as(out))
    # and it sees the whole image: changing one corner pixel changes the pooled (pre-ReLU) features
    x2 = x.clone()
    x2[:, :, 0, 0] += 10.0
    with torch.no_grad():
        aspp.convs[4](x2)
    assert not torch.allclose(seen["bn"][0], seen["bn"][-1])


def test_aspp_separable_branches_are_atrous_depthwise():
    aspp = ASPP(12, 8, (2, 4, 6), separable=True)
    for branch, r in zip(aspp.convs[1:4], (2, 4, 6)):
        assert isinstance(branch, SeparableConvNormAct)
        depthwise = branch[0][0]
        assert depthwise.groups == 12 and depthwise.dilation == (r, r) and branch[1][0].kernel_size == (1, 1)
    assert ASPP(12, 8).convs[1][0].groups == 1


def test_aspp_rates_double_at_output_stride_8():
    assert aspp_rates(16) == (6, 12, 18) and aspp_rates(8) == (12, 24, 36)
    m16 = _tiny("deeplabv3_resnet50", output_stride=16)
    m8 = _tiny("deeplabv3_resnet50")  # default: torchvision's output stride 8
    assert m16.classifier[0].atrous_rates == (6, 12, 18) and m16.backbone.strides[-1] == 16
    assert m8.classifier[0].atrous_rates == (12, 24, 36) and m8.backbone.strides[-1] == 8
    assert [c[0].dilation[0] for c in m8.classifier[0].convs[1:4]] == [12, 24, 36]
    assert _tiny("deeplabv3plus_resnet50").aspp.atrous_rates == (6, 12, 18)
    assert _tiny("deeplabv3plus_resnet50", output_stride=8).aspp.atrous_rates == (12, 24, 36)


def test_deeplabv3_multi_grid_on_layer4():
    m = _tiny("deeplabv3_resnet50", output_stride=16, multi_grid=(1, 2, 4))
    assert [b.conv2.dilation[0] for b in m.backbone.layer4] == [2, 4, 8]


# --- DeepLab v2: ASPP-L sums four score branches -----------------------------------------------------

def test_deeplabv2_sums_four_score_branches():
    model = _tiny("deeplabv2_resnet50").eval()
    head = model.classifier
    assert isinstance(head, ASPPScores) and head.atrous_rates == (6, 12, 18, 24)
    assert all(c.out_channels == 3 and c.dilation == (r, r) for c, r in zip(head.branches, (6, 12, 18, 24)))
    x = torch.randn(1, 3, 61, 53)
    with torch.no_grad():
        feat = model.backbone(x)[-1]
        parts = [conv(feat) for conv in head.branches]
        torch.testing.assert_close(head(feat), sum(parts))
        for conv in head.branches[:3]:  # zero three branches: only the fourth's scores remain
            conv.weight.zero_()
            conv.bias.zero_()
        torch.testing.assert_close(model(x), F.interpolate(parts[3], size=(61, 53), mode="bilinear",
                                                           align_corners=False))


# --- DeepLab v3+ decoder -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, low", [("deeplabv3plus_resnet50", 256), ("deeplabv3plus_xception65", 256),
                                       ("deeplabv3plus_mobilenetv2", 24)])
def test_deeplabv3plus_decoder_uses_the_stride4_feature(name, low):
    with torch.device("meta"):
        full = seglab.create_model(name, num_classes=21)
    assert full.low_level_index == 1 and full.backbone.strides[1] == 4 and full.backbone.strides[-1] == 16
    assert (full.decoder.reduce[0].in_channels, full.decoder.reduce[0].out_channels) == (low, 48)
    assert full.decoder.fuse[0][0][0].in_channels == 256 + 48
    assert all(isinstance(c, SeparableConvNormAct) for c in full.decoder.fuse)
    assert isinstance(full.aspp.convs[1], SeparableConvNormAct) and full.aspp.project[3].p == 0.1

    model = _tiny(name).eval()
    seen = {}
    model.decoder.reduce.register_forward_hook(lambda m, i, o: seen.update(low=i[0], reduced=o))
    model.decoder.fuse.register_forward_hook(lambda m, i, o: seen.update(fused=o))
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        out = model(x)
        feats = model.backbone(x)
    assert out.shape == (1, 3, 97, 131)
    assert torch.equal(seen["low"], feats[1]) and seen["low"].shape[-2:] == (25, 33)  # stride 4
    assert seen["reduced"].shape[1] == 8 and seen["fused"].shape[-2:] == (25, 33)


def test_deeplabv3plus_aspp_without_atrous_branches():
    model = _tiny("deeplabv3plus_mobilenetv2", atrous_rates=())  # the TF release's MobileNet setting
    assert len(model.aspp.convs) == 2 and isinstance(model.aspp.convs[1], ASPPPooling)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 33, 47)).shape == (1, 3, 33, 47)


# --- DeepLab v1: LargeFOV and MSc --------------------------------------------------------------------

def test_deeplabv1_largefov_head_and_msc_heads():
    with torch.device("meta"):
        full = seglab.create_model("deeplabv1_vgg16", num_classes=21)
        msc = seglab.create_model("deeplabv1_vgg16", num_classes=21, msc=True)
    fc6 = full.backbone.fc6
    assert (fc6.kernel_size, fc6.dilation, fc6.out_channels) == ((3, 3), (12, 12), 1024)
    assert full.backbone.fc7.out_channels == 1024 and full.backbone.strides[-1] == 8 and full.msc is None
    assert len(msc.msc) == 5 and all(isinstance(h, MScHead) for h in msc.msc)
    assert [h[0].in_channels for h in msc.msc] == [3, 64, 128, 256, 512]  # image, pool1..pool4
    assert [h[0].stride[0] for h in msc.msc] == [8, 4, 2, 1, 1]
    assert all(h[0].out_channels == h[3].out_channels == 128 for h in msc.msc)


def test_deeplabv1_msc_scores_add_to_the_main_score():
    torch.manual_seed(0)
    msc = _tiny("deeplabv1_vgg16").eval()
    plain = _tiny("deeplabv1_vgg16", msc=False).eval()
    plain.load_state_dict({k: v for k, v in msc.state_dict().items() if not k.startswith("msc.")})
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        assert not torch.allclose(msc(x), plain(x))
        for head in msc.msc:  # with the branch classifiers at zero, MSc is the plain LargeFOV net
            head[-1].weight.zero_()
            head[-1].bias.zero_()
        torch.testing.assert_close(msc(x), plain(x))


def test_aux_heads():
    for name in ("deeplabv3_resnet50", "deeplabv3plus_resnet50"):
        model = _tiny(name, aux_loss=True).train()
        out = model(torch.randn(2, 3, 97, 131))
        assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 3, 97, 131)
        assert model.aux_classifier[0].in_channels == model.backbone.out_channels[-2]
    for name in ("deeplabv1_vgg16", "deeplabv2_resnet50"):
        with pytest.raises(SeglabError, match="aux"):
            _tiny(name, aux_loss=True)


@pytest.mark.parametrize("name", ["deeplabv1_vgg16", "deeplabv2_resnet50", "deeplabv3_resnet50",
                                  "deeplabv3plus_resnet50", "deeplabv3plus_xception65",
                                  "deeplabv3plus_mobilenetv2"])
def test_forward_backward_at_odd_size(name):
    model = _tiny(name).train()
    out = model(torch.randn(2, 3, 97, 131))
    outs = [out["out"], out["aux"]] if isinstance(out, dict) else [out]
    assert all(o.shape == (2, 3, 97, 131) for o in outs)
    sum(o.square().mean() + o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 97, 131)).shape == (1, 3, 97, 131)


# --- a few steps fit a tiny batch --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["deeplabv1_vgg16", "deeplabv2_resnet50", "deeplabv3_resnet50",
                                  "deeplabv3plus_resnet50", "deeplabv3plus_mobilenetv2"])
def test_a_few_steps_fit_a_tiny_batch(name, fit_tiny_batch):
    torch.manual_seed(0)
    extra = dict(dropout=0.0) if name != "deeplabv2_resnet50" else {}  # from scratch, dropout only slows it
    model = _tiny(name, **extra).train()
    losses = fit_tiny_batch(model, steps=25, lr=1e-2)
    assert sum(losses[-3:]) / 3 < 0.7 * losses[0], losses  # training-mode losses


# --- full-size parameter counts (meta device: shapes only) -------------------------------------------

def _count(name, **kw) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in seglab.create_model(name, num_classes=21, **kw).parameters())


def _json_count(name: str, skip: tuple = ()) -> int:
    shapes = json.loads((FIXTURES / f"{name}.json").read_text())
    return sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(BUFFERS) and not k.startswith(skip))


def test_full_size_parameter_counts():
    # DeepLab-LargeFOV: 20.5M (Chen et al., ICLR 2015, Table 2)
    n = _count("deeplabv1_vgg16")
    assert abs(n - 20.5e6) < 0.01 * 20.5e6 and n == 20_505_429
    assert _count("deeplabv1_vgg16", msc=True) == n + 1_206_121  # 5 MSc branches (3x3 128, 1x1 128, 21)
    # DeepLab v3: torchvision's deeplabv3_resnet50 (42.0M with aux) and deeplabv3_resnet101 (61.0M)
    n = _count("deeplabv3_resnet50", aux_loss=True)
    assert abs(n - 42.0e6) < 0.01 * 42.0e6
    assert n == _json_count("deeplabv3_resnet50_aux") == 42_004_074
    assert _count("deeplabv3_resnet50") == _json_count("deeplabv3_resnet50") == 39_638_869
    assert _count("deeplabv3_resnet101", aux_loss=True) == 60_996_202
    assert _count("deeplabv3_resnet101") == 58_630_997
    # DeepLab v2: torchvision ResNet trunk + ASPP-L (4 x (2048*9*21 + 21)); the paper gives no count
    aspp_l = 4 * (2048 * 9 * 21 + 21)
    assert _count("deeplabv2_resnet101") == _json_count("resnet101", ("fc.",)) + aspp_l == 44_048_532
    assert _count("deeplabv2_resnet50") == _json_count("resnet50", ("fc.",)) + aspp_l == 25_056_404
    # DeepLab v3+: the paper lists no counts; measured, regression-pinned
    assert _count("deeplabv3plus_resnet50") == 26_696_133
    assert _count("deeplabv3plus_resnet101") == 45_688_261
    assert _count("deeplabv3plus_xception65") == 41_055_413
    assert _count("deeplabv3plus_mobilenetv2") == 2_719_813
