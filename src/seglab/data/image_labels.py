"""Images with image-level class lists: the weak supervision of MIL-FCN (Pathak, Shelhamer, Long,
Darrell, "Fully Convolutional Multi-Class Multiple Instance Learning", ICLR workshop 2015), where
each training image is only labelled with the classes present in it.

Class-list file (`image_labels.txt`), one image per line, blank lines and `#` comments skipped:

    images/train_00000.png  grass water circle
    train_00001             grass 3 5
    train_00002             -

The first token names the image: a path relative to `image_dir` (default: the file's folder), or a
name without extension, completed with the first existing `.png`, `.jpg`, ... The other tokens are
the classes present: class names, or class indices (a token of digits is always an index, so a class
whose name is digits or contains spaces is written by index); `-` alone marks an image with none.
Tokens are separated by whitespace, so image paths must not contain any.

- `ImageLabelDataset`: a class-list file and its images; samples are
  `{"image": FloatTensor[C, H, W], "labels": FloatTensor[num_classes] (multi-hot), "path": str}`.
- `ImageLabelsFromMasks`: the same samples from any pixel-labelled seglab data set, the labels being
  the classes of each image's full label map (ignore index left out), so the synthetic set, CamVid
  or VOC can be trained weakly and evaluated against their pixel labels.
- `image_labels_from_masks(dataset)` and `write_image_labels(path, dataset)` export the class lists.

The joint transform (e.g. `TrainTransform`) is applied to the image alone (a blank label map goes
through it and is dropped). The labels describe the whole image: a random crop that cuts a class
away leaves it in the label, so weak training should use crops that keep the whole image.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..errors import DataError, SeglabError
from ..utils.io import read_text_file, write_text_atomic
from .datasets.folder import IGNORE_INDEX, IMAGE_EXTENSIONS, resolve
from .io import read_image
from .palettes import default_palette
from .transforms import default_eval_transform

__all__ = ["ImageLabelDataset", "ImageLabelsFromMasks", "image_labels_from_masks", "read_image_labels",
           "write_image_labels"]

NO_CLASSES = "-"


def _class_token(token: str, classes: Sequence[str], where: str) -> int:
    if token.isdigit():
        index = int(token)
        if index >= len(classes):
            raise DataError(f"{where}: class index {index} is out of range, expected 0..{len(classes) - 1}")
        return index
    if token in classes:
        return list(classes).index(token)
    import difflib

    close = difflib.get_close_matches(token, list(classes), n=3)
    hint = f" (did you mean: {', '.join(close)}?)" if close else f" (classes: {', '.join(classes)})"
    raise DataError(f"{where}: unknown class {token!r}{hint}")


def _find_image(image_dir: Path, name: str, where: str) -> Path:
    path = resolve(image_dir, name)
    if path.is_file():
        return path
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        for ext in IMAGE_EXTENSIONS:
            candidate = path.with_name(path.name + ext)
            if candidate.is_file():
                return candidate
        raise DataError(f"{where}: no image {path}.* found ({', '.join(IMAGE_EXTENSIONS)})")
    raise DataError(f"{where}: image file not found: {path}")


def read_image_labels(labels_file: str | os.PathLike, classes: Sequence[str], *,
                      image_dir: str | os.PathLike | None = None) -> list[tuple[Path, list[int]]]:
    """(image path, sorted class indices) per line of a class-list file (format: module docstring).
    Every problem raises `DataError` naming the file and line."""
    labels_file = Path(labels_file)
    if not labels_file.is_file():
        raise DataError(f"{labels_file}: class-list file not found")
    image_dir = Path(image_dir) if image_dir is not None else labels_file.parent
    entries: list[tuple[Path, list[int]]] = []
    seen: dict[Path, int] = {}
    for n, line in enumerate(read_text_file(labels_file, "class-list file").splitlines(), 1):
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"{labels_file}:{n}"
        name, class_tokens = tokens[0], tokens[1:]
        if not class_tokens:
            raise DataError(f"{where}: image {name!r} lists no classes (expected '<image> <class> ...', "
                            f"or '<image> {NO_CLASSES}' for an image with none)")
        path = _find_image(image_dir, name, where)
        if path in seen:
            raise DataError(f"{where}: image {name!r} is listed twice (first on line {seen[path]})")
        seen[path] = n
        if class_tokens == [NO_CLASSES]:
            entries.append((path, []))
            continue
        entries.append((path, sorted({_class_token(t, classes, where) for t in class_tokens})))
    if not entries:
        raise DataError(f"{labels_file}: no images listed (expected '<image> <class> ...' lines)")
    return entries


def _multi_hot(indices: Sequence[int], num_classes: int) -> torch.Tensor:
    labels = torch.zeros(num_classes, dtype=torch.float32)
    labels[list(indices)] = 1.0
    return labels


def _transform_image(transform: Callable, image: np.ndarray) -> torch.Tensor:
    """The image through a joint (image, mask) transform; the blank mask it needs is dropped."""
    image_t, _ = transform(image, np.zeros(image.shape[:2], dtype=np.int64))
    if not isinstance(image_t, torch.Tensor):
        raise SeglabError(f"transform {transform!r} must return (image tensor, mask tensor)")
    return image_t


class ImageLabelDataset(Dataset):
    """Images with class lists from a class-list file (format: module docstring); `classes` gives the
    names and indices the file refers to. Without a transform images are only normalised."""

    ignore_index = IGNORE_INDEX

    def __init__(self, labels_file: str | os.PathLike, *, classes: Sequence[str],
                 image_dir: str | os.PathLike | None = None, palette: Sequence[Sequence[int]] | None = None,
                 transform: Callable | None = None, in_channels: int = 3):
        if not classes:
            raise SeglabError(f"{labels_file}: classes must list at least one class name")
        self.classes = [str(c) for c in classes]
        self.palette = [tuple(int(v) for v in c) for c in (palette or default_palette(len(self.classes)))]
        entries = read_image_labels(labels_file, self.classes, image_dir=image_dir)
        self.image_paths = [path for path, _ in entries]
        self.image_labels = torch.stack([_multi_hot(idx, len(self.classes)) for _, idx in entries]).bool()
        self.in_channels = int(in_channels)
        self.transform = transform if transform is not None else default_eval_transform(self.in_channels)
        self.source = Path(labels_file)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, i: int) -> dict:
        image = read_image(self.image_paths[i], self.in_channels)
        return {"image": _transform_image(self.transform, image), "labels": self.image_labels[i].float(),
                "path": str(self.image_paths[i])}

    def __repr__(self) -> str:
        return f"ImageLabelDataset({self.source}, {len(self)} images, {self.num_classes} classes)"


def _sample_name(dataset, i: int) -> str:
    samples = getattr(dataset, "samples", None)
    return str(samples[i][-1]) if samples is not None else f"sample {i}"


def _present_classes(mask: np.ndarray, num_classes: int, ignore_index: int, source: str) -> np.ndarray:
    values = np.unique(np.asarray(mask))
    values = values[values != ignore_index]
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise DataError(f"{source}: label values {values[(values < 0) | (values >= num_classes)][:10].tolist()} are "
                        f"outside [0, {num_classes}) and not the ignore index {ignore_index}")
    present = np.zeros(num_classes, dtype=bool)
    present[values] = True
    return present


def image_labels_from_masks(dataset, *, progress: bool | None = None) -> torch.Tensor:
    """BoolTensor[len(dataset), num_classes]: the classes present in each image's full label map
    (`dataset.read_mask(i)` when it exists, else `dataset.read_raw(i)[1]`; ignore index skipped)."""
    read = getattr(dataset, "read_mask", None) or (lambda i: dataset.read_raw(i)[1])
    ignore = getattr(dataset, "ignore_index", IGNORE_INDEX)
    show = sys.stderr.isatty() if progress is None else progress
    rows = [_present_classes(read(i), dataset.num_classes, ignore, _sample_name(dataset, i))
            for i in tqdm(range(len(dataset)), desc="image labels", unit="img", disable=not show)]
    return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, dataset.num_classes, dtype=torch.bool)


class ImageLabelsFromMasks(Dataset):
    """Image-level labels derived from a pixel-labelled data set (`SegmentationDataset` or anything with
    `read_raw`, `classes`, `num_classes`): sample i is the transformed image and the multi-hot classes
    of its full, untransformed label map. `transform` defaults to the wrapped data set's."""

    def __init__(self, dataset, *, transform: Callable | None = None):
        self.dataset = dataset
        self.transform = transform if transform is not None else dataset.transform
        self.classes = list(dataset.classes)
        self.palette = list(getattr(dataset, "palette", None) or default_palette(len(self.classes)))
        self.ignore_index = getattr(dataset, "ignore_index", IGNORE_INDEX)
        self.in_channels = getattr(dataset, "in_channels", 3)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        image, mask = self.dataset.read_raw(i)
        labels = _present_classes(mask, self.num_classes, self.ignore_index, _sample_name(self.dataset, i))
        samples = getattr(self.dataset, "samples", None)
        path = str(samples[i][0]) if samples is not None else str(i)
        labels = torch.from_numpy(labels).float()
        return {"image": _transform_image(self.transform, image), "labels": labels, "path": path}

    def __repr__(self) -> str:
        return f"ImageLabelsFromMasks({self.dataset!r})"


