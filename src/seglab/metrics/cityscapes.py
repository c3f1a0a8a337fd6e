"""Cityscapes' own evaluation rules (Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene
Understanding", CVPR 2016, Sec. 3.2 and 4.3), as the official scripts implement them
(github.com/mcordts/cityscapesScripts, `evaluation/evalInstanceLevelSemanticLabeling.py` and
`evaluation/evalPixelLevelSemanticLabeling.py`); the numbers the lectures' Cityscapes tables report.

Instance level (`CityscapesInstanceEvaluator`): AP, AP50, AP (100 m), AP (50 m) and per-class AP over the
8 classes with instances (person, rider, car, truck, bus, train, motorcycle, bicycle; caravan and
trailer are ignored in evaluation). Following `evalInstanceLevelSemanticLabeling.py` step by step:
- ground truth: every value of `*_gtFine_instanceIds.png` of a class (`labelId * 1000 + k`, or the bare
  labelId for a group of objects that could not be told apart); groups are never matched, but the
  pixels a prediction shares with them are "ignore" pixels;
- a prediction is a binary mask with a labelId and a confidence, matched against the ground truth of
  its class by pixel IoU = intersection / (gt + prediction - intersection), strictly above each
  overlap threshold 0.50, 0.55, ..., 0.95;
- per threshold and class: ground truth smaller than the minimum region size (100 pixels; 1000 for the
  distance-limited APs), farther than the distance limit, or with too few distance measurements is left
  out (and counts as ignore pixels, like groups); a ground truth instance matched by several predictions
  keeps the most confident as the true positive, the others are false positives; a prediction matching
  no ground truth is a false positive unless the share of its pixels on void (labels ignored in
  evaluation, compared on the raw instanceIds values as the script does), group or left-out ground truth
  exceeds the threshold; unmatched ground truth are false negatives;
- the precision-recall curve over the unique confidences (plus the point recall 0, precision 1) is
  integrated with the script's step widths (half the recall difference to each neighbour); a class
  with ground truth but no prediction scores 0, a class with no ground truth NaN;
- AP is the mean over classes (NaN left out) and thresholds, AP50 the mean over classes at 0.5; per-class
  AP is the mean over thresholds.
AP (100 m) and AP (50 m) limit the ground truth to instances whose median distance from the camera is
at most 100 m / 50 m, measured on at least half of their pixels (the script's "minStereoDensities" 0.5)
and of at least 1000 pixels. The public script has no distances (its ground truth carries the
placeholders medDist -1, distConf 0 and `distanceAvailable = False`); the benchmark server measures them
from the stereo disparity. Here the distance of an instance is the median of a per-pixel depth map in
metres over its pixels with a valid (finite, positive) depth, and its "distConf" the fraction of its
pixels that have one. Pass `depth=` to `update` (`cityscapes_disparity_to_depth` turns the
`disparity/*_disparity.png` maps and the camera's baseline and focal length into metres); without depth
for any image, AP (100 m) and AP (50 m) are NaN and `distance_available` is False, as the script reports
them (not at all) without distances.

Pixel level (`CityscapesInstanceIoU`): instance-level IoU, iIoU = iTP / (iTP + FP + iFN), where each
ground-truth instance's true-positive and false-negative pixels are weighted by the ratio of its
class's average instance size (the script's `avgClassSize`, measured on the training set) to the
instance's size, so large and small objects count alike, and the false positives are the plain pixel
count of predictions of the class on pixels of other (not ignored) classes. Per class (the 8 classes)
and per category (human = person + rider, vehicle = car ... bicycle), each instance weighted by its
class's average size as the script does; the means leave out NaN.

Both follow the metric protocol: `update`, `merge` / `all_reduce`, `compute() -> dict`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.datasets.cityscapes_instances import (CITYSCAPES_THING_CLASSES, CITYSCAPES_THING_IDS,
                                                  cityscapes_disparity_to_depth)
from ..data.palettes import CITYSCAPES_ID_TO_TRAIN_ID
from ..errors import SeglabError
from ..structures import InstanceResult
from .gather import merge_across_ranks

__all__ = ["CityscapesInstanceEvaluator", "CityscapesInstanceIoU", "cityscapes_disparity_to_depth",
           "format_cityscapes_instance_table", "read_instance_ids", "AVG_CLASS_SIZE"]

INSTANCE_ID_STRIDE = 1000
OVERLAPS = tuple(float(v) for v in np.arange(0.5, 1.0, 0.05))  # 0.50 ... 0.95, the script's np.arange
# (min region size [pixels], distance limit [m], min fraction of pixels with a distance): AP, AP100m, AP50m
SETTINGS = ((100, math.inf, -math.inf), (1000, 100.0, 0.5), (1000, 50.0, 0.5))
# labelIds with ignoreInEval (trainId 255 in the official table): void for the instance evaluation.
VOID_LABEL_IDS = tuple(sorted(i for i, t in CITYSCAPES_ID_TO_TRAIN_ID.items() if t == 255))
# evalPixelLevelSemanticLabeling.py's avgClassSize: mean instance size per class on the training set.
AVG_CLASS_SIZE = {"bicycle": 4672.3249222261, "caravan": 36771.8241758242, "motorcycle": 6298.7200839748,
                  "rider": 3930.4788056518, "bus": 35732.1511111111, "train": 67583.7075812274,
                  "car": 12794.0202738185, "person": 3462.4756337644, "truck": 27855.1264367816,
                  "trailer": 16926.9763313609}
CATEGORIES = {"human": ("person", "rider"),
              "vehicle": ("car", "truck", "bus", "train", "motorcycle", "bicycle")}


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _label_ids(instance_ids: np.ndarray) -> np.ndarray:
    return np.where(instance_ids >= INSTANCE_ID_STRIDE, instance_ids // INSTANCE_ID_STRIDE, instance_ids)


def _check_map(values, name: str, shape=None) -> np.ndarray:
    a = _numpy(values)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise SeglabError(f"{name} must be an (H, W) integer map, got shape {a.shape} dtype {a.dtype}")
    if shape is not None and a.shape != shape:
        raise SeglabError(f"{name} is {a.shape[1]}x{a.shape[0]}, the ground truth is {shape[1]}x{shape[0]}")
    return a.astype(np.int64)


def read_instance_ids(path) -> np.ndarray:
    """The `*_gtFine_instanceIds.png` map of a Cityscapes annotation, given that file or its
    `*_gtFine_labelIds.png` sibling (what the semantic `Cityscapes` data set lists in `samples[i][1]`)."""
    from ..data.io import read_label

    path = Path(path)
    if path.name.endswith("_labelIds.png"):
        path = path.with_name(path.name[: -len("_labelIds.png")] + "_instanceIds.png")
    if not path.is_file():
        raise SeglabError(f"{path}: Cityscapes instanceIds map not found (needed for the instance-level scores)")
    return read_label(path)


# ------------------------------------------------------------------------------------ instance level
def match_image(gt_instance_ids: np.ndarray, masks: np.ndarray, label_ids: Sequence[int], scores: Sequence[float],
                depth: np.ndarray | None = None) -> dict:
    """One image's matches, the script's `assignGt2Preds`: {labelId: {"gt": [...], "pred": [...]}} with
    gt entries {instID, pixelCount, medDist, distConf, matched: [(pred index, intersection)]} and pred
    entries {pixelCount, confidence, voidIntersection, matched: [(gt index, intersection)]}."""
    ids, inverse = np.unique(gt_instance_ids, return_inverse=True)
    inverse = inverse.reshape(gt_instance_ids.shape)
    counts = np.bincount(inverse.ravel(), minlength=len(ids))
    id_labels = _label_ids(ids)
    void = np.isin(gt_instance_ids, VOID_LABEL_IDS)
    valid_depth = None if depth is None else np.isfinite(depth) & (depth > 0)
    out = {}
    for label_id in CITYSCAPES_THING_IDS:
        gts = []
        for k in np.flatnonzero(id_labels == label_id):
            med, conf = -1.0, 0.0  # the script's placeholders when no distance is known
            if depth is not None:
                on = inverse == k
                good = on & valid_depth
                conf = float(good.sum()) / float(counts[k])
                med = float(np.median(depth[good])) if good.any() else -1.0
            gts.append({"instID": int(ids[k]), "pixelCount": int(counts[k]), "medDist": med, "distConf": conf,
                        "matched": [], "index": int(k)})
        out[label_id] = {"gt": gts, "pred": []}
    for mask, label_id, score in zip(masks, label_ids, scores):
        entry = out.get(int(label_id))
        pixels = int(mask.sum())
        if entry is None or pixels == 0:  # not an evaluated class, or an empty mask: skipped as the script does
            continue
        inter = np.bincount(inverse[mask], minlength=len(ids))
        pred = {"pixelCount": pixels, "confidence": float(score), "voidIntersection": int((void & mask).sum()),
                "matched": []}
        p = len(entry["pred"])
        for g, gt in enumerate(entry["gt"]):
            if inter[gt["index"]] > 0:
                gt["matched"].append((p, int(inter[gt["index"]])))
                pred["matched"].append((g, int(inter[gt["index"]])))
        entry["pred"].append(pred)
    for entry in out.values():
        for gt in entry["gt"]:
            del gt["index"]
    return out


def _average_precision(y_true: np.ndarray, y_score: np.ndarray, hard_fns: int) -> float:
    """The script's precision-recall curve and step-wise integration."""
    if y_true.size == 0:  # every ground truth missed and every prediction ignored
        return 0.0
    order = np.argsort(y_score, kind="stable")
    scores, truth = y_score[order], y_true[order]
    cumsum = np.append(np.cumsum(truth), 0)  # index -1 reads the appended 0
    _, unique_idx = np.unique(scores, return_index=True)
    n, n_true = len(scores), cumsum[-2]
    precision, recall = np.zeros(len(unique_idx) + 1), np.zeros(len(unique_idx) + 1)
    for i, idx in enumerate(unique_idx):
        below = cumsum[idx - 1]
        tp = n_true - below
        fp = n - idx - tp
        fn = below + hard_fns
        precision[i] = tp / (tp + fp)
        recall[i] = tp / (tp + fn)
    precision[-1], recall[-1] = 1.0, 0.0
    padded = np.concatenate([[recall[0]], recall, [0.0]])
    step_widths = np.convolve(padded, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, step_widths))


