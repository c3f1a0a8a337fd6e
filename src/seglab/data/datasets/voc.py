"""Pascal VOC 2012 segmentation, 21 classes, with the optional SBD-augmented training list.

Everingham, Van Gool, Williams, Winn, Zisserman, "The PASCAL Visual Object Classes (VOC) Challenge",
IJCV 2010 (1,464 train / 1,449 val segmentation images). The augmented set ("trainaug", 10,582
images) adds the annotations of Hariharan et al., "Semantic Contours from Inverse Detectors"
(SBD), ICCV 2011, as done by DeepLab (Chen et al., TPAMI 2018, Sec. 4.1).

Layout (`root` is `VOC2012/`, or a folder holding `VOC2012/` or `VOCdevkit/VOC2012/`):
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png                  palette PNGs; 0 background, 1..20 objects, 255 boundary
    ImageSets/Segmentation/{train,val,trainval}.txt   one image id per line
  trainaug only:
    ImageSets/Segmentation/train_aug.txt        one id per line, or `image label` pairs relative to
                                                root (the DeepLab list form, leading '/' allowed)
    SegmentationClassAug/<id>.png               single-channel PNGs with class indices 0..20 and 255
Palette and grayscale labels are both read as class indices; 255 (the white boundary) is ignored.
Keep `val` ids out of `train_aug.txt` (the usual 10,582-image list already does).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ...errors import DataError, SeglabError
from ...utils.io import read_text_file
from ..palettes import VOC_CLASSES, VOC_PALETTE
from .folder import SegmentationDataset, check_dir, resolve

VOC_SPLITS = ("train", "val", "trainval", "trainaug")


def _voc_root(root: Path) -> Path:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise DataError(f"{root}: not a Pascal VOC 2012 folder (no JPEGImages/ here, in VOC2012/ or "
                    f"in VOCdevkit/VOC2012/)")


class VOCSegmentation(SegmentationDataset):
    """Pascal VOC 2012 segmentation, `split` in train / val / trainval / trainaug."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        if split not in VOC_SPLITS:
            raise SeglabError(f"VOCSegmentation: unknown split {split!r}, expected one of {', '.join(VOC_SPLITS)}")
        root = _voc_root(check_dir(Path(root), "VOC root"))
        sets = root / "ImageSets" / "Segmentation"
        if split == "trainaug":
            list_file, label_dir = sets / "train_aug.txt", root / "SegmentationClassAug"
            check_dir(label_dir, "SBD label folder (needed for split 'trainaug')")
        else:
            list_file, label_dir = sets / f"{split}.txt", root / "SegmentationClass"
        if not list_file.is_file():
            raise DataError(f"{list_file}: list file not found")
        samples = []
        for n, line in enumerate(read_text_file(list_file, "list file").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 1:
                pair = (root / "JPEGImages" / f"{parts[0]}.jpg", label_dir / f"{parts[0]}.png")
            elif len(parts) == 2:
                pair = (resolve(root, parts[0]), resolve(root, parts[1]))
            else:
                raise DataError(f"{list_file}:{n}: expected an image id or 'image label', got {line.strip()!r}")
            for p in pair:
                if not p.is_file():
                    raise DataError(f"{list_file}:{n}: listed file not found: {p}")
            samples.append(pair)
        if not samples:
            raise DataError(f"{list_file}: list file is empty (expected one image id per line)")
        super().__init__(samples, classes=VOC_CLASSES, palette=VOC_PALETTE, transform=transform,
                         source=list_file)
        self.root, self.split = root, split
