"""`seglab train / eval / predict` with an instance model (in-process, tiny affinity model, tiny synthetic
set): the task comes from the model; eval prints the AP table and writes eval_metrics.json and a COCO
result JSON; predict writes instance overlays and one COCO JSON; mistakes are one line with exit status 2."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from seglab.cli import main

TINY = {"name": "affinity_resnet18", "kwargs": {"width": 8, "fpn_channels": 16, "head_channels": 16,
                                                "distances": [1, 2, 4]}}
THING_IDS = [3, 4, 5]  # the synthetic set's category ids of circle, rectangle, triangle


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _load_results(path, image_ids, size):
    """pycocotools' own reader of result files, against a ground truth holding the images."""
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": i, "height": size[0], "width": size[1]} for i in image_ids],
                  "annotations": [], "categories": [{"id": c, "name": str(c)} for c in THING_IDS]}
    gt.createIndex()
    results = json.loads(path.read_text())
    assert results, f"{path} holds no detection"
    return gt.loadRes(results)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A config on a tiny synthetic instance set and the model `seglab train` wrote for it."""
    from seglab.data import generate_synthetic

    tmp = tmp_path_factory.mktemp("cli_instances")
    root = generate_synthetic(tmp / "data", num_train=8, num_val=4, size=(64, 64), seed=1, workers=1)
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": TINY,
        "data": {"name": "synthetic_instances", "root": str(root), "crop_size": [64, 64], "batch_size": 4,
                 "scale_range": [0.75, 1.25]},
        "train": {"epochs": 20, "val_interval": 10, "optimizer": "adamw", "lr": 0.01, "out_dir": str(tmp / "run")}}))
    assert main(["train", str(cfg)]) == 0
    return cfg, tmp / "run", root


def test_train_reports_mask_ap(trained):
    _, run, _ = trained
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and "val_mask_AP50" in rows[9] and "val_mask_AP50" not in rows[8]
    assert (run / "best.safetensors").is_file() and (run / "curves.png").is_file()


def test_eval_prints_the_ap_table_and_writes_metrics_and_coco_results(trained, tmp_path, capsys):
    cfg, run, _ = trained
    assert main(["eval", str(cfg), "--checkpoint", str(run / "best.safetensors"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mask AP50" in out and "triangle" in out and "box: AP" in out
    assert str(tmp_path / "instances_results.json") in out
    metrics = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert 0 <= metrics["mask_AP50"] <= 1 and metrics["num_images"] == 4
    assert len(metrics["mask_AP50_per_class"]) == 3 and metrics["classes"] == ["circle", "rectangle", "triangle"]
    dets = _load_results(tmp_path / "instances_results.json", range(4), (64, 64))
    assert {a["category_id"] for a in dets.anns.values()} <= set(THING_IDS)
    # last.pt (the training state) evaluates too, with bf16 autocast
    assert main(["eval", str(cfg), "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "b"), "--bf16"]) == 0
    assert (tmp_path / "b" / "instances_results.json").is_file()


def test_predict_writes_overlays_and_one_coco_json(trained, tmp_path, capsys):
    _, run, root = trained
    images = sorted((root / "images").glob("val_*.png"))[:3]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "best.safetensors"), *map(str, images), "--out", str(out),
                 "--score-thresh", "0.3"]) == 0
    assert str(out) in capsys.readouterr().out
    for img in images:
        overlay = np.array(Image.open(out / f"{img.stem}_overlay.png"))
        assert overlay.shape == (64, 64, 3)
    dets = _load_results(out / "instances.json", [1, 2, 3], (64, 64))  # image ids: positions 1..N
    assert {a["image_id"] for a in dets.anns.values()} <= {1, 2, 3}
    assert {a["file_name"] for a in dets.anns.values()} <= {img.name for img in images}
    # a packed model (float16, no training-only parts) predicts the same way
    packed = tmp_path / "packed.safetensors"
    assert main(["pack", str(run / "best.safetensors"), "--out", str(packed)]) == 0
    assert main(["predict", "--checkpoint", str(packed), str(images[0]), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / f"{images[0].stem}_overlay.png").is_file() and (tmp_path / "p" / "instances.json").is_file()


def test_mistakes_are_one_line_errors(trained, tmp_path, capsys):
    cfg, run, root = trained
    image = str(next((root / "images").glob("val_*.png")))
    model = str(run / "best.safetensors")
    assert main(["eval", str(cfg), "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in _error_line(capsys)
    assert main(["predict", "--checkpoint", str(tmp_path / "missing.safetensors"), image, "--out", str(tmp_path)]) == 2
    assert "missing.safetensors" in _error_line(capsys)
    assert main(["eval", str(cfg), "--checkpoint", model, "--tta", "flip"]) == 2
    assert "--tta" in _error_line(capsys)
    assert main(["predict", "--checkpoint", model, image, "--out", str(tmp_path / "o"), "--score-thresh", "2"]) == 2
    assert "--score-thresh" in _error_line(capsys)
    assert main(["train", str(cfg), "model.name=unet", "model.kwargs={base_channels: 4}"]) == 2
    err = _error_line(capsys)
    assert "'unet'" in err and "synthetic_instances" in err
