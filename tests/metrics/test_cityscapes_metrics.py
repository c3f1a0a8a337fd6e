"""Cityscapes instance AP and iIoU (seglab.metrics.cityscapes) on hand-built cases, each value worked out
by hand from cityscapesScripts' rules (evalInstanceLevelSemanticLabeling / evalPixelLevelSemanticLabeling)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from seglab.errors import SeglabError
from seglab.metrics.cityscapes import (
    AVG_CLASS_SIZE,
    OVERLAPS,
    CityscapesInstanceEvaluator,
    CityscapesInstanceIoU,
    cityscapes_disparity_to_depth,
    read_instance_ids,
)
from seglab.structures import InstanceResult

CAR, PERSON = 2, 0  # seglab's CityscapesInstances label order: person, rider, car, truck, bus, train, ...
H, W = 60, 80


def _gt() -> np.ndarray:
    """Road (labelId 7) with a 20x20 car (26001) at the top left."""
    gt = np.full((H, W), 7, np.int64)
    gt[0:20, 0:20] = 26001
    return gt


def _mask(rows, cols) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[rows, cols] = True
    return m


def _result(masks, labels, scores) -> InstanceResult:
    return InstanceResult(boxes=torch.zeros(len(masks), 4), scores=torch.tensor(scores, dtype=torch.float32),
                          labels=torch.tensor(labels), masks=torch.from_numpy(np.stack(masks)))


def _same(a: dict, b: dict) -> bool:
    """Equal results, NaN included."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _evaluate(items) -> dict:
    ev = CityscapesInstanceEvaluator()
    for i, item in enumerate(items):
        ev.update(i, *item)
    return ev.compute()


def test_one_match_counts_at_the_thresholds_below_its_iou():
    # 312 of the car's 400 pixels: IoU 0.78 passes 0.50 ... 0.75 (6 of the 10 thresholds), AP 1 there
    pred = _mask(slice(0, 20), slice(0, 20))
    pred.flat[np.flatnonzero(pred)[:88]] = False  # 312 pixels left
    assert pred.sum() == 312
    r = _evaluate([(_result([pred], [CAR], [0.9]), _gt())])
    car = np.array(r["ap_matrix"][0][CAR])
    assert car.tolist() == [1.0] * 6 + [0.0] * 4
    assert r["AP_per_class"][CAR] == pytest.approx(0.6) and r["AP50_per_class"][CAR] == 1.0
    assert r["AP"] == pytest.approx(0.6) and r["AP50"] == 1.0  # the other classes have no ground truth: NaN, left out
    assert math.isnan(r["AP_per_class"][PERSON]) and not r["distance_available"] and math.isnan(r["AP100m"])


def test_duplicates_and_a_confident_false_positive_follow_the_script_s_curve():
    """A (IoU 0.88, conf 0.9) and B (IoU 0.58, conf 0.6) on the car, C (conf 0.95) on the road.
    At 0.50 / 0.55 B is a duplicate of A, above it an unmatched prediction: a false positive either way.
    Scores ascending 0.6 (FP), 0.9 (TP), 0.95 (FP): precision 1/3, 1/2, 0 at recall 1, 1, 0, plus the
    artificial (0, 1); the script's step widths (half the recall drop to each neighbour) are 0, 0.5, 0.5,
    0, so AP = 1/2 * 0.5 = 0.25 while A matches (0.50 ... 0.85), 0 at 0.90 / 0.95 (A misses)."""
    car = _mask(slice(0, 20), slice(0, 20))
    a, b = car.copy(), car.copy()
    a.flat[np.flatnonzero(a)[:48]] = False   # 352 pixels: IoU 0.88
    b.flat[np.flatnonzero(b)[:168]] = False  # 232 pixels: IoU 0.58
    c = _mask(slice(30, 50), slice(30, 50))
    r = _evaluate([(_result([a, b, c], [CAR, CAR, CAR], [0.9, 0.6, 0.95]), _gt())])
    assert np.allclose(r["ap_matrix"][0][CAR], [0.25] * 8 + [0.0] * 2)
    assert r["AP_per_class"][CAR] == pytest.approx(0.2) and r["AP50"] == pytest.approx(0.25)