def evaluate_matches(matches: Sequence[dict], *, overlaps: Sequence[float] = OVERLAPS,
                     settings: Sequence[tuple] = SETTINGS) -> np.ndarray:
    """The script's `evaluateMatches`: AP per (setting, class, overlap), shape (len(settings), 8, len(overlaps))."""
    ap = np.zeros((len(settings), len(CITYSCAPES_THING_IDS), len(overlaps)))
    for s, (min_size, max_dist, min_conf) in enumerate(settings):
        for o, th in enumerate(overlaps):
            for c, label_id in enumerate(CITYSCAPES_THING_IDS):
                y_true, y_score, hard_fns, have_gt, have_pred = [], [], 0, False, False
                for image in matches:
                    gts, preds = image[label_id]["gt"], image[label_id]["pred"]
                    kept = [g for g in gts if g["instID"] >= INSTANCE_ID_STRIDE and g["pixelCount"] >= min_size
                            and g["medDist"] <= max_dist and g["distConf"] >= min_conf]
                    have_gt |= bool(kept)
                    have_pred |= bool(preds)
                    for g in kept:
                        hits = [preds[p]["confidence"] for p, inter in g["matched"]
                                if inter / (g["pixelCount"] + preds[p]["pixelCount"] - inter) > th]
                        if not hits:
                            hard_fns += 1
                            continue
                        # the script keeps the first hit's score, then max / min with each further one:
                        # the best is the true positive, every other hit a false positive at its score
                        best = hits[0]
                        for score in hits[1:]:
                            y_true.append(0)
                            y_score.append(min(best, score))
                            best = max(best, score)
                        y_true.append(1)
                        y_score.append(best)
                    for pred in preds:
                        if any(inter / (gts[g]["pixelCount"] + pred["pixelCount"] - inter) > th
                               for g, inter in pred["matched"]):
                            continue
                        ignored = pred["voidIntersection"]
                        for g, inter in pred["matched"]:
                            gt = gts[g]
                            if gt["instID"] < INSTANCE_ID_STRIDE:  # a group
                                ignored += inter
                            if gt["pixelCount"] < min_size or gt["medDist"] > max_dist or gt["distConf"] < min_conf:
                                ignored += inter
                        if ignored / pred["pixelCount"] <= th:
                            y_true.append(0)
                            y_score.append(pred["confidence"])
                if have_gt and have_pred:
                    ap[s, c, o] = _average_precision(np.asarray(y_true, float), np.asarray(y_score, float), hard_fns)
                else:
                    ap[s, c, o] = 0.0 if have_gt else math.nan
    return ap


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


