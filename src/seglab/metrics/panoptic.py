"""Panoptic quality: PQ, SQ and RQ overall, for things, for stuff and per class.

Kirillov, He, Girshick, Rother, Dollar, "Panoptic Segmentation", CVPR 2019, Sec. 4, computed with the rules
of the reference COCO panoptic evaluation (cocodataset/panopticapi, `evaluation.py`), so the numbers can be
compared with published COCO / Cityscapes results:
- per image, one `np.unique` over gt_id * 256^3 + pred_id gives every intersection;
- a ground-truth and a predicted segment of the same category match when IoU > 0.5 (matches are then
  unique, the paper's Theorem 1); the IoU leaves out the predicted segment's pixels on VOID ground truth:
  union = |pred| + |gt| - |pred & gt| - |pred & VOID|;
- ground-truth crowd segments (iscrowd 1) are never matched and never false negatives;
- an unmatched predicted segment is not a false positive when more than half of its area lies on VOID
  plus the crowd region of its own category (the reference keeps one crowd segment per category: the
  last one listed);
- ground-truth areas are the JSON's `area` (as the reference reads them; the pixel count where a record
  has none), predicted areas are counted in the PNG;
- per category: PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP (0 without TP), RQ = TP / (TP + FP/2
  + FN/2); All / Things / Stuff average them over the categories with TP + FP + FN > 0 (their count is n).
Prediction files are checked as the reference checks them, with one-line `DataError`s.

Deviations from the reference: `per_class` lists only the categories with TP + FP + FN > 0 (the reference
adds zeros for the others, which look like failures); a group without such categories gives NaN with n = 0
(the reference divides by zero); a segment id listed twice in a prediction raises (the reference keeps the
last record). Images are evaluated in one process (the reference forks one per core).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.panoptic import (
    OFFSET,
    VOID,
    check_segments,
    load_panoptic_json,
    read_panoptic_png,
    to_category_ids,
)
from ..errors import DataError, SeglabError
from ..structures import PanopticResult

GROUPS = (("All", None), ("Things", True), ("Stuff", False))


def _id_map(x, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise SeglabError(f"{what} must be an (H, W) integer segment id map, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


def _lookup(sorted_ids: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of `query` values in `sorted_ids` and whether each is there."""
    if sorted_ids.size == 0:
        return np.zeros(query.shape, np.int64), np.zeros(query.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_ids, query), sorted_ids.size - 1)
    return pos, sorted_ids[pos] == query


