"""Panoptic data sets: COCO panoptic, Cityscapes panoptic and the synthetic set's panoptic files.

Kirillov, He, Girshick, Rother, Dollar, "Panoptic Segmentation", CVPR 2019: COCO panoptic (2017 release:
80 thing + 53 stuff categories) and Cityscapes (Cordts et al., CVPR 2016: 8 thing + 11 stuff classes,
as cityscapesscripts' createPanopticImgs writes them); all read through the COCO panoptic format
(`seglab.data.panoptic`).

`dataset[i]` is `(image FloatTensor[3, H, W], target)` with the target
    "semantic"      LongTensor (H, W)  contiguous class per pixel: stuff categories first (by id), then
                                       things (by id), as the panoptic models' semantic branch orders
                                       them; 255 for VOID
    "boxes", "labels", "masks", "iscrowd", "image_id"
                                       the instance target of `seglab.data.instances` for the thing
                                       segments; labels are contiguous thing indices (semantic class
                                       minus `num_stuff`); crowd segments are kept with iscrowd True
    "panoptic"      LongTensor (H, W)  segment ids (0 = VOID), for the evaluation
    "segments_info" list of dicts      id, category_id, iscrowd, isthing, area, bbox of the segments left
                                       after the transform (area / bbox counted in the transformed map)
`image_id` is the JSON's image id where that is an int (COCO), else the sample index (Cityscapes' ids
are strings); `dataset.image_ids[i]` keeps the JSON's.

Transforms take (uint8 H x W x 3 image, int64 H x W segment ids) and return (image tensor, LongTensor
ids): `PanopticTrainTransform` is `InstanceTrainTransform`'s geometry applied to one mask per segment, so
image, semantic map, panoptic ids and instance masks stay aligned; `PanopticEvalTransform` normalises.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import DataError
from ..instances import InstanceTrainTransform, collate_instances, read_rgb
from ..palettes import default_palette
from ..panoptic import (
    IGNORE,
    VOID,
    check_segments,
    load_panoptic_json,
    panoptic_to_instances,
    panoptic_to_semantic,
    read_panoptic,
    segment_stats,
    stuff_then_things,
)
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, mean_std, normalize_image
from .folder import check_dir, check_synthetic_root

collate_panoptic = collate_instances  # (list of images, list of targets)


class PanopticEvalTransform:
    """Normalisation only; the segment ids keep their size."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = mean_std(mean, std)

    def __call__(self, image: np.ndarray, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_image(image, self.mean, self.std), torch.as_tensor(np.asarray(ids, np.int64))

    def __repr__(self) -> str:
        return f"PanopticEvalTransform(mean={self.mean}, std={self.std})"


class PanopticTrainTransform:
    """`InstanceTrainTransform` (photometric, random scale, pad + random crop, flip, normalisation; same arguments) on
    the image and one mask per segment; the masks' nearest-neighbour sampling keeps them a partition, so
    the ids are rebuilt exactly; padding is VOID."""

    def __init__(self, crop_size: int | Sequence[int] | None = (512, 512),
                 scale_range: Sequence[float] = (0.5, 2.0), hflip: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, **photometric):
        self.geometry = InstanceTrainTransform(crop_size, scale_range, hflip, mean, std, **photometric)

    def __call__(self, image: np.ndarray, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ids = np.asarray(ids, np.int64)
        seg_ids = np.unique(ids)
        seg_ids = seg_ids[seg_ids != VOID]
        k = len(seg_ids)
        masks = ids[None] == seg_ids[:, None, None]
        x, t = self.geometry(image, {"boxes": np.zeros((k, 4), np.float32), "labels": np.arange(k),
                                     "masks": masks, "iscrowd": np.zeros(k, bool)})
        out = torch.zeros(x.shape[1:], dtype=torch.int64)
        for mask, index in zip(t["masks"], t["labels"].tolist()):
            out[mask] = int(seg_ids[index])
        return x, out

    def __repr__(self) -> str:
        g = self.geometry
        return (f"PanopticTrainTransform(crop_size={g.crop_size}, scale_range={g.scale_range}, hflip={g.hflip}, "
                f"mean={g.mean}, std={g.std})")


class PanopticDataset(Dataset):
    """Images with COCO-format panoptic annotations: `annotation_json`, its PNGs under `panoptic_dir`
    (named by the annotations' file_name), images under `image_dir` (named by the images' file_name)."""

    def __init__(self, image_dir: str | os.PathLike, annotation_json: str | os.PathLike,
                 panoptic_dir: str | os.PathLike, transform: Callable | None = None):
        self.image_dir = check_dir(Path(image_dir), "image folder")
        self.panoptic_dir = check_dir(Path(panoptic_dir), "panoptic PNG folder")
        self.annotation_json = Path(annotation_json)
        data = load_panoptic_json(self.annotation_json)
        ordered = stuff_then_things(data["categories"])
        if not ordered:
            raise DataError(f"{self.annotation_json}: 'categories' is empty")
        self.categories = [dict(c) for c in ordered]  # contiguous class order, for evaluator and viz
        self.classes = [str(c.get("name", c["id"])) for c in ordered]
        self.category_ids = [int(c["id"]) for c in ordered]
        self.num_stuff = sum(1 for c in ordered if not int(c["isthing"]))
        self.category_to_class = {cid: i for i, cid in enumerate(self.category_ids)}
        self.thing_category_to_label = {cid: i - self.num_stuff for i, cid in enumerate(self.category_ids)
                                        if i >= self.num_stuff}
        fallback = default_palette(len(ordered))
        self.palette = [tuple(c["color"]) if "color" in c else fallback[i] for i, c in enumerate(ordered)]
        files = {}
        for im in data.get("images", []):
            if isinstance(im.get("id"), (dict, list)) or not isinstance(im.get("file_name"), str):
                raise DataError(f"{self.annotation_json}: image entry {str(im)[:80]} needs an id and a file_name")
            files[im["id"]] = im["file_name"]
        self.samples: list[tuple[Any, str, dict]] = []
        seen: set[str] = set()
        for ann in data["annotations"]:
            if ann["image_id"] not in files:
                raise DataError(f"{self.annotation_json}: annotation {ann['file_name']} has image_id "
                                f"{ann['image_id']!r}, which is not in 'images'")
            if ann["file_name"] in seen:  # two images would share one ground-truth PNG
                raise DataError(f"{self.annotation_json}: two annotations name the PNG {ann['file_name']}")
            seen.add(ann["file_name"])
            self.samples.append((ann["image_id"], files[ann["image_id"]], ann))
        if not self.samples:
            raise DataError(f"{self.annotation_json}: no annotations")
        self.transform = PanopticEvalTransform() if transform is None else transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_things(self) -> int:
        return self.num_classes - self.num_stuff

    @property
    def thing_categories(self) -> list[dict]:
        """The thing categories in label order ({"id", "name"}), for the instance evaluator."""
        return [{"id": cid, "name": self.classes[i]} for cid, i in
                ((cid, self.category_to_class[cid]) for cid in self.thing_category_to_label)]

    @property
    def image_ids(self) -> list[Any]:
        return [s[0] for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.samples[i][1]

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """(uint8 H x W x 3 image, int64 H x W segment ids, segments_info) without any transform."""
        image = read_rgb(self.image_path(i))
        ids, infos = read_panoptic(self.panoptic_dir, self.samples[i][2])
        png = self.panoptic_dir / self.samples[i][2]["file_name"]
        if ids.shape != image.shape[:2]:
            raise DataError(f"{png}: is {ids.shape[1]}x{ids.shape[0]} but its image {self.image_path(i).name} is "
                            f"{image.shape[1]}x{image.shape[0]}")
        # Ground truth as the evaluation reads it: every id in the PNG has a record of a known category, every
        # record has pixels (otherwise pixels would silently count as VOID, or a segment as missed).
        check_segments(ids, infos, f"{png} (of {self.annotation_json})", self.category_ids)
        return image, ids, infos

    def make_target(self, ids: torch.Tensor, segments_info: list[dict], image_id: Any) -> dict:
        """The target dict (module docstring) of a (transformed) segment id map."""
        ids_np = ids.numpy()
        stats = segment_stats(ids_np)
        infos = [{"id": int(s["id"]), "category_id": int(s["category_id"]), "iscrowd": int(s.get("iscrowd", 0)),
                  "isthing": int(int(s["category_id"]) in self.thing_category_to_label),
                  "area": stats[int(s["id"])][0], "bbox": stats[int(s["id"])][1]}
                 for s in segments_info if int(s["id"]) in stats]
        semantic = panoptic_to_semantic(ids_np, infos, IGNORE, category_to_label=self.category_to_class)
        inst = panoptic_to_instances(ids_np, infos, self.thing_category_to_label, image_id)
        return {"semantic": torch.from_numpy(semantic), "boxes": torch.from_numpy(inst["boxes"]),
                "labels": torch.from_numpy(inst["labels"]), "masks": torch.from_numpy(inst["masks"]),
                "iscrowd": torch.from_numpy(inst["iscrowd"]), "image_id": image_id, "panoptic": ids,
                "segments_info": infos}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        image, ids, infos = self.read_raw(i)
        x, ids_t = self.transform(image, ids)
        image_id = self.samples[i][0] if isinstance(self.samples[i][0], int) else i
        return x, self.make_target(ids_t, infos, image_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_stuff} stuff + {self.num_things} thing classes)"


def coco_panoptic(root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                  year: str | int = 2017, image_dir: str | os.PathLike | None = None,
                  annotation_json: str | os.PathLike | None = None,
                  panoptic_dir: str | os.PathLike | None = None) -> PanopticDataset:
    """`build_dataset("coco_panoptic")`: `<root>/<split><year>/*.jpg`,
    `<root>/annotations/panoptic_<split><year>.json` and its PNGs in `<root>/annotations/panoptic_<split><year>/`
    (the unzipped release) or `<root>/panoptic_<split><year>/` (detectron2's layout), unless
    `image_dir` / `annotation_json` / `panoptic_dir` (relative to root) say otherwise."""
    root = check_dir(Path(root), "COCO root")
    name = f"panoptic_{split}{year}"
    ann = root / (annotation_json if annotation_json is not None else Path("annotations") / f"{name}.json")
    if panoptic_dir is None:
        panoptic_dir = Path("annotations") / name if (root / "annotations" / name).is_dir() else Path(name)
    return PanopticDataset(root / (image_dir if image_dir is not None else f"{split}{year}"), ann,
                           root / panoptic_dir, transform)


class SyntheticPanoptic(PanopticDataset):
    """The panoptic files of a generated synthetic set (`seglab.data.generate_synthetic`), split train / val:
    stuff grass, water, sand (classes 0-2), things circle, rectangle, triangle (classes 3-5, labels 0-2)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        root = check_synthetic_root(root, split, "SyntheticPanoptic")
        self.root, self.split = root, split
        super().__init__(root, root / f"panoptic_{split}.json", root, transform)


class CityscapesPanoptic(PanopticDataset):
    """Cityscapes panoptic as cityscapesscripts' createPanopticImgs writes it (`--use-train-id` for
    `use_train_id`): `<root>/gtFine/cityscapes_panoptic_<split>[_trainId].json` and its PNG folder beside
    it; images at `<root>/leftImg8bit/<split>/<city>/<file_name>` (city = file_name's first part)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 use_train_id: bool = False):
        root = check_dir(Path(root), "Cityscapes root")
        name = f"cityscapes_panoptic_{split}{'_trainId' if use_train_id else ''}"
        self.root, self.split = root, split
        super().__init__(root / "leftImg8bit" / split, root / "gtFine" / f"{name}.json", root / "gtFine" / name,
                         transform)

    def image_path(self, i: int) -> Path:
        file_name = self.samples[i][1]
        return self.image_dir / file_name.split("_")[0] / file_name


PANOPTIC_DATASETS = {"coco_panoptic": coco_panoptic, "cityscapes_panoptic": CityscapesPanoptic,
                     "synthetic_panoptic": SyntheticPanoptic}
