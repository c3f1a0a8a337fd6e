"""Cityscapes, fine annotations, 19 evaluation classes.

Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding", CVPR 2016. The
34 labelIds of `gtFine/*_gtFine_labelIds.png` are mapped to the 19 trainIds with the official table
(`cityscapesscripts/helpers/labels.py`); every other id (unlabeled, ego vehicle, parking, guard rail,
caravan, trailer, ...) becomes the ignore index 255.

Layout (as downloaded: `leftImg8bit_trainvaltest.zip` + `gtFine_trainvaltest.zip`):
    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import SeglabError
from ..io import read_label
from ..palettes import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_PALETTE
from .folder import IGNORE_INDEX, SegmentationDataset, check_dir, find_pairs

CITYSCAPES_SPLITS = ("train", "val", "test")


def cityscapes_lut() -> np.ndarray:
    """labelId -> trainId lookup table over all 256 stored values (unlisted ids -> 255)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


class Cityscapes(SegmentationDataset):
    """Cityscapes gtFine, `split` in train / val / test (test labels are all ignore)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        if split not in CITYSCAPES_SPLITS:
            raise SeglabError(f"Cityscapes: unknown split {split!r}, expected one of "
                              f"{', '.join(CITYSCAPES_SPLITS)}")
        root = check_dir(Path(root), "Cityscapes root")
        samples = find_pairs(root / "leftImg8bit" / split, root / "gtFine" / split,
                             image_suffix="_leftImg8bit.png", mask_suffix="_gtFine_labelIds.png",
                             recursive=True)
        super().__init__(samples, classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE,
                         transform=transform, label_map=cityscapes_lut(), source=root / "leftImg8bit" / split)
        self.root, self.split = root, split

    def instance_ids_path(self, i: int) -> Path:
        """The `*_gtFine_instanceIds.png` beside sample i's labelIds map (part of gtFine as downloaded)."""
        label_path = Path(self.samples[i][1])
        return label_path.with_name(label_path.name[: -len("_labelIds.png")] + "_instanceIds.png")

    def has_instance_ids(self) -> bool:
        """Whether every sample has its instanceIds map (needed for the instance-level IoU)."""
        return len(self) > 0 and all(self.instance_ids_path(i).is_file() for i in range(len(self)))

    def cityscapes_instance_ids(self, i: int) -> np.ndarray:
        """Sample i's raw instanceIds map (labelId * 1000 + k for instances, the bare labelId elsewhere),
        what Cityscapes' evaluation scripts (`seglab.metrics.cityscapes`) take as ground truth."""
        path = self.instance_ids_path(i)
        if not path.is_file():
            raise SeglabError(f"{path}: Cityscapes instanceIds map not found (needed for the instance-level IoU)")
        return read_label(path)
