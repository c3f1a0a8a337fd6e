"""NYU Depth v2 (NYUDv2) semantic segmentation, 40 classes, with RGB, depth and HHA inputs.

Silberman, Hoiem, Kohli, Fergus, "Indoor Segmentation and Support Inference from RGBD Images", ECCV
2012: 1,449 densely labelled Kinect RGB-D frames. The 40-class task and the 795 / 654 train / test
split are those of Gupta, Arbelaez, Malik, CVPR 2013 and Gupta et al., ECCV 2014 (their "trainval" is
the 795 images), as used by FCN (Long et al., CVPR 2015, Sec. 5, NYUDv2 table: RGB, RGBD, HHA and
RGB-HHA inputs). Label 0 is "unlabelled" (ignored), 1..40 the classes below (Gupta et al.'s order).

Layout (one id per sample; FCN's lists hold bare numbers with files named `img_<n>.png`, both work):
    <root>/train.txt, test.txt     one id per line (also val.txt / trainval.txt if present)
    <root>/images/<id>.png         8-bit RGB
    <root>/depth/<id>.png          16-bit single channel, depth in millimetres, 0 = missing
    <root>/labels40/<id>.png       8-bit single channel: 0 = unlabelled, 1..40 = classes
    <root>/hha/<id>.png            optional 8-bit HHA images; computed from depth/ when absent
                                   (`write_hha` precomputes them: ~0.3 s per 640x480 frame)

`modality` picks the input: "rgb" (3 channels), "rgbd" (4: RGB + depth, the depth channel being
depth / 10 m * 255, i.e. 3.9 cm steps, 0 = missing; FCN fed log depth), "hha" (3) or "rgbhha" (6: RGB
then HHA, the input of the late-fusion nets in `seglab.models.fcn_rgbd`). Samples are uint8 H x W x C
before the transform, so seglab's transforms handle every modality; `modality_mean_std` gives the
normalisation (configs list it as data.mean / data.std, one value per channel).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError, SeglabError
from .datasets.folder import IGNORE_INDEX, SegmentationDataset, check_dir
from .hha import NYU_KINECT_INTRINSICS, check_intrinsics, depth_to_hha
from ..utils.io import make_folder, read_text_file, save_image_atomic
from .io import image_size, open_image, read_image, read_label
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform

NYUDV2_CLASSES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop"]
NYUDV2_MODALITIES = {"rgb": 3, "rgbd": 4, "hha": 3, "rgbhha": 6}
NYUDV2_SPLITS = ("train", "val", "trainval", "test")
DEPTH_RANGE_M = 10.0  # the rgbd depth channel maps 0..10 m (the NYU toolbox's max depth) to 0..255

# Normalisation per channel (of value / 255). RGB: ImageNet's, as the torchvision backbones expect.
# HHA and depth means: FCN's NYUDv2 release (nyud_layers.py: HHA mean (132.431, 94.076, 118.477);
# mean log depth 7.844, i.e. 2.55 m). The release subtracts means only; we divide these channels by
# ImageNet's average std so that they share the RGB channels' scale.
_HHA_MEAN = (132.431 / 255, 94.076 / 255, 118.477 / 255)
_DEPTH_MEAN = (2.55 / DEPTH_RANGE_M,)
_OTHER_STD = round(sum(IMAGENET_STD) / 3, 3)


def modality_mean_std(modality: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per input channel of a NYUDv2 modality, for EvalTransform / TrainTransform."""
    _check_modality(modality)
    parts = {"rgb": [(IMAGENET_MEAN, IMAGENET_STD)], "hha": [(_HHA_MEAN, (_OTHER_STD,) * 3)],
             "rgbd": [(IMAGENET_MEAN, IMAGENET_STD), (_DEPTH_MEAN, (_OTHER_STD,))],
             "rgbhha": [(IMAGENET_MEAN, IMAGENET_STD), (_HHA_MEAN, (_OTHER_STD,) * 3)]}[modality]
    return tuple(m for p in parts for m in p[0]), tuple(s for p in parts for s in p[1])


def _check_modality(modality: str) -> None:
    if modality not in NYUDV2_MODALITIES:
        raise SeglabError(f"NYUDv2: unknown modality {modality!r}, expected one of {', '.join(NYUDV2_MODALITIES)}")


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """An H x W float64 depth map in metres from a 16-bit PNG in millimetres (0 stays 0 = missing)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: depth file not found")
    with open_image(p, "depth") as img:
        mode, arr = img.mode, np.asarray(img)
    if mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise DataError(f"{p}: depth image has mode {mode}, expected a 16-bit single-channel PNG in millimetres")
    if arr.min() < 0:
        raise DataError(f"{p}: negative depth values; expected millimetres with 0 = missing")
    return arr.astype(np.float64) / 1000.0


def _find(folder: Path, sample_id: str) -> Path:
    """`<folder>/<id>.png`, or FCN's `<folder>/img_<id>.png` naming."""
    for name in (f"{sample_id}.png", f"img_{sample_id}.png"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder / (sample_id + '.png')}: file not found (nor img_{sample_id}.png)")