def test_groups_void_and_small_objects_are_ignore_regions():
    gt = _gt()
    gt[30:50, 0:20] = 26        # a car group (labelId only): never matched, never a miss
    gt[30:50, 40:60] = 4        # 'static', ignored in evaluation: void
    gt[0:9, 40:49] = 24001      # a person of 81 pixels: under the 100-pixel minimum
    car = _mask(slice(0, 20), slice(0, 20))
    on_group = _mask(slice(30, 50), slice(0, 20))
    on_void = _mask(slice(30, 50), slice(40, 60))
    # 60 % void: ignored while 0.6 > threshold (0.50, 0.55), a false positive from 0.60 on
    partly_void = _mask(slice(30, 50), slice(48, 68))
    assert (partly_void & on_void).sum() / partly_void.sum() == pytest.approx(0.6)
    small_person = _mask(slice(0, 9), slice(40, 49))
    r = _evaluate([(_result([car, on_group, on_void, small_person], [CAR, CAR, CAR, PERSON],
                            [0.5, 0.9, 0.9, 0.9]), gt)])
    assert r["ap_matrix"][0][CAR] == [1.0] * 10  # the confident predictions on group / void cost nothing
    assert all(math.isnan(v) for v in r["ap_matrix"][0][PERSON])  # no person counts, and no false positive
    r = _evaluate([(_result([car, partly_void], [CAR, CAR], [0.5, 0.9]), gt)])
    # from 0.60 on: FP 0.9 above TP 0.5 -> precision 1/2, 0 at recall 1, 0 -> widths 0.5, 0.5, 0 -> AP 0.25
    assert np.allclose(r["ap_matrix"][0][CAR], [1.0, 1.0] + [0.25] * 8)


def test_distance_limited_ap_uses_median_depth_and_stereo_density():
    gt = np.full((H, W), 7, np.int64)
    gt[0:40, 0:30] = 26001   # 1200 pixels at 30 m
    gt[0:40, 40:70] = 26002  # 1200 pixels at 80 m
    gt[45:60, 0:80] = 26003  # 1200 pixels, depth on only 40 % of them
    depth = np.full((H, W), 20.0)
    depth[0:40, 0:30] = 30.0
    depth[0:40, 40:70] = 80.0
    depth[45:60, 0:80] = 0.0
    depth[45:51, 0:80] = 10.0
    near = gt == 26001
    far = gt == 26002
    sparse = gt == 26003
    # the near and the sparse cars are found, the far one is missed
    r = _evaluate([(_result([near, sparse], [CAR, CAR], [0.9, 0.8]), gt, depth)])
    assert r["distance_available"]
    # all distances: 2 of 3 found, both above the miss: precision 1, 1 at recall 2/3, 1/3 -> AP 2/3
    assert r["AP"] == pytest.approx(2 / 3)
    # 100 m: the sparse car (40 % < 50 % measured) is left out and its prediction ignored; near found,
    # far missed -> AP 1/2; 50 m: the far car is left out as well -> AP 1
    assert r["AP100m"] == pytest.approx(0.5) and r["AP50m"] == pytest.approx(1.0)
    assert r["AP100m_per_class"][CAR] == pytest.approx(0.5)
    # the 1000-pixel minimum of the distance-limited APs
    small = np.full((H, W), 7, np.int64)
    small[0:20, 0:30] = 26001  # 600 pixels at 30 m: counted with the 100-pixel minimum, not with 1000
    r = _evaluate([(_result([small == 26001], [CAR], [0.9]), small, depth)])
    assert r["AP"] == 1.0 and math.isnan(r["AP100m"]) and math.isnan(r["AP50m"])


def test_disparity_to_depth():
    disparity = np.array([[0, 1, 257, 2561]], np.uint16)  # invalid, zero, 1 px, 10 px
    depth = cityscapes_disparity_to_depth(disparity, baseline=0.2, fx=2000.0)
    assert depth.tolist() == [[0.0, 0.0, 400.0, 40.0]]


def test_merge_equals_one_evaluator_and_bad_input_errors():
    gt = _gt()
    pred = _mask(slice(0, 20), slice(0, 18))
    other = _mask(slice(30, 40), slice(30, 40))
    items = [(_result([pred], [CAR], [0.9]), gt), (_result([other], [CAR], [0.8]), gt)]
    whole = _evaluate(items)
    first, second = CityscapesInstanceEvaluator(), CityscapesInstanceEvaluator()
    first.update(0, *items[0])
    second.update(1, *items[1])
    assert _same(first.merge(second).compute(), whole)
    with pytest.raises(SeglabError, match="already"):
        first.update(0, *items[0])
    with pytest.raises(SeglabError, match="80x60"):
        CityscapesInstanceEvaluator().update(0, _result([pred[:40]], [CAR], [0.9]), gt)
    with pytest.raises(SeglabError, match="label 8"):
        CityscapesInstanceEvaluator().update(0, _result([pred], [8], [0.9]), gt)
    assert "car" in first.format_table() and "depth" in first.format_table()


