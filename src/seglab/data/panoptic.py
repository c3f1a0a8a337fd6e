"""The panoptic format: segment id maps, COCO panoptic files, Cityscapes panoptic, and conversions.

Kirillov, He, Girshick, Rother, Dollar, "Panoptic Segmentation", CVPR 2019 (Sec. 3): every pixel gets a
class and, for thing classes, an instance; the pixels of one (class, instance) pair form a segment. The
file format is that of the paper's COCO release (panopticapi, cocodataset/panopticapi): a PNG whose colour
encodes the segment id = R + 256 G + 256^2 B (id 0 = VOID, unlabelled), and a JSON with `images`,
`categories` (id, name, isthing, color) and `annotations`, one per image: image_id, file_name (of the
PNG) and `segments_info` (id, category_id, iscrowd, area in pixels, bbox [x, y, w, h]). Crowd segments
(iscrowd 1) cover groups of things that were not told apart.

Cityscapes panoptic (Cordts et al., CVPR 2016) is what cityscapesscripts' `createPanopticImgs.py` writes
from `*_gtFine_instanceIds.png`: the same COCO format, categories = the 19 evaluated classes with their
labelIds as ids (trainIds with `--use-train-id`), segment id = the instanceIds value (labelId for stuff and
for thing groups, which become crowd segments; labelId * 1000 + instance for single things), classes
ignored in evaluation left VOID. `cityscapes_instance_ids_to_panoptic` does the same conversion.

`semantic_instance_to_panoptic` numbers segments as the synthetic generator does:
(category_id + 1) * label_divisor + instance (instance 0 for stuff and for crowd regions), so category 0
never makes the VOID id.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError, SeglabError
from ..utils.io import read_json, save_image_atomic, write_text_atomic
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_PALETTE

VOID = 0
OFFSET = 256 ** 3  # ids a PNG can hold; also the pairing offset gt_id * OFFSET + pred_id of the evaluation
LABEL_DIVISOR = 1000
IGNORE = 255

Segments = list[dict[str, Any]]


def rgb2id(rgb) -> np.ndarray | int:
    """Segment ids (H, W) int64 of an (H, W, 3) RGB array, or one id of an (r, g, b) triple."""
    arr = np.asarray(rgb, dtype=np.int64)
    if arr.shape == (3,):
        return int(arr[0] + 256 * arr[1] + 65536 * arr[2])
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise SeglabError(f"rgb2id expects an (H, W, 3) array or an (r, g, b) triple, got shape {arr.shape}")
    return arr[..., 0] + 256 * arr[..., 1] + 65536 * arr[..., 2]


def id2rgb(ids) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an (H, W) id map: R = id % 256, G = id // 256 % 256, B = id // 256^2."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise SeglabError(f"segment ids must be integers, got {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= OFFSET):
        raise SeglabError(f"segment ids must be in [0, 256^3), got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """The (H, W) int64 segment ids of a panoptic PNG (RGB; RGBA's alpha and palette PNGs' indices are
    read through their RGB colours)."""
    from .io import open_image

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: panoptic PNG not found")
    with open_image(p, "panoptic PNG") as img:
        if img.mode not in ("RGB", "RGBA", "P"):
            raise DataError(f"{p}: panoptic PNG has mode {img.mode}, expected RGB (id = R + 256 G + 256^2 B)")
        rgb = np.asarray(img.convert("RGB"))
    return rgb2id(rgb)


def write_panoptic_png(path: str | os.PathLike, ids) -> None:
    """Write an (H, W) id map as an RGB PNG, atomically."""
    if Path(path).suffix.lower() != ".png":
        raise SeglabError(f"panoptic maps must be saved losslessly as .png, got {path}")
    save_image_atomic(path, Image.fromarray(id2rgb(ids), "RGB"))


def segment_stats(ids) -> dict[int, tuple[int, list[int]]]:
    """{segment id: (area, bbox [x, y, w, h])} for every non-VOID id of an (H, W) map (one sort, no loop
    over the pixels per segment)."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return {}
    w = ids.shape[1]
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable")
    values, starts, counts = np.unique(flat[order], return_index=True, return_counts=True)
    ys, xs = order // w, order % w
    y0, y1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
    x0, x1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts)
    return {int(v): (int(c), [int(a), int(b), int(c1 - a + 1), int(d1 - b + 1)])
            for v, c, a, b, c1, d1 in zip(values, counts, x0, y0, x1, y1) if v != VOID}


