"""Tiny on-disk fakes of the data set layouts (real PNG / JPEG files under tmp_path)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.palettes import VOC_PALETTE, palette_array


def _save(path: Path, array: np.ndarray, mode: str | None = None, palette=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if palette is not None:
        img.putpalette(palette_array(palette).ravel().tolist())
    img.save(path)
    return path


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def save_png():
    """save_png(path, array, mode=None, palette=None) -> path (format from the suffix)."""
    return _save


@pytest.fixture
def rgb():
    return _rgb


@pytest.fixture
def voc_root(tmp_path) -> Path:
    """VOC2012 with two images: palette PNG labels (classes 0, 15, 7) and a 255 border."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for i, name in enumerate(["2007_000001", "2007_000002"]):
        _save(root / "JPEGImages" / f"{name}.jpg", _rgb(20, 30, i))
        lbl = np.zeros((20, 30), np.uint8)
        lbl[5:15, 5:12] = 15
        lbl[5:15, 18:25] = 7
        lbl[4, 4:13] = 255  # the white boundary
        _save(root / "SegmentationClass" / f"{name}.png", lbl, "P", VOC_PALETTE)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n")
    (sets / "val.txt").write_text("2007_000002\n")
    return tmp_path / "VOCdevkit"


@pytest.fixture
def cityscapes_root(tmp_path) -> Path:
    """Cityscapes with one train image whose labelIds hold road 7, car 26, unlabeled 0, bicycle 33,
    person 24, parking 9 (ignored) and license plate -1 stored as 255."""
    root = tmp_path / "cityscapes"
    stem = "aachen_000000_000019"
    _save(root / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", _rgb(8, 14))
    ids = np.array([7, 26, 0, 33, 24, 9, 255], np.uint8)
    lbl = np.repeat(ids[None, :], 8, 0).repeat(2, 1)
    _save(root / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", lbl, "L")
    return root


@pytest.fixture
def ade_root(tmp_path) -> Path:
    """ADEChallengeData2016 with one training image whose annotation holds 0, 1, 13 and 150."""
    root = tmp_path / "ADEChallengeData2016"
    _save(root / "images" / "training" / "ADE_train_00000001.jpg", _rgb(10, 12))
    lbl = np.array([[0, 1, 13, 150]], np.uint8).repeat(10, 0).repeat(3, 1)
    _save(root / "annotations" / "training" / "ADE_train_00000001.png", lbl, "L")
    return tmp_path


@pytest.fixture
def folder_root(tmp_path) -> Path:
    """images/ + labels/ matched by stem (a .jpg and a .png image), and a list file of the same pairs."""
    root = tmp_path / "folder"
    for i, name in enumerate(["a", "b"]):
        _save(root / "images" / (name + (".jpg" if i == 0 else ".png")), _rgb(16, 24, i))
        lbl = np.full((16, 24), i, np.uint8)
        lbl[0] = 255
        _save(root / "labels" / f"{name}.png", lbl, "L")
    (root / "train.txt").write_text("images/a.jpg labels/a.png\nimages/b.png labels/b.png\n")
    return root
