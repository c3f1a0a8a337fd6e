"""Data sets with several label spaces per image: SIFT Flow (semantic + geometric) and a synthetic pair.

SIFT Flow: Liu, Yuen, Torralba, "Nonparametric Scene Parsing via Label Transfer", TPAMI 2011 (CVPR
2009): 2,688 outdoor 256x256 images of the LabelMe "spatial envelope" set, 33 semantic classes; the
geometric labels (sky, horizontal, vertical) are those of Tighe & Lazebnik, "SuperParsing", ECCV 2010,
whose `SiftFlowDataset.zip` is the copy the FCN release reads (Long, Shelhamer, Darrell, CVPR 2015,
Sec. 5; `fcn.berkeleyvision.org/siftflow_layers.py`, `data/sift-flow/classes.txt`). Layout:
    <root>/Images/spatial_envelope_256x256_static_8outdoorcategories/<name>.jpg
    <root>/SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<name>.mat  field S: 0 void, 1..33
    <root>/GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/<name>.mat       field S: 1..3, -1 void
    <root>/TrainSet1.txt, TestSet1.txt    the standard 2,488 / 200 split (the FCN release's trainval.txt /
                                          test.txt, one name per line, are read when these are absent)
A split line may be a bare name, a file name or a path; its stem names the image. As in the release,
labels are shifted to start at 0 and void becomes the ignore index 255 (geometric 0 is void too).
The release notes that two training images (highway_bost181, street_urb506) carry no annotation (all
void: they add nothing to the loss) and that cow, desert and moon never occur in the test set (their
IoU is NaN unless predicted, see `seglab.metrics.semantic`). Reading .mat files needs scipy.

`SyntheticJoint` is the generated synthetic set (`seglab.data.generate_synthetic`) seen in two label
spaces, for tests and the demo: "semantic" (its 6 classes) and "stuff_thing" (the stuff / thing split
of Kirillov et al., "Panoptic Segmentation", CVPR 2019, derived from the semantic map).

A sample is {"image": FloatTensor[C, H, W], "masks": {space: LongTensor[H, W]}, "mask": the first
(primary) space's map, "path": str}; `label_spaces` holds each space's class names, and `classes`,
`palette`, `num_classes` describe the primary space, so single-space tools (class statistics, the
plain trainer) read the primary labels unchanged. The label maps go through the ordinary single-mask
transforms (`seglab.data.transforms`) packed into one int32 map, so every geometric op (scale, crop,
flip, nearest-neighbour resampling) is the same for every space; padding (the ignore index) unpacks
to "ignored" in every space.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError, SeglabError
from .datasets.folder import (
    IGNORE_INDEX,
    check_dir,
    check_synthetic_root,
    read_list_file,
)
from ..utils.io import read_text_file
from .io import read_image, read_label
from .palettes import default_palette
from .synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SYNTHETIC_THING_IDS
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform

SIFTFLOW_SEMANTIC_CLASSES = [
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk", "desert",
    "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole", "river", "road", "rock",
    "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight", "sun", "tree", "window"]
SIFTFLOW_GEOMETRIC_CLASSES = ["sky", "horizontal", "vertical"]
SIFTFLOW_GEOMETRIC_PALETTE = [(120, 180, 230), (150, 120, 80), (200, 60, 60)]
SIFTFLOW_SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"
SIFTFLOW_SPLIT_FILES = {"train": ("TrainSet1.txt", "trainval.txt"), "test": ("TestSet1.txt", "test.txt")}
STUFF_THING_CLASSES = ["stuff", "thing"]
STUFF_THING_PALETTE = [(110, 140, 90), (230, 120, 40)]
# label space -> (label folder, class names, palette or None for the default one)
_SIFTFLOW_SPACES = {"semantic": ("SemanticLabels", SIFTFLOW_SEMANTIC_CLASSES, None),
                    "geometric": ("GeoLabels", SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_GEOMETRIC_PALETTE)}
_PAD_CODES = 256  # packed codes start here; anything below is transform padding (all spaces ignored)


def pack_label_maps(maps: Sequence[np.ndarray], counts: Sequence[int]) -> np.ndarray:
    """Several label maps (values in [0, K) or 255) as one int32 map, mixed radix over K + 1 symbols
    (the last one = ignored), offset by 256 so the transforms' pad value 255 never collides."""
    code = np.zeros(maps[0].shape, dtype=np.int64)
    for m, k in zip(maps, counts):
        code = code * (k + 1) + np.where(m == IGNORE_INDEX, k, m)
    return (code + _PAD_CODES).astype(np.int32)


