"""Instance segmentation metrics: COCO mask and box AP through pycocotools' COCOeval, the Cityscapes-
style per-class table, and COCO result files.

The numbers are COCOeval's own (Lin et al., "Microsoft COCO", ECCV 2014; the detection evaluation of
cocodataset.org): AP is precision interpolated at 101 recall points, averaged over the IoU thresholds
0.50:0.05:0.95 and the categories, at most 100 detections per image; AP50 / AP75 at one threshold;
APs / APm / APl for objects of area < 32^2, 32^2..96^2, > 96^2 pixels. Crowd regions (`iscrowd`) are
matched but neither counted as misses nor let their matches count as false positives. The per-class
table follows the Cityscapes instance benchmark's columns (Cordts et al., CVPR 2016: AP over IoU 0.5:0.95
and AP50 per class), each computed from COCOeval's per-category precision array, not from Cityscapes'
own matching (which also ignores predictions on void pixels and uses its own recall sampling).

Ground truth is either a COCO instances JSON (`coco_gt`: the reference numbers, areas and crowds as
annotated) or built from the targets passed to `update` (mask area = pixel count, box = the target's
box). Prediction masks are stored as compressed RLE, so memory grows with the outline, not the area.
pycocotools is needed by `compute()` and by `coco_gt`; with `categories`, `update` and
`write_results_json` work without it.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.coco_masks import mask_to_rle
from ..errors import SeglabError
from ..structures import InstanceResult
from ..utils.io import read_json, write_text_atomic

IOU_TYPES = {"segm": "mask", "bbox": "box"}
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]


def _require_pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise SeglabError("instance evaluation needs pycocotools: pip install pycocotools "
                          "(or pip install 'seglab[instance]')") from e
    return COCO, COCOeval


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _xyxy_to_xywh(boxes: np.ndarray) -> list[list[float]]:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()


def _binary_masks(masks, what: str) -> np.ndarray:
    masks = _numpy(masks)
    if masks.ndim != 3:
        raise SeglabError(f"{what} masks must be (K, H, W), got shape {masks.shape}")
    if np.issubdtype(masks.dtype, np.floating):
        raise SeglabError(f"{what} masks must be bool (threshold soft masks first), got {masks.dtype}")
    return masks.astype(bool)


def instance_results_to_coco(image_id: int, result: InstanceResult, category_ids: Sequence[int]) -> list[dict]:
    """COCO result entries of one image: image_id, category_id (`category_ids[label]`), segmentation
    (compressed RLE, counts str), score, bbox [x, y, w, h]."""
    labels = _numpy(result.labels).astype(np.int64).reshape(-1)
    scores = _numpy(result.scores).astype(np.float64).reshape(-1)
    masks = _binary_masks(result.masks, "predicted")
    boxes = _xyxy_to_xywh(_numpy(result.boxes))
    if not len(labels) == len(scores) == len(masks) == len(boxes):
        raise SeglabError(f"image {image_id}: result holds {len(boxes)} boxes, {len(scores)} scores, "
                          f"{len(labels)} labels and {len(masks)} masks")
    bad = labels[(labels < 0) | (labels >= len(category_ids))]
    if bad.size:
        raise SeglabError(f"image {image_id}: predicted label {int(bad[0])} is outside [0, {len(category_ids)})")
    return [{"image_id": int(image_id), "category_id": int(category_ids[label]), "segmentation": mask_to_rle(m),
             "score": float(s), "bbox": box} for label, s, m, box in zip(labels.tolist(), scores, masks, boxes)]


def _categories(categories: Sequence[Any]) -> list[dict]:
    """[{"id", "name"}] in label order from names (ids 1..C, COCO's convention) or dicts with id + name."""
    out = []
    for i, c in enumerate(categories):
        if isinstance(c, dict):
            if "id" not in c:
                raise SeglabError(f"category {c!r} has no 'id'")
            out.append({"id": int(c["id"]), "name": str(c.get("name", c["id"]))})
        else:
            out.append({"id": i + 1, "name": str(c)})
    if not out or len({c["id"] for c in out}) != len(out):
        raise SeglabError(f"categories must be non-empty with distinct ids, got {[c['id'] for c in out]}")
    return out


class InstanceEvaluator:
    """Streaming mask / box AP: `update(image_id, result, target)` per image, `merge` / `all_reduce`
    across workers, `compute()` once.

    Give either `categories` (names, or {"id", "name"} dicts in label order, e.g. `dataset.categories`;
    the ground truth then comes from the targets) or `coco_gt` (a COCO instances JSON path, its dict or
    a pycocotools COCO; categories default to its own, sorted by id as `CocoInstances` numbers them).
    `iou_types` picks "segm" (mask AP) and / or "bbox" (box AP).
    """

    def __init__(self, categories: Sequence[Any] | None = None, *, coco_gt: Any = None,
                 iou_types: Sequence[str] = ("segm", "bbox")):
        self.iou_types = tuple(iou_types)
        unknown = [t for t in self.iou_types if t not in IOU_TYPES]
        if unknown or not self.iou_types:
            raise SeglabError(f"iou_types must be some of {list(IOU_TYPES)}, got {list(iou_types)}")
        self.coco_gt = None
        self._gt_images: dict[int, tuple[int, int]] = {}
        if coco_gt is not None:
            self.coco_gt = self._load_gt(coco_gt)
            self._gt_images = {int(i): (int(im["height"]), int(im["width"])) for i, im in self.coco_gt.imgs.items()}
            if categories is None:
                categories = sorted(self.coco_gt.dataset["categories"], key=lambda c: int(c["id"]))
        if categories is None:
            raise SeglabError("InstanceEvaluator needs categories (names or dataset.categories) or coco_gt")
        self.categories = _categories(categories)
        if self.coco_gt is not None:
            missing = {c["id"] for c in self.categories} - set(self.coco_gt.getCatIds())
            if missing:
                raise SeglabError(f"category ids {sorted(missing)} are not in the ground-truth JSON")
        self.category_ids = [c["id"] for c in self.categories]
        self.reset()

    @classmethod
    def for_dataset(cls, dataset, **kwargs) -> InstanceEvaluator:
        """The evaluator of an instance data set: against its COCO JSON when it has one (the reference
        numbers), else against the targets passed to `update`, with `dataset.categories`."""
        annotation_json = getattr(dataset, "annotation_json", None)
        if annotation_json is not None:
            return cls(dataset.categories, coco_gt=annotation_json, **kwargs)
        return cls(dataset.categories, **kwargs)

    @staticmethod
    def _load_gt(coco_gt: Any):
        COCO, _ = _require_pycocotools()
        if isinstance(coco_gt, COCO):
            return coco_gt
        if isinstance(coco_gt, (str, os.PathLike)):
            path = Path(coco_gt)
            if not path.is_file():
                raise SeglabError(f"{path}: ground-truth JSON not found")
            coco_gt = read_json(path, "ground-truth JSON")
        if not isinstance(coco_gt, dict) or "images" not in coco_gt or "annotations" not in coco_gt:
            raise SeglabError("coco_gt must be a COCO instances JSON path, its dict or a pycocotools COCO")
        coco = _coco_from_dict(coco_gt)
        from pycocotools import mask as mask_api

        for ann in coco.anns.values():  # files written by other tools may leave out COCO's area (of the mask)
            if "area" not in ann:
                ann["area"] = float(mask_api.area(coco.annToRLE(ann)))
        return coco

    def reset(self) -> None:
        self.images: dict[int, tuple[int, int]] = {}  # image id -> (height, width) of evaluated images
        self.predictions: list[dict] = []
        self.ground_truth: list[dict] = []  # built from targets (without coco_gt)

    def update(self, image_id: int, result: InstanceResult, target: dict | None = None) -> None:
        """Add one image's predictions; without `coco_gt` its target (boxes, labels, masks, iscrowd) too."""
        image_id = int(image_id)
        if image_id in self.images:
            raise SeglabError(f"image {image_id} was already added to this evaluator")
        size = tuple(_numpy(result.masks).shape[1:])
        if self.coco_gt is not None:
            if image_id not in self._gt_images:
                raise SeglabError(f"image id {image_id} is not in the ground-truth JSON")
            expected = self._gt_images[image_id]
        elif target is None:
            raise SeglabError("InstanceEvaluator.update needs the target when no coco_gt was given")
        else:
            expected = tuple(_numpy(target["masks"]).shape[1:])
            self.ground_truth.extend(self._gt_annotations(image_id, target))
        if len(_numpy(result.labels)) and size != expected:
            raise SeglabError(f"image {image_id}: predicted masks are {size[1]}x{size[0]}, the image is "
                              f"{expected[1]}x{expected[0]}")
        self.images[image_id] = expected
        self.predictions.extend(instance_results_to_coco(image_id, result, self.category_ids))

    def _gt_annotations(self, image_id: int, target: dict) -> list[dict]:
        masks = _binary_masks(target["masks"], "target")
        labels = _numpy(target["labels"]).astype(np.int64).reshape(-1)
        crowd = _numpy(target.get("iscrowd", np.zeros(len(labels), bool))).astype(bool).reshape(-1)
        boxes = _xyxy_to_xywh(_numpy(target["boxes"]))
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.category_ids)):
            raise SeglabError(f"image {image_id}: target labels must be in [0, {len(self.category_ids)})")
        return [{"image_id": image_id, "category_id": self.category_ids[label], "segmentation": mask_to_rle(m),
                 "area": float(m.sum()), "bbox": box, "iscrowd": int(c)}
                for label, m, box, c in zip(labels.tolist(), masks, boxes, crowd)]

    def merge(self, other: InstanceEvaluator) -> InstanceEvaluator:
        """Add another evaluator's images (e.g. another worker's); returns self."""
        if not isinstance(other, InstanceEvaluator) or other.category_ids != self.category_ids \
                or (other.coco_gt is None) != (self.coco_gt is None):
            raise SeglabError("can only merge an InstanceEvaluator with the same categories and ground-truth source")
        self._merge_state(other.state())
        return self

    def state(self) -> dict:
        return {"images": dict(self.images), "predictions": list(self.predictions),
                "ground_truth": list(self.ground_truth)}

    def _merge_state(self, state: dict) -> None:
        twice = set(self.images) & set(state["images"])
        if twice:
            raise SeglabError(f"images {sorted(twice)[:5]} were evaluated by both evaluators")
        self.images.update(state["images"])
        self.predictions.extend(state["predictions"])
        self.ground_truth.extend(state["ground_truth"])

    def all_reduce(self) -> InstanceEvaluator:
        """Gather every torch.distributed rank's images into this one (no-op when not initialised); call
        once, after the last update."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, self.state())
            mine = dist.get_rank()
            for rank, state in enumerate(states):
                if rank != mine:
                    self._merge_state(state)
        return self

    def results_json(self) -> list[dict]:
        """The predictions as a COCO result list (original category ids, compressed RLE masks)."""
        return copy.deepcopy(self.predictions)

    def write_results_json(self, path: str | os.PathLike) -> Path:
        """Write the COCO result JSON (atomically); returns its path."""
        path = Path(path)
        write_text_atomic(path, json.dumps(self.predictions) + "\n")
        return path

    def _ground_truth_coco(self):
        if self.coco_gt is not None:
            return self.coco_gt
        anns = [dict(a, id=i + 1) for i, a in enumerate(self.ground_truth)]
        images = [{"id": i, "height": h, "width": w} for i, (h, w) in sorted(self.images.items())]
        return _coco_from_dict({"images": images, "annotations": anns, "categories": self.categories})

    def compute(self) -> dict:
        """`mask_AP`, `mask_AP50`, `mask_AP75`, `mask_APs`, `mask_APm`, `mask_APl` (and `box_...`) as
        fractions, plus per-class lists `mask_AP_per_class` / `mask_AP50_per_class` (label order); NaN
        where COCOeval has no ground truth to score (its -1)."""
        if not self.images:
            raise SeglabError("InstanceEvaluator.compute: no image was added")
        _, COCOeval = _require_pycocotools()
        gt = self._ground_truth_coco()
        out: dict[str, Any] = {}
        for iou_type in self.iou_types:
            prefix = IOU_TYPES[iou_type]
            dets = copy.deepcopy(self.predictions)
            if iou_type == "segm":
                for d in dets:  # without a box, loadRes takes the area from the mask, as detectron2 does
                    d.pop("bbox")
            with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress
                dt = gt.loadRes(dets) if dets else _coco_from_dict({**gt.dataset, "annotations": []})
                ev = COCOeval(gt, dt, iou_type)
                ev.params.imgIds = sorted(self.images)
                ev.params.catIds = sorted(self.category_ids)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            for key, value in zip(SUMMARY_KEYS, ev.stats[:6]):
                out[f"{prefix}_{key}"] = float(value) if value > -1 else math.nan
            ap, ap50 = _per_class_ap(ev.eval["precision"], ev.params.catIds, self.category_ids)
            out[f"{prefix}_AP_per_class"], out[f"{prefix}_AP50_per_class"] = ap, ap50
        return out

    def format_table(self, results: dict | None = None, class_names: Sequence[str] | None = None) -> str:
        """`format_instance_table(results, class_names)`, defaulting to `compute()` and the category names."""
        names = [c["name"] for c in self.categories] if class_names is None else class_names
        return format_instance_table(self.compute() if results is None else results, names)

    def __repr__(self) -> str:
        return (f"InstanceEvaluator({len(self.categories)} categories, {len(self.images)} images, "
                f"{len(self.predictions)} predictions, gt={'json' if self.coco_gt is not None else 'targets'})")


def _coco_from_dict(dataset: dict):
    COCO, _ = _require_pycocotools()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(dataset)
        coco.createIndex()
    return coco


def _per_class_ap(precision: np.ndarray, eval_cat_ids: Sequence[int],
                  category_ids: Sequence[int]) -> tuple[list[float], list[float]]:
    """AP over all IoU thresholds and AP at IoU 0.5 per category (label order), from COCOeval's
    precision array (T IoUs, R recall points, K categories, A area ranges, M max-dets): area "all",
    100 detections; -1 entries (no ground truth) are left out, all -1 gives NaN."""
    column = {int(c): k for k, c in enumerate(eval_cat_ids)}
    ap, ap50 = [], []
    for cid in category_ids:
        p = precision[:, :, column[int(cid)], 0, -1]
        ap.append(float(p[p > -1].mean()) if (p > -1).any() else math.nan)
        p50 = p[0]
        ap50.append(float(p50[p50 > -1].mean()) if (p50 > -1).any() else math.nan)
    return ap, ap50


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.2f}"


def format_instance_table(results: dict, class_names: Sequence[str]) -> str:
    """Per-class AP and AP50 in percent (Cityscapes' columns) for masks (and boxes when evaluated), NaN
    as '-', then one summary line per evaluated type with AP, AP50, AP75, APs, APm, APl."""
    prefixes = [p for p in ("mask", "box") if f"{p}_AP_per_class" in results]
    if not prefixes:
        raise SeglabError("results hold no per-class AP (expected mask_AP_per_class or box_AP_per_class)")
    num = len(results[f"{prefixes[0]}_AP_per_class"])
    names = [str(n) for n in class_names]
    if len(names) != num:
        raise SeglabError(f"{len(names)} class names given for {num} classes")
    width = max([5] + [len(n) for n in names])
    columns = [(p, k) for p in prefixes for k in ("AP", "AP50")]
    lines = [f"{'class':<{width}} " + " ".join(f"{p + ' ' + k:>9}" for p, k in columns)]
    for i, name in enumerate(names):
        lines.append(f"{name:<{width}} " + " ".join(f"{_pct(results[f'{p}_{k}_per_class'][i]):>9}"
                                                    for p, k in columns))
    for p in prefixes:
        lines.append(f"{p}: " + "  ".join(f"{k} {_pct(results[f'{p}_{k}'])}" for k in SUMMARY_KEYS))
    return "\n".join(lines)
