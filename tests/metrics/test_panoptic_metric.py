"""PQ / SQ / RQ against numbers computed by hand, on predictions built from the two real COCO panoptic
images of ../shared/data/coco-panoptic-sample and on tiny hand-made maps.

Sample contents (hand-counted from panoptic_examples.json): image 142238 has 13 persons + 1 person crowd,
1 sports ball, stuff tree / sky / grass; image 439180 has 13 persons + 1 person crowd, 2 trucks, 11 horses +
1 horse crowd, stuff gravel / tree / sky / grass. Categories present: 4 things (1 person, 8 truck, 19
horse, 37 sports ball) and 4 stuff (125, 184, 187, 193); 26 non-crowd persons in all.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seglab.data.panoptic import (
    load_panoptic_json,
    read_panoptic,
    save_panoptic_json,
    write_panoptic_png,
)
from seglab.errors import DataError
from seglab.metrics.panoptic import PanopticEvaluator, format_panoptic_table, pq_compute
from seglab.structures import PanopticResult

GT_JSON = "panoptic_examples.json"
GT_DIR = "panoptic_examples"


@pytest.fixture
def sample(shared_dir):
    root = shared_dir / "data" / "coco-panoptic-sample"
    if not (root / GT_JSON).is_file():
        pytest.skip(f"COCO panoptic sample not found at {root}")
    return root


def _evaluate(sample, tmp_path, edit=None):
    """Write the ground truth, changed by `edit(image_id, ids, infos) -> (ids, infos)`, as a prediction
    (tmp_path/pred.json + tmp_path/pred/*.png, the reference's default folder) and evaluate it."""
    data = load_panoptic_json(sample / GT_JSON)
    annotations = []
    for ann in data["annotations"]:
        ids, infos = read_panoptic(sample / GT_DIR, ann)
        if edit is not None:
            ids, infos = edit(ann["image_id"], ids.copy(), infos)
        write_panoptic_png(tmp_path / "pred" / ann["file_name"], ids)
        annotations.append({"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": infos})
    save_panoptic_json(tmp_path / "pred.json", {"annotations": annotations, "categories": data["categories"]})
    return pq_compute(sample / GT_JSON, tmp_path / "pred.json", sample / GT_DIR)


def _only(image, fn):
    return lambda image_id, ids, infos: fn(ids, infos) if image_id == image else (ids, infos)


def test_ground_truth_against_itself_is_perfect(sample, tmp_path):
    r = _evaluate(sample, tmp_path)
    assert (r["All"]["n"], r["Things"]["n"], r["Stuff"]["n"]) == (8, 4, 4)
    assert sorted(r["per_class"]) == [1, 8, 19, 37, 125, 184, 187, 193]
    for group in ("All", "Things", "Stuff"):
        assert r[group]["pq"] == r[group]["sq"] == r[group]["rq"] == 1.0
    assert all(v == {"pq": 1.0, "sq": 1.0, "rq": 1.0} for v in r["per_class"].values())


def _drop(segment_id):
    def edit(ids, infos):
        ids[ids == segment_id] = 0
        return ids, [s for s in infos if s["id"] != segment_id]
    return edit


def test_dropped_thing_is_one_false_negative(sample, tmp_path):
    # person 3997935 (153 px) of image 142238 left out: person TP 25, FN 1, FP 0, every IoU 1:
    #   PQ = 25 / (25 + 0.5) = 50/51 = 0.98039, SQ = 1, RQ = 50/51
    #   All PQ = (7 + 50/51) / 8 = 0.99755, Things PQ = (3 + 50/51) / 4 = 0.99510, Stuff unchanged
    r = _evaluate(sample, tmp_path, _only(142238, _drop(3997935)))
    assert r["per_class"][1] == pytest.approx({"pq": 50 / 51, "sq": 1.0, "rq": 50 / 51}, abs=1e-12)
    assert r["All"]["pq"] == pytest.approx((7 + 50 / 51) / 8, abs=1e-12)
    assert r["Things"]["pq"] == pytest.approx((3 + 50 / 51) / 4, abs=1e-12)
    assert r["Stuff"]["pq"] == 1.0 and r["All"]["n"] == 8


def test_merged_segments_match_the_larger_one(sample, tmp_path):
    # persons 5777861 (496 px) and 5768384 (538 px) of image 439180 predicted as one segment that keeps
    # the smaller one's id: its IoU with 5777861 is 496/1034 < 0.5, with 5768384 538/1034 = 0.5203 > 0.5,
    # so it matches the larger and the smaller is a FN: person TP 25 (sum IoU 24 + 538/1034), FN 1.
    def merge(ids, infos):
        ids[ids == 5768384] = 5777861
        return ids, [s for s in infos if s["id"] != 5768384]

    r = _evaluate(sample, tmp_path, _only(439180, merge))
    iou_sum = 24 + 538 / 1034
    assert r["per_class"][1] == pytest.approx({"pq": iou_sum / 25.5, "sq": iou_sum / 25, "rq": 25 / 25.5}, abs=1e-12)


@pytest.mark.parametrize("removed, matched", [(247, True), (248, False)])
def test_iou_threshold_is_strictly_above_half(sample, tmp_path, removed, matched):
    # person 5777861 (496 px) of image 439180 loses its first `removed` pixels to VOID: IoU = (496 - k)/496;
    # k = 247: 249/496 = 0.502 -> TP; k = 248: exactly 0.5 -> no match: one FN and one FP (its 248 pixels
    # lie on the person, not on VOID or crowd).
    def shrink(ids, infos):
        ys, xs = np.nonzero(ids == 5777861)
        ids[ys[:removed], xs[:removed]] = 0
        return ids, infos

    r = _evaluate(sample, tmp_path, _only(439180, shrink))
    if matched:
        assert r["per_class"][1] == pytest.approx({"pq": (25 + 249 / 496) / 26, "sq": (25 + 249 / 496) / 26,
                                                   "rq": 1.0}, abs=1e-12)
    else:
        assert r["per_class"][1] == pytest.approx({"pq": 25 / 26, "sq": 1.0, "rq": 25 / 26}, abs=1e-12)


def test_prediction_on_void_is_not_a_false_positive(sample, tmp_path):
    # a bicycle (category 2, absent from the ground truth) predicted on 100 VOID pixels of image 142238 is
    # ignored; were it a FP, bicycle would count (n = 9) with PQ 0.
    def add_on_void(ids, infos):
        ys, xs = np.nonzero(ids == 0)
        ids[ys[:100], xs[:100]] = 77
        return ids, infos + [{"id": 77, "category_id": 2, "iscrowd": 0}]

    r = _evaluate(sample, tmp_path, _only(142238, add_on_void))
    assert r["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 8} and 2 not in r["per_class"]


def test_crowd_regions_count_per_category(sample, tmp_path):
    # the person crowd 3153362 (24295 px) of image 142238, predicted as two person segments: both lie on
    # the person crowd -> ignored. Predicted as a bicycle: the crowd is not of its category -> one bicycle
    # FP: bicycle PQ 0, n 9 (Things 5), All PQ = 8/9, Things PQ = 4/5.
    def split_crowd(ids, infos):
        ys, xs = np.nonzero(ids == 3153362)
        ids[ys[: len(ys) // 2], xs[: len(xs) // 2]] = 78
        return ids, infos + [{"id": 78, "category_id": 1, "iscrowd": 0}]

    assert _evaluate(sample, tmp_path, _only(142238, split_crowd))["All"]["pq"] == 1.0

    def crowd_as_bicycle(ids, infos):
        return ids, [dict(s, category_id=2) if s["id"] == 3153362 else s for s in infos]

    r = _evaluate(sample, tmp_path, _only(142238, crowd_as_bicycle))
    assert r["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert (r["All"]["n"], r["Things"]["n"], r["Stuff"]["n"]) == (9, 5, 4)
    assert r["All"]["pq"] == pytest.approx(8 / 9) and r["Things"]["pq"] == pytest.approx(4 / 5)


CATS = [{"id": 1, "name": "bar", "isthing": 1}, {"id": 10, "name": "floor", "isthing": 0}]


def _bar_maps(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """4 x 40 maps: floor (id 1) with a 10-column bar (id 2) at columns 2..11; the prediction's bar
    starts `shift` columns further right."""
    gt = np.ones((4, 40), np.int64)
    gt[:, 2:12] = 2
    pred = np.ones((4, 40), np.int64)
    pred[:, 2 + shift:12 + shift] = 2
    return gt, pred


INFOS = [{"id": 1, "category_id": 10, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0}]


@pytest.mark.parametrize("shift, bar_iou", [(3, 7 / 13), (4, None)])
def test_shifted_mask_iou_threshold(shift, bar_iou):
    # bar IoU = (10 - s) / (10 + s): s = 3 -> 7/13 = 0.538 (TP), s = 4 -> 6/14 = 0.43 (FN + FP);
    # floor IoU = (30 - s) / (30 + s) either way.
    ev = PanopticEvaluator(CATS)
    gt, pred = _bar_maps(shift)
    ev.update(gt, INFOS, pred, INFOS, image_id="bars")
    r = ev.compute()
    assert r["per_class"][10]["pq"] == pytest.approx((30 - shift) / (30 + shift))
    expected = {"pq": bar_iou, "sq": bar_iou, "rq": 1.0} if bar_iou else {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert r["per_class"][1] == pytest.approx(expected)


@pytest.mark.parametrize("void_pixels, false_positive", [(4, True), (5, False)])
def test_void_share_must_exceed_half(void_pixels, false_positive):
    # a predicted bar segment of 8 pixels with `void_pixels` of them on gt VOID: ignored only when the
    # VOID share is > 0.5 (4/8 is a FP, 5/8 is not).
    gt = np.ones((2, 8), np.int64)
    gt[0, :void_pixels] = 0
    pred = np.ones((2, 8), np.int64)
    pred[0] = 2
    ev = PanopticEvaluator(CATS)
    ev.update(gt, INFOS[:1], pred, INFOS)
    assert (1 in ev.compute()["per_class"]) == false_positive


def test_void_pixels_are_left_out_of_iou():
    # the predicted bar covers the 8-pixel gt bar and the 8 VOID pixels beside it: IoU = 8 / (16 + 8 - 8
    # - 8) = 1 (counting VOID it would be 8/16, no match).
    gt = np.ones((2, 16), np.int64)
    gt[0, :8], gt[1, :8] = 2, 0
    pred = np.ones((2, 16), np.int64)
    pred[:, :8] = 2
    ev = PanopticEvaluator(CATS)
    ev.update(gt, INFOS, pred, INFOS)
    assert ev.compute()["per_class"][1] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}


def test_update_result_maps_contiguous_classes():
    # models put contiguous class indices (stuff first: floor 0, bar 1) in category_id
    gt, pred = _bar_maps(3)
    result = PanopticResult(torch.from_numpy(pred), [{"id": 1, "category_id": 0, "isthing": False},
                                                     {"id": 2, "category_id": 1, "isthing": True}])
    ev = PanopticEvaluator(CATS)
    ev.update_result(result, {"panoptic": torch.from_numpy(gt), "segments_info": INFOS, "image_id": 3},
                     class_to_category=[10, 1])
    assert ev.compute()["per_class"][1]["pq"] == pytest.approx(7 / 13)
    with pytest.raises(DataError, match="image 3: segment id 1 has unknown category_id 0"):
        PanopticEvaluator(CATS).update_result(result, {"panoptic": gt, "segments_info": INFOS, "image_id": 3})


def test_merge_equals_one_evaluator():
    parts = [PanopticEvaluator(CATS) for _ in range(3)]
    for shift, ev in zip((1, 4), parts[:2]):
        gt, pred = _bar_maps(shift)
        ev.update(gt, INFOS, pred, INFOS)
        parts[2].update(gt, INFOS, pred, INFOS)
    assert parts[0].merge(parts[1]).compute() == parts[2].compute()


def test_bad_prediction_files_name_image_and_segment(sample, tmp_path):
    cases = [
        (lambda ids, infos: (ids, infos[1:]), "image 142238: segment id 3937500 is in the PNG but not in segments_info"),
        (lambda ids, infos: (ids, infos + [{"id": 999, "category_id": 1}]),
         "image 142238: segment ids [999] are in segments_info but not in the PNG"),
        (lambda ids, infos: (ids, [dict(infos[0], category_id=4242)] + infos[1:]),
         "image 142238: segment id 3937500 has unknown category_id 4242"),
        (lambda ids, infos: (ids[:, :-1], infos), "image 142238: prediction is 639x427 but the ground truth is 640x427"),
    ]
    for edit, message in cases:
        with pytest.raises(DataError) as err:
            _evaluate(sample, tmp_path, _only(142238, edit))
        assert str(err.value) == message


def test_missing_prediction_and_table(sample, tmp_path):
    r = _evaluate(sample, tmp_path)
    pred = json.loads((tmp_path / "pred.json").read_text())
    pred["annotations"] = pred["annotations"][:1]
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    with pytest.raises(DataError, match="no prediction for the image with id 439180"):
        pq_compute(sample / GT_JSON, tmp_path / "pred.json")
    table = format_panoptic_table(r, load_panoptic_json(sample / GT_JSON)["categories"]).splitlines()
    assert table[2].split() == ["All", "|", "100.0", "100.0", "100.0", "8"]
    assert table[4].split() == ["Stuff", "|", "100.0", "100.0", "100.0", "4"]
    assert any(line.split()[:2] == ["person", "|"] for line in table)
