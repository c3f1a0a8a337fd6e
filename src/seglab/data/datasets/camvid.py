"""CamVid in the 11-class form and split of SegNet.

Brostow, Fauqueur, Cipolla, "Semantic object classes in video: a high-definition ground truth
database", Pattern Recognition Letters 2008; the 367 / 101 / 233 train / val / test split, the 11
classes and the 480x360 label maps of Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional
Encoder-Decoder Architecture for Image Segmentation", TPAMI 2017 (Sec. 4.1).

Layout (the SegNet tutorial's `CamVid/` folder):
    <root>/train.txt, val.txt, test.txt   `image label` per line, relative to <root>
    <root>/train/*.png, trainannot/*.png  (and val/, valannot/, test/, testannot/)
Label maps are single-channel PNGs with class indices 0..10; 11 (void) becomes the ignore index 255.
`split` may also be a list file of `image label` lines (relative to <root>) named by its path, e.g. the
sequence-held-out folds in configs/camvid/folds/ (docs/camvid.md).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ...errors import SeglabError
from ..palettes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID
from .folder import IGNORE_INDEX, SegmentationDataset, check_dir, read_list_file

CAMVID_SPLITS = ("train", "val", "test", "trainval")


class CamVid(SegmentationDataset):
    """CamVid (SegNet split): `split` is train, val or test (or trainval, reading `trainval.txt`), or
    the path of a list file ending in .txt (relative to the working directory, else to root)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        if split not in CAMVID_SPLITS and not split.endswith(".txt"):
            raise SeglabError(f"CamVid: unknown split {split!r}, expected one of {', '.join(CAMVID_SPLITS)} "
                              f"or a list file (.txt)")
        root = check_dir(Path(root), "CamVid root")
        list_file = root / f"{split}.txt"
        if split.endswith(".txt"):
            list_file = Path(split) if Path(split).is_file() else root / split
        if split == "trainval" and not list_file.is_file():
            samples = read_list_file(root / "train.txt", root) + read_list_file(root / "val.txt", root)
        else:
            samples = read_list_file(list_file, root)
        super().__init__(samples, classes=CAMVID_CLASSES, palette=CAMVID_PALETTE, transform=transform,
                         label_map={CAMVID_VOID: IGNORE_INDEX}, source=list_file)
        self.root, self.split = root, split
