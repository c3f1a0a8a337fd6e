"""Tiny on-disk data sets in each reader's layout (real PNG / JPEG / .mat / JSON files), for the hostile
cases to break one file at a time. Each builder returns a `Layout`: the root, the split to read, and the
files a test may corrupt by role ("image", "label", "list", ...)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 12, 16


@dataclass
class Layout:
    name: str                      # build_dataset name
    root: Path
    split: str
    files: dict[str, Path] = field(default_factory=dict)  # role -> a file of the split
    kwargs: dict = field(default_factory=dict)
    num_classes: int = 0


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def _labels(value_a: int, value_b: int) -> np.ndarray:
    lbl = np.full((H, W), value_a, np.uint8)
    lbl[:, W // 2:] = value_b
    return lbl


def voc(tmp: Path) -> Layout:
    root = tmp / "VOCdevkit" / "VOC2012"
    for i, name in enumerate(["2007_000001", "2007_000002"]):
        _save(root / "JPEGImages" / f"{name}.jpg", _rgb(i))
        _save(root / "SegmentationClass" / f"{name}.png", _labels(0, 15))
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n")
    (sets / "val.txt").write_text("2007_000002\n")
    return Layout("voc", tmp / "VOCdevkit", "val", {
        "image": root / "JPEGImages" / "2007_000002.jpg", "label": root / "SegmentationClass" / "2007_000002.png",
        "list": sets / "val.txt"}, num_classes=21)


def cityscapes(tmp: Path) -> Layout:
    root = tmp / "cityscapes"
    stem = "aachen_000000_000019"
    img = _save(root / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png", _rgb())
    lbl = _save(root / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png", _labels(7, 26))
    return Layout("cityscapes", root, "val", {"image": img, "label": lbl}, num_classes=19)


def ade20k(tmp: Path) -> Layout:
    root = tmp / "ADEChallengeData2016"
    img = _save(root / "images" / "validation" / "ADE_val_00000001.jpg", _rgb())
    lbl = _save(root / "annotations" / "validation" / "ADE_val_00000001.png", _labels(1, 150))
    return Layout("ade20k", tmp, "val", {"image": img, "label": lbl}, num_classes=150)


def folder(tmp: Path) -> Layout:
    root = tmp / "folder"
    img = _save(root / "img" / "a.png", _rgb())
    lbl = _save(root / "lbl" / "a.png", _labels(0, 1))
    (root / "val.txt").write_text("img/a.png lbl/a.png\n")
    (root / "classes.txt").write_text("zero\none\n")
    return Layout("folder", root, "val", {"image": img, "label": lbl, "list": root / "val.txt",
                                          "classes": root / "classes.txt"}, num_classes=2)


def camvid(tmp: Path) -> Layout:
    root = tmp / "CamVid"
    img = _save(root / "val" / "a.png", _rgb())
    lbl = _save(root / "valannot" / "a.png", _labels(0, 11))
    (root / "val.txt").write_text("val/a.png valannot/a.png\n")
    return Layout("camvid", root, "val", {"image": img, "label": lbl, "list": root / "val.txt"}, num_classes=11)


def nyudv2(tmp: Path) -> Layout:
    root = tmp / "nyud"
    img = _save(root / "images" / "img_5001.png", _rgb())
    depth = np.full((H, W), 2500, np.uint16)
    dep = _save(root / "depth" / "img_5001.png", depth)
    lbl = _save(root / "labels40" / "img_5001.png", _labels(0, 40))
    (root / "test.txt").write_text("5001\n")
    return Layout("nyudv2", root, "test", {"image": img, "label": lbl, "depth": dep, "list": root / "test.txt"},
                  kwargs={"modality": "rgbd"}, num_classes=40)


def siftflow(tmp: Path) -> Layout:
    import scipy.io

    from seglab.data.siftflow import SIFTFLOW_SUBDIR

    root = tmp / "SiftFlow"
    name = "coast_natu975"
    img = _save(root / "Images" / SIFTFLOW_SUBDIR / f"{name}.jpg", _rgb())
    files = {"image": img}
    for folder_name, values, role in (("SemanticLabels", _labels(0, 28), "label"),
                                      ("GeoLabels", _labels(1, 3).astype(np.int16), "geo_label")):
        path = root / folder_name / SIFTFLOW_SUBDIR / f"{name}.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(path, {"S": values})
        files[role] = path
    (root / "TestSet1.txt").write_text(f"{name}\n")
    files["list"] = root / "TestSet1.txt"
    return Layout("siftflow", root, "test", files, num_classes=33)


def coco_instances(tmp: Path) -> Layout:
    root = tmp / "coco"
    img = _save(root / "val2017" / "000000000001.jpg", _rgb())
    data = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W}],
            "categories": [{"id": 1, "name": "thing"}, {"id": 3, "name": "other"}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 3, "bbox": [2, 2, 6, 5], "iscrowd": 0,
                             "area": 30, "segmentation": [[2, 2, 8, 2, 8, 7, 2, 7]]}]}
    js = root / "annotations" / "instances_val2017.json"
    js.parent.mkdir(parents=True)
    js.write_text(json.dumps(data))
    return Layout("coco_instances", root, "val", {"image": img, "json": js}, num_classes=2)


def coco_panoptic(tmp: Path) -> Layout:
    from seglab.data.panoptic import id2rgb

    root = tmp / "cocopan"
    img = _save(root / "val2017" / "000000000001.jpg", _rgb())
    ids = np.full((H, W), 1001, np.int64)
    ids[3:8, 4:10] = 2001
    png = _save(root / "annotations" / "panoptic_val2017" / "000000000001.png", id2rgb(ids))
    data = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W}],
            "categories": [{"id": 1, "name": "grass", "isthing": 0}, {"id": 2, "name": "car", "isthing": 1}],
            "annotations": [{"image_id": 1, "file_name": "000000000001.png", "segments_info": [
                {"id": 1001, "category_id": 1, "iscrowd": 0}, {"id": 2001, "category_id": 2, "iscrowd": 0}]}]}
    js = root / "annotations" / "panoptic_val2017.json"
    js.write_text(json.dumps(data))
    return Layout("coco_panoptic", root, "val", {"image": img, "panoptic_png": png, "json": js}, num_classes=2)


SEMANTIC = {"voc": voc, "cityscapes": cityscapes, "ade20k": ade20k, "folder": folder, "camvid": camvid,
            "nyudv2": nyudv2, "siftflow": siftflow}
ALL = {**SEMANTIC, "coco_instances": coco_instances, "coco_panoptic": coco_panoptic}


def read_all(layout: Layout) -> int:
    """Build the layout's data set and read every sample (what training or evaluation does)."""
    from seglab.data import build_dataset

    ds = build_dataset(layout.name, root=layout.root, split=layout.split, **layout.kwargs)
    for i in range(len(ds)):
        ds[i]
    return len(ds)
