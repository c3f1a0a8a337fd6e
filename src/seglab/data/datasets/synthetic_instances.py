"""Instance view of the synthetic stuff-and-things set written by `seglab.data.generate_synthetic`.

Things after Kirillov et al., "Panoptic Segmentation", CVPR 2019 (Sec. 3): the countable shapes
(circle, rectangle, triangle) are the instances, the stuff (grass, water, sand) is background. Each
image's `instances/<name>.png` holds instance ids 1..K (0: no instance) and `labels/<name>.png` the class
per pixel, so an instance's class is the one class under its pixels. Images and their ids come from
`panoptic_<split>.json`; category ids are the generator's class ids (3, 4, 5), labels 0, 1, 2.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from ...utils.io import read_json
from ..instances import InstanceDataset, Target, empty_target, masks_to_boxes
from ..io import read_label
from ..synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SYNTHETIC_THING_IDS
from .folder import check_synthetic_root


class SyntheticInstances(InstanceDataset):
    """The thing instances of a generated synthetic set, `split` in train / val."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        self.root, self.split = check_synthetic_root(root, split, "SyntheticInstances"), split
        index = self.root / f"panoptic_{split}.json"
        data = read_json(index, "panoptic JSON")
        try:
            self.images = [(int(im["id"]), Path(im["file_name"]).name) for im in data["images"]]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{index}: cannot read the image list ({type(e).__name__}: {e})") from None
        if not self.images:
            raise DataError(f"{index}: no images in split {split!r}")
        super().__init__(classes=[SYNTHETIC_CLASSES[c] for c in SYNTHETIC_THING_IDS],
                         category_ids=SYNTHETIC_THING_IDS, transform=transform,
                         palette=[SYNTHETIC_PALETTE[c] for c in SYNTHETIC_THING_IDS])

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        return self.root / "images" / self.images[i][1]

    def load_target(self, i: int, height: int, width: int) -> Target:
        image_id, name = self.images[i]
        inst_path, label_path = self.root / "instances" / name, self.root / "labels" / name
        inst, label = read_label(inst_path), read_label(label_path)
        for path, array in ((inst_path, inst), (label_path, label)):
            if array.shape != (height, width):
                raise DataError(f"{path}: is {array.shape[1]}x{array.shape[0]} but its image is {width}x{height}")
        ids = np.unique(inst[inst > 0])
        target = empty_target(height, width, image_id)
        if ids.size == 0:
            return target
        masks = inst[None] == ids[:, None, None]
        labels = np.empty(len(ids), np.int64)
        for k, mask in enumerate(masks):
            classes = np.unique(label[mask])
            if classes.size != 1 or int(classes[0]) not in self.category_id_to_label:
                raise DataError(f"{inst_path}: instance {int(ids[k])} covers classes {classes.tolist()} in "
                                f"{label_path.name}, expected one thing class of {list(SYNTHETIC_THING_IDS)}")
            labels[k] = self.category_id_to_label[int(classes[0])]
        boxes = masks_to_boxes(torch.from_numpy(masks)).numpy()
        target.update(boxes=boxes, masks=masks, labels=labels, iscrowd=np.zeros(len(ids), bool))
        return target
