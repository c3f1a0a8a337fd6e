"""ImageNet checkpoints for the MobileNetV2 (torchvision `mobilenet_v2`) and Xception-65 (timm `xception65`)
backbones, tested with fake checkpoints of exactly those layouts' keys and shapes
(tests/fixtures/imagenet_layouts.py writes them from torchvision's and timm's code, independently of seglab)."""
import pytest
import torch

import seglab
from seglab.backbones import create_backbone
from seglab.errors import SeglabError

from torchvision_fakes import fake_state  # noqa: E402  (tests/ is on pytest's path)


def test_fixture_layouts_have_the_published_parameter_counts():
    # torchvision documents mobilenet_v2 at 3,504,872 parameters; timm lists xception65 at 39.9 M
    def params(name):
        shapes = fake_state(name, "meta")
        return sum(v.numel() for k, v in shapes.items() if not k.endswith(("running_mean", "running_var",
                                                                           "num_batches_tracked")))
    assert params("mobilenet_v2") == 3_504_872
    assert round(params("xception65") / 1e6, 1) == 39.9


def test_mobilenet_v2_imagenet_checkpoint_loads_into_the_backbone(tmp_path):
    state = fake_state("mobilenet_v2", seed=1)
    path = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(state, path)
    net = create_backbone("mobilenetv2", weights=str(path), output_stride=16)
    own = net.state_dict()
    for k, v in own.items():  # every trunk tensor arrives unchanged, under torchvision's own name
        assert torch.equal(v, state[k]), k
    left_out = set(state) - set(own)
    assert left_out == {k for k in state if k.startswith(("features.18.", "classifier."))}
    out = net.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in out] == [16, 24, 32, 96, 320] and all(torch.isfinite(o).all() for o in out)


def test_xception65_timm_checkpoint_loads_into_deeplabv3plus(tmp_path):
    state = fake_state("xception65", seed=2)
    path = tmp_path / "tf_xception_65-c9ae96e8.pth"
    torch.save(state, path)
    model = seglab.create_model("deeplabv3plus_xception65", num_classes=3, backbone_weights=str(path))
    trunk = model.backbone.state_dict()
    assert set(state) - set(trunk) == {"head.fc.weight", "head.fc.bias"}
    for k, v in trunk.items():
        assert torch.equal(v, state[k]), k


def test_a_checkpoint_of_another_network_or_width_is_refused_by_name(tmp_path):
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(fake_state("mobilenet_v2"), path)
    with pytest.raises(SeglabError, match=r"mobilenet_v2\.pth: torchvision mobilenetv2 ImageNet weights do not fit.*shape"):
        create_backbone("mobilenetv2", weights=str(path), width_mult=0.5)
    with pytest.raises(SeglabError, match=r"mobilenet_v2\.pth: timm xception65 ImageNet weights do not fit.*missing"):
        create_backbone("xception65", weights=str(path))