def check_segments(ids, segments_info: Segments, where: str,
                   category_ids: Iterable[int] | None = None) -> dict[int, int]:
    """The checks of the COCO panoptic evaluation on a prediction, as one-line `DataError`s naming `where`
    (the image) and the segment: an id in the PNG without a record, a record's unknown category, a
    record whose id is not in the PNG, a duplicated record. Returns {segment id: pixel count}."""
    ids = np.asarray(ids)
    records: dict[int, dict] = {}
    for s in segments_info:
        sid = int(s["id"])
        if sid in records:
            raise DataError(f"{where}: segment id {sid} is listed twice in segments_info")
        records[sid] = s
    values, counts = np.unique(ids, return_counts=True)
    known = None if category_ids is None else {int(c) for c in category_ids}
    areas = {}
    for v, c in zip(values.tolist(), counts.tolist()):
        if v == VOID and v not in records:
            continue
        if v not in records:
            raise DataError(f"{where}: segment id {v} is in the PNG but not in segments_info")
        if known is not None and int(records[v]["category_id"]) not in known:
            raise DataError(f"{where}: segment id {v} has unknown category_id {records[v]['category_id']}")
        areas[v] = c
    missing = sorted(set(records) - set(areas))
    if missing:
        raise DataError(f"{where}: segment ids {missing} are in segments_info but not in the PNG")
    return areas


def load_panoptic_json(path: str | os.PathLike, *, categories: bool = True) -> dict:
    """A COCO panoptic JSON, checked: `annotations` (image_id, file_name, segments_info records with integer
    id and category_id, iscrowd 0 / 1) and, when `categories` (ground truth; a prediction file may leave them
    out, the evaluation reads the ground truth's), `categories` (integer id, isthing 0 / 1, name, colour).
    Errors name the file and the annotation."""
    from .datasets.coco import check_categories

    path = Path(path)
    data = read_json(path, "panoptic JSON")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("categories", [] if not categories else None), list):
        need = "'annotations' and 'categories'" if categories else "'annotations'"
        raise DataError(f"{path}: expected a COCO panoptic JSON with {need} (lists)")
    if categories:
        check_categories(data["categories"], path, panoptic=True)
    if not isinstance(data.get("images", []), list) or not all(isinstance(im, dict) for im in data.get("images", [])):
        raise DataError(f"{path}: 'images' must be a list of objects")
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not {"image_id", "file_name", "segments_info"} <= set(ann):
            raise DataError(f"{path}: annotation {json.dumps(ann)[:80]} needs image_id, file_name and segments_info")
        where = f"{path}: image {json.dumps(ann['image_id'])[:40]}"
        if not isinstance(ann["file_name"], str) or not isinstance(ann["segments_info"], list) \
                or isinstance(ann["image_id"], (dict, list)):
            raise DataError(f"{where}: file_name must be a string, segments_info a list and image_id a number "
                            f"or a string")
        for seg in ann["segments_info"]:
            if not isinstance(seg, dict) or not _is_int(seg.get("id")) or not _is_int(seg.get("category_id")) \
                    or seg.get("iscrowd", 0) not in (0, 1) or not 0 <= seg["id"] < OFFSET:
                raise DataError(f"{where}: segment {json.dumps(seg)[:80]} needs an integer 'id' in [0, 256^3), an "
                                f"integer 'category_id' and iscrowd 0 or 1")
    return data


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def save_panoptic_json(path: str | os.PathLike, data: dict) -> None:
    """Write a COCO panoptic JSON (images, annotations, categories) atomically."""
    write_text_atomic(path, json.dumps(data) + "\n")


def read_panoptic(folder: str | os.PathLike, annotation: dict) -> tuple[np.ndarray, Segments]:
    """(ids (H, W) int64, a copy of segments_info) of one annotation of a panoptic JSON whose PNGs are in
    `folder`."""
    ids = read_panoptic_png(Path(folder) / annotation["file_name"])
    return ids, [dict(s) for s in annotation["segments_info"]]


def write_panoptic(folder: str | os.PathLike, file_name: str, ids, segments_info: Segments,
                   *, image_id: Any) -> dict:
    """Write `folder/file_name` (PNG, atomically) and return its annotation record (image_id, file_name,
    segments_info with area and bbox filled in where missing). Ids and records must agree
    (`check_segments`), so the files pass the reference evaluation's checks."""
    ids = np.asarray(ids)
    check_segments(ids, segments_info, f"image {image_id}")
    stats = segment_stats(ids)
    infos = []
    for s in segments_info:
        area, bbox = stats[int(s["id"])]
        infos.append({**s, "area": s.get("area", area), "bbox": s.get("bbox", bbox)})
    write_panoptic_png(Path(folder) / file_name, ids)
    return {"image_id": image_id, "file_name": file_name, "segments_info": infos}


