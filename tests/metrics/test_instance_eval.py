"""Instance evaluator: COCOeval mask / box AP on hand-checkable cases, the per-class table, result JSON
with the original category ids, merging, and the error without pycocotools."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from seglab.data.coco_masks import rle_to_mask
from seglab.errors import SeglabError
from seglab.metrics.instance import InstanceEvaluator, format_instance_table
from seglab.structures import InstanceResult

pytest.importorskip("pycocotools")

H, W = 40, 48


def _box_mask(x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def _target(boxes, labels, crowd=None, image_id=0) -> dict:
    masks = torch.stack([_box_mask(*b) for b in boxes]) if boxes else torch.zeros(0, H, W, dtype=torch.bool)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "masks": masks, "iscrowd": torch.tensor(crowd or [False] * len(labels)), "image_id": image_id}


def _result(boxes, labels, scores) -> InstanceResult:
    t = _target(boxes, labels)
    return InstanceResult(t["boxes"], torch.tensor(scores, dtype=torch.float32), t["labels"], t["masks"])


def _coco_ap101(scores_tp: list[tuple[float, bool]], num_gt: int) -> float:
    """AP from the definition: precision / recall down the score-sorted list, precision made monotone
    (the best precision at any higher recall), read at the 101 recall points 0, 0.01, ..., 1."""
    ranked = sorted(scores_tp, key=lambda s: -s[0])
    tp = np.cumsum([is_tp for _, is_tp in ranked])
    precision = tp / np.arange(1, len(ranked) + 1)
    recall = tp / num_gt
    points = np.linspace(0, 1, 101)
    return float(np.mean([max([p for p, r in zip(precision, recall) if r >= t - 1e-12], default=0.0)
                          for t in points]))


GT_BOXES = [[2, 2, 14, 12], [20, 5, 40, 30], [5, 20, 15, 38]]
GT_LABELS = [0, 1, 0]


def test_predictions_equal_to_ground_truth_give_ap_one():
    ev = InstanceEvaluator(["a", "b"])
    for image_id in (3, 8):
        ev.update(image_id, _result(GT_BOXES, GT_LABELS, [0.9, 0.8, 0.7]), _target(GT_BOXES, GT_LABELS))
    res = ev.compute()
    for key in ("mask_AP", "mask_AP50", "mask_AP75", "mask_APs", "box_AP", "box_AP50", "box_AP75"):
        assert res[key] == pytest.approx(1.0), key
    assert res["mask_AP_per_class"] == pytest.approx([1.0, 1.0])
    assert res["box_AP50_per_class"] == pytest.approx([1.0, 1.0])
    assert math.isnan(res["mask_APl"])  # no object larger than 96^2 pixels: COCOeval's -1 becomes NaN


def test_disjoint_predictions_give_ap_zero():
    ev = InstanceEvaluator(["a", "b"])
    ev.update(0, _result([[30, 32, 40, 40], [0, 30, 4, 40]], [0, 1], [0.9, 0.8]), _target(GT_BOXES[:2], [0, 1]))
    res = ev.compute()
    assert res["mask_AP"] == 0.0 and res["box_AP"] == 0.0 and res["mask_AP50"] == 0.0


@pytest.mark.parametrize("fp_score", [0.5, 0.95])
def test_one_false_positive_one_miss_matches_precision_recall_definition(fp_score):
    # class 0 has two objects: one found (score 0.9), one missed; one false positive elsewhere
    ev = InstanceEvaluator(["a"], iou_types=("segm",))
    gt = [[2, 2, 14, 12], [5, 20, 15, 38]]
    ev.update(0, _result([[2, 2, 14, 12], [30, 2, 46, 20]], [0, 0], [0.9, fp_score]), _target(gt, [0, 0]))
    res = ev.compute()
    want = _coco_ap101([(0.9, True), (fp_score, False)], num_gt=2)
    # TP ranked first: precision 1 up to recall 0.5, i.e. 51 of the 101 points; FP first: precision 0.5 there
    assert want == pytest.approx(51 / 101 if fp_score < 0.9 else 0.5 * 51 / 101)
    assert res["mask_AP"] == pytest.approx(want) and res["mask_AP50"] == pytest.approx(want)
    assert "box_AP" not in res


def test_crowd_region_absorbs_its_detection_and_is_no_miss():
    ev = InstanceEvaluator(["a"])
    target = _target([[2, 2, 14, 12], [20, 5, 40, 30]], [0, 0], crowd=[False, True])
    ev.update(0, _result([[2, 2, 14, 12], [22, 8, 30, 20]], [0, 0], [0.6, 0.9]), target)
    assert ev.compute()["mask_AP"] == pytest.approx(1.0)


def test_category_ids_round_trip_into_result_json(tmp_path):
    cats = [{"id": 90, "name": "zebra"}, {"id": 4, "name": "motorcycle"}]  # label order, not id order
    ev = InstanceEvaluator(cats)
    ev.update(17, _result([[2, 2, 14, 12]], [0], [0.75]), _target([[2, 2, 14, 12]], [0]))
    ev.update(18, _result([[20, 5, 40, 30]], [1], [0.5]), _target([[20, 5, 40, 30]], [1]))
    path = ev.write_results_json(tmp_path / "out" / "results.json")
    results = json.loads(path.read_text())
    assert [(r["image_id"], r["category_id"], r["score"]) for r in results] == [(17, 90, 0.75), (18, 4, 0.5)]
    assert results[0]["bbox"] == [2, 2, 12, 10]  # xywh
    assert isinstance(results[0]["segmentation"]["counts"], str)
    assert np.array_equal(rle_to_mask(results[0]["segmentation"]), _box_mask(2, 2, 14, 12).numpy())
    res = ev.compute()
    assert res["mask_AP_per_class"] == pytest.approx([1.0, 1.0])
    table = ev.format_table(res)
    assert table.splitlines()[1].split() == ["zebra", "100.00", "100.00", "100.00", "100.00"]
    assert table.splitlines()[-2].startswith("mask: AP 100.00  AP50 100.00")


def test_coco_gt_json_is_the_reference(tmp_path):
    gt = {"images": [{"id": 5, "height": H, "width": W}, {"id": 6, "height": H, "width": W}],
          "categories": [{"id": 12, "name": "b"}, {"id": 3, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [2, 2, 12, 10], "area": 120,
                           "iscrowd": 0, "segmentation": [[2, 2, 14, 2, 14, 12, 2, 12]]}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    ev = InstanceEvaluator(coco_gt=path)
    assert ev.category_ids == [3, 12]  # sorted by id, as CocoInstances numbers them
    ev.update(5, _result([[2, 2, 14, 12]], [0], [0.9]))
    res = ev.compute()  # image 6 was not evaluated, so it does not count
    assert res["mask_AP"] == pytest.approx(1.0) and res["box_AP"] == pytest.approx(1.0)
    assert math.isnan(res["mask_AP_per_class"][1])
    with pytest.raises(SeglabError, match="image id 7 is not in the ground-truth JSON"):
        ev.update(7, _result([], [], []))


def test_merge_equals_one_evaluator_and_rejects_repeats():
    one, a, b = (InstanceEvaluator(["a", "b"]) for _ in range(3))
    cases = [(0, _result(GT_BOXES, GT_LABELS, [0.9, 0.3, 0.8]), _target(GT_BOXES[:2], GT_LABELS[:2])),
             (1, _result(GT_BOXES[1:], GT_LABELS[1:], [0.6, 0.7]), _target(GT_BOXES, GT_LABELS))]
    for image_id, result, target in cases:
        one.update(image_id, result, target)
    a.update(*cases[0])
    b.update(*cases[1])
    assert a.merge(b).compute() == one.compute()
    with pytest.raises(SeglabError, match="already added"):
        one.update(*cases[0])
    with pytest.raises(SeglabError, match="evaluated by both"):
        a.merge(b)


def test_bad_inputs_raise():
    ev = InstanceEvaluator(["a"])
    with pytest.raises(SeglabError, match="needs the target"):
        ev.update(0, _result([], [], []))
    with pytest.raises(SeglabError, match=r"predicted label 3 is outside \[0, 1\)"):
        ev.update(0, _result([[0, 0, 4, 4]], [3], [0.5]), _target([], []))
    with pytest.raises(SeglabError, match="no image"):
        InstanceEvaluator(["a"]).compute()
    with pytest.raises(SeglabError, match="class names"):
        format_instance_table({"mask_AP_per_class": [1.0]}, ["a", "b"])


def test_seglab_works_without_pycocotools_until_compute(tmp_path):
    code = (
        "import sys; sys.modules['pycocotools'] = None\n"  # makes `import pycocotools` fail
        "import torch, seglab, seglab.data, seglab.metrics.instance as mi\n"
        "from seglab.structures import InstanceResult\n"
        "from seglab.data.coco_masks import polygons_to_mask\n"
        "assert polygons_to_mask([[1, 1, 5, 1, 5, 4, 1, 4]], 6, 8).sum() == 12\n"
        "ev = mi.InstanceEvaluator(['a'])\n"
        "m = torch.zeros(1, 4, 4, dtype=torch.bool); m[0, 1:3, 1:3] = True\n"
        "t = {'boxes': torch.tensor([[1., 1., 3., 3.]]), 'labels': torch.tensor([0]), 'masks': m}\n"
        "ev.update(0, InstanceResult(t['boxes'], torch.tensor([0.5]), t['labels'], m), t)\n"
        f"ev.write_results_json({str(tmp_path / 'r.json')!r})\n"
        "ev.compute()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and (tmp_path / "r.json").is_file()
    assert "SeglabError: instance evaluation needs pycocotools: pip install pycocotools" in proc.stderr


def test_coco_dataset_targets_as_predictions_round_trip_to_original_ids(tmp_path):
    from PIL import Image

    from seglab.data import CocoInstances

    (tmp_path / "images").mkdir()
    for i in (1, 2):
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "images" / f"{i}.png")
    anns = [{"id": 1, "image_id": 1, "category_id": 77, "bbox": [2, 2, 12, 10], "iscrowd": 0,
             "segmentation": [[2, 2, 14, 2, 14, 12, 2, 12]]},
            {"id": 2, "image_id": 2, "category_id": 5, "bbox": [20, 5, 20, 25], "iscrowd": 0,
             "segmentation": [[20, 5, 40, 5, 40, 30, 20, 30]]},
            {"id": 3, "image_id": 2, "category_id": 77, "bbox": [5, 20, 10, 18], "iscrowd": 0,
             "segmentation": [[5, 20, 15, 20, 15, 38, 5, 38]]}]
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2)],
          "annotations": anns, "categories": [{"id": 77, "name": "x"}, {"id": 5, "name": "y"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ds = CocoInstances(tmp_path / "images", tmp_path / "gt.json")
    ev = InstanceEvaluator(coco_gt=tmp_path / "gt.json")
    assert ev.categories == ds.categories  # both number categories by increasing id
    ev = InstanceEvaluator.for_dataset(ds)
    assert ev.coco_gt is not None and ev.category_ids == [5, 77]
    for i in range(len(ds)):
        _, t = ds[i]
        ev.update(t["image_id"], InstanceResult(t["boxes"], torch.ones(len(t["labels"])), t["labels"], t["masks"]))
    results = ev.results_json()
    assert sorted((r["image_id"], r["category_id"]) for r in results) == [(1, 77), (2, 5), (2, 77)]
    res = ev.compute()
    assert res["mask_AP"] == pytest.approx(1.0) and res["box_AP"] == pytest.approx(1.0)
