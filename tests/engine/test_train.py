"""The training loop on a tiny synthetic set: loss falls, outputs are written, resume is exact."""
import json

import pytest
import torch

import seglab
from seglab.config import config_from_dict
from seglab.engine import train
from seglab.engine.checkpoint import load_checkpoint


class Crash(Exception):
    pass


def _cfg(root, out, **train_kw):
    return config_from_dict({
        "model": {"name": "unet", "kwargs": {"base_channels": 4}},
        "data": {"name": "synthetic", "root": str(root), "crop_size": [48, 48], "batch_size": 4,
                 "scale_range": [0.75, 1.25]},
        "train": {"epochs": 3, "optimizer": "adamw", "lr": 0.01, "out_dir": str(out), **train_kw},
    })


def test_training_lowers_the_loss_and_writes_its_outputs(tiny_synthetic, tmp_path):
    result = train(_cfg(tiny_synthetic, tmp_path / "run", epochs=5, lr=0.02), progress=False, log=lambda m: None)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.75 * losses[0]
    for name in ("config.yaml", "last.pt", "best.safetensors", "metrics.jsonl", "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3, 4, 5]
    model = seglab.load_model(result.best_path)
    assert model.seglab_config["classes"] and model.seglab_config["mean"]
    assert 0 <= result.best_mIoU <= 1 and 1 <= result.best_epoch <= 5


def test_resume_continues_exactly(tiny_synthetic, tmp_path):
    straight = train(_cfg(tiny_synthetic, tmp_path / "a", epochs=2), progress=False, log=lambda m: None)

    def crash_after_first_epoch(msg):
        if msg.startswith("epoch   1/"):
            raise Crash

    with pytest.raises(Crash):
        train(_cfg(tiny_synthetic, tmp_path / "b", epochs=2), progress=False, log=crash_after_first_epoch)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 0
    resumed = train(_cfg(tiny_synthetic, tmp_path / "b", epochs=2), resume=True, progress=False, log=lambda m: None)
    a = load_checkpoint(straight.last_path)["model"]
    b = load_checkpoint(resumed.last_path)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


def test_bf16_channels_last_and_median_frequency_options_train(tiny_synthetic, tmp_path):
    cfg = _cfg(tiny_synthetic, tmp_path / "run", epochs=1, bf16=True, channels_last=True,
               class_weights="median_frequency", optimizer="sgd", lr=0.05, warmup_iters=2)
    messages = []
    result = train(cfg, progress=False, log=messages.append)
    assert any("median-frequency class weights" in m for m in messages)
    assert torch.isfinite(torch.tensor(result.history[0]["train_loss"]))


def test_validation_during_training_predicts_like_eval(tiny_synthetic, tmp_path):
    from seglab.engine.evaluation import validation_options
    from seglab.inference import TTAPredictor
    from seglab.tasks import TASKS

    cfg = config_from_dict({"model": {"name": "unet", "kwargs": {"base_channels": 4}},
                            "data": {"name": "synthetic", "root": str(tiny_synthetic)},
                            "eval": {"tta": {"flip": False, "scales": [0.5]},
                                     "slide": {"crop": [32, 32], "stride": [16, 16]},
                                     "crf": {"iterations": 1}}})
    model = seglab.create_model("unet", num_classes=6, base_channels=4)
    predictor = TASKS["semantic"].build_predictor(model, validation_options(cfg.eval))
    assert isinstance(predictor, TTAPredictor) and predictor.scales == (0.5,) and not predictor.flip
    assert predictor.predictor.slide == (32, 32) and predictor.crf is None


def test_curves_are_redrawn_on_validations_the_last_epoch_and_at_most_every_interval(tmp_path, monkeypatch):
    from seglab.engine import loop

    drawn = []
    monkeypatch.setattr("seglab.viz.plot_training_curves", lambda history, path, metric: drawn.append(len(history)))
    now = iter([0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 40.0, 40.0, 41.0, 42.0])
    curves = loop.CurvesPlot(tmp_path / "curves.png", metric="val_mIoU", every_s=30.0, clock=lambda: next(now))
    history = []
    for epoch, validated in enumerate([False, False, False, True, False], 1):
        history.append({"epoch": epoch})
        curves.update(history, validated=validated, last=epoch == 6)
    assert drawn == [1, 4]  # the first epoch (nothing drawn yet), then the validation; epoch 5 waits
    curves.flush()
    assert drawn == [1, 4, 5]  # a run that stops early still gets its last epoch drawn
    history.append({"epoch": 6})
    curves.update(history, validated=False, last=True)
    assert drawn == [1, 4, 5, 6]
