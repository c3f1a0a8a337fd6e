"""Cityscapes instance segmentation (Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene
Understanding", CVPR 2016, Sec. 3 and the instance-level benchmark).

`gtFine/<split>/<city>/*_gtFine_instanceIds.png` stores per pixel `labelId * 1000 + instance` for the
objects of the 8 evaluated thing classes (person, rider, car, truck, bus, train, motorcycle, bicycle)
and the plain labelId (< 1000) everywhere else, where a thing labelId marks a group of objects that
could not be told apart. As in the official scripts (`cityscapesscripts/helpers/labels.py`:
hasInstances and not ignoreInEval) and detectron2's loader, those groups become crowd instances
(`iscrowd` True), caravan and trailer (instances, but ignored in evaluation) are left out, and the
category id of a class is its labelId (24..33).

Layout (as downloaded):
    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError, SeglabError
from ..instances import InstanceDataset, Target, empty_target, masks_to_boxes
from ..io import read_label
from ..palettes import CITYSCAPES_PALETTE
from .cityscapes import CITYSCAPES_SPLITS
from .folder import check_dir, find_pairs

CITYSCAPES_THING_CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
CITYSCAPES_THING_IDS = (24, 25, 26, 27, 28, 31, 32, 33)  # labelIds, in the order of the names above
CITYSCAPES_THING_PALETTE = CITYSCAPES_PALETTE[11:]  # trainIds 11..18 are the same 8 classes
INSTANCE_ID_STRIDE = 1000
MAX_LABEL_ID = 33


class CityscapesInstances(InstanceDataset):
    """Cityscapes gtFine instances, `split` in train / val (test has no public annotations);
    `target["image_id"]` is the sample's index."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        if split not in CITYSCAPES_SPLITS:
            raise SeglabError(f"CityscapesInstances: unknown split {split!r}, expected one of "
                              f"{', '.join(CITYSCAPES_SPLITS)}")
        self.root, self.split = check_dir(Path(root), "Cityscapes root"), split
        self.samples = find_pairs(self.root / "leftImg8bit" / split, self.root / "gtFine" / split,
                                  image_suffix="_leftImg8bit.png", mask_suffix="_gtFine_instanceIds.png",
                                  recursive=True)
        super().__init__(classes=CITYSCAPES_THING_CLASSES, category_ids=CITYSCAPES_THING_IDS,
                         transform=transform, palette=CITYSCAPES_THING_PALETTE)

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, i: int) -> Path:
        return self.samples[i][0]

    def cityscapes_instance_ids(self, i: int) -> np.ndarray:
        """Sample i's raw instanceIds map, the ground truth of Cityscapes' own evaluation
        (`seglab.metrics.cityscapes`: groups, caravan / trailer and void stay as the script sees them)."""
        return read_label(self.samples[i][1])

    def load_target(self, i: int, height: int, width: int) -> Target:
        path = self.samples[i][1]
        ids = self.cityscapes_instance_ids(i)
        if ids.shape != (height, width):
            raise DataError(f"{path}: instance map is {ids.shape[1]}x{ids.shape[0]} but its image "
                            f"{self.samples[i][0].name} is {width}x{height}")
        values = np.unique(ids)
        label_ids = np.where(values >= INSTANCE_ID_STRIDE, values // INSTANCE_ID_STRIDE, values)
        bad = values[(label_ids > MAX_LABEL_ID) | (values < 0)]
        if bad.size:
            raise DataError(f"{path}: instance id {int(bad[0])} holds labelId {int(bad[0]) // INSTANCE_ID_STRIDE}, "
                            f"expected labelId * 1000 + instance with labelId in 0..{MAX_LABEL_ID}")
        keep = np.isin(label_ids, CITYSCAPES_THING_IDS)
        values, label_ids = values[keep], label_ids[keep]
        target = empty_target(height, width, i)
        if values.size == 0:
            return target
        masks = ids[None] == values[:, None, None]
        boxes = masks_to_boxes(torch.from_numpy(masks)).numpy()
        target.update(boxes=boxes, masks=masks, iscrowd=values < INSTANCE_ID_STRIDE,
                      labels=np.array([self.category_id_to_label[int(c)] for c in label_ids], np.int64))
        return target