def _find_optional(folder: Path, sample_id: str) -> Path | None:
    try:
        return _find(folder, sample_id) if folder.is_dir() else None
    except DataError:
        return None


def read_ids(root: Path, split: str) -> list[str]:
    list_file = root / f"{split}.txt"
    if not list_file.is_file():
        raise DataError(f"{list_file}: list file not found (one sample id per line)")
    ids = [ln.split("#", 1)[0].strip() for ln in read_text_file(list_file, "list file").splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise DataError(f"{list_file}: list file is empty (expected one sample id per line)")
    return ids


class NYUDv2(SegmentationDataset):
    """NYUDv2, 40 classes; `split` in train / val / trainval / test (reads `<root>/<split>.txt`),
    `modality` in rgb / rgbd / hha / rgbhha; `intrinsics` = (fx, fy, cx, cy) for HHA computed on the fly."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None, *,
                 modality: str = "rgb", intrinsics: Sequence[float] = NYU_KINECT_INTRINSICS):
        if split not in NYUDV2_SPLITS:
            raise SeglabError(f"NYUDv2: unknown split {split!r}, expected one of {', '.join(NYUDV2_SPLITS)}")
        _check_modality(modality)
        self.intrinsics = check_intrinsics(intrinsics)
        root = check_dir(Path(root), "NYUDv2 root")
        ids = read_ids(root, split)
        images, labels = check_dir(root / "images", "image folder"), check_dir(root / "labels40", "label folder")
        samples = [(_find(images, i), _find(labels, i)) for i in ids]
        uses_hha = modality in ("hha", "rgbhha")
        self.hha_paths = [_find_optional(root / "hha", i) if uses_hha else None for i in ids]
        # Depth is read for rgbd, and for HHA wherever no precomputed HHA image exists.
        need_depth = [modality == "rgbd" or (uses_hha and h is None) for h in self.hha_paths]
        if any(need_depth):
            check_dir(root / "depth", "depth folder")
        self.depth_paths = [_find(root / "depth", i) if need else None for i, need in zip(ids, need_depth)]
        if transform is None:
            transform = EvalTransform(*modality_mean_std(modality))
        label_map = {0: IGNORE_INDEX, **{k: k - 1 for k in range(1, len(NYUDV2_CLASSES) + 1)}}
        super().__init__(samples, classes=NYUDV2_CLASSES, transform=transform, label_map=label_map,
                         in_channels=NYUDV2_MODALITIES[modality], source=root / f"{split}.txt")
        self.root, self.split, self.modality, self.ids = root, split, modality, ids

    def _depth(self, i: int, hw: tuple[int, int]) -> np.ndarray:
        path = self.depth_paths[i]
        depth = read_depth(path)
        self._check_size(self.samples[i][0], path, hw, depth.shape)
        return depth

    def _hha(self, i: int, hw: tuple[int, int]) -> np.ndarray:
        if self.hha_paths[i] is not None:
            hha = read_image(self.hha_paths[i], 3)
            self._check_size(self.samples[i][0], self.hha_paths[i], hw, hha.shape[:2])
            return hha
        return depth_to_hha(self._depth(i, hw), self.intrinsics)

    def read_raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 H x W x C input of the modality, int64 H x W label map, 0..39 or 255)."""
        img_path, lbl_path = self.samples[i]
        parts = [read_image(img_path, 3)] if self.modality != "hha" else []
        hw = parts[0].shape[:2] if parts else image_size(img_path)[::-1]
        raw = read_label(lbl_path)
        self._check_size(img_path, lbl_path, hw, raw.shape)
        if self.modality == "rgbd":
            depth = np.clip(np.rint(self._depth(i, hw) * (255.0 / DEPTH_RANGE_M)), 0, 255)
            parts.append(depth.astype(np.uint8)[:, :, None])
        if self.modality in ("hha", "rgbhha"):
            parts.append(self._hha(i, hw))
        return np.ascontiguousarray(np.concatenate(parts, axis=2)), self.map_label(raw, lbl_path)


def write_hha(root: str | os.PathLike, *, intrinsics: Sequence[float] = NYU_KINECT_INTRINSICS,
              overwrite: bool = False) -> int:
    """Encode every `<root>/depth/*.png` as `<root>/hha/*.png` (same name); returns how many were
    written. Existing HHA files are kept unless `overwrite`."""
    root = check_dir(Path(root), "NYUDv2 root")
    depth_dir, hha_dir = check_dir(root / "depth", "depth folder"), root / "hha"
    make_folder(hha_dir, "HHA folder")
    written = 0
    for path in sorted(depth_dir.glob("*.png")):
        out = hha_dir / path.name
        if out.exists() and not overwrite:
            continue
        # atomically: an interrupted run never leaves a truncated HHA image that a later one would keep
        save_image_atomic(out, Image.fromarray(depth_to_hha(read_depth(path), intrinsics)))
        written += 1
    return written


__all__ = ["NYUDV2_CLASSES", "NYUDV2_MODALITIES", "NYUDv2", "modality_mean_std", "read_depth", "write_hha"]
