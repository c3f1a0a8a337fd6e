"""Fine-tuning (seglab.finetune): weights of another class count load only when asked (model.reinit_heads),
keeping every matching tensor and re-initialising exactly the class-dependent ones and the missing auxiliary
heads; train.freeze and train.backbone_lr_mult; the shipped model by name."""
import pytest
import torch
from safetensors.torch import load_file

import seglab
from seglab.config import config_from_dict
from seglab.engine import train
from seglab.engine.schedule import build_optimizer
from seglab.errors import ConfigError, SeglabError
from seglab.finetune import class_dependent_keys, freeze_modules, trunk_parameters

TINY = {"width_mult": 0.25, "head_channels": 16, "aux_channels": 8}


@pytest.fixture
def six_class_file(tmp_path):
    model = seglab.create_model("bisenetv2", num_classes=6, **TINY)
    return seglab.save_model(model, tmp_path / "six.safetensors"), model.state_dict()


def test_another_class_count_needs_reinit_heads(six_class_file):
    path, _ = six_class_file
    with pytest.raises(SeglabError, match=r"heads\.0\.2\.bias. has shape \(6,\), the model expects \(2,\).*model\.reinit_heads=true"):
        seglab.create_model("bisenetv2", num_classes=2, weights=str(path), **TINY)


def test_reinit_heads_keeps_every_matching_tensor_and_names_the_rest(six_class_file):
    path, state = six_class_file
    model = seglab.create_model("bisenetv2", num_classes=2, weights=str(path), reinit_heads=True, **TINY)
    heads = class_dependent_keys(model)
    # the classifiers of the main and the four auxiliary heads, nothing else
    assert heads == {"head.2.weight", "head.2.bias"} | {f"aux_heads.{i}.2.{p}" for i in range(4) for p in ("weight", "bias")}
    for k, v in model.state_dict().items():
        if k not in heads:
            assert torch.equal(v, state[k]), k
    assert model.head[2].weight.std() < 0.02 and torch.all(model.head[2].bias == 0)  # a small fresh classifier
    report = model.seglab_weights_report
    assert report.kept == len(state) - len(heads)
    assert set(report.reinitialised) == heads
    assert "re-initialised (model.reinit_heads): " in report.describe()


def test_packed_file_without_aux_heads_fine_tunes_into_a_model_with_them(tmp_path, six_class_file):
    path, state = six_class_file
    packed = seglab.hub.pack_model(path, tmp_path / "packed.safetensors", half=False)
    with pytest.raises(SeglabError, match=r"missing aux_heads.*model\.reinit_heads=true"):
        seglab.create_model("bisenetv2", num_classes=6, weights=str(packed), **TINY)
    model = seglab.create_model("bisenetv2", num_classes=6, weights=str(packed), reinit_heads=True, **TINY)
    assert torch.equal(model.head[2].weight, state["head.2.weight"])  # same classes: the classifier is kept
    assert all(k.startswith("aux_heads.") for k in model.seglab_weights_report.reinitialised)


def test_weights_of_another_width_are_refused_even_with_reinit_heads(six_class_file):
    path, _ = six_class_file
    with pytest.raises(SeglabError, match=r"beyond its classifier and auxiliary heads.*model\.kwargs"):
        seglab.create_model("bisenetv2", num_classes=2, weights=str(path), reinit_heads=True,
                            **{**TINY, "width_mult": 0.5})


def test_the_shipped_model_is_accepted_by_name_as_weights():
    model = seglab.create_model("bisenetv2", num_classes=2, weights="bisenetv2.camvid", reinit_heads=True)
    assert model.seglab_config["kwargs"]["head_channels"] == 128, "the head width comes from the file"
    shipped = load_file(str(seglab.hub.resolve_model_file("bisenetv2.camvid")))
    torch.testing.assert_close(model.semantic.ce.conv_last[0].weight, shipped["semantic.ce.conv_last.0.weight"].float())
    with pytest.raises(SeglabError, match=r"weights file not found: bisenetv2\.camvd \(nor a shipped model: "
                                          r"bisenetv2\.camvid"):
        seglab.create_model("bisenetv2", num_classes=2, weights="bisenetv2.camvd")


def test_freeze_and_backbone_lr_mult_select_the_trunk():
    model = seglab.create_model("bisenetv2", num_classes=3, **TINY)
    trunk = trunk_parameters(model)
    assert trunk == {id(p) for m in (model.detail, model.semantic) for p in m.parameters()}
    opt = build_optimizer(model, "sgd", lr=0.1, lr_mult_params=trunk, lr_mult=0.1)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(model.detail.s1[0][0].weight)] == pytest.approx(0.01) and lrs[id(model.head[2].weight)] == 0.1
    frozen = freeze_modules(model, ["backbone", "bga"])
    assert frozen == [model.detail, model.semantic, model.bga]
    assert not any(p.requires_grad for m in frozen for p in m.parameters()) and model.head[2].weight.requires_grad
    with pytest.raises(ConfigError, match=r"train\.freeze: .*no module 'decoder' \(top-level modules: detail, semantic"):
        freeze_modules(model, ["decoder"])
    unet = seglab.create_model("unet", num_classes=2, base_channels=4)
    with pytest.raises(ConfigError, match=r"unet \(2 classes\) has no backbone module"):
        freeze_modules(unet, ["backbone"])


def test_training_with_a_frozen_backbone_changes_only_the_rest(tiny_synthetic, tmp_path, six_class_file):
    path, state = six_class_file
    cfg = config_from_dict({
        "model": {"name": "bisenetv2", "kwargs": TINY, "weights": str(path)},
        "data": {"name": "synthetic", "root": str(tiny_synthetic), "crop_size": [48, 48], "batch_size": 4},
        "train": {"epochs": 1, "optimizer": "adamw", "lr": 0.01, "out_dir": str(tmp_path / "run"),
                  "freeze": ["backbone"], "backbone_lr_mult": 0.1}})
    result = train(cfg, log=lambda m: None, progress=False)
    after = load_file(str(result.best_path))
    for k, v in state.items():
        if k.startswith(("detail.", "semantic.")):  # weights and BatchNorm statistics untouched
            assert torch.equal(after[k], v), k
    assert not torch.equal(after["head.2.weight"], state["head.2.weight"])
    assert not torch.equal(after["bga.fuse.1.running_mean"], state["bga.fuse.1.running_mean"])
