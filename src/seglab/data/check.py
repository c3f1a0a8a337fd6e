"""Checking a semantic data set before training on it (`seglab data check`, and `seglab train` itself).

What goes wrong silently with one's own masks, and what is checked here:
- files: images without a label and labels without an image (folder layout), image / label size
  mismatches, unreadable files and colour-coded RGB masks (-> `seglab data convert --palette`);
- values: stored values outside the classes that are not the ignore index 255 (-> `data.kwargs.label_map`),
  and binary masks stored as 0/255 -- 255 is the ignore index, so such a set trains on background
  alone and reports a plausible-looking mIoU (-> `data.kwargs.label_map={255: 1}`);
- classes: the pixel histogram per class after label mapping; a class with no training pixel stops
  `seglab data check`, and a training set whose pixels are all of one class (an empty foreground) stops
  `seglab train`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, SeglabError
from .datasets.folder import IGNORE_INDEX, IMAGE_EXTENSIONS, check_dir, flat_folder_problem
from .io import image_size, read_label


@dataclass
class LabelStats:
    """Pixel statistics of the label maps of one split."""
    images: int = 0
    read: int = 0                                   # label maps actually read (a sample of a large set)
    raw: dict[int, int] = field(default_factory=dict)        # stored value -> pixels (before label_map)
    classes: np.ndarray | None = None                        # class index -> pixels (after label_map)
    ignored: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> int:
        return int(self.classes.sum()) if self.classes is not None else 0


def label_statistics(dataset, *, max_images: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> LabelStats:
    """Read the label maps of a `SegmentationDataset` (all, or `max_images` evenly spaced) and count
    stored values and classes; per-file problems (unreadable, RGB, sizes, values) are collected, not raised."""
    n = len(dataset)
    idx = range(n) if max_images is None or n <= max_images else np.linspace(0, n - 1, max_images).round().astype(int)
    stats = LabelStats(images=n, classes=np.zeros(dataset.num_classes, dtype=np.int64))
    bad_values: dict[int, int] = {}
    for count, i in enumerate(idx):
        img_path, lbl_path = dataset.samples[int(i)]
        try:
            raw = read_label(lbl_path)
            w, h = image_size(img_path)
        except DataError as e:
            stats.problems.append(str(e))
            continue
        if raw.shape != (h, w):
            stats.problems.append(f"{img_path} and {lbl_path} differ in size: {w}x{h} vs {raw.shape[1]}x{raw.shape[0]}")
            continue
        values, counts = np.unique(raw, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            stats.raw[v] = stats.raw.get(v, 0) + c
        try:
            mask = dataset.map_label(raw, lbl_path)
        except DataError:  # values outside the classes: counted below, reported once
            lut = dataset.label_lut
            mapped = raw if lut is None else np.where((raw >= 0) & (raw < len(lut)), lut[np.clip(raw, 0, len(lut) - 1)], raw)
            outside = (mapped != IGNORE_INDEX) & ((mapped < 0) | (mapped >= dataset.num_classes))
            for v in np.unique(raw[outside]).tolist():
                bad_values[v] = bad_values.get(v, 0) + 1
            mask = np.where(outside, IGNORE_INDEX, mapped)
        valid = mask[mask != IGNORE_INDEX]
        stats.classes += np.bincount(valid.ravel(), minlength=dataset.num_classes)[: dataset.num_classes]
        stats.ignored += int(mask.size - valid.size)
        stats.read += 1
        if progress is not None:
            progress(count + 1, len(idx))
    if bad_values:
        shown = ", ".join(f"{v} ({k} files)" for v, k in sorted(bad_values.items())[:10])
        mapped = " after data.kwargs.label_map" if dataset.label_lut is not None else ""
        stats.problems.append(f"stored label values outside the {dataset.num_classes} classes [0, "
                              f"{dataset.num_classes}) and not the ignore index {IGNORE_INDEX}{mapped}: {shown}; map "
                              f"them with data.kwargs.label_map={{value: class}} or list more classes")
    return stats


def binary_255_hint(stats: LabelStats, dataset) -> str | None:
    """The 0/255 binary-mask trap: stored values {0, 255} and 255 not remapped by a label_map. (Masks that
    are all 255 are not this trap but an empty set: `training_problems` says every pixel is ignored.)"""
    values = {v for v, c in stats.raw.items() if c > 0}
    lut = dataset.label_lut
    remapped = lut is not None and len(lut) > IGNORE_INDEX and lut[IGNORE_INDEX] != IGNORE_INDEX
    if values == {0, IGNORE_INDEX} and not remapped:
        return (f"label values are {{0, 255}} only: did you mean 255 -> 1 (binary masks)? 255 is the ignore index, "
                f"so these masks train on background alone; pass data.kwargs.label_map={{255: 1}} (and 2 classes, "
                f"e.g. data.kwargs.classes=[background, foreground])")
    return None


def training_problems(stats: LabelStats, dataset, split: str = "train") -> tuple[list[str], list[str]]:
    """(errors, warnings) about a training split's statistics: the 0/255 trap, an empty foreground
    (every labelled pixel in one class), classes without pixels."""
    errors, warnings = [], []
    hint = binary_255_hint(stats, dataset)
    sampled = f" (in {stats.read} of {stats.images} label maps)" if stats.read < stats.images else ""
    present = np.flatnonzero(stats.classes) if stats.classes is not None else []
    if hint:
        errors.append(f"{split} split: {hint}")
    elif stats.read and stats.labelled == 0:
        errors.append(f"{split} split: every pixel is the ignore index {IGNORE_INDEX}{sampled}; nothing to learn "
                      f"(binary masks stored as 0/255 need data.kwargs.label_map={{255: 1}})")
    elif stats.read and len(present) == 1 and dataset.num_classes > 1:
        only = dataset.classes[int(present[0])]
        errors.append(f"{split} split: every labelled pixel is class {int(present[0])} ({only!r}){sampled}: the "
                      f"foreground is empty; check the masks' values (seglab data check) and data.kwargs.label_map")
    if stats.classes is not None and stats.read and not errors:
        empty = [f"{i} ({dataset.classes[i]!r})" for i in np.flatnonzero(stats.classes == 0).tolist()]
        if empty:
            warnings.append(f"{split} split: no training pixels{sampled} for class{'es' if len(empty) > 1 else ''} "
                            f"{', '.join(empty)}")
    return errors, warnings


def unpaired_files(image_dir: Path, label_dir: Path, mask_suffix: str = ".png") -> tuple[list[Path], list[Path]]:
    """(images without a label, labels without an image) of a folder pair, matched by file name stem."""
    images = {f.stem: f for f in image_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS} \
        if image_dir.is_dir() else {}
    labels = {f.name[: -len(mask_suffix)]: f for f in label_dir.iterdir() if f.is_file() and f.name.endswith(mask_suffix)} \
        if label_dir.is_dir() else {}
    return ([images[k] for k in sorted(set(images) - set(labels))],
            [labels[k] for k in sorted(set(labels) - set(images))])


def format_histogram(stats: LabelStats, classes: list[str]) -> list[str]:
    total = max(stats.labelled + stats.ignored, 1)
    lines = [f"  {'class':<20} {'pixels':>12} {'share':>7}"]
    for i, name in enumerate(classes):
        c = int(stats.classes[i])
        lines.append(f"  {i:>3} {name[:16]:<16} {c:>12} {100 * c / total:6.2f}%" + ("  <- no pixels" if c == 0 else ""))
    lines.append(f"  {IGNORE_INDEX:>3} {'(ignored)':<16} {stats.ignored:>12} {100 * stats.ignored / total:6.2f}%")
    return lines


def check_data(root, *, config=None, log: Callable[[str], None] = print) -> list[str]:
    """`seglab data check ROOT [--config CONFIG]`: report counts, unpaired files, size mismatches and the
    class histogram per split; returns the problems found (empty: the data set is fit to train on).
    Without a config the folder layout is assumed (`images/<split>`, `labels/<split>`, `classes.txt`)."""
    from ..config import config_from_dict
    from .datasets import build_dataset

    cfg = config if config is not None else config_from_dict({"model": {"name": "bisenetv2"},
                                                             "data": {"name": "folder", "root": str(root)}})
    d = cfg.data.model_copy(update={"root": str(root)}) if root is not None else cfg.data
    if d.root is None:
        raise SeglabError("data check: give the data set's folder (seglab data check ROOT)")
    check_dir(Path(d.root), "data set folder")  # a missing root is one line, not a report of its missing files
    problems: list[str] = []
    if d.name == "folder" and "list_file" not in d.kwargs and "image_dir" not in d.kwargs \
            and (flat := flat_folder_problem(Path(d.root), d.train_split)):
        return [flat]  # nothing else is meaningful before the split layout exists
    if d.name == "folder" and "classes" not in d.kwargs and not (Path(d.root) / "classes.txt").is_file():
        classes = _provisional_classes(Path(d.root) / "labels" / d.train_split)
        problems.append(f"{Path(d.root) / 'classes.txt'}: not found; write one class name per line (checked here "
                        f"with {len(classes)} provisional classes {', '.join(classes)})")
        d = d.model_copy(update={"kwargs": {**d.kwargs, "classes": classes}})
    splits = [d.train_split, d.val_split]
    for split in splits:
        if d.name == "folder" and "list_file" not in d.kwargs and "image_dir" not in d.kwargs \
                and not (Path(d.root) / f"{split}.txt").is_file():
            suffix = d.kwargs.get("mask_suffix", ".png")
            lonely_images, lonely_labels = unpaired_files(Path(d.root) / "images" / split,
                                                          Path(d.root) / "labels" / split, suffix)
            for what, files in (("images without a label", lonely_images), ("labels without an image", lonely_labels)):
                if files:
                    problems.append(f"{split}: {len(files)} {what}, e.g. {', '.join(str(f) for f in files[:3])}")
            if lonely_images:  # the data set itself refuses them; check the pairs that exist
                continue
        try:
            ds = build_dataset(d.name, root=d.root, split=split, **d.kwargs)
        except SeglabError as e:
            problems.append(f"{split}: {e}")
            continue
        if not hasattr(ds, "samples") or not hasattr(ds, "map_label"):
            log(f"{split}: {len(ds)} samples ({type(ds).__name__}: label maps are checked as they are read)")
            continue
        stats = label_statistics(ds)
        log(f"{split}: {stats.images} image/label pairs, {len(ds.classes)} classes, stored label values "
            f"{_values(stats.raw)}")
        for line in format_histogram(stats, ds.classes):
            log(line)
        problems += [f"{split}: {p}" for p in stats.problems]
        if split == d.train_split:
            errors, warnings = training_problems(stats, ds, split)
            problems += errors
            if not errors:
                problems += [w + " (a class the model can never learn: remove it from the classes or add "
                             "images that show it)" for w in warnings]
        elif binary_255_hint(stats, ds):
            problems.append(f"{split} split: {binary_255_hint(stats, ds)}")
    return problems


def _provisional_classes(label_dir: Path, max_files: int = 50) -> list[str]:
    """Class names '0'..'k' for the largest stored value below 255 in (up to 50 of) the label files."""
    top = 0
    files = sorted(label_dir.glob("*.png"))[:max_files] if label_dir.is_dir() else []
    for f in files:
        try:
            raw = read_label(f)
        except DataError:
            continue
        below = raw[raw < IGNORE_INDEX]
        top = max(top, int(below.max(initial=0)))
    return [str(i) for i in range(top + 1)]


def _values(raw: dict[int, int]) -> str:
    keys = sorted(k for k, c in raw.items() if c)
    return "{" + ", ".join(map(str, keys[:12])) + (", ..." if len(keys) > 12 else "") + "}"
