"""`train.supervision: image_labels`: `seglab train` from class lists with the MIL loss, validated
against pixel labels."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from PIL import Image

from seglab.config import config_from_dict
from seglab.data import SyntheticSegmentation
from seglab.data.image_labels import (
    ImageLabelDataset,
    ImageLabelsFromMasks,
    write_image_labels,
)
from seglab.engine import build_datasets, train
from seglab.errors import ConfigError


def _cfg(root, out, data_kw=None, **train_kw):
    return config_from_dict({
        "model": {"name": "unet", "kwargs": {"base_channels": 4}},
        "data": {"name": "synthetic", "root": str(root), "crop_size": [48, 64], "scale_range": [1.0, 1.0],
                 "batch_size": 4, **(data_kw or {})},
        "train": {"supervision": "image_labels", "epochs": 3, "optimizer": "adamw", "lr": 0.01,
                  "out_dir": str(out), **train_kw},
    })


def test_weak_training_lowers_the_mil_loss_and_validates_on_pixel_labels(tiny_synthetic, tmp_path):
    messages: list[str] = []
    result = train(_cfg(tiny_synthetic, tmp_path / "run", epochs=6, lr=0.03, val_interval=3), progress=False,
                   log=messages.append)
    assert any("multi-class MIL loss" in m for m in messages)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.75 * losses[0]
    assert 0 <= result.final_metrics["mIoU"] <= 1 and not math.isnan(result.final_metrics["mIoU"])
    assert len(result.final_metrics["IoU"]) == 6  # per-class IoU from the val label maps


def test_datasets_yield_class_lists_for_training_and_label_maps_for_validation(tiny_synthetic, tmp_path):
    tr, val = build_datasets(_cfg(tiny_synthetic, tmp_path))
    assert isinstance(tr, ImageLabelsFromMasks) and isinstance(val, SyntheticSegmentation)
    sample = tr[0]
    assert set(sample) == {"image", "labels", "path"} and sample["labels"].shape == (6,)
    assert val[0]["mask"].shape == (48, 64)


def test_training_from_a_class_list_file_never_reads_the_training_label_maps(tiny_synthetic, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic, root)
    write_image_labels(root / "image_labels.txt", SyntheticSegmentation(root, "train"), progress=False)
    for line in (root / "train.txt").read_text().splitlines():  # blank out every training label map
        label = root / line.split()[1]
        Image.fromarray(np.full((48, 64), 200, np.uint8)).save(label)
    cfg = _cfg(root, tmp_path / "run", data_kw={"image_labels": "image_labels.txt"}, epochs=1)
    tr, _ = build_datasets(cfg)
    assert isinstance(tr, ImageLabelDataset) and len(tr) == 12
    result = train(cfg, progress=False, log=lambda m: None)
    assert math.isfinite(result.history[0]["train_loss"]) and 0 <= result.best_mIoU <= 1


@pytest.mark.parametrize("overrides, message", [
    ({"train": {"supervision": "pixel"}, "data": {"image_labels": "x.txt"}},
     "data.image_labels is set .* but train.supervision is 'pixel'"),
    ({"train": {"class_weights": "median_frequency"}}, "train.class_weights: 'median_frequency' needs pixel labels"),
    ({"train": {"ohem": {"thresh": 0.7}}}, "train.ohem needs pixel labels"),
])
def test_settings_that_need_pixel_labels_are_refused(tiny_synthetic, tmp_path, overrides, message):
    cfg = _cfg(tiny_synthetic, tmp_path, data_kw=overrides.get("data"), **overrides["train"])
    with pytest.raises(ConfigError, match=message):
        build_datasets(cfg)
