"""COCO instance segmentation (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014).

Reads an instances JSON (`images`, `annotations`, `categories`) as the COCO API does: polygons,
uncompressed RLE (counts list) and compressed RLE (counts string) in `segmentation`, `bbox` as
[x, y, w, h], `iscrowd` kept in the target. Category ids are mapped to contiguous labels in the order of
increasing id (`category_ids[label]` maps back, for result files). Images without annotations are kept.

The whole JSON is checked when the data set is built, and every bad annotation raises one `DataError`
naming the JSON file and the annotation id: unknown category id, image id not in `images`, box outside
the image (more than `BOX_TOLERANCE` pixels; smaller overshoots from float rounding are clipped),
missing or empty polygon (fewer than 3 points), RLE whose size differs from the image's. With
`skip_invalid=True` such annotations are dropped with one warning instead (the COCO 2017 train set has
a few degenerate polygons). An image file whose size differs from its `images` entry raises on read.

Layout for `build_dataset("coco_instances", root=..., split="train")` (the 2017 release):
    <root>/train2017/*.jpg, <root>/val2017/*.jpg
    <root>/annotations/instances_train2017.json, instances_val2017.json
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...utils.io import read_json
from ..coco_masks import Backend, check_polygons, rle_size, segmentation_to_mask
from ..instances import InstanceDataset, Target, empty_target
from .folder import check_dir

BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image (float rounding in the released files)


def _load_json(path: Path) -> dict:
    data = read_json(path, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list) or not isinstance(data.get("annotations", []), list):
        raise DataError(f"{path}: expected a COCO instances JSON with 'images', 'annotations', 'categories'")
    return data


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_categories(categories: list, path: Path, *, panoptic: bool = False) -> list[dict]:
    """COCO categories, checked: objects with an integer id (unique) and a name (and for panoptic files
    an isthing of 0 / 1 / true / false); one DataError naming the file and the category otherwise."""
    seen = set()
    for c in categories:
        shown = json.dumps(c)[:80]
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise DataError(f"{path}: category {shown} needs an integer 'id'")
        if not panoptic and not isinstance(c.get("name"), str):
            raise DataError(f"{path}: category {shown} needs a 'name' (a string)")
        if panoptic and (c.get("isthing") not in (0, 1) or "name" in c and not isinstance(c["name"], str)):
            raise DataError(f"{path}: category {shown} needs 'isthing' 0 or 1 (and a string 'name')")
        if panoptic and "color" in c and not (isinstance(c["color"], list) and len(c["color"]) == 3 and all(
                _is_int(v) and 0 <= v <= 255 for v in c["color"])):
            raise DataError(f"{path}: category {shown}: 'color' must be [r, g, b] in 0..255")
        if c["id"] in seen:
            raise DataError(f"{path}: category id {c['id']} is listed twice")
        seen.add(c["id"])
    return categories


class CocoInstances(InstanceDataset):
    """COCO-format instances: images under `image_dir` (named by `file_name`), `annotation_json`.

    `dataset[i]` is `(image, target)` (see `seglab.data.instances`); `target["image_id"]` is the COCO
    image id. `backend` picks the mask decoder ("auto": pycocotools when installed, else numpy; both give
    the same masks).
    """

    def __init__(self, image_dir: str | os.PathLike, annotation_json: str | os.PathLike,
                 transform: Callable | None = None, *, skip_invalid: bool = False, backend: Backend = "auto"):
        self.image_dir = check_dir(Path(image_dir), "COCO image folder")
        self.annotation_json = Path(annotation_json)
        self.backend = backend
        data = _load_json(self.annotation_json)
        cats = sorted(check_categories(data["categories"], self.annotation_json), key=lambda c: c["id"])
        if not cats:
            raise DataError(f"{self.annotation_json}: 'categories' is empty")
        super().__init__(classes=[c["name"] for c in cats], category_ids=[int(c["id"]) for c in cats],
                         transform=transform)
        self.images = [self._image_entry(img) for img in data["images"]]
        if not self.images:
            raise DataError(f"{self.annotation_json}: 'images' is empty")
        by_id = {img["id"]: img for img in self.images}
        if len(by_id) != len(self.images):
            raise DataError(f"{self.annotation_json}: an image id is listed twice in 'images'")
        self.annotations: dict[int, list[dict]] = {img["id"]: [] for img in self.images}
        skipped: list[str] = []
        for ann in data.get("annotations", []):
            try:
                self.annotations[self._check_annotation(ann, by_id)].append(ann)
            except DataError as e:
                if not skip_invalid:
                    raise
                skipped.append(str(e))
        if skipped:
            warnings.warn(f"{self.annotation_json}: skipped {len(skipped)} invalid annotation(s), "
                          f"first: {skipped[0]}", stacklevel=2)

    def _image_entry(self, img: dict) -> dict:
        ok = isinstance(img, dict) and _is_int(img.get("id")) and isinstance(img.get("file_name"), str) \
            and all(_is_int(img.get(k)) and img[k] > 0 for k in ("height", "width"))
        if not ok:
            raise DataError(f"{self.annotation_json}: image entry {json.dumps(img)[:80]} needs an integer id, a "
                            f"file_name and positive integer height and width")
        return {k: img[k] for k in ("id", "file_name", "height", "width")}

    def _check_annotation(self, ann: dict, images: dict[int, dict]) -> int:
        """The annotation's image id, after checking everything that does not need the pixels."""
        if not isinstance(ann, dict):
            raise DataError(f"{self.annotation_json}: annotation {json.dumps(ann)[:60]} is not an object")
        where = f"{self.annotation_json}: annotation {json.dumps(ann.get('id', '?'))[:30]}"
        image_id = ann.get("image_id")
        if not _is_int(image_id) or image_id not in images:
            raise DataError(f"{where}: image_id {json.dumps(image_id)[:40]} is not in 'images'")
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in self.category_id_to_label:
            raise DataError(f"{where}: unknown category_id {json.dumps(ann.get('category_id'))[:40]}, expected one "
                            f"of {self.category_ids[:20]}")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise DataError(f"{where}: iscrowd must be 0 or 1, got {json.dumps(ann.get('iscrowd'))[:40]}")
        img = images[image_id]
        h, w = img["height"], img["width"]
        box = ann.get("bbox")
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
            raise DataError(f"{where}: bbox must be [x, y, w, h] of finite numbers, got {json.dumps(box)[:60]}")
        x, y, bw, bh = (float(v) for v in box)
        tol = BOX_TOLERANCE
        if bw < 0 or bh < 0 or x < -tol or y < -tol or x + bw > w + tol or y + bh > h + tol:
            raise DataError(f"{where}: box [x, y, w, h] = {list(box)} lies outside its image "
                            f"{img['file_name']} ({w}x{h})")
        segm = ann.get("segmentation")
        try:
            if isinstance(segm, dict):
                if rle_size(segm) != (h, w):
                    raise ValueError(f"mask size {segm['size'][1]}x{segm['size'][0]} does not match the "
                                     f"image size {w}x{h}")
            elif segm is None:
                raise ValueError("no segmentation")
            else:
                check_polygons(segm)
        except ValueError as e:
            raise DataError(f"{where}: {e}") from e
        return image_id

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.images[i]["file_name"]

    def load_target(self, i: int, height: int, width: int) -> Target:
        img = self.images[i]
        if (img["height"], img["width"]) != (height, width):
            raise DataError(f"{self.image_path(i)}: image is {width}x{height} but {self.annotation_json} "
                            f"gives {img['width']}x{img['height']} for image id {img['id']}")
        anns = self.annotations[img["id"]]
        target = empty_target(height, width, img["id"])
        if not anns:
            return target
        masks = np.zeros((len(anns), height, width), bool)
        for k, ann in enumerate(anns):
            try:
                masks[k] = segmentation_to_mask(ann["segmentation"], height, width, backend=self.backend)
            except ValueError as e:
                raise DataError(f"{self.annotation_json}: annotation {ann.get('id', '?')}: {e}") from e
        boxes = np.array([ann["bbox"] for ann in anns], np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        target.update(boxes=boxes, masks=masks,
                      labels=np.array([self.category_id_to_label[a["category_id"]] for a in anns], np.int64),
                      iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool))
        return target


def coco_instances(root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                   year: str | int = 2017, image_dir: str | os.PathLike | None = None,
                   annotation_json: str | os.PathLike | None = None, skip_invalid: bool = False) -> CocoInstances:
    """`build_dataset("coco_instances")`: `<root>/<split><year>` + `<root>/annotations/instances_<split><year>.json`
    unless `image_dir` / `annotation_json` (relative to root) say otherwise."""
    root = check_dir(Path(root), "COCO root")
    image_dir = root / (image_dir if image_dir is not None else f"{split}{year}")
    ann = root / (annotation_json if annotation_json is not None
                  else Path("annotations") / f"instances_{split}{year}.json")
    return CocoInstances(image_dir, ann, transform, skip_invalid=skip_invalid)
