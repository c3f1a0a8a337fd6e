"""Panoptic models in the engine (the one loop with the panoptic task), on a tiny generated synthetic set whose category
ids are renumbered (so class index != category id everywhere): training validates with PQ / SQ / RQ and
keeps best.safetensors by PQ, resumes exactly; evaluation writes COCO panoptic files that `pq_compute`
reads back to the same numbers (hand-counted for a ground-truth echo with dropped things); prediction
writes the panoptic PNG, the visualisation and one JSON."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import seglab
from seglab.config import config_from_dict
from seglab.data.panoptic import check_segments, read_panoptic_png
from seglab.engine import evaluate_and_report, predict_to_folder, train
from seglab.engine.checkpoint import load_checkpoint
from seglab.errors import ConfigError
from seglab.hub import read_model_metadata
from seglab.inference.panoptic import model_categories
from seglab.metrics.panoptic import pq_compute
from seglab.structures import PanopticResult
from seglab.tasks import TASKS
from seglab.tasks.panoptic import SUMMARY

TINY = {"name": "upsnet_resnet18",
        "kwargs": {"width": 8, "fpn_channels": 16, "representation_size": 32, "mask_channels": 16, "mask_layers": 1,
                   "anchor_sizes": [[8], [16], [32], [64], [128]], "rpn_post_nms_top_n_train": 100,
                   "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 64, "semantic_channels": 8,
                   "stuff_area_limit": 0, "panoptic_score_thresh": 0.3}}
# synthetic category id -> the id used here: stuff grass 0, water 1, sand 2; things circle 3, rectangle 4, triangle 5
RENUMBER = {0: 11, 1: 7, 2: 30, 3: 2, 4: 25, 5: 40}
CLASS_TO_CATEGORY = [7, 11, 30, 2, 25, 40]  # stuff by id, then things by id


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def panoptic_data(tmp_path_factory):
    from seglab.data import generate_synthetic

    root = generate_synthetic(tmp_path_factory.mktemp("synthetic_panoptic"), num_train=8, num_val=4, size=(64, 64),
                              seed=1, workers=1)
    for split in ("train", "val"):
        path = root / f"panoptic_{split}.json"
        data = json.loads(path.read_text())
        for c in data["categories"]:
            c["id"] = RENUMBER[c["id"]]
        for ann in data["annotations"]:
            for s in ann["segments_info"]:
                s["category_id"] = RENUMBER[s["category_id"]]
        path.write_text(json.dumps(data))
    return root


def _cfg(root, out, *, model=TINY, data="synthetic_panoptic", **train_kw):
    return config_from_dict({
        "model": model,
        "data": {"name": data, "root": str(root), "crop_size": [64, 64], "batch_size": 4, "scale_range": [0.75, 1.25]},
        "train": {"epochs": 2, "optimizer": "adamw", "lr": 0.01, "out_dir": str(out), **train_kw}})


@pytest.fixture(scope="module")
def two_epochs(panoptic_data, tmp_path_factory):
    lines: list[str] = []
    result = train(_cfg(panoptic_data, tmp_path_factory.mktemp("run") / "a"), progress=False,
                            log=lines.append)
    return result, lines


def _rows(out):
    return [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_validates_with_pq_and_keeps_the_best_model(two_epochs):
    result, lines = two_epochs
    rows = _rows(result.out_dir)
    assert [r["epoch"] for r in rows] == [1, 2] and [r["iteration"] for r in rows] == [2, 4]
    for row in rows:
        assert all(0.0 <= row[f"val_{k}"] <= 1.0 for k in SUMMARY), row
        parts = [v for k, v in row.items() if k.startswith("train_loss_")]
        assert len(parts) == 8 and row["train_loss"] == pytest.approx(sum(parts))  # Mask R-CNN's 5 + UPSNet's 3
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert "val PQ" in lines[-1] and "(objectness " in lines[1]  # lines[0] says where it trains
    for name in ("config.yaml", "last.pt", "best.safetensors", "metrics.jsonl", "curves.png"):
        assert (result.out_dir / name).is_file(), name
    assert result.best_PQ == max(r["val_PQ"] for r in rows) and result.final_metrics["All"]["n"] == 6
    meta = read_model_metadata(result.best_path)
    assert meta["category_ids"] == CLASS_TO_CATEGORY and meta["kwargs"]["num_things"] == 3
    assert [c["name"] for c in meta["categories"]] == ["water", "grass", "sand", "circle", "rectangle", "triangle"]
    model = seglab.load_model(result.best_path)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 37, 45))
    assert isinstance(out[0], PanopticResult) and out[0].segments.shape == (37, 45)


def test_resume_continues_at_the_next_epoch_exactly(two_epochs, panoptic_data, tmp_path):
    straight, _ = two_epochs

    def crash_after_first_epoch(msg):
        if msg.startswith("epoch   1/"):
            raise Crash

    cfg = _cfg(panoptic_data, tmp_path / "b", val_every_minutes=1000.0)  # validation at the last epoch only
    with pytest.raises(Crash):
        train(cfg, progress=False, log=crash_after_first_epoch)
    lines: list[str] = []
    resumed = train(cfg, resume=True, progress=False, log=lines.append)
    assert lines[0].startswith("resumed from") and "epoch 2/2" in lines[0]
    a, b = load_checkpoint(straight.last_path)["model"], load_checkpoint(resumed.last_path)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = _rows(resumed.out_dir)
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in straight.history]
    assert "val_PQ" not in rows[0] and rows[1]["val_PQ"] == straight.history[1]["val_PQ"]


class GroundTruthEcho(torch.nn.Module):
    """Answers each val image with its ground truth in the models' convention (contiguous class ids),
    less the first thing segment, which becomes void: a known PQ for the evaluation files."""

    def __init__(self, dataset):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # predict_panoptic reads the device from it
        self.answers = []
        for i in range(len(dataset)):
            image, target = dataset[i]
            ids = target["panoptic"].clone()
            infos = [{"id": s["id"], "category_id": dataset.category_to_class[s["category_id"]]}
                     for s in target["segments_info"]]
            dropped = next(s for s in target["segments_info"] if s["isthing"])
            ids[ids == dropped["id"]] = 0
            self.answers.append((image, PanopticResult(ids, [s for s in infos if s["id"] != dropped["id"]]),
                                 dropped["category_id"]))

    def forward(self, images, targets=None):
        return [next(r for im, r, _ in self.answers if torch.equal(im, image)) for image in images]


def test_evaluation_files_read_back_by_pq_compute_to_the_hand_counted_pq(panoptic_data, tmp_path, capsys):
    cfg = _cfg(panoptic_data, tmp_path / "unused")
    _, val_ds = TASKS['panoptic'].build_datasets(cfg, train=False)
    echo = GroundTruthEcho(val_ds)
    results = evaluate_and_report(echo, val_ds, tmp_path, task=TASKS['panoptic'])[1]
    assert "rectangle" in capsys.readouterr().out  # the PQ table
    # hand count: every segment matched with IoU 1 except one dropped thing per image (a false negative)
    gt = json.loads((panoptic_data / "panoptic_val.json").read_text())
    tp, fn = {}, {}
    for ann in gt["annotations"]:
        for s in ann["segments_info"]:
            tp[s["category_id"]] = tp.get(s["category_id"], 0) + 1
    for _, _, category in echo.answers:
        tp[category] -= 1
        fn[category] = fn.get(category, 0) + 1
    expected = {c: tp[c] / (tp[c] + 0.5 * fn.get(c, 0)) for c in tp}
    assert {c: r["pq"] for c, r in results["per_class"].items()} == pytest.approx(expected)
    assert results["Stuff"]["pq"] == 1.0 and results["All"]["sq"] == 1.0 and results["Things"]["pq"] < 1.0
    reread = pq_compute(panoptic_data / "panoptic_val.json", tmp_path / "panoptic_predictions.json",
                        gt_folder=panoptic_data)
    assert reread == results
    metrics = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert metrics["PQ"] == pytest.approx(results["All"]["pq"]) and metrics["num_images"] == 4
    assert metrics["per_class"]["grass"]["pq"] == 1.0 and metrics["category_ids"] == CLASS_TO_CATEGORY


def test_evaluating_a_trained_model_writes_what_it_predicted(two_epochs, panoptic_data, tmp_path):
    result, _ = two_epochs
    _, val_ds = TASKS['panoptic'].build_datasets(_cfg(panoptic_data, tmp_path / "unused"), train=False)
    model = seglab.load_model(result.best_path)
    results = evaluate_and_report(model, val_ds, tmp_path, log=lambda m: None)[1]
    assert results["All"]["pq"] == pytest.approx(result.best_PQ)
    data = json.loads((tmp_path / "panoptic_predictions.json").read_text())
    assert [a["image_id"] for a in data["annotations"]] == val_ds.image_ids
    image, _ = val_ds[0]
    with torch.no_grad():
        expected = model([image])[0]
    written = read_panoptic_png(tmp_path / "panoptic_predictions" / data["annotations"][0]["file_name"])
    assert np.array_equal(written, expected.segments.numpy())
    assert [s["category_id"] for s in data["annotations"][0]["segments_info"]] == \
        [CLASS_TO_CATEGORY[s["category_id"]] for s in expected.segments_info]
    assert pq_compute(panoptic_data / "panoptic_val.json", tmp_path / "panoptic_predictions.json",
                      gt_folder=panoptic_data) == results


def test_predict_writes_the_panoptic_png_a_visualisation_and_one_json(two_epochs, panoptic_data, tmp_path):
    result, _ = two_epochs
    files = []
    for k, name in enumerate(("val_00000.png", "val_00001.png")):
        files.append(tmp_path / "in" / f"picture{k}.png")
        files[-1].parent.mkdir(exist_ok=True)
        shutil.copy(panoptic_data / "images" / name, files[-1])
    categories, class_to_category = model_categories(read_model_metadata(result.best_path))
    out = tmp_path / "out"
    lines = predict_to_folder(result.best_path, files, out, device="cpu")
    json_path, pictures = out / "panoptic.json", [out / f"{f.stem}_panoptic_vis.png" for f in files]
    assert str(json_path) in lines[0]
    data = json.loads(json_path.read_text())
    assert [im["file_name"] for im in data["images"]] == ["picture0.png", "picture1.png"]
    assert data["categories"] == categories and {c["id"] for c in categories} == set(CLASS_TO_CATEGORY)
    colors = {c["id"]: c["color"] for c in categories}
    for f, ann, picture in zip(files, data["annotations"], pictures):
        ids = read_panoptic_png(out / ann["file_name"])
        assert ann["file_name"] == f"{f.stem}_panoptic.png" and ids.shape == (64, 64)
        assert ann["segments_info"], "the model predicted no segment"
        check_segments(ids, ann["segments_info"], f.name, CLASS_TO_CATEGORY)
        vis = np.asarray(Image.open(picture).convert("RGB")).astype(float)
        image = np.asarray(Image.open(f).convert("RGB")).astype(float)
        stuff = [s for s in ann["segments_info"] if not s["isthing"]]
        checked = 0
        for s in stuff:  # stuff in its class colour, blended 0.6 over the image (away from the borders)
            for y, x in np.argwhere(_interior(ids == s["id"]))[:5]:
                assert vis[y, x] == pytest.approx(0.4 * image[y, x] + 0.6 * np.array(colors[s["category_id"]]),
                                                  abs=1)
                checked += 1
        assert checked or not stuff


def _interior(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` whose four neighbours are in it too."""
    p = np.pad(mask, 1)
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def test_model_categories_without_recorded_categories_come_from_classes_and_num_things():
    categories, ids = model_categories({"num_classes": 3, "kwargs": {"num_things": 1}, "classes": ["a", "b", "c"],
                                        "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]})
    assert ids == [0, 1, 2] and [c["isthing"] for c in categories] == [0, 0, 1]
    assert categories[2] == {"id": 2, "name": "c", "isthing": 1, "color": [7, 8, 9]}


@pytest.mark.parametrize("change,names", [
    ({"data": "synthetic_instances"}, ["'upsnet_resnet18'", "'synthetic_instances'"]),
    ({"model": {"name": "upsnet_resnet18", "kwargs": {**TINY["kwargs"], "num_things": 2}}},
     ["num_things is 2", "3 thing classes"]),
])
def test_model_and_data_set_mistakes_are_one_line_config_errors(panoptic_data, tmp_path, change, names):
    with pytest.raises(ConfigError) as err:
        train(_cfg(panoptic_data, tmp_path / "run", **change), progress=False, log=lambda m: None)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and all(n in message for n in names), message


def test_cli_trains_evaluates_and_predicts_panoptic_models(panoptic_data, tmp_path, capsys):
    from seglab.cli import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": TINY, "data": {"name": "synthetic_panoptic", "root": str(panoptic_data), "crop_size": [64, 64],
                                "batch_size": 4},
        "train": {"epochs": 1, "optimizer": "adamw", "lr": 0.01, "out_dir": str(tmp_path / "run")}}))
    assert main(["train", str(cfg)]) == 0
    assert "best val PQ" in capsys.readouterr().out
    best = tmp_path / "run" / "best.safetensors"
    assert main(["eval", str(cfg), "--checkpoint", str(best), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "Things" in out and "triangle" in out and str(tmp_path / "eval" / "panoptic_predictions.json") in out
    # last.pt (a training state): the model is rebuilt from the config, num_things from the data set
    assert main(["eval", str(cfg), "--checkpoint", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "eval_metrics.json").read_text()) == \
        json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    image = panoptic_data / "images" / "val_00000.png"
    assert main(["predict", "--checkpoint", str(best), str(image), "--out", str(tmp_path / "pred")]) == 0
    assert str(tmp_path / "pred" / "panoptic.json") in capsys.readouterr().out
    assert (tmp_path / "pred" / "val_00000_panoptic.png").is_file()
    assert (tmp_path / "pred" / "val_00000_panoptic_vis.png").is_file()
    assert main(["eval", str(cfg), "--checkpoint", str(best), "--tta", "flip"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "panoptic model 'upsnet_resnet18'" in err, err
