"""ADE20K SceneParsing (ADEChallengeData2016), 150 classes.

Zhou, Zhao, Puig, Fidler, Barriuso, Torralba, "Scene Parsing through ADE20K Dataset", CVPR 2017;
the 150-class benchmark of the MIT Scene Parsing Challenge 2016 (20,210 training / 2,000 validation
images). Annotations store 0 for "other / unlabeled" and k for class k-1, so the usual
reduce-zero-label mapping is applied: 0 -> 255 (ignored), k -> k - 1.

Layout (`ADEChallengeData2016.zip` unpacked; `root` may be the folder itself or its parent):
    <root>/ADEChallengeData2016/images/{training,validation}/*.jpg
    <root>/ADEChallengeData2016/annotations/{training,validation}/*.png
The palette is the one used by the CSAIL semantic-segmentation-pytorch and mmsegmentation code bases.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import SeglabError
from ..palettes import ADE20K_CLASSES, ADE20K_PALETTE
from .folder import IGNORE_INDEX, SegmentationDataset, check_dir, find_pairs

ADE20K_SPLITS = {"training": "training", "validation": "validation", "train": "training", "val": "validation"}


def reduce_zero_label_lut() -> np.ndarray:
    """0 -> 255, k -> k - 1 for 1..255; 255 stays 255."""
    lut = np.arange(256, dtype=np.int64) - 1
    lut[0] = IGNORE_INDEX
    lut[255] = IGNORE_INDEX
    return lut


class ADE20K(SegmentationDataset):
    """ADE20K SceneParsing, `split` in training / validation (aliases: train / val)."""

    def __init__(self, root: str | os.PathLike, split: str = "training", transform: Callable | None = None):
        if split not in ADE20K_SPLITS:
            raise SeglabError(f"ADE20K: unknown split {split!r}, expected training or validation")
        root = check_dir(Path(root), "ADE20K root")
        if (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        folder = ADE20K_SPLITS[split]
        samples = find_pairs(root / "images" / folder, root / "annotations" / folder,
                             image_suffix=".jpg", mask_suffix=".png")
        super().__init__(samples, classes=ADE20K_CLASSES, palette=ADE20K_PALETTE, transform=transform,
                         label_map=reduce_zero_label_lut(), source=root / "images" / folder)
        self.root, self.split = root, folder
