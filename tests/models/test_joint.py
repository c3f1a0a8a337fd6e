"""Joint models (task "joint", FCN Sec. 5 SIFT Flow): the semantic contract per label space, plus what
makes them joint: one trunk pass shared by heads that do not depend on each other."""
import pytest
import torch
import torch.nn.functional as F

import seglab
from seglab import SeglabError
from seglab.losses import JointLoss
from seglab.errors import ConfigError
from seglab.models.joint import check_label_spaces

TINY = {"joint16s_vgg16": {"width_div": 16, "fc_channels": 32}, "joint_resnet18": {"width": 8}}
SPACES = {"semantic": 5, "geometric": 3}
SIZE = (97, 131)


def _build(name, **extra):
    return seglab.create_model(name, num_classes=5, label_spaces=SPACES, **{**TINY[name], **extra})


def _logits(out) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else [out["out"], out["aux"]]


def test_every_joint_entrypoint_is_covered():
    assert set(seglab.list_models(task="joint")) == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_eval_forward_odd_size_gives_one_logit_map_per_space(name):
    with torch.no_grad():
        out = _build(name).eval()(torch.randn(2, 3, *SIZE))
    assert list(out) == ["semantic", "geometric"]
    for space, k in SPACES.items():
        assert out[space].shape == (2, k, *SIZE) and torch.isfinite(out[space]).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_train_backward_reaches_every_parameter(name):
    model = _build(name).train()
    out = model(torch.randn(2, 3, *SIZE))
    loss = sum(F.cross_entropy(o, torch.randint(0, k, (2, *SIZE))) + o.mean()  # zero-init heads: keep a grad
               for space, k in SPACES.items() for o in _logits(out[space]))
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_aux_heads_per_space_in_training_only():
    model = _build("joint_resnet18", aux_loss=True)
    out = model.train()(torch.randn(1, 3, 33, 47))
    for space, k in SPACES.items():
        assert set(out[space]) == {"out", "aux"} and out[space]["aux"].shape == (1, k, 33, 47)
    with torch.no_grad():
        assert all(isinstance(v, torch.Tensor) for v in model.eval()(torch.randn(1, 3, 33, 47)).values())
    with pytest.raises(SeglabError, match="aux"):
        _build("joint16s_vgg16", aux_loss=True)


@pytest.mark.parametrize("name", sorted(TINY))
def test_save_load_round_trip_keeps_the_label_spaces(name, tmp_path):
    model = _build(name)
    x = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        model.train()(x)  # move BN statistics off their init
        expected = model.eval()(x)
    loaded = seglab.load_model(seglab.save_model(model, tmp_path / "m.safetensors"))
    assert loaded.seglab_config["kwargs"]["label_spaces"] == SPACES
    with torch.no_grad():
        got = loaded(x)
    assert list(got) == list(expected) and all(torch.equal(got[s], expected[s]) for s in SPACES)


@pytest.mark.parametrize("name", sorted(TINY))
def test_unknown_kwarg_and_in_channels(name):
    with pytest.raises(SeglabError):
        _build(name, not_a_real_option=1)
    with torch.no_grad():
        out = _build(name, in_channels=1).eval()(torch.randn(1, 1, 33, 47))
    assert out["geometric"].shape == (1, 3, 33, 47)


def test_label_spaces_and_num_classes():
    assert check_label_spaces(None, 21) == {"semantic": 21, "geometric": 3}  # the paper's pairing
    assert check_label_spaces({"a": 4, "b": 2}, 4) == {"a": 4, "b": 2}
    for spaces, num_classes, match in (({"a": 4, "b": 2}, 2, "first label space"), ({"out": 4}, 4, "identifier"),
                                       ({"a.b": 4}, 4, "identifier"), ({"a": 0}, 0, "class count"), ({}, 4, "non-empty")):
        with pytest.raises(ConfigError, match=match):
            check_label_spaces(spaces, num_classes)
    with pytest.raises(SeglabError, match="first label space"):
        seglab.create_model("joint_resnet18", num_classes=3, label_spaces=SPACES, width=8)


def test_one_trunk_pass_and_independent_heads():
    """Joint = the trunk runs once per image for all spaces, and each space's logits depend on the trunk
    and its own head only: changing one head leaves the other space's logits exactly as they were."""
    model = _build("joint16s_vgg16").eval()
    calls = []
    model.backbone.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        for p in model.parameters():  # off the zero-initialised score layers
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(1, 3, 40, 56)
        before = model(x)
        for p in model.heads["geometric"].parameters():
            p.mul_(-2.0)
        after = model(x)
    assert len(calls) == 2  # one per forward, not one per space
    assert torch.equal(before["semantic"], after["semantic"])
    assert not torch.allclose(before["geometric"], after["geometric"])


def test_one_spaces_loss_trains_the_trunk_and_its_head_only():
    model = _build("joint_resnet18").train()
    out = model(torch.randn(2, 3, 32, 32))
    F.cross_entropy(out["geometric"], torch.randint(0, 3, (2, 32, 32))).backward()
    assert all(p.grad is None for p in model.heads["semantic"].parameters())
    assert all(p.grad is not None for p in model.heads["geometric"].parameters())
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def _count(name, **kwargs) -> int:
    with torch.device("meta"):
        model = seglab.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def test_full_size_parameter_counts():
    # The release's siftflow-fcn16s net: VGG-16 to fc7 (134,260,544) + per space score_fr, score_pool4
    # and the bias-free K x K deconvolutions (4x4 and 32x32): 1,284,690 at 33 classes, 23,190 at 3.
    siftflow = _count("joint16s_vgg16", num_classes=33, label_spaces={"semantic": 33, "geometric": 3})
    assert siftflow == 135_568_424 == 134_260_544 + 1_284_690 + 23_190
    # Joint = one trunk: the two single-space FCN-16s nets minus one copy of the trunk.
    assert siftflow == _count("fcn16s_vgg16", num_classes=33) + _count("fcn16s_vgg16", num_classes=3) - 134_260_544
    assert _count("joint16s_vgg16", num_classes=21) == 134_839_184  # 21 + 3 geometric, as docs/models.md
    assert _count("joint_resnet18", num_classes=21) == 12_359_768
    assert _count("joint_resnet18", num_classes=21, aux_loss=True) == 12_656_496


def _two_space_batch(size: int = 64):
    """Colour blocks of 3 classes; the second space groups class 0 apart from classes 1 and 2."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([[[0, 1], [2, 0]], [[2, 2], [1, 0]]])
    labels = labels.repeat_interleave(size // 2, 1).repeat_interleave(size // 2, 2)
    colours = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 0.0, -1.0]])
    images = colours[labels].permute(0, 3, 1, 2) + 0.2 * torch.randn(2, 3, size, size, generator=g)
    return images, {"semantic": labels, "geometric": (labels > 0).long()}


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_few_joint_steps_lower_both_losses(name):
    # From scratch, the release's skip scaling and dropout 0.5 only slow a 30-step fit (as in test_fcn.py).
    extra = {"dropout": 0.0, "skip_scale": False} if "vgg" in name else {}
    model = seglab.create_model(name, num_classes=3, label_spaces={"semantic": 3, "geometric": 2},
                                **TINY[name], **extra).train()
    images, targets = _two_space_batch()
    criterion = JointLoss(["semantic", "geometric"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        losses = criterion(model(images), targets)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    for key in ("loss_semantic", "loss_geometric"):
        curve = [h[key] for h in history]
        assert sum(curve[-3:]) / 3 < 0.7 * curve[0], (key, curve)
