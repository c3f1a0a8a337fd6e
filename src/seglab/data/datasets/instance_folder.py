"""Instance segmentation from a folder of images and instance-id PNGs: the layout of the Penn-Fudan
Pedestrian Database (Wang, Shi, Song & Shen, "Object Detection Combining Recognition and
Segmentation", ACCV 2007) and of many users' own annotations.

Each image `<image_dir>/<name>.<ext>` has an instance map `<mask_dir>/<name><mask_suffix>` (one channel,
8- or 16-bit): 0 = background, k > 0 = instance k of that image (values in `ignore_ids`, e.g. VOC's 255
border, are neither). An instance's box is the tight box of its mask (`masks_to_boxes`).

Classes, one of three ways:
- one class for every instance (`classes: [person]`, the default `[object]`);
- `class_map`: a JSON file `{"<name>": {"<instance id>": "<class name>", ...}, ...}` over `classes`;
- `class_dir`: a semantic PNG per image (`<class_dir>/<name><class_suffix>`, value v in 1..C is
  `classes[v - 1]`, 0 background): an instance's class is the most common class under its pixels
  (VOC's SegmentationObject + SegmentationClass pairs).
Category ids are 1..C in the order of `classes`.

Splits, one of three ways:
- `splits: {train: a.txt, val: b.txt}`: list files of image names (one per line, with or without the
  extension, `#` comments), relative to the working directory when they exist there, else to root;
- `val_fraction: 0.2` (with `seed`): a seeded split of all images (or of `list_file`'s names) into
  train and val, the same on every machine (`seeded_split`);
- otherwise `<root>/<split>.txt` when it exists. Split "all" is always every image.
`target["image_id"]` is the image's index among all images (sorted names), so ids agree across splits.

    data: {name: instance_folder, root: ../shared/data/pennfudan,
           kwargs: {image_dir: PNGImages, mask_dir: PedMasks, mask_suffix: _mask.png, classes: [person],
                    splits: {train: configs/pennfudan/train.txt, val: configs/pennfudan/val.txt}}}
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError, SeglabError
from ...utils.io import read_json
from ..instances import InstanceDataset, Target, empty_target, masks_to_boxes
from ..io import read_label
from .folder import IMAGE_EXTENSIONS, check_dir


def seeded_split(names: Sequence[str], val_fraction: float, seed: int = 0) -> dict[str, list[str]]:
    """{"train": [...], "val": [...]}: round(val_fraction * n) names drawn for val by a seeded shuffle of
    the sorted names (Python's `random.Random(seed)`, stable across versions); each list sorted."""
    if not 0 < val_fraction < 1:
        raise SeglabError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ordered = sorted(names)
    shuffled = ordered[:]
    random.Random(seed).shuffle(shuffled)
    n_val = max(1, round(val_fraction * len(ordered)))
    val = set(shuffled[:n_val])
    return {"train": [n for n in ordered if n not in val], "val": sorted(val)}


def read_name_list(path: Path) -> list[str]:
    """Image names, one per line (blank lines and `#` comments skipped; an image extension is dropped)."""
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line[: -len(Path(line).suffix)] if Path(line).suffix.lower() in IMAGE_EXTENSIONS else line)
    if not names:
        raise DataError(f"{path}: list file is empty (expected one image name per line)")
    return names


def _find(root: Path, path: str | os.PathLike) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else root / p