class CityscapesInstanceEvaluator:
    """Cityscapes instance AP: `update(image_id, result, gt_instance_ids, depth=None)` per image,
    `merge` / `all_reduce`, `compute()`.

    `result.labels` index `label_ids` (default: seglab's `CityscapesInstances` order, person ... bicycle,
    labelIds 24-28, 31-33); `result.masks` are bool (K, H, W) at the ground truth's size; the score is the
    confidence. `gt_instance_ids` is the raw `*_gtFine_instanceIds.png` map (`read_label(path)`; for a
    `CityscapesInstances` data set `dataset.samples[i][1]`); `depth` an optional (H, W) map in metres.
    """

    def __init__(self, *, label_ids: Sequence[int] = CITYSCAPES_THING_IDS):
        unknown = [i for i in label_ids if int(i) not in CITYSCAPES_THING_IDS]
        if unknown:
            raise SeglabError(f"label_ids {unknown} are not Cityscapes instance classes {list(CITYSCAPES_THING_IDS)}")
        self.label_ids = [int(i) for i in label_ids]
        self.matches: dict[int, dict] = {}
        self.with_depth: set[int] = set()

    def update(self, image_id: int, result: InstanceResult, gt_instance_ids, depth=None) -> None:
        image_id = int(image_id)
        if image_id in self.matches:
            raise SeglabError(f"image {image_id} was already added to this evaluator")
        gt = _check_map(gt_instance_ids, "gt_instance_ids")
        masks = _numpy(result.masks)
        labels = _numpy(result.labels).astype(np.int64).reshape(-1)
        scores = _numpy(result.scores).astype(np.float64).reshape(-1)
        if masks.ndim != 3 or masks.dtype != bool or not len(masks) == len(labels) == len(scores):
            raise SeglabError(f"image {image_id}: expected bool masks (K, H, W) with K labels and scores, got masks "
                              f"{masks.shape} {masks.dtype}, {len(labels)} labels, {len(scores)} scores")
        if len(masks) and masks.shape[1:] != gt.shape:
            raise SeglabError(f"image {image_id}: predicted masks are {masks.shape[2]}x{masks.shape[1]}, the "
                              f"ground truth is {gt.shape[1]}x{gt.shape[0]}")
        bad = labels[(labels < 0) | (labels >= len(self.label_ids))]
        if bad.size:
            raise SeglabError(f"image {image_id}: predicted label {int(bad[0])} is outside [0, {len(self.label_ids)})")
        if depth is not None:
            depth = _numpy(depth).astype(np.float64)
            if depth.shape != gt.shape:
                raise SeglabError(f"image {image_id}: depth is {depth.shape[1]}x{depth.shape[0]}, the ground truth "
                                  f"is {gt.shape[1]}x{gt.shape[0]}")
            self.with_depth.add(image_id)
        self.matches[image_id] = match_image(gt, masks, [self.label_ids[k] for k in labels], scores, depth)

    def merge(self, other: CityscapesInstanceEvaluator) -> CityscapesInstanceEvaluator:
        if not isinstance(other, CityscapesInstanceEvaluator) or other.label_ids != self.label_ids:
            raise SeglabError("can only merge a CityscapesInstanceEvaluator with the same label_ids")
        self._merge_state(other.state())
        return self

    def state(self) -> dict:
        return {"matches": dict(self.matches), "with_depth": set(self.with_depth)}

    def _merge_state(self, state: dict) -> None:
        twice = set(self.matches) & set(state["matches"])
        if twice:
            raise SeglabError(f"images {sorted(twice)[:5]} were evaluated by both evaluators")
        self.matches.update(state["matches"])
        self.with_depth |= state["with_depth"]

    def all_reduce(self) -> CityscapesInstanceEvaluator:
        """Gather every torch.distributed rank's images (no-op when not initialised); call once."""
        return merge_across_ranks(self)

    def compute(self) -> dict:
        """`AP`, `AP50`, `AP100m`, `AP50m` (fractions; the distance ones NaN without depth), per-class lists
        `AP_per_class`, `AP50_per_class`, `AP100m_per_class`, `AP50m_per_class` in the order of
        `classes`, `distance_available` and `ap_matrix` (settings x classes x overlaps)."""
        if not self.matches:
            raise SeglabError("CityscapesInstanceEvaluator.compute: no image was added")
        distance = bool(self.with_depth)
        settings = SETTINGS if distance else SETTINGS[:1]
        ap = evaluate_matches([self.matches[k] for k in sorted(self.matches)], settings=settings)
        o50 = OVERLAPS.index(0.5)
        out = {"classes": list(CITYSCAPES_THING_CLASSES), "distance_available": distance,
               "AP": _nanmean(ap[0]), "AP50": _nanmean(ap[0, :, o50]),
               "AP_per_class": [float(v) for v in ap[0].mean(1)], "AP50_per_class": [float(v) for v in ap[0, :, o50]]}
        for s, key in ((1, "AP100m"), (2, "AP50m")):
            out[key] = _nanmean(ap[s]) if distance else math.nan
            out[f"{key}_per_class"] = [float(v) for v in ap[s].mean(1)] if distance else [math.nan] * ap.shape[1]
        out["ap_matrix"] = ap.tolist()
        return out

    def format_table(self, results: dict | None = None) -> str:
        return format_cityscapes_instance_table(self.compute() if results is None else results)

    def __repr__(self) -> str:
        return f"CityscapesInstanceEvaluator({len(self.matches)} images, depth for {len(self.with_depth)})"


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def format_cityscapes_instance_table(results: dict) -> str:
    """Per-class AP, AP50, AP100m, AP50m in percent (the benchmark's columns), then the averages."""
    keys = ("AP", "AP50", "AP100m", "AP50m")
    width = max(len(c) for c in results["classes"] + ["average"])
    lines = [f"{'class':<{width}} " + " ".join(f"{k:>7}" for k in keys)]
    for i, name in enumerate(results["classes"]):
        lines.append(f"{name:<{width}} " + " ".join(f"{_pct(results[f'{k}_per_class'][i]):>7}" for k in keys))
    lines.append(f"{'average':<{width}} " + " ".join(f"{_pct(results[k]):>7}" for k in keys))
    if not results.get("distance_available", False):
        lines.append("(AP100m / AP50m need a depth map per image: none was given)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ pixel level (iIoU)
_TRAIN_IDS = {name: CITYSCAPES_ID_TO_TRAIN_ID[label_id]
              for name, label_id in zip(CITYSCAPES_THING_CLASSES, CITYSCAPES_THING_IDS)}
_CATEGORY_OF = {_TRAIN_IDS[n]: c for c, members in CATEGORIES.items() for n in members}


def _luts() -> tuple[np.ndarray, np.ndarray]:
    """labelId -> trainId (255 for labels ignored in evaluation), and trainId -> category index (-1: none)."""
    train = np.full(256, 255, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        train[label_id] = train_id
    category = np.full(256, -1, dtype=np.int64)
    for train_id, c in _CATEGORY_OF.items():
        category[train_id] = list(CATEGORIES).index(c)
    return train, category


class CityscapesInstanceIoU:
    """Streaming iIoU per class and category (`evalPixelLevelSemanticLabeling.py`): `update(pred,
    gt_instance_ids)` with predicted trainIds (H, W) (0..18; 255 or any other value predicts nothing) and
    the raw `*_gtFine_instanceIds.png` map (N, H, W batches work too); `merge` / `all_reduce`; `compute()`."""

    def __init__(self):
        names = list(CITYSCAPES_THING_CLASSES) + list(CATEGORIES)
        # per class / category: weighted TP, weighted FN, FP (unweighted pixels)
        self.stats = {n: np.zeros(3) for n in names}
        self._train_lut, self._category_lut = _luts()

    def update(self, pred, gt_instance_ids) -> None:
        pred, gt = _numpy(pred), _numpy(gt_instance_ids)
        if pred.ndim == 3 and gt.ndim == 3 and len(pred) == len(gt):
            for p, g in zip(pred, gt):
                self.update(p, g)
            return
        gt = _check_map(gt, "gt_instance_ids")
        pred = _check_map(pred, "prediction", gt.shape)
        gt_train = self._train_lut[np.clip(_label_ids(gt), 0, 255)]
        evaluated = gt_train != 255
        for name, t in _TRAIN_IDS.items():  # FP: predicted t on a pixel of another evaluated class
            self.stats[name][2] += np.count_nonzero((pred == t) & evaluated & (gt_train != t))
        gt_category = self._category_lut[gt_train]
        pred_in = {c: np.isin(pred, [_TRAIN_IDS[n] for n in members]) for c, members in CATEGORIES.items()}
        for k, c in enumerate(CATEGORIES):  # FP: predicted the category on an evaluated pixel of another one
            self.stats[c][2] += np.count_nonzero(pred_in[c] & evaluated & (gt_category != k))
        ids = np.unique(gt[gt > INSTANCE_ID_STRIDE])  # the script's `instanceNp > 1000`
        for inst in ids:
            label_id = int(inst) // INSTANCE_ID_STRIDE
            if label_id not in CITYSCAPES_THING_IDS:  # caravan, trailer: ignored in evaluation
                continue
            name = CITYSCAPES_THING_CLASSES[CITYSCAPES_THING_IDS.index(label_id)]
            mask = gt == inst
            size = int(mask.sum())
            weight = AVG_CLASS_SIZE[name] / size
            tp = np.count_nonzero(pred[mask] == _TRAIN_IDS[name])
            self.stats[name][:2] += (tp * weight, (size - tp) * weight)
            category = _CATEGORY_OF[_TRAIN_IDS[name]]
            cat_tp = np.count_nonzero(pred_in[category][mask])
            self.stats[category][:2] += (cat_tp * weight, (size - cat_tp) * weight)  # the class's weight, as the script

    def merge(self, other: CityscapesInstanceIoU) -> CityscapesInstanceIoU:
        if not isinstance(other, CityscapesInstanceIoU):
            raise SeglabError("can only merge a CityscapesInstanceIoU with another")
        for name in self.stats:
            self.stats[name] += other.stats[name]
        return self

    def all_reduce(self) -> CityscapesInstanceIoU:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flat = torch.tensor(np.stack([self.stats[n] for n in self.stats]), dtype=torch.float64)
            dist.all_reduce(flat)
            for name, row in zip(self.stats, flat.numpy()):
                self.stats[name] = row.copy()
        return self

    def compute(self) -> dict:
        """`iIoU_per_class` {class: value}, `iIoU` (mean over the 8 classes), `iIoU_per_category` {human,
        vehicle}, `iIoU_category` (their mean); NaN where a class has neither instances nor predictions."""
        def score(name):
            tp, fn, fp = self.stats[name]
            return float(tp / (tp + fp + fn)) if tp + fp + fn > 0 else math.nan

        per_class = {n: score(n) for n in CITYSCAPES_THING_CLASSES}
        per_category = {c: score(c) for c in CATEGORIES}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {"iIoU_per_class": per_class, "iIoU": _nanmean(list(per_class.values())),
                    "iIoU_per_category": per_category, "iIoU_category": _nanmean(list(per_category.values()))}
