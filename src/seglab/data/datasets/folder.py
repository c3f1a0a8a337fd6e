"""Image + label-map pairs from two folders or from a list file: the layout every benchmark reduces to.

The list-file form (`image label` per line, paths relative to a root) is the one of the SegNet CamVid
release (Badrinarayanan, Kendall, Cipolla, "SegNet", TPAMI 2017) and of the DeepLab VOC lists
(Chen et al., "DeepLab", TPAMI 2018). `SegmentationDataset` is the one small base class the named
data sets (CamVid, VOC, Cityscapes, ADE20K, synthetic) build on: they only differ in how they find
their pairs and in their label mapping.

Validation happens when a sample is read, and each problem raises `DataError` naming the file:
missing or corrupt files, wrong channel count, image / label size mismatch, label values outside
[0, num_classes) that are not the ignore index 255.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import DataError, SeglabError
from ...utils.io import read_text_file
from ..io import image_size, read_image, read_label
from ..palettes import default_palette
from ..transforms import default_eval_transform

IGNORE_INDEX = 255
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
Sample = tuple[Path, Path]
LabelMap = Mapping[int, int] | np.ndarray | Sequence[int] | None


def make_lut(label_map: LabelMap) -> np.ndarray | None:
    """A lookup table from a {stored value: class index} dict (unlisted values stay as they are) or
    from an array (`lut[v]` is the class of stored value v; values past its end stay as they are)."""
    if label_map is None:
        return None
    if isinstance(label_map, Mapping):
        try:  # keys may be strings ("255": a config written as JSON), values may not be
            pairs = {int(k): int(v) for k, v in label_map.items()}
        except (TypeError, ValueError):
            raise SeglabError(f"label_map must map stored values to class indices (integers), got "
                              f"{dict(label_map)!r}") from None
        pairs = {k: v for k, v in pairs.items() if k >= 0}
        lut = np.arange(max([255, *pairs]) + 1, dtype=np.int64)
        for k, v in pairs.items():
            lut[k] = v
        return lut
    lut = np.asarray(label_map, dtype=np.int64)
    if lut.ndim != 1:
        raise SeglabError(f"label_map must be a dict or a 1-D lookup table, got shape {lut.shape}")
    return lut


def parse_classes_file(path: Path) -> tuple[list[str], list[tuple[int, int, int]] | None]:
    """(class names, colours or None) from lines `name` or `name r g b` (blank lines and `#` skipped);
    colours must be given for every class or for none."""
    names, colours = [], []
    for n, line in enumerate(read_text_file(path, "class-name file").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) >= 4 and all(p.isdigit() for p in parts[-3:]):
            rgb = tuple(int(p) for p in parts[-3:])
            if max(rgb) > 255:
                raise DataError(f"{path}:{n}: colour {rgb} has a value above 255")
            names.append(" ".join(parts[:-3]))
            colours.append(rgb)
        else:
            names.append(line)
    if not names:
        raise DataError(f"{path}: no class names (one per line: `name` or `name r g b`)")
    if colours and len(colours) != len(names):
        raise DataError(f"{path}: give a colour (`name r g b`) on every line or on none "
                        f"({len(colours)} of {len(names)} lines have one)")
    return names, (colours or None)


def _plural(n: int, word: str, plural: str) -> str:
    return f"{n} {word if n == 1 else plural}"


def read_list_file(list_file: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Sample]:
    """`image label` pairs, one per line (blank lines and `#` comments skipped), relative to `root`
    (default: the list file's folder); every listed file must exist."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DataError(f"{list_file}: list file not found")
    root = Path(root) if root is not None else list_file.parent
    samples = []
    for n, line in enumerate(read_text_file(list_file, "list file").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{list_file}:{n}: expected 'image label' (two paths), got {line!r}")
        pair = tuple(resolve(root, p) for p in parts)
        for p in pair:
            if not p.is_file():
                raise DataError(f"{list_file}:{n}: listed file not found: {p}")
        samples.append(pair)
    if not samples:
        raise DataError(f"{list_file}: list file is empty (expected 'image label' lines)")
    return samples


def resolve(root: Path, name: str) -> Path:
    """`root / name`; absolute names are used as they are when they exist, else taken relative to root
    (some published lists start their paths with '/')."""
    p = Path(name)
    if p.is_absolute():
        return p if p.exists() else root / name.lstrip("/\\")
    return root / p


def check_dir(path: Path, what: str, hint: str = "") -> Path:
    """`path` if it is a folder, else a one-line DataError naming it (with `hint`: how to make it)."""
    if not path.is_dir():
        problem = "not found" if not path.exists() else "is not a folder"
        raise DataError(f"{path}: {what} {problem}" + (f"; {hint}" if hint else ""))
    return path


def flat_folder_problem(root: Path, split: str) -> str | None:
    """A folder of images and masks side by side (no `images/<split>/`): how to write the split layout."""
    images = root / "images"
    if (images / split).exists() or not images.is_dir():
        return None
    if not any(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS for f in images.iterdir()):
        return None
    return (f"{root}: a flat folder (images/ without {split}/ subfolders); write the train/val layout with: seglab "
            f"data convert {root} --out DST --split 0.8 --seed 0 (docs/custom_data.md), then use DST")


def check_synthetic_root(root, split: str, who: str) -> Path:
    """The folder of a complete generated synthetic set (its meta.json is written last) for split train or
    val, or a one-line error that says how to write one."""
    if split not in ("train", "val"):
        raise SeglabError(f"{who}: unknown split {split!r}, expected train or val")
    make = f"python -c \"from seglab.data import generate_synthetic; generate_synthetic('{root}')\""
    root = check_dir(Path(root), "synthetic data set root", f"write it with: {make}")
    if not (root / "meta.json").is_file():
        raise DataError(f"{root / 'meta.json'}: file not found: not a complete synthetic data set; "
                        f"write it with: {make}")
    return root


class SegmentationDataset(Dataset):
    """(image, label map) pairs with class names, palette, label mapping and a joint transform.

    `__getitem__(i)` returns {"image": FloatTensor[C, H, W], "mask": LongTensor[H, W], "path": str};
    `read_raw(i)` returns the uint8 image and the mapped int64 label map without any transform.
    Without a transform, images are only normalised (ImageNet mean / std for 3 channels, 0.5 / 0.5
    otherwise).
    """

    ignore_index = IGNORE_INDEX

    def __init__(self, samples: Sequence[Sample], *, classes: Sequence[str],
                 palette: Sequence[Sequence[int]] | None = None, transform: Callable | None = None,
                 label_map: LabelMap = None, in_channels: int = 3, source: str | os.PathLike = "data set"):
        if not samples:
            raise DataError(f"{source}: no samples found")
        if classes is None or len(classes) == 0:
            raise SeglabError(f"{source}: classes must list at least one class name")
        if len(classes) > IGNORE_INDEX:
            raise SeglabError(f"{source}: at most {IGNORE_INDEX} classes (255 is the ignore index), "
                              f"got {len(classes)}")
        self.samples = [(Path(i), Path(m)) for i, m in samples]
        self.classes = [str(c) for c in classes]
        palette = default_palette(len(self.classes)) if palette is None else palette
        self.palette = [tuple(int(v) for v in c) for c in palette]
        if len(self.palette) != len(self.classes) or any(len(c) != 3 for c in self.palette):
            raise SeglabError(f"{source}: palette needs one (r, g, b) colour per class "
                              f"({len(self.classes)}), got {len(self.palette)} entries")
        self.in_channels = int(in_channels)
        self.transform = transform if transform is not None else default_eval_transform(self.in_channels)
        self.label_lut = make_lut(label_map)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def map_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Apply the label mapping and check every value is a class index or the ignore index."""
        lut = self.label_lut
        if lut is None:
            mask = raw
        elif raw.size and raw.min() >= 0 and raw.max() < len(lut):
            mask = lut[raw]
        else:
            mask = raw.copy()
            inside = (raw >= 0) & (raw < len(lut))
            mask[inside] = lut[raw[inside]]
        bad = ((mask < 0) | (mask >= self.num_classes)) & (mask != IGNORE_INDEX)
        if bad.any():
            values = np.unique(raw[bad])
            shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
            stored = " (as stored in the file, before label mapping)" if lut is not None else ""
            raise DataError(f"{path}: label values {shown}{stored} are outside [0, {self.num_classes}) "
                            f"and not the ignore index {IGNORE_INDEX} ({int(bad.sum())} pixels)")
        return mask

    def _check_size(self, img_path: Path, lbl_path: Path, image_hw: tuple[int, int],
                    label_hw: tuple[int, int]) -> None:
        if tuple(image_hw) != tuple(label_hw):
            raise DataError(f"{img_path} and {lbl_path} differ in size: {image_hw[1]}x{image_hw[0]} vs "
                            f"{label_hw[1]}x{label_hw[0]}")

    def read_mask(self, i: int) -> np.ndarray:
        """The mapped int64 label map of sample i, checked against its image's size (header only)."""
        img_path, lbl_path = self.samples[i]
        raw = read_label(lbl_path)
        w, h = image_size(img_path)
        self._check_size(img_path, lbl_path, (h, w), raw.shape)
        return self.map_label(raw, lbl_path)

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 H x W x C image, int64 H x W label map after label mapping), untransformed."""
        img_path, lbl_path = self.samples[i]
        image = read_image(img_path, self.in_channels)
        raw = read_label(lbl_path)
        self._check_size(img_path, lbl_path, image.shape[:2], raw.shape)
        return image, self.map_label(raw, lbl_path)

    def __getitem__(self, i: int) -> dict:
        image, mask = self.read_raw(i)
        image_t, mask_t = self.transform(image, mask)
        if not isinstance(image_t, torch.Tensor) or not isinstance(mask_t, torch.Tensor):
            raise SeglabError(f"transform {self.transform!r} must return (image tensor, mask tensor)")
        return {"image": image_t, "mask": mask_t.long(), "path": str(self.samples[i][0])}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({_plural(len(self), 'sample', 'samples')}, "
                f"{_plural(self.num_classes, 'class', 'classes')})")


def find_pairs(image_dir: Path, mask_dir: Path, *, image_suffix: str | None = None,
               mask_suffix: str = ".png", recursive: bool = False) -> list[Sample]:
    """Pair every image in `image_dir` with `mask_dir/<same subfolder>/<key><mask_suffix>`, where key is
    the image's name without `image_suffix` (without its extension when `image_suffix` is None)."""
    check_dir(image_dir, "image folder")
    check_dir(mask_dir, "label folder")
    files = sorted(image_dir.rglob("*") if recursive else image_dir.iterdir())
    samples = []
    for f in files:
        if not f.is_file():
            continue
        if image_suffix is None:
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            key = f.stem
        else:
            if not f.name.endswith(image_suffix):
                continue
            key = f.name[: len(f.name) - len(image_suffix)]
        label = mask_dir / f.parent.relative_to(image_dir) / (key + mask_suffix)
        if not label.is_file():
            raise DataError(f"{label}: label file not found (for image {f})")
        samples.append((f, label))
    if not samples:
        what = f"*{image_suffix}" if image_suffix else "images (" + ", ".join(IMAGE_EXTENSIONS) + ")"
        raise DataError(f"{image_dir}: no {what} found{' (searched recursively)' if recursive else ''}")
    return samples


class SegmentationFolder(SegmentationDataset):
    """Pairs from two folders matched by file name, or from a list file of `image label` lines.

    Folder mode: `image_dir` + `mask_dir` (relative to `root` when given); `image.jpg` pairs with
    `<mask_dir>/image<mask_suffix>`; `image_suffix` (e.g. "_leftImg8bit.png") selects images and is
    stripped to form the key; `recursive=True` keeps subfolders (`a/x.png` -> `<mask_dir>/a/x.png`).
    List mode: `list_file` with `image label` lines relative to `root` (default: the list's folder).
    `label_map` maps stored values to class indices (dict or lookup table); 255 is ignored.
    """

    def __init__(self, image_dir: str | os.PathLike | None = None, *, mask_dir: str | os.PathLike | None = None,
                 list_file: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                 classes: Sequence[str], palette: Sequence[Sequence[int]] | None = None,
                 transform: Callable | None = None, label_map: LabelMap = None, in_channels: int = 3,
                 image_suffix: str | None = None, mask_suffix: str = ".png", recursive: bool = False):
        root = Path(root) if root is not None else None
        if root is not None:
            check_dir(root, "data set root")
        if list_file is not None:
            if image_dir is not None or mask_dir is not None:
                raise SeglabError("SegmentationFolder: give either list_file or image_dir + mask_dir, not both")
            list_file = Path(list_file)
            if root is not None and not list_file.is_absolute() and not list_file.exists():
                list_file = root / list_file
            samples, source = read_list_file(list_file, root), list_file
        else:
            if image_dir is None or mask_dir is None:
                raise SeglabError("SegmentationFolder: give image_dir and mask_dir, or list_file")
            image_dir, mask_dir = Path(image_dir), Path(mask_dir)
            if root is not None:
                image_dir, mask_dir = root / image_dir, root / mask_dir
            samples = find_pairs(image_dir, mask_dir, image_suffix=image_suffix, mask_suffix=mask_suffix,
                                 recursive=recursive)
            source = image_dir
        super().__init__(samples, classes=classes, palette=palette, transform=transform,
                         label_map=label_map, in_channels=in_channels, source=source)