# ------------------------------------------------------------------------------------------------ iIoU
def _iiou_case():
    gt = np.zeros((1, 100), np.int64)
    gt[0, 0:10], gt[0, 10:40], gt[0, 40:60], gt[0, 60:70], gt[0, 70:100] = 26001, 26002, 24001, 0, 7
    pred = np.zeros((1, 100), np.int64)  # trainIds: 0 road, 11 person, 13 car, 14 truck
    pred[0, 0:8] = 13      # 8 of car 1's 10 pixels
    pred[0, 10:25] = 13    # 15 of car 2's 30 pixels
    pred[0, 25:28] = 14    # 3 pixels of car 2 called truck: car misses them, the vehicle category has them
    pred[0, 40:58] = 11    # 18 of the person's 20 pixels
    pred[0, 58:60] = 13    # car on the person: car / vehicle false positives
    pred[0, 60:63] = 13    # car on void (unlabeled): not counted
    pred[0, 70:75] = 13    # car on the road: false positives
    return pred, gt


def test_iiou_weights_each_instance_by_average_class_size_over_its_size():
    pred, gt = _iiou_case()
    metric = CityscapesInstanceIoU()
    metric.update(pred, gt)
    r = metric.compute()
    a, p = AVG_CLASS_SIZE["car"], AVG_CLASS_SIZE["person"]
    # car: iTP = a (8/10 + 15/30) = 1.3a, iFN = a (2/10 + 15/30) = 0.7a, FP = 2 + 5 (void not counted)
    assert r["iIoU_per_class"]["car"] == pytest.approx(1.3 * a / (2 * a + 7))
    assert r["iIoU_per_class"]["truck"] == 0.0  # no truck instance, 3 false-positive pixels
    assert r["iIoU_per_class"]["person"] == pytest.approx(0.9)  # 18/20 weighted, no false positive
    assert math.isnan(r["iIoU_per_class"]["bus"])
    assert r["iIoU"] == pytest.approx((1.3 * a / (2 * a + 7) + 0.9) / 3)
    # vehicle: car 1 8/10, car 2 (15 + 3)/30 inside the category, each at the car weight; FP 2 + 5
    assert r["iIoU_per_category"]["vehicle"] == pytest.approx(1.4 * a / (2 * a + 7))
    assert r["iIoU_per_category"]["human"] == pytest.approx(0.9 * p / p)
    # the plain IoU would be 23 / (40 + 7): iIoU weighs the small car as much as the large one
    assert r["iIoU_per_class"]["car"] > 23 / 47 + 0.1


def test_iiou_merge_and_batches():
    pred, gt = _iiou_case()
    one = CityscapesInstanceIoU()
    one.update(np.stack([pred, pred]), np.stack([gt, gt]))
    a, b = CityscapesInstanceIoU(), CityscapesInstanceIoU()
    a.update(pred, gt)
    b.update(torch.from_numpy(pred), torch.from_numpy(gt))
    assert _same(a.merge(b).compute(), one.compute())
    with pytest.raises(SeglabError, match="prediction"):
        CityscapesInstanceIoU().update(pred[:, :50], gt)


def test_overlap_thresholds_are_the_script_s():
    assert len(OVERLAPS) == 10 and OVERLAPS[0] == 0.5 and OVERLAPS[-1] == pytest.approx(0.95)


def test_read_instance_ids_from_the_label_ids_path(tmp_path):
    from PIL import Image

    ids = np.array([[7, 26001], [24002, 0]], np.uint16)  # a 16-bit PNG as released
    Image.fromarray(ids).save(tmp_path / "a_000000_000019_gtFine_instanceIds.png")
    got = read_instance_ids(tmp_path / "a_000000_000019_gtFine_labelIds.png")
    assert got.tolist() == ids.tolist()
    with pytest.raises(SeglabError, match="b_gtFine_instanceIds.png"):
        read_instance_ids(tmp_path / "b_gtFine_labelIds.png")
