"""Cityscapes' own scores in the evaluation loop: instance AP (CityscapesInstanceEvaluator) for instance
models and iIoU (CityscapesInstanceIoU) for semantic models, added by the task's evaluator on Cityscapes
data when `seglab eval` asks for the detailed report; checked with oracle predictions on a tiny on-disk
Cityscapes, and once through `seglab eval` with a tiny untrained Mask R-CNN."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from seglab.data.datasets import Cityscapes, CityscapesInstances
from seglab.data.instances import InstanceEvalTransform
from seglab.data.palettes import CITYSCAPES_ID_TO_TRAIN_ID
from seglab.engine.evaluation import run_evaluation
from seglab.structures import InstanceResult
from seglab.tasks import TASKS

H, W = 48, 64


def _instance_ids() -> np.ndarray:
    """Road, two cars and a person of >= 100 pixels, a car group (bare labelId 26) and void (0)."""
    ids = np.full((H, W), 7, np.int32)
    ids[2:14, 2:20] = 26000          # car, 216 px
    ids[20:34, 30:40] = 26001        # car, 140 px
    ids[30:46, 2:10] = 24000         # person, 128 px
    ids[40:46, 40:60] = 26           # a group of cars
    ids[0:2, :] = 0                  # unlabeled (void)
    return ids


@pytest.fixture
def cityscapes_val(tmp_path):
    """Two val images with instanceIds (and labelIds, so the semantic data set reads them too)."""
    for k in range(2):
        stem = f"frankfurt_000000_00000{k}"
        img_dir, gt_dir = tmp_path / "leftImg8bit" / "val" / "frankfurt", tmp_path / "gtFine" / "val" / "frankfurt"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(k)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
        ids = _instance_ids()
        Image.fromarray(ids.astype(np.uint16)).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
        label_ids = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
        Image.fromarray(label_ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")
    return tmp_path


class OraclePredictor:
    """Answers image i (in loop order) with `answers[i]`."""

    def __init__(self, answers):
        self.model, self.device, self.needs_image = torch.nn.Conv2d(1, 1, 1), torch.device("cpu"), False
        self.answers = iter(answers)

    def predict_tensor(self, x, *, image=None):
        return next(self.answers)


def _ground_truth_instances(dataset) -> list[InstanceResult]:
    out = []
    for i in range(len(dataset)):
        t = dataset[i][1]
        keep = ~t["iscrowd"]
        n = int(keep.sum())
        out.append(InstanceResult(boxes=t["boxes"][keep].float(), scores=torch.linspace(0.9, 0.5, n),
                                  labels=t["labels"][keep], masks=t["masks"][keep].bool()))
    return out


def test_instance_eval_adds_cityscapes_ap_only_when_detailed(cityscapes_val, tmp_path):
    task = TASKS["instance"]
    ds = CityscapesInstances(cityscapes_val, "val", transform=InstanceEvalTransform())
    assert type(task.build_evaluator(ds)).__name__ == "InstanceEvaluatorAdapter"  # training validation: COCO only

    evaluator = task.build_evaluator(ds, detailed=True)
    results = run_evaluation(task, OraclePredictor(_ground_truth_instances(ds)), ds, evaluator)
    cs = results["cityscapes"]
    # the ground truth itself: AP 1 for car and person, NaN for the classes without instances
    person, car = cs["classes"].index("person"), cs["classes"].index("car")
    assert cs["AP_per_class"][person] == pytest.approx(1.0) and cs["AP_per_class"][car] == pytest.approx(1.0)
    assert all(math.isnan(v) for i, v in enumerate(cs["AP_per_class"]) if i not in (person, car))
    assert cs["AP"] == pytest.approx(1.0) and math.isnan(cs["AP100m"])
    summary = evaluator.summary(results)
    assert summary["cityscapes_AP50"] == pytest.approx(1.0) and summary["cityscapes_AP50m"] is None
    assert summary["mask_AP50"] == pytest.approx(1.0)  # the COCO evaluator saw the same predictions

    lines = []
    written = evaluator.report(results, tmp_path / "out", lines.append)
    assert any("Cityscapes instance-level" in s and "person" in s for s in lines)
    saved = json.loads((tmp_path / "out" / "eval_metrics.json").read_text())
    assert saved["cityscapes"]["AP50"] == pytest.approx(1.0) and saved["cityscapes"]["AP100m"] is None
    assert str(tmp_path / "out" / "eval_metrics.json") in written


def test_instance_eval_counts_a_missed_car(cityscapes_val):
    """Dropping image 0's small car from the oracle: the cars left score 0.7, 0.7 and 0.5 (all true), so
    the script's curve has recall 1/2 then 3/4 at precision 1 and its step integration gives car AP50
    1/8 + 3/8 + 1/4 = 0.75; person stays 1, so AP50 is their mean 0.875."""
    task = TASKS["instance"]
    ds = CityscapesInstances(cityscapes_val, "val", transform=InstanceEvalTransform())
    answers = _ground_truth_instances(ds)
    r = answers[0]
    small_car = int(torch.nonzero(r.masks.sum((1, 2)) == 140)[0])
    keep = torch.arange(len(r.labels)) != small_car
    answers[0] = InstanceResult(boxes=r.boxes[keep], scores=r.scores[keep], labels=r.labels[keep], masks=r.masks[keep])
    results = run_evaluation(task, OraclePredictor(answers), ds, task.build_evaluator(ds, detailed=True))
    assert results["cityscapes"]["AP50"] == pytest.approx(0.875)


def test_semantic_eval_adds_iiou_when_instance_ids_exist(cityscapes_val, tmp_path):
    from seglab.data.transforms import EvalTransform

    task = TASKS["semantic"]
    ds = Cityscapes(cityscapes_val, "val", transform=EvalTransform())
    lut = np.full(256, 255, np.int64)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    perfect = [SimpleNamespace(labels=torch.from_numpy(lut[np.where((g := _instance_ids()) >= 1000, g // 1000, g)]))
               for k in range(2)]
    evaluator = task.build_evaluator(ds, detailed=True)
    results = run_evaluation(task, OraclePredictor(perfect), ds, evaluator)
    iiou = results["cityscapes"]
    assert iiou["iIoU_per_class"]["car"] == pytest.approx(1.0) and iiou["iIoU_per_class"]["person"] == pytest.approx(1.0)
    assert iiou["iIoU"] == pytest.approx(1.0) and math.isnan(iiou["iIoU_per_class"]["bus"])
    lines = []
    evaluator.report(results, tmp_path, lines.append)
    assert any("iIoU 100.00" in s for s in lines)
    # without the instanceIds files the semantic report is the usual one
    for p in (cityscapes_val / "gtFine").rglob("*_instanceIds.png"):
        p.unlink()
    assert type(task.build_evaluator(Cityscapes(cityscapes_val, "val"), detailed=True)).__name__ == "SemanticEvaluator"


def test_seglab_eval_prints_the_cityscapes_table(cityscapes_val, tmp_path, capsys):
    from seglab import create_model
    from seglab.cli import main
    from seglab.hub import save_model

    tiny = yaml.safe_load((Path(__file__).parents[1] / "models" / "tiny_instance" /
                           "mask_rcnn.yaml").read_text())["mask_rcnn_resnet18_fpn"]
    torch.manual_seed(0)
    model = create_model("mask_rcnn_resnet18_fpn", num_classes=8, **tiny)
    ckpt = save_model(model, tmp_path / "model.safetensors")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": "mask_rcnn_resnet18_fpn", "kwargs": tiny},
                                   "data": {"name": "cityscapes_instances", "root": str(cityscapes_val)}}))
    assert main(["eval", str(cfg), "--checkpoint", str(ckpt), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "Cityscapes instance-level evaluation" in out and "AP100m" in out and "bicycle" in out
    cs = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())["cityscapes"]
    assert 0.0 <= cs["AP"] <= 1.0 and len(cs["AP_per_class"]) == 8


def test_distance_limited_aps_use_the_stereo_depth(tmp_path):
    """A near car (20 m) and a far one (150 m), both 1200 pixels, with disparity maps and the camera file:
    an oracle that finds only the near car scores car AP50 0.5 over all instances but 1 within 100 m and
    50 m (the far car's ground truth lies beyond the limits), which only holds if the depth is read."""
    h, w, baseline, fx = 64, 96, 0.2, 2000.0
    ids = np.full((h, w), 7, np.int32)
    ids[2:32, 2:42] = 26000     # near car, 1200 px
    ids[32:62, 50:90] = 26001   # far car, 1200 px
    depth = np.where(ids == 26001, 150.0, 20.0)
    disparity = np.round(baseline * fx / depth * 256 + 1).astype(np.uint16)
    stem, city = "frankfurt_000000_000000", "frankfurt"
    for folder, name, array in (("leftImg8bit", "leftImg8bit", np.zeros((h, w, 3), np.uint8)),
                                ("gtFine", "gtFine_instanceIds", ids.astype(np.uint16)),
                                ("gtFine", "gtFine_labelIds", np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)),
                                ("disparity", "disparity", disparity)):
        (tmp_path / folder / "val" / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(tmp_path / folder / "val" / city / f"{stem}_{name}.png")
    (tmp_path / "camera" / "val" / city).mkdir(parents=True)
    (tmp_path / "camera" / "val" / city / f"{stem}_camera.json").write_text(
        json.dumps({"extrinsic": {"baseline": baseline}, "intrinsic": {"fx": fx}}))
    task = TASKS["instance"]
    ds = CityscapesInstances(tmp_path, "val", transform=InstanceEvalTransform())
    assert ds.cityscapes_depth(0)[5, 5] == pytest.approx(20.0, rel=1e-3)
    r = _ground_truth_instances(ds)[0]
    near = int(torch.nonzero(r.masks[:, 5, 5])[0])
    only_near = InstanceResult(boxes=r.boxes[near:near + 1], scores=r.scores[near:near + 1],
                               labels=r.labels[near:near + 1], masks=r.masks[near:near + 1])
    cs = run_evaluation(task, OraclePredictor([only_near]), ds, task.build_evaluator(ds, detailed=True))["cityscapes"]
    assert cs["AP50"] == pytest.approx(0.5)
    assert cs["AP100m"] == pytest.approx(1.0) and cs["AP50m"] == pytest.approx(1.0)