def unpack_label_maps(packed: torch.Tensor, counts: Sequence[int]) -> list[torch.Tensor]:
    """Inverse of `pack_label_maps`; codes below 256 (padding) are ignored in every space."""
    packed = packed.long()
    padding = packed < _PAD_CODES
    code = (packed - _PAD_CODES).clamp_min(0)
    maps = []
    for k in reversed(counts):
        symbol = code % (k + 1)
        code = code // (k + 1)
        maps.append(torch.where((symbol == k) | padding, IGNORE_INDEX, symbol))
    return maps[::-1]


class JointLabelDataset(Dataset):
    """Images with one label map per label space; subclasses implement `read_labels(i)`.

    `label_spaces` is {space: class names} in order (the first is the primary space); `palettes` gives
    each space's colours (default palettes otherwise). Without a transform, images are only normalised.
    """

    ignore_index = IGNORE_INDEX

    def __init__(self, images: Sequence[Path], *, label_spaces: Mapping[str, Sequence[str]],
                 palettes: Mapping[str, Sequence[Sequence[int]]] | None = None, transform: Callable | None = None,
                 source: str | os.PathLike = "data set"):
        if not images:
            raise DataError(f"{source}: no samples found")
        if not label_spaces:
            raise SeglabError(f"{source}: at least one label space is needed")
        self.images = [Path(p) for p in images]
        self.label_spaces = {name: [str(c) for c in names] for name, names in label_spaces.items()}
        counts = [len(c) for c in self.label_spaces.values()]
        if int(np.prod([k + 1 for k in counts], dtype=np.float64)) + _PAD_CODES >= 2**31:
            raise SeglabError(f"{source}: too many label spaces / classes to pack into one int32 map: {counts}")
        palettes = dict(palettes or {})
        self.palettes = {name: [tuple(c) for c in palettes.get(name) or default_palette(len(names))]
                         for name, names in self.label_spaces.items()}
        self.transform = EvalTransform(IMAGENET_MEAN, IMAGENET_STD) if transform is None else transform

    # The primary (first) space, as single-space code sees the data set.
    @property
    def primary(self) -> str:
        return next(iter(self.label_spaces))

    @property
    def classes(self) -> list[str]:
        return self.label_spaces[self.primary]

    @property
    def palette(self) -> list[tuple]:
        return self.palettes[self.primary]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_classes_per_space(self) -> dict[str, int]:
        return {name: len(names) for name, names in self.label_spaces.items()}

    def __len__(self) -> int:
        return len(self.images)

    def read_labels(self, i: int) -> dict[str, np.ndarray]:
        """{space: int64 H x W map with class indices or 255}, checked by `_check_labels`."""
        raise NotImplementedError

    def label_path(self, i: int, space: str) -> Path | None:
        """The file holding sample i's labels of `space` (named in errors), when there is one."""
        return None

    def _check_labels(self, labels: dict[str, np.ndarray], shape: tuple[int, int], path: Path, i: int = -1) -> None:
        for name, k in self.num_classes_per_space.items():
            m = labels[name]
            where = self.label_path(i, name) if i >= 0 else None
            where = f"{where} (labels of {path.name})" if where is not None else str(path)
            if m.ndim != 2 or m.shape != tuple(shape):
                raise DataError(f"{where}: {name} labels are {'x'.join(map(str, m.shape[::-1]))}, the image is "
                                f"{shape[1]}x{shape[0]}")
            bad = ((m < 0) | (m >= k)) & (m != IGNORE_INDEX)
            if bad.any():
                raise DataError(f"{where}: {name} label values {np.unique(m[bad])[:10].tolist()} are outside "
                                f"[0, {k}) and not the ignore index {IGNORE_INDEX}")

    def read_raw(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(uint8 H x W x 3 image, {space: int64 label map}), untransformed."""
        image = read_image(self.images[i], 3)
        labels = self.read_labels(i)
        self._check_labels(labels, image.shape[:2], self.images[i], i)
        return image, labels

    def read_mask(self, i: int) -> np.ndarray:
        """The primary space's label map (what `class_statistics` reads)."""
        return self.read_raw(i)[1][self.primary]

    def __getitem__(self, i: int) -> dict:
        image, labels = self.read_raw(i)
        counts = list(self.num_classes_per_space.values())
        packed = pack_label_maps([labels[name] for name in self.label_spaces], counts)
        image_t, packed_t = self.transform(image, packed)
        masks = dict(zip(self.label_spaces, unpack_label_maps(packed_t, counts)))
        return {"image": image_t, "masks": masks, "mask": masks[self.primary], "path": str(self.images[i])}

    def __repr__(self) -> str:
        spaces = ", ".join(f"{n}: {len(c)}" for n, c in self.label_spaces.items())
        return f"{type(self).__name__}({len(self)} samples, label spaces {{{spaces}}})"


def _read_mat_labels(path: Path) -> np.ndarray:
    try:
        import scipy.io
    except ImportError:
        raise SeglabError("reading SIFT Flow .mat labels needs scipy: pip install scipy") from None
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # corrupt or not a MATLAB file
        raise DataError(f"{path}: cannot read MATLAB file ({type(e).__name__}: {e})") from e
    if "S" not in mat:
        raise DataError(f"{path}: no field 'S' (found {sorted(k for k in mat if not k.startswith('__'))})")
    labels = np.asarray(mat["S"])
    if labels.dtype.kind not in "iuf" or labels.ndim != 2:
        raise DataError(f"{path}: field 'S' must be a 2-D array of label numbers, got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


def _split_names(list_file: Path) -> list[str]:
    names = []
    for line in read_text_file(list_file, "split file").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(Path(line.replace("\\", "/")).stem)
    if not names:
        raise DataError(f"{list_file}: split file is empty")
    return names


class SIFTFlow(JointLabelDataset):
    """SIFT Flow with semantic (33) and geometric (3) labels; `split` train (= trainval) or test.

    `label_spaces` picks which spaces to read and their order (the first is the primary space), e.g.
    ("geometric",) for the geometric labels alone.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 label_spaces: Sequence[str] = ("semantic", "geometric")):
        split = "train" if split == "trainval" else split
        if split not in SIFTFLOW_SPLIT_FILES:
            raise SeglabError(f"SIFTFlow: unknown split {split!r}, expected train, trainval or test")
        unknown = [s for s in label_spaces if s not in _SIFTFLOW_SPACES]
        if unknown or not label_spaces or len(set(label_spaces)) != len(label_spaces):
            raise SeglabError(f"SIFTFlow: label_spaces must be distinct names from semantic, geometric; "
                              f"got {list(label_spaces)}")
        root = check_dir(Path(root), "SIFT Flow root")
        candidates = [root / f for f in SIFTFLOW_SPLIT_FILES[split]]
        list_file = next((f for f in candidates if f.is_file()), None)
        if list_file is None:
            raise DataError(f"{root}: no split file for {split!r} (expected {' or '.join(f.name for f in candidates)})")
        self.names = _split_names(list_file)
        self.label_dirs = {s: root / _SIFTFLOW_SPACES[s][0] / SIFTFLOW_SUBDIR for s in label_spaces}
        images = [root / "Images" / SIFTFLOW_SUBDIR / f"{n}.jpg" for n in self.names]
        for path in images + [d / f"{n}.mat" for d in self.label_dirs.values() for n in self.names]:
            if not path.is_file():
                raise DataError(f"{path}: file not found (listed in {list_file})")
        super().__init__(images, label_spaces={s: _SIFTFLOW_SPACES[s][1] for s in label_spaces},
                         palettes={s: _SIFTFLOW_SPACES[s][2] for s in label_spaces if _SIFTFLOW_SPACES[s][2]},
                         transform=transform, source=list_file)
        self.root, self.split = root, split

    def label_path(self, i: int, space: str) -> Path:
        return self.label_dirs[space] / f"{self.names[i]}.mat"

    def read_labels(self, i: int) -> dict[str, np.ndarray]:
        labels = {}
        for space, folder in self.label_dirs.items():
            s = _read_mat_labels(folder / f"{self.names[i]}.mat")
            if space == "geometric":
                s = np.where(s == -1, 0, s)  # -1 and 0 are both void
            labels[space] = np.where(s == 0, IGNORE_INDEX, s - 1)  # classes from 0, void -> 255
        return labels


class SyntheticJoint(JointLabelDataset):
    """The synthetic set in two label spaces: "semantic" (6 classes) and "stuff_thing" (2)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        root = check_synthetic_root(root, split, "SyntheticJoint")
        pairs = read_list_file(root / f"{split}.txt", root)
        self.label_paths = [lbl for _, lbl in pairs]
        super().__init__([img for img, _ in pairs],
                         label_spaces={"semantic": SYNTHETIC_CLASSES, "stuff_thing": STUFF_THING_CLASSES},
                         palettes={"semantic": SYNTHETIC_PALETTE, "stuff_thing": STUFF_THING_PALETTE},
                         transform=transform, source=root / f"{split}.txt")
        self.root, self.split = root, split
        self._stuff_thing = np.array([int(c in SYNTHETIC_THING_IDS) for c in range(len(SYNTHETIC_CLASSES))])

    def read_labels(self, i: int) -> dict[str, np.ndarray]:
        semantic = read_label(self.label_paths[i])
        inside = (semantic >= 0) & (semantic < len(SYNTHETIC_CLASSES))
        kind = np.where(inside, self._stuff_thing[np.where(inside, semantic, 0)], IGNORE_INDEX)
        return {"semantic": semantic, "stuff_thing": kind}
