"""Instance training in the engine (the one loop with the instance task): `train` runs instance models, validates
with COCO mask / box AP, keeps best.safetensors by mask AP, resumes exactly, stops on train.max_minutes with
a final validation (semantic training too), and refuses a model and a data set of different tasks."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

import seglab
from seglab.config import config_from_dict
from seglab.engine import train
from seglab.engine.checkpoint import load_checkpoint
from seglab.engine.clock import TrainingClock
from seglab.errors import ConfigError
from seglab.hub import read_model_metadata
from seglab.structures import InstanceResult

TINY = {"name": "affinity_resnet18", "kwargs": {"width": 8, "fpn_channels": 16, "head_channels": 16,
                                                "distances": [1, 2, 4]}}
VAL_KEYS = ("val_mask_AP", "val_mask_AP50", "val_mask_AP75", "val_box_AP", "val_box_AP50", "val_box_AP75")


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def instance_data(tmp_path_factory):
    from seglab.data import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic_instances")
    return generate_synthetic(root, num_train=8, num_val=4, size=(64, 64), seed=1, workers=1)


def _cfg(root, out, *, model=TINY, data="synthetic_instances", eval=None, **train_kw):
    return config_from_dict({
        "model": model,
        "data": {"name": data, "root": str(root), "crop_size": [64, 64], "batch_size": 4, "scale_range": [0.75, 1.25]},
        "train": {"epochs": 2, "optimizer": "adamw", "lr": 0.01, "out_dir": str(out), **train_kw},
        "eval": eval or {},
    })


@pytest.fixture(scope="module")
def two_epochs(instance_data, tmp_path_factory):
    lines: list[str] = []
    result = train(_cfg(instance_data, tmp_path_factory.mktemp("run") / "a"), progress=False, log=lines.append)
    return result, lines


def _rows(out):
    return [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_dispatches_instance_models_validates_with_mask_ap_and_writes_outputs(two_epochs):
    result, lines = two_epochs
    rows = _rows(result.out_dir)
    assert [r["epoch"] for r in rows] == [1, 2] and [r["iteration"] for r in rows] == [2, 4]
    for row in rows:
        assert all(0.0 <= row[k] <= 1.0 for k in VAL_KEYS), row
        # the loss is the sum of the model's parts, each logged
        assert row["train_loss"] == pytest.approx(row["train_loss_semantic"] + row["train_loss_affinity"])
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert 0 < rows[0]["train_minutes"] < rows[1]["train_minutes"]
    epoch_lines = [m for m in lines if m.startswith("epoch ")]
    assert "(semantic " in epoch_lines[0] and "val mask AP" in epoch_lines[-1]
    for name in ("config.yaml", "last.pt", "best.safetensors", "metrics.jsonl", "curves.png"):
        assert (result.out_dir / name).is_file(), name
    assert math.isnan(result.best_mIoU) and result.best_mask_AP == max(r["val_mask_AP"] for r in rows)
    assert result.final_metrics["mask_AP_per_class"] is not None
    model = seglab.load_model(result.best_path)
    assert model.seglab_config["classes"] == ["circle", "rectangle", "triangle"]
    meta = read_model_metadata(result.best_path)
    assert meta["category_ids"] == [3, 4, 5] and meta["epoch"] == result.best_epoch
    with torch.no_grad():
        out = model(torch.randn(1, 3, 37, 45))
    assert isinstance(out[0], InstanceResult) and out[0].masks.shape[1:] == (37, 45)


def test_resume_continues_at_the_next_epoch_exactly(two_epochs, instance_data, tmp_path):
    straight, _ = two_epochs

    def crash_after_first_epoch(msg):
        if msg.startswith("epoch   1/"):
            raise Crash

    # val_every_minutes far away: only the last epoch is validated (validation does not change training)
    cfg = _cfg(instance_data, tmp_path / "b", val_every_minutes=1000.0)
    with pytest.raises(Crash):
        train(cfg, progress=False, log=crash_after_first_epoch)
    lines: list[str] = []
    resumed = train(cfg, resume=True, progress=False, log=lines.append)
    assert lines[0].startswith("resumed from") and "epoch 2/2" in lines[0]
    a, b = load_checkpoint(straight.last_path)["model"], load_checkpoint(resumed.last_path)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = _rows(resumed.out_dir)
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in straight.history]
    assert "val_mask_AP" not in rows[0] and "val_mask_AP50" in rows[1]
    assert rows[1]["train_minutes"] > rows[0]["train_minutes"] and rows[1]["iteration"] == 4


def test_max_minutes_stops_after_the_first_step_with_a_final_validation(instance_data, tmp_path):
    lines: list[str] = []
    result = train(_cfg(instance_data, tmp_path / "run", epochs=5, max_minutes=0.0001), progress=False,
                   log=lines.append)
    assert len(result.history) == 1
    row = result.history[0]
    assert row["iteration"] == 1 and row["train_minutes"] >= 0.0001 and all(k in row for k in VAL_KEYS)
    assert lines[-1].startswith("stopped after")
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_semantic_training_also_stops_on_max_minutes(tiny_synthetic, tmp_path):
    cfg = _cfg(tiny_synthetic, tmp_path / "run", model={"name": "unet", "kwargs": {"base_channels": 4}},
               data="synthetic", epochs=3, max_minutes=0.0001)
    result = train(cfg, progress=False, log=lambda m: None)
    assert len(result.history) == 1 and "val_mIoU" in result.history[0] and result.history[0]["train_minutes"] > 0


def test_validation_every_training_minutes():
    t_cfg = SimpleNamespace(max_minutes=None, val_every_minutes=1.5, val_interval=1)
    clock = TrainingClock(t_cfg, [], val_key="val_mask_AP")
    due = []
    for epoch, minutes in enumerate([0.7, 1.4, 1.6, 2.9, 3.1, 3.2]):
        clock.seconds = 60 * minutes
        due.append(clock.validation_due(epoch, last=False))
    assert due == [False, False, True, False, True, False]
    # resumed from a history: the count continues from the last validated entry
    history = [{"train_minutes": 1.6, "val_mask_AP": 0.1}, {"train_minutes": 2.9}]
    clock = TrainingClock(t_cfg, history, val_key="val_mask_AP")
    assert clock.minutes == 2.9 and not clock.validation_due(2, last=False)
    clock.seconds = 60 * 3.0
    assert clock.validation_due(3, last=False)


@pytest.mark.parametrize("change,names", [
    ({"model": {"name": "unet", "kwargs": {"base_channels": 4}}}, ["'unet'", "'synthetic_instances'"]),
    ({"data": "synthetic"}, ["'affinity_resnet18'", "'synthetic'"]),
    ({"eval": {"tta": {"flip": True}}}, ["eval.tta", "'affinity_resnet18'"]),
])
def test_model_and_data_set_of_different_tasks_is_a_one_line_config_error(instance_data, tmp_path, change, names):
    with pytest.raises(ConfigError) as err:
        train(_cfg(instance_data, tmp_path / "run", **change), progress=False, log=lambda m: None)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and all(n in message for n in names), message
