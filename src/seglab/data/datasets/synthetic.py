"""The synthetic stuff-and-things data set written by `seglab.data.generate_synthetic`.

Stuff and things after Kirillov et al., "Panoptic Segmentation", CVPR 2019; see
`seglab.data.synthetic` for the classes, the cues and the file layout.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from ..synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SYNTHETIC_THING_IDS
from .folder import SegmentationDataset, check_synthetic_root, read_list_file


class SyntheticSegmentation(SegmentationDataset):
    """Semantic view of a generated synthetic set, `split` in train / val."""

    thing_ids = SYNTHETIC_THING_IDS

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        root = check_synthetic_root(root, split, "SyntheticSegmentation")
        super().__init__(read_list_file(root / f"{split}.txt", root), classes=SYNTHETIC_CLASSES,
                         palette=SYNTHETIC_PALETTE, transform=transform, source=root / f"{split}.txt")
        self.root, self.split = root, split
