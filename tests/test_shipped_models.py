"""The trained models that ship inside the package (src/seglab/weights/*.safetensors): each loads by
name offline, carries its class names, palette and prediction settings, and predicts real images
well. The CamVid model is checked on real CamVid validation images and, once it ships, the Penn-Fudan
model on real pedestrian photos of its validation split, when ../shared is present."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from seglab import hub
from seglab.cli import main
from seglab.data import CAMVID_CLASSES, CamVid, EvalTransform
from seglab.metrics import SemanticMetrics

SHIPPED = sorted(p.name.removesuffix(".safetensors") for p in hub.PACKAGE_WEIGHTS.glob("*.safetensors"))


PENNFUDAN_MODEL = "mask_rcnn_resnet18_fpn.pennfudan"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_the_camvid_model_ships():
    assert "bisenetv2.camvid" in SHIPPED, "the issue-6 model must be inside the package"


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_by_name_with_its_metadata_and_is_small(name):
    model = seglab.load_model(name)
    meta = model.seglab_config
    assert len(meta["classes"]) == meta["num_classes"] == len(meta["palette"])
    assert len(meta["mean"]) == len(meta["std"]) == 3
    assert (hub.PACKAGE_WEIGHTS / f"{name}.safetensors").stat().st_size < 10 * 2**20, "ship a few MB"
    assert not model.training


def test_camvid_model_predicts_real_validation_images(shared_dir, tmp_path, capsys):
    root = shared_dir / "data" / "camvid"
    model = seglab.load_model("bisenetv2.camvid")
    assert model.seglab_config["classes"] == list(CAMVID_CLASSES)
    val = CamVid(root, split="val", transform=EvalTransform(model.seglab_config["mean"], model.seglab_config["std"]))
    picks = [0, 50, 100]
    # the command line, offline, by name: label PNGs of the image's size
    paths = [val.samples[i][0] for i in picks]
    assert main(["predict", "--model", "bisenetv2.camvid", *map(str, paths), "--out", str(tmp_path)]) == 0
    for p in paths:
        labels = np.array(Image.open(tmp_path / f"{p.stem}.png"))
        assert labels.shape == (360, 480) and labels.max() < 11
    assert str(tmp_path) in capsys.readouterr().out
    # and it is a trained model: most pixels right on real validation images
    from seglab.inference import build_predictor

    predictor = build_predictor(model, tta=(model.seglab_config.get("inference") or {}).get("tta"))
    metrics = SemanticMetrics(11)
    for i in picks:
        sample = val[i]
        metrics.update(predictor.predict(sample["image"][None])[0], sample["mask"])
    result = metrics.compute()
    print(json.dumps({"aAcc": result["aAcc"], "mIoU": result["mIoU"]}))
    assert result["aAcc"] > 0.85


@pytest.mark.skipif(PENNFUDAN_MODEL not in SHIPPED, reason=f"{PENNFUDAN_MODEL} is not trained and shipped yet (issue 14)")
def test_pennfudan_model_finds_real_pedestrians(shared_dir, tmp_path):
    from seglab.config import load_config
    from seglab.data import InstanceEvalTransform, build_dataset
    from seglab.engine.evaluation import evaluate_model
    from seglab.engine.runtime import Runtime
    from seglab.tasks import task_for_model

    model = seglab.load_model(PENNFUDAN_MODEL)
    assert model.seglab_config["classes"] == ["person"]
    cfg = load_config(CONFIGS / "pennfudan" / f"{PENNFUDAN_MODEL.split('_resnet')[0]}.yaml")
    data = cfg.data
    val = build_dataset("instance_folder", root=shared_dir / "data" / "pennfudan", split="val",
                        transform=InstanceEvalTransform(model.seglab_config["mean"], model.seglab_config["std"]),
                        **data.kwargs)
    # the command line, offline, by name: an overlay per photo and one COCO result JSON
    paths = [val.image_path(i) for i in (0, 12)]
    assert main(["predict", "--model", PENNFUDAN_MODEL, *map(str, paths), "--out", str(tmp_path)]) == 0
    assert all((tmp_path / f"{p.stem}_overlay.png").is_file() for p in paths)
    detections = json.loads((tmp_path / "instances.json").read_text())
    assert {d["category_id"] for d in detections} == {1} and max(d["score"] for d in detections) > 0.5
    # and it is a trained model: most pedestrians of 8 validation photos found with good masks
    val.images = val.images[:8]
    task = task_for_model(model.seglab_config["name"])
    _, results = evaluate_model(task, model, val, cfg.eval, Runtime(torch.device("cpu")),
                                model_config=model.seglab_config)
    print(json.dumps({k: results[k] for k in ("mask_AP", "mask_AP50", "box_AP")}))
    assert results["mask_AP50"] > 0.6