class PanopticEvaluator:
    """Streaming PQ: `update(gt_ids, gt_segments_info, pred_ids, pred_segments_info)` per image, `merge` /
    `all_reduce` across workers, `compute()` once. `categories` are COCO panoptic categories (dicts with
    id and isthing; e.g. the ground-truth JSON's); segment records use those category ids."""

    def __init__(self, categories: Sequence[dict]):
        try:
            self.categories = {int(c["id"]): {"name": str(c.get("name", c["id"])), "isthing": int(c["isthing"])}
                               for c in categories}
        except (KeyError, TypeError, ValueError) as e:
            raise SeglabError(f"categories must be dicts with 'id' and 'isthing' ({type(e).__name__}: {e})") from e
        if not self.categories:
            raise SeglabError("PanopticEvaluator needs at least one category")
        self.reset()

    def reset(self) -> None:
        self.stats: dict[int, list[float]] = {}  # category id -> [sum of matched IoUs, TP, FP, FN]
        self.num_images = 0

    def _add(self, category_ids: np.ndarray, column: int, values: np.ndarray | None = None) -> None:
        cats, inverse = np.unique(category_ids, return_inverse=True)
        sums = np.bincount(inverse, weights=values, minlength=len(cats)) if len(cats) else []
        for cat, value in zip(cats.tolist(), sums):
            self.stats.setdefault(cat, [0.0, 0, 0, 0])[column] += float(value) if column == 0 else int(value)

    def update(self, gt_ids, gt_segments_info: Sequence[dict], pred_ids, pred_segments_info: Sequence[dict],
               *, image_id: Any = None) -> None:
        """Add one image: ground-truth and predicted (H, W) segment id maps with their segments_info."""
        where = f"image {image_id}" if image_id is not None else f"image #{self.num_images}"
        gt, pred = _id_map(gt_ids, f"{where}: ground truth"), _id_map(pred_ids, f"{where}: prediction")
        if gt.shape != pred.shape:
            raise DataError(f"{where}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                            f"{gt.shape[1]}x{gt.shape[0]}")
        pred_area = check_segments(pred, list(pred_segments_info), where, self.categories)
        pred_records = {int(s["id"]): s for s in pred_segments_info}
        p_ids = np.array(sorted(pred_area), np.int64)
        p_cat = np.array([int(pred_records[i]["category_id"]) for i in p_ids.tolist()], np.int64)
        p_area = np.array([pred_area[i] for i in p_ids.tolist()], np.int64)

        gt_records = {int(s["id"]): s for s in gt_segments_info}
        if any("area" not in s for s in gt_records.values()):
            values, counts = np.unique(gt, return_counts=True)
            pixels = dict(zip(values.tolist(), counts.tolist()))
        g_ids = np.array(sorted(gt_records), np.int64)
        g_rec = [gt_records[i] for i in g_ids.tolist()]
        g_cat = np.array([int(s["category_id"]) for s in g_rec], np.int64)
        g_crowd = np.array([int(s.get("iscrowd", 0)) == 1 for s in g_rec], bool)
        g_area = np.array([s["area"] if "area" in s else pixels.get(int(s["id"]), 0) for s in g_rec], np.int64)

        pairs, inter = np.unique(gt * OFFSET + pred, return_counts=True)
        pair_gt, pair_pred = pairs // OFFSET, pairs % OFFSET
        gi, g_ok = _lookup(g_ids, pair_gt)
        pi, p_ok = _lookup(p_ids, pair_pred)
        on_void = np.zeros(len(p_ids), np.int64)  # |pred & VOID| per predicted segment
        sel = (pair_gt == VOID) & p_ok
        on_void[pi[sel]] = inter[sel]

        cand = g_ok & p_ok
        cand[cand] = ~g_crowd[gi[cand]] & (g_cat[gi[cand]] == p_cat[pi[cand]])
        union = p_area[pi[cand]] + g_area[gi[cand]] - inter[cand] - on_void[pi[cand]]
        iou = inter[cand] / union
        matched = iou > 0.5
        m_gt, m_pred = gi[cand][matched], pi[cand][matched]
        self._add(g_cat[m_gt], 0, iou[matched])
        self._add(g_cat[m_gt], 1)

        unmatched_gt = np.ones(len(g_ids), bool)
        unmatched_gt[m_gt] = False
        self._add(g_cat[unmatched_gt & ~g_crowd], 3)

        crowd_of = {}  # category -> its crowd segment id, the last one in segments_info order
        for s in gt_segments_info:
            if int(s.get("iscrowd", 0)) == 1:
                crowd_of[int(s["category_id"])] = int(s["id"])
        crowd_ids = set(crowd_of.values())
        pair_inter = {(g, p): n for g, p, n in zip(pair_gt.tolist(), pair_pred.tolist(), inter.tolist())
                      if g in crowd_ids}
        unmatched_pred = np.ones(len(p_ids), bool)
        unmatched_pred[m_pred] = False
        false_pos = []
        for j in np.flatnonzero(unmatched_pred).tolist():
            ignored = int(on_void[j])
            cat = int(p_cat[j])
            if cat in crowd_of:
                ignored += pair_inter.get((crowd_of[cat], int(p_ids[j])), 0)
            if not ignored / p_area[j] > 0.5:
                false_pos.append(cat)
        self._add(np.array(false_pos, np.int64), 2)
        self.num_images += 1

    def update_result(self, result: PanopticResult, target: dict, *, class_to_category: Sequence[int] | None = None,
                      image_id: Any = None) -> None:
        """`update` from a model's PanopticResult and a panoptic data set's target ("panoptic" ids and
        "segments_info"). The models put contiguous class indices in category_id: pass
        `class_to_category=dataset.category_ids` to map them (without it they must be category ids)."""
        infos = result.segments_info
        if class_to_category is not None:
            infos = to_category_ids(infos, class_to_category)
        image_id = target.get("image_id") if image_id is None else image_id
        self.update(target["panoptic"], target["segments_info"], result.segments, infos, image_id=image_id)

    def merge(self, other: PanopticEvaluator) -> PanopticEvaluator:
        """Add another evaluator's counts (e.g. another worker's); returns self."""
        if not isinstance(other, PanopticEvaluator) or other.categories != self.categories:
            raise SeglabError("can only merge a PanopticEvaluator with the same categories")
        self._merge_state(other.state())
        return self

    def state(self) -> dict:
        return {"stats": {c: list(v) for c, v in self.stats.items()}, "num_images": self.num_images}

    def _merge_state(self, state: dict) -> None:
        for cat, values in state["stats"].items():
            mine = self.stats.setdefault(int(cat), [0.0, 0, 0, 0])
            for k in range(4):
                mine[k] += values[k]
        self.num_images += int(state["num_images"])

    def all_reduce(self) -> PanopticEvaluator:
        """Add every torch.distributed rank's counts into this one (no-op when not initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, self.state())
            for rank, state in enumerate(states):
                if rank != dist.get_rank():
                    self._merge_state(state)
        return self

    def compute(self) -> dict:
        """{"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category id: {"pq", "sq",
        "rq"}}} as fractions (see the module docstring)."""
        if not self.num_images:
            raise SeglabError("PanopticEvaluator.compute: no image was added")
        per_class = {}
        for cat in sorted(self.categories):
            iou, tp, fp, fn = self.stats.get(cat, [0.0, 0, 0, 0])
            if tp + fp + fn == 0:
                continue
            per_class[cat] = {"pq": iou / (tp + 0.5 * fp + 0.5 * fn), "sq": iou / tp if tp else 0.0,
                              "rq": tp / (tp + 0.5 * fp + 0.5 * fn)}
        results: dict[str, Any] = {}
        for name, isthing in GROUPS:
            cats = [c for c in per_class if isthing is None or bool(self.categories[c]["isthing"]) == isthing]
            n = len(cats)
            results[name] = {k: sum(per_class[c][k] for c in cats) / n if n else math.nan
                             for k in ("pq", "sq", "rq")}
            results[name]["n"] = n
        results["per_class"] = per_class
        return results

    def format_table(self, results: dict | None = None) -> str:
        categories = [{"id": c, **info} for c, info in self.categories.items()]
        return format_panoptic_table(self.compute() if results is None else results, categories)

    def __repr__(self) -> str:
        return f"PanopticEvaluator({len(self.categories)} categories, {self.num_images} images)"


def _annotations_json(data, what: str, *, categories: bool = True) -> tuple[dict, Path | None]:
    if isinstance(data, (str, os.PathLike)):
        return load_panoptic_json(data, categories=categories), Path(data)
    if not isinstance(data, dict) or "annotations" not in data:
        raise SeglabError(f"{what} must be a COCO panoptic JSON path or its dict")
    return data, None


def _folder(folder, json_path: Path | None, what: str) -> Path:
    if folder is None:  # the reference's default: the JSON's path without ".json"
        if json_path is None:
            raise SeglabError(f"give {what} when the JSON is passed as a dict")
        folder = str(json_path).replace(".json", "")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} with the panoptic PNGs not found")
    return folder


def pq_compute(gt_json, pred_json, gt_folder: str | os.PathLike | None = None,
               pred_folder: str | os.PathLike | None = None) -> dict:
    """PQ of predicted COCO panoptic files against ground-truth ones, as panopticapi's `pq_compute`
    takes them: JSON paths (or their dicts) and the PNG folders (default: each JSON's path without
    ".json"). Categories come from the ground-truth JSON; every ground-truth image needs a prediction.
    Returns `PanopticEvaluator.compute()`'s dict."""
    gt_data, gt_path = _annotations_json(gt_json, "gt_json")
    pred_data, pred_path = _annotations_json(pred_json, "pred_json", categories=False)  # the gt's are used
    gt_dir = _folder(gt_folder, gt_path, "gt_folder")
    pred_dir = _folder(pred_folder, pred_path, "pred_folder")
    predictions = {ann["image_id"]: ann for ann in pred_data["annotations"]}
    evaluator = PanopticEvaluator(gt_data["categories"])
    for gt_ann in gt_data["annotations"]:
        image_id = gt_ann["image_id"]
        if image_id not in predictions:
            raise DataError(f"{pred_path or 'pred_json'}: no prediction for the image with id {image_id}")
        pred_ann = predictions[image_id]
        gt_ids = read_panoptic_png(gt_dir / gt_ann["file_name"])
        check_segments(gt_ids, gt_ann["segments_info"], f"{gt_dir / gt_ann['file_name']} (ground truth)",
                       evaluator.categories)
        evaluator.update(gt_ids, gt_ann["segments_info"],
                         read_panoptic_png(pred_dir / pred_ann["file_name"]), pred_ann["segments_info"],
                         image_id=image_id)
    return evaluator.compute()


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def format_panoptic_table(results: dict, categories: Sequence[dict]) -> str:
    """The reference's summary (All / Things / Stuff: PQ SQ RQ in percent and n), then one row per
    evaluated class (name, thing / stuff, PQ SQ RQ) in category id order."""
    if not all(k in results for k in ("All", "Things", "Stuff", "per_class")):
        raise SeglabError("results must hold All, Things, Stuff and per_class (PanopticEvaluator.compute)")
    info = {int(c["id"]): c for c in categories}
    names = {c: str(info.get(c, {}).get("name", c)) for c in results["per_class"]}
    width = max([10] + [len(n) for n in names.values()])
    lines = [f"{'':{width}s} | {'PQ':>6} {'SQ':>6} {'RQ':>6} {'N':>5}", "-" * (width + 30)]
    for name, _ in GROUPS:
        r = results[name]
        lines.append(f"{name:{width}s} | {_pct(r['pq']):>6} {_pct(r['sq']):>6} {_pct(r['rq']):>6} {r['n']:>5d}")
    lines += ["", f"{'class':{width}s} | {'PQ':>6} {'SQ':>6} {'RQ':>6}  kind"]
    for cat in sorted(results["per_class"], key=int):
        r = results["per_class"][cat]
        kind = "thing" if int(info.get(int(cat), {}).get("isthing", 0)) else "stuff"
        lines.append(f"{names[cat]:{width}s} | {_pct(r['pq']):>6} {_pct(r['sq']):>6} {_pct(r['rq']):>6}  {kind}")
    return "\n".join(lines)