def to_category_ids(segments_info: Segments, class_to_category: Sequence[int]) -> Segments:
    """Copies of the records with category_id mapped from a contiguous class index (what the panoptic
    models put in a PanopticResult) to a category id (`class_to_category`, e.g. a panoptic data set's
    `category_ids`)."""
    out = []
    for s in segments_info:
        c = int(s["category_id"])
        if not 0 <= c < len(class_to_category):
            raise DataError(f"segment {s['id']}: class index {c} is outside [0, {len(class_to_category)})")
        out.append({**s, "category_id": int(class_to_category[c])})
    return out


def _categories_by_kind(categories: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    cats = sorted(categories, key=lambda c: int(c["id"]))
    return [c for c in cats if not int(c["isthing"])], [c for c in cats if int(c["isthing"])]


def stuff_then_things(categories: Sequence[dict]) -> list[dict]:
    """Categories in contiguous class order: stuff by increasing id, then things by increasing id (the
    class order of the panoptic models' semantic branch)."""
    stuff, things = _categories_by_kind(categories)
    return stuff + things


def semantic_instance_to_panoptic(semantic, instance_ids, thing_ids: Iterable[int], *, ignore: int = IGNORE,
                                  label_divisor: int = LABEL_DIVISOR,
                                  unassigned_things: str = "crowd") -> tuple[np.ndarray, Segments]:
    """Panoptic ids and segments_info from a class map (category ids, `ignore` = VOID) and an instance
    id map (0 = no instance). Stuff pixels make one segment per class (instance ids there are ignored);
    thing pixels one segment per (class, instance id); thing pixels without an instance make one crowd
    segment per class (`unassigned_things="crowd"`, as Cityscapes' groups) or VOID ("void").
    Segment id = (category_id + 1) * label_divisor + instance id; records are sorted by id."""
    semantic, inst = np.asarray(semantic).astype(np.int64), np.asarray(instance_ids).astype(np.int64)
    if semantic.shape != inst.shape or semantic.ndim != 2:
        raise SeglabError(f"semantic {semantic.shape} and instance_ids {inst.shape} must be (H, W) maps of one size")
    if unassigned_things not in ("crowd", "void"):
        raise SeglabError(f"unassigned_things must be 'crowd' or 'void', got {unassigned_things!r}")
    thing_ids = {int(t) for t in thing_ids}
    valid = semantic != ignore
    if (semantic[valid] < 0).any() or (inst < 0).any() or (inst >= label_divisor).any():
        raise SeglabError(f"need category ids >= 0 and instance ids in [0, {label_divisor}), got categories "
                          f"[{semantic[valid].min(initial=0)}, ..] and instances [{inst.min()}, {inst.max()}]")
    is_thing = np.isin(semantic, list(thing_ids)) & valid
    ids = np.where(valid, (semantic + 1) * label_divisor + np.where(is_thing, inst, 0), VOID)
    if unassigned_things == "void":
        ids[is_thing & (inst == 0)] = VOID
    if ids.max(initial=0) >= OFFSET:
        raise SeglabError(f"segment id {ids.max()} does not fit a panoptic PNG (< 256^3): lower label_divisor")
    infos = []
    for sid, (area, bbox) in sorted(segment_stats(ids).items()):
        cat, instance = sid // label_divisor - 1, sid % label_divisor
        thing = cat in thing_ids
        infos.append({"id": sid, "category_id": cat, "iscrowd": int(thing and instance == 0),
                      "isthing": int(thing), "area": area, "bbox": bbox})
    return ids, infos


def _segment_lookup(ids: np.ndarray, segments_info: Segments, values: Mapping[int, int],
                    fill: int) -> np.ndarray:
    """Per pixel: `values[segment id]`, `fill` for VOID and for ids without a record / value."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    by_id = {int(s["id"]): s for s in segments_info}
    table = np.array([values.get(int(by_id[u]["category_id"]), fill) if u in by_id else fill
                      for u in uniq.tolist()], np.int64)
    return table[inverse.reshape(ids.shape)]


def panoptic_to_semantic(ids, segments_info: Segments, ignore: int = IGNORE, *,
                         category_to_label: Mapping[int, int] | None = None) -> np.ndarray:
    """(H, W) int64 class map: each segment's category id (or `category_to_label[category_id]`; categories
    left out of it become `ignore`), `ignore` for VOID and for ids without a record. Crowd segments keep
    their class."""
    ids = np.asarray(ids)
    cats = {int(s["category_id"]) for s in segments_info}
    mapping = {c: c for c in cats} if category_to_label is None else dict(category_to_label)
    return _segment_lookup(ids, segments_info, mapping, ignore)


def panoptic_to_instances(ids, segments_info: Segments, category_to_label: Mapping[int, int],
                          image_id: Any = 0) -> dict:
    """The numpy instance target (seglab.data.instances) of the thing segments: masks, labels
    (`category_to_label[category_id]`, segments of other categories are left out), iscrowd, tight boxes
    (xyxy, pixel-edge convention), image_id; in segments_info order."""
    ids = np.asarray(ids)
    things = [s for s in segments_info if int(s["category_id"]) in category_to_label]
    seg_ids = np.array([int(s["id"]) for s in things], np.int64)
    masks = ids[None] == seg_ids[:, None, None]
    stats = segment_stats(np.where(np.isin(ids, seg_ids), ids, VOID))
    boxes = np.zeros((len(things), 4), np.float32)
    for k, sid in enumerate(seg_ids.tolist()):
        if sid in stats:
            x, y, w, h = stats[sid][1]
            boxes[k] = (x, y, x + w, y + h)
    return {"boxes": boxes, "masks": masks, "image_id": image_id,
            "labels": np.array([category_to_label[int(s["category_id"])] for s in things], np.int64),
            "iscrowd": np.array([bool(s.get("iscrowd", 0)) for s in things], bool)}


# Cityscapes: the 19 evaluated classes (CITYSCAPES_CLASSES order = trainIds) with their labelIds and the
# label categories of cityscapesscripts/helpers/labels.py; the 8 from person on have instances.
_CITYSCAPES_LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
_CITYSCAPES_GROUPS = ["flat"] * 2 + ["construction"] * 3 + ["object"] * 3 + ["nature"] * 2 + ["sky"] \
    + ["human"] * 2 + ["vehicle"] * 6
CITYSCAPES_MAX_LABEL_ID = 33


def cityscapes_panoptic_categories(use_train_id: bool = False) -> list[dict]:
    """The categories of createPanopticImgs' JSON: id (labelId, or trainId), name, color, supercategory,
    isthing."""
    return [{"id": train_id if use_train_id else label_id, "name": name, "color": list(color),
             "supercategory": group, "isthing": int(train_id >= 11)}
            for train_id, (label_id, name, color, group) in enumerate(
                zip(_CITYSCAPES_LABEL_IDS, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, _CITYSCAPES_GROUPS))]


def cityscapes_instance_ids_to_panoptic(instance_ids, *, use_train_id: bool = False) -> tuple[np.ndarray, Segments]:
    """createPanopticImgs on one `*_gtFine_instanceIds.png` map: segment id = the map's value, category =
    its labelId (value // 1000 from 1000 on) or trainId; values < 1000 of thing classes are crowd groups;
    classes ignored in evaluation become VOID. Records are sorted by id."""
    values_map = np.asarray(instance_ids).astype(np.int64)
    label_ids = np.where(values_map >= LABEL_DIVISOR, values_map // LABEL_DIVISOR, values_map)
    bad = values_map[(values_map < 0) | (label_ids > CITYSCAPES_MAX_LABEL_ID)]
    if bad.size:
        raise DataError(f"instanceIds value {int(bad[0])} is not a labelId (0..{CITYSCAPES_MAX_LABEL_ID}) "
                        f"or labelId * 1000 + instance")
    evaluated = np.isin(label_ids, _CITYSCAPES_LABEL_IDS)
    ids = np.where(evaluated, values_map, VOID)
    infos = []
    for sid, (area, bbox) in sorted(segment_stats(ids).items()):
        label_id = sid // LABEL_DIVISOR if sid >= LABEL_DIVISOR else sid
        train_id = CITYSCAPES_ID_TO_TRAIN_ID[label_id]
        thing = train_id >= 11
        infos.append({"id": sid, "category_id": train_id if use_train_id else label_id, "area": area,
                      "bbox": bbox, "iscrowd": int(thing and sid < LABEL_DIVISOR)})
    return ids, infos