class InstanceFolder(InstanceDataset):
    """Images + instance-id PNGs (module docstring); `split` as the split options say."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 image_dir: str = "images", mask_dir: str = "masks", mask_suffix: str = ".png",
                 classes: Sequence[str] = ("object",), class_map: str | None = None,
                 class_dir: str | None = None, class_suffix: str = ".png",
                 splits: Mapping[str, str] | None = None, val_fraction: float | None = None, seed: int = 0,
                 list_file: str | None = None, ignore_ids: Sequence[int] = (),
                 palette: Sequence[Sequence[int]] | None = None):
        self.root = check_dir(Path(root), "instance data set root")
        self.image_dir = check_dir(self.root / image_dir, "image folder")
        self.mask_dir = check_dir(self.root / mask_dir, "instance mask folder")
        self.mask_suffix, self.split = mask_suffix, split
        if class_map is not None and class_dir is not None:
            raise SeglabError("instance_folder: give class_map or class_dir, not both")
        if splits is not None and val_fraction is not None:
            raise SeglabError("instance_folder: give splits (list files) or val_fraction, not both")
        self.ignore_ids = np.asarray(sorted(int(i) for i in ignore_ids), np.int64)
        files = {f.stem: f for f in sorted(self.image_dir.iterdir())
                 if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS}
        if not files:
            raise DataError(f"{self.image_dir}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
        self.all_names = sorted(files)
        names = self._split_names(split, splits, val_fraction, seed, list_file)
        missing = [n for n in names if n not in files]
        if missing:
            raise DataError(f"{self.image_dir}: image {missing[0]!r} of split {split!r} not found "
                            f"({len(missing)} missing)")
        index = {n: i for i, n in enumerate(self.all_names)}
        self.images = [(index[n], files[n]) for n in names]
        super().__init__(classes=classes, category_ids=range(1, len(classes) + 1), transform=transform,
                         palette=palette)
        self.class_map = self._read_class_map(_find(self.root, class_map)) if class_map is not None else None
        self.class_dir = check_dir(self.root / class_dir, "class mask folder") if class_dir is not None else None
        self.class_suffix = class_suffix

    def _split_names(self, split, splits, val_fraction, seed, list_file) -> list[str]:
        if split == "all":
            return list(self.all_names)
        if splits is not None:
            if split not in splits:
                raise SeglabError(f"instance_folder: split {split!r} is not in splits ({', '.join(splits)})")
            return read_name_list(_find(self.root, splits[split]))
        if val_fraction is not None:
            if split not in ("train", "val"):
                raise SeglabError(f"instance_folder: split {split!r} with val_fraction, expected train, val or all")
            pool = read_name_list(_find(self.root, list_file)) if list_file is not None else self.all_names
            return seeded_split(pool, val_fraction, seed)[split]
        listed = self.root / f"{split}.txt"
        if not listed.is_file():
            raise SeglabError(f"instance_folder: split {split!r}: give splits: {{{split}: LIST}} or val_fraction, "
                              f"or write {listed} (one image name per line); split 'all' reads every image")
        return read_name_list(listed)

    def _read_class_map(self, path: Path) -> dict[str, dict[int, int]]:
        raw = read_json(path, "class map")
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected {{image name: {{instance id: class name}}}}")
        label = {c: i for i, c in enumerate(self.classes)}
        out = {}
        for name, per_id in raw.items():
            if not isinstance(per_id, dict):
                raise DataError(f"{path}: {name!r} must map instance ids to class names, got {per_id!r:.60}")
            out[name] = {}
            for k, c in per_id.items():
                if c not in label:
                    raise DataError(f"{path}: {name!r} instance {k}: unknown class {c!r}, expected one of {self.classes}")
                try:
                    out[name][int(k)] = label[c]
                except ValueError:
                    raise DataError(f"{path}: {name!r}: instance id {k!r} is not an integer") from None
        return out

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        return self.images[i][1]

    def mask_path(self, i: int) -> Path:
        return self.mask_dir / (self.images[i][1].stem + self.mask_suffix)

    def load_target(self, i: int, height: int, width: int) -> Target:
        image_id, image_path = self.images[i]
        path = self.mask_path(i)
        ids = read_label(path)
        if ids.shape != (height, width):
            raise DataError(f"{path}: instance map is {ids.shape[1]}x{ids.shape[0]} but its image "
                            f"{image_path.name} is {width}x{height}")
        values = np.unique(ids)
        if values.size and values[0] < 0:
            raise DataError(f"{path}: negative instance id {int(values[0])}")
        values = values[(values > 0) & ~np.isin(values, self.ignore_ids)]
        target = empty_target(height, width, image_id)
        if values.size == 0:
            return target
        masks = ids[None] == values[:, None, None]
        target.update(boxes=masks_to_boxes(torch.from_numpy(masks)).numpy(), masks=masks,
                      labels=self._labels(i, values, masks, path), iscrowd=np.zeros(len(values), bool))
        return target

    def _labels(self, i: int, values: np.ndarray, masks: np.ndarray, path: Path) -> np.ndarray:
        name = self.images[i][1].stem
        if self.class_map is not None:
            per_id = self.class_map.get(name, {})
            unmapped = [int(v) for v in values if int(v) not in per_id]
            if unmapped:
                raise DataError(f"{path}: instance {unmapped[0]} has no class in the class map "
                                f"(add \"{name}\": {{\"{unmapped[0]}\": CLASS}})")
            return np.array([per_id[int(v)] for v in values], np.int64)
        if self.class_dir is None:
            return np.zeros(len(values), np.int64)
        cpath = self.class_dir / (name + self.class_suffix)
        semantic = read_label(cpath)
        if semantic.shape != masks.shape[1:]:
            raise DataError(f"{cpath}: is {semantic.shape[1]}x{semantic.shape[0]} but {path.name} is "
                            f"{masks.shape[2]}x{masks.shape[1]}")
        labels = np.empty(len(values), np.int64)
        for k, mask in enumerate(masks):
            under = semantic[mask]
            under = under[(under >= 1) & (under <= self.num_classes)]
            if under.size == 0:
                raise DataError(f"{cpath}: instance {int(values[k])} of {path.name} covers no class value "
                                f"1..{self.num_classes}")
            labels[k] = np.bincount(under).argmax() - 1
        return labels
