"""Joint training: the summed per-space loss, per-space metrics, and `seglab.engine.train` dispatching
joint models through the one loop with the joint task (outputs, per-space metrics.jsonl keys, console line, resume)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import seglab
from seglab.config import config_from_dict
from seglab.engine import train
from seglab.engine.checkpoint import load_checkpoint
from seglab.errors import ConfigError
from seglab.losses import JointLoss
from seglab.metrics import JointMetrics, flat_metrics


class Crash(Exception):
    pass


def _cfg(root, out, *, data="synthetic_joint", kwargs=None, **train_kw):
    return config_from_dict({
        "model": {"name": "joint_resnet18", "kwargs": {"width": 8, "output_stride": 16, **(kwargs or {})}},
        "data": {"name": data, "root": str(root), "crop_size": [48, 48], "batch_size": 4,
                 "scale_range": [0.75, 1.25]},
        "train": {"epochs": 3, "optimizer": "adamw", "lr": 0.01, "out_dir": str(out), **train_kw},
    })


def test_joint_loss_is_the_weighted_sum_of_per_space_cross_entropies():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 5, 6, generator=g), torch.randn(2, 2, 5, 6, generator=g)
    ta, tb = torch.randint(0, 4, (2, 5, 6), generator=g), torch.randint(0, 2, (2, 5, 6), generator=g)
    ta[0, 0] = 255  # ignored pixels stay out of the mean
    losses = JointLoss(["sem", "geo"], weights={"geo": 0.5})({"sem": a, "geo": b}, {"sem": ta, "geo": tb})
    ce_a, ce_b = F.cross_entropy(a, ta, ignore_index=255), F.cross_entropy(b, tb)
    torch.testing.assert_close(losses["loss_sem"], ce_a)
    torch.testing.assert_close(losses["loss"], ce_a + 0.5 * ce_b)
    aux = JointLoss(["sem"])({"sem": {"out": a, "aux": 2 * a}}, {"sem": ta})
    torch.testing.assert_close(aux["loss"], ce_a + 0.4 * F.cross_entropy(2 * a, ta, ignore_index=255))
    with pytest.raises(ConfigError, match="unknown label spaces"):
        JointLoss(["sem"], weights={"semantic": 1.0})


def test_joint_metrics_score_each_space_on_its_own_matrix():
    m = JointMetrics({"sem": 3, "geo": 2})
    m.update({"sem": torch.tensor([0, 1, 2, 2]), "geo": torch.tensor([1, 1, 0, 0])},
             {"sem": torch.tensor([0, 1, 2, 255]), "geo": torch.tensor([1, 0, 0, 0])})
    other = JointMetrics({"sem": 3, "geo": 2})
    other.update({"sem": torch.tensor([0]), "geo": torch.tensor([1])}, {"sem": torch.tensor([1]), "geo": torch.tensor([1])})
    r = m.merge(other).compute()
    # sem (the 255 pixel ignored): 3 of 4 right, IoU (1/2, 1/2, 1); geo: 4 of 5 right, IoU (2/3, 2/3).
    assert r["sem"]["aAcc"] == 0.75 and r["sem"]["IoU"] == [0.5, 0.5, 1.0]
    assert r["geo"]["aAcc"] == 0.8 and math.isclose(r["geo"]["mIoU"], 2 / 3)
    flat = flat_metrics(r)
    assert math.isclose(flat["val_mIoU"], (2 / 3 + 2 / 3) / 2) and flat["val_geo_aAcc"] == 0.8


def test_train_dispatches_joint_models_and_logs_every_space(tiny_synthetic, tmp_path):
    lines = []
    result = train(_cfg(tiny_synthetic, tmp_path / "run", epochs=4), progress=False, log=lines.append)
    history = result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for key in ("val_semantic_mIoU", "val_stuff_thing_mIoU", "val_semantic_aAcc", "train_loss_stuff_thing"):
        assert 0 <= history[-1][key] < 10, key
    assert history[-1]["val_mIoU"] == pytest.approx((history[-1]["val_semantic_mIoU"]
                                                     + history[-1]["val_stuff_thing_mIoU"]) / 2)
    assert "val mIoU semantic" in lines[-1] and "stuff_thing" in lines[-1]
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and "val_stuff_thing_mIoU" in rows[-1]
    assert (tmp_path / "run" / "curves.png").is_file()
    model = seglab.load_model(result.best_path)
    assert model.seglab_config["kwargs"]["label_spaces"] == {"semantic": 6, "stuff_thing": 2}
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 41))
    assert out["semantic"].shape == (1, 6, 33, 41) and out["stuff_thing"].shape == (1, 2, 33, 41)


def test_resume_continues_exactly(tiny_synthetic, tmp_path):
    straight = train(_cfg(tiny_synthetic, tmp_path / "a", epochs=2), progress=False, log=lambda m: None)

    def crash_after_first_epoch(msg):
        if msg.startswith("epoch   1/"):
            raise Crash

    with pytest.raises(Crash):
        train(_cfg(tiny_synthetic, tmp_path / "b", epochs=2), progress=False, log=crash_after_first_epoch)
    resumed = train(_cfg(tiny_synthetic, tmp_path / "b", epochs=2), resume=True, progress=False, log=lambda m: None)
    a, b = load_checkpoint(straight.last_path)["model"], load_checkpoint(resumed.last_path)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change,match", [
    ({"data": "synthetic"}, "has one"),
    ({"kwargs": {"label_spaces": {"semantic": 6, "geometric": 3}}}, "label_spaces"),
    ({"class_weights": "median_frequency"}, "train.class_weights"),
    ({"label_space_weights": {"geometric": 2.0}}, "unknown label spaces"),
])
def test_config_mistakes_are_one_line_errors(tiny_synthetic, tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        train(_cfg(tiny_synthetic, tmp_path / "run", **change), progress=False, log=lambda m: None)


def test_joint_models_evaluate_and_predict_from_the_command_line(tiny_synthetic, tmp_path, capsys):
    """`seglab eval` prints a table per label space; `seglab predict` writes a label PNG per space."""
    import numpy as np
    import yaml
    from PIL import Image

    from seglab.cli import main

    cfg_dict = {"model": {"name": "joint_resnet18", "kwargs": {"width": 8, "output_stride": 16}},
                "data": {"name": "synthetic_joint", "root": str(tiny_synthetic), "crop_size": [48, 48],
                         "batch_size": 4},
                "train": {"epochs": 1, "optimizer": "adamw", "lr": 0.01, "out_dir": str(tmp_path / "run")}}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(cfg_dict))
    assert main(["train", str(cfg)]) == 0
    best = tmp_path / "run" / "best.safetensors"
    assert main(["eval", str(cfg), "--checkpoint", str(best), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "label space semantic:" in out and "label space stuff_thing:" in out and "triangle" in out
    metrics = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert set(metrics["label_spaces"]) == {"semantic", "stuff_thing"} and 0 <= metrics["mIoU"] <= 1
    assert (tmp_path / "eval" / "confusion_matrix_stuff_thing.png").is_file()
    image = sorted((tiny_synthetic / "images").glob("val_*.png"))[0]
    assert main(["predict", "--checkpoint", str(best), str(image), "--out", str(tmp_path / "pred")]) == 0
    assert "per label space" in capsys.readouterr().out
    for space, classes in (("semantic", 6), ("stuff_thing", 2)):
        labels = np.array(Image.open(tmp_path / "pred" / f"{image.stem}_{space}.png"))
        assert labels.shape == (48, 64) and labels.max() < classes
        assert (tmp_path / "pred" / f"{image.stem}_{space}_overlay.png").is_file()
    assert main(["predict", "--checkpoint", str(best), str(image), "--out", str(tmp_path / "p2"), "--tta", "flip"]) == 2
    assert "joint model" in capsys.readouterr().err