def _is_safe_token(name: str) -> bool:
    """A class name the reader maps back to the same class (else the writer uses its index)."""
    return bool(name) and not name.isdigit() and len(name.split()) == 1 and "#" not in name and name != NO_CLASSES


def _relative_name(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()


def write_image_labels(path: str | os.PathLike, dataset, *, progress: bool | None = None) -> Path:
    """Write the class lists of `dataset` to the class-list file `path` (image paths relative to its
    folder, classes by name where the name is a safe token, else by index). `dataset` is an
    `ImageLabelDataset` or a pixel-labelled data set with `samples` (labels from its label maps)."""
    path = Path(path)
    if isinstance(dataset, ImageLabelDataset):
        images, labels = dataset.image_paths, dataset.image_labels
    elif hasattr(dataset, "samples"):
        images, labels = [Path(s[0]) for s in dataset.samples], image_labels_from_masks(dataset, progress=progress)
    else:
        raise SeglabError(f"write_image_labels: expected an ImageLabelDataset or a pixel-labelled data set "
                          f"with samples, got {type(dataset).__name__}")
    tokens = [c if _is_safe_token(c) else str(i) for i, c in enumerate(dataset.classes)]
    lines = [f"# image-level class lists for {len(images)} images; classes: "
             + " ".join(f"{i}={c!r}" for i, c in enumerate(dataset.classes))]
    for image, row in zip(images, labels):
        name = _relative_name(Path(image), path.parent)
        if len(name.split()) != 1 or "#" in name:
            raise DataError(f"{image}: image paths in a class-list file cannot contain whitespace or '#'")
        present = [tokens[c] for c in torch.nonzero(row).flatten().tolist()]
        lines.append(f"{name} {' '.join(present) if present else NO_CLASSES}")
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
