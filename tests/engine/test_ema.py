"""Weight averaging (engine/ema.py): the update rule by hand, and in the training loop: validation and
best.safetensors use the average, last.pt holds it, and a resumed run ends with the same average."""
import pytest
import torch
from torch import nn

import seglab
from seglab.config import config_from_dict
from seglab.engine import train
from seglab.engine.checkpoint import load_checkpoint
from seglab.engine.ema import ModelEMA


class Crash(Exception):
    pass


def test_update_follows_the_warm_up_decay_and_copies_integer_buffers():
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema = ModelEMA(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    model[1].num_batches_tracked += 5
    ema.update(model)  # d = min(0.9, 2 / 11)
    d1 = 2 / 11
    assert ema.module[0].weight.mean().item() == pytest.approx(d1 * 1 + (1 - d1) * 3)
    assert ema.module[1].num_batches_tracked.item() == 5
    for _ in range(200):
        ema.update(model)
    assert ema.module[0].weight.mean().item() == pytest.approx(3.0, abs=1e-6)  # converges to the trained weights
    assert ema.updates == 201 and ema.decay == 0.9
    other = ModelEMA(model, decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 201 and torch.equal(other.module[0].weight, ema.module[0].weight)
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, decay=1.0)


def _cfg(root, out, **train_kw):
    return config_from_dict({
        "model": {"name": "unet", "kwargs": {"base_channels": 4}},
        "data": {"name": "synthetic", "root": str(root), "crop_size": [48, 48], "batch_size": 4,
                 "scale_range": [0.75, 1.25]},
        "train": {"epochs": 2, "optimizer": "adamw", "lr": 0.01, "out_dir": str(out), "ema": {"decay": 0.5}, **train_kw},
    })


def test_training_validates_the_average_and_resumes_it_exactly(tiny_synthetic, tmp_path):
    straight = train(_cfg(tiny_synthetic, tmp_path / "a"), progress=False, log=lambda m: None)
    state = load_checkpoint(straight.last_path)
    assert state["ema"]["updates"] == 6  # 12 images / batch 4, 2 epochs
    # best.safetensors is the average (validated at epoch 2 at the latest), not the trained weights
    best = seglab.load_model(straight.best_path).state_dict()
    key = next(k for k, v in best.items() if v.is_floating_point() and v.numel() > 8)
    if straight.best_epoch == 2:
        assert torch.equal(best[key], state["ema"]["model"][key])
    assert not torch.equal(state["ema"]["model"][key], state["model"][key])

    def crash_after_first_epoch(msg):
        if msg.startswith("epoch   1/"):
            raise Crash

    with pytest.raises(Crash):
        train(_cfg(tiny_synthetic, tmp_path / "b"), progress=False, log=crash_after_first_epoch)
    resumed = train(_cfg(tiny_synthetic, tmp_path / "b"), resume=True, progress=False, log=lambda m: None)
    a, b = state["ema"]["model"], load_checkpoint(resumed.last_path)["ema"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h.get("val_mIoU") for h in straight.history] == [h.get("val_mIoU") for h in resumed.history]


def test_an_instance_model_with_photometric_augmentation_resumes_its_average_exactly(tmp_path):
    """The same loop for another task: an instance model, its training images through gamma, blur and noise
    (data.gamma / blur_prob / noise_std reach the instance task's transform), the average kept and resumed."""
    from seglab.data import generate_synthetic

    root = generate_synthetic(tmp_path / "data", num_train=8, num_val=2, size=(64, 64), seed=1, workers=1)

    def cfg(out):
        return config_from_dict({
            "model": {"name": "affinity_resnet18", "kwargs": {"width": 8, "fpn_channels": 16, "head_channels": 16,
                                                              "distances": [1, 2, 4]}},
            "data": {"name": "synthetic_instances", "root": str(root), "crop_size": [64, 64], "batch_size": 4,
                     "color_jitter": 0.3, "gamma": 0.3, "blur_prob": 0.5, "noise_std": 0.05},
            "train": {"epochs": 2, "optimizer": "adamw", "lr": 0.01, "out_dir": str(out),
                      "ema": {"decay": 0.9, "warmup": False}},
        })

    from seglab.tasks import task_for_model

    train_ds, _ = task_for_model("affinity_resnet18").build_datasets(cfg(tmp_path / "x"))
    assert "gamma=0.3" in repr(train_ds.transform) and "noise_std=0.05" in repr(train_ds.transform)
    straight = train(cfg(tmp_path / "a"), progress=False, log=lambda m: None)
    state = load_checkpoint(straight.last_path)
    assert state["ema"]["updates"] == 4 and state["ema"]["decay"] == 0.9

    def crash_after_first_epoch(msg):
        if msg.startswith("epoch   1/"):
            raise Crash

    with pytest.raises(Crash):
        train(cfg(tmp_path / "b"), progress=False, log=crash_after_first_epoch)
    resumed = load_checkpoint(train(cfg(tmp_path / "b"), resume=True, progress=False, log=lambda m: None).last_path)
    assert all(torch.equal(state["ema"]["model"][k], resumed["ema"]["model"][k]) for k in state["ema"]["model"])
    assert [h.get("val_mask_AP") for h in state["history"]] == [h.get("val_mask_AP") for h in resumed["history"]]


def test_without_warmup_the_decay_is_constant():
    model = nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.9, warmup=False)
    assert ema.current_decay() == 0.9
    assert ModelEMA(model, decay=0.9).current_decay() == pytest.approx(2 / 11)
