"""`instance_folder`: images + instance-id PNGs, on tiny files written here and on the real Penn-Fudan
files in ../shared (skipped without them): boxes from masks, the three ways to give classes, the three
ways to give splits, and one-line errors."""
import json
from pathlib import Path

import numpy as np
import pytest

from seglab.data import InstanceFolder, build_dataset, seeded_split
from seglab.data.datasets import INSTANCE_DATASETS
from seglab.errors import DataError, SeglabError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def ped_root(tmp_path, save_png, rgb) -> Path:
    """Penn-Fudan's layout with three 10x12 images: a has instances 1 and 2, b has none, c has 1 and a
    255 border pixel; names.txt lists a and c."""
    root = tmp_path / "peds"
    for i, name in enumerate("abc"):
        save_png(root / "PNGImages" / f"{name}.png", rgb(10, 12, i))
        ids = np.zeros((10, 12), np.uint8)
        if name == "a":
            ids[1:4, 2:5] = 1  # rows 1..3, cols 2..4
            ids[5:9, 7:8] = 2
        if name == "c":
            ids[0:10, 0:2] = 1
            ids[9, 11] = 255
        save_png(root / "PedMasks" / f"{name}_mask.png", ids, "L")
    (root / "names.txt").write_text("# two of the three\na\nc.png\n")
    return root


def _peds(root, split="all", **kw):
    return InstanceFolder(root, split, image_dir="PNGImages", mask_dir="PedMasks", mask_suffix="_mask.png", **kw)


def test_boxes_come_from_masks_one_class(ped_root):
    assert INSTANCE_DATASETS["instance_folder"] is InstanceFolder
    ds = _peds(ped_root, classes=["person"])
    assert len(ds) == 3 and ds.classes == ["person"] and ds.category_ids == [1]
    image, t = ds[0]
    assert image.shape == (3, 10, 12)
    assert t["boxes"].tolist() == [[2, 1, 5, 4], [7, 5, 8, 9]]  # pixel-edge xyxy
    assert t["labels"].tolist() == [0, 0] and t["masks"].sum((1, 2)).tolist() == [9, 4]
    assert t["image_id"] == 0 and not t["iscrowd"].any()
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 10, 12)
    # 255 is an instance unless ignored (VOC's border)
    assert len(ds.read_raw(2)[1]["labels"]) == 2
    assert len(_peds(ped_root, ignore_ids=[255]).read_raw(2)[1]["labels"]) == 1


def test_splits_from_list_files_seeded_split_and_root_lists(ped_root):
    ds = _peds(ped_root, "train", splits={"train": ped_root / "names.txt"})
    assert [p.name for p in map(ds.image_path, range(len(ds)))] == ["a.png", "c.png"]
    assert [ds.read_raw(i)[1]["image_id"] for i in range(2)] == [0, 2]  # index among all images
    split = seeded_split(["a", "b", "c", "d", "e"], 0.4, seed=3)
    assert sorted(split["train"] + split["val"]) == list("abcde") and len(split["val"]) == 2
    assert split == seeded_split(list("edcba"), 0.4, seed=3) != seeded_split(list("abcde"), 0.4, seed=4)
    train = _peds(ped_root, "train", val_fraction=0.5, list_file="names.txt", seed=0)
    val = _peds(ped_root, "val", val_fraction=0.5, list_file="names.txt", seed=0)
    assert sorted(p.stem for p in [train.image_path(0), val.image_path(0)]) == ["a", "c"]
    (ped_root / "val.txt").write_text("b\n")
    assert _peds(ped_root, "val").image_path(0).name == "b.png"
    with pytest.raises(SeglabError, match=r"split 'train': give splits: \{train: LIST\} or val_fraction"):
        _peds(ped_root, "train")


def test_classes_from_a_map_or_semantic_masks(ped_root, save_png):
    (ped_root / "classes.json").write_text(json.dumps({"a": {"1": "bike", "2": "person"}, "c": {"1": "person"}}))
    ds = _peds(ped_root, classes=["person", "bike"], class_map="classes.json")
    assert ds.read_raw(0)[1]["labels"].tolist() == [1, 0] and ds.category_ids == [1, 2]
    with pytest.raises(DataError, match=r"instance 255 has no class in the class map"):
        ds.read_raw(2)
    semantic = np.zeros((10, 12), np.uint8)
    semantic[1:4, 2:5] = 2
    semantic[1, 2] = 1  # minority pixel: the majority (2 = bike) wins
    semantic[5:9, 7:8] = 1
    save_png(ped_root / "Classes" / "a.png", semantic, "L")
    ds = _peds(ped_root, classes=["person", "bike"], class_dir="Classes")
    assert ds.read_raw(0)[1]["labels"].tolist() == [1, 0]
    (ped_root / "bad.json").write_text(json.dumps({"a": {"1": "car"}}))
    with pytest.raises(DataError, match=r"bad.json: 'a' instance 1: unknown class 'car'"):
        _peds(ped_root, classes=["person"], class_map="bad.json")


def test_errors_name_the_file(ped_root, save_png):
    save_png(ped_root / "PedMasks" / "b_mask.png", np.zeros((9, 12), np.uint8), "L")
    with pytest.raises(DataError, match=r"b_mask.png: instance map is 12x9 but its image b.png is 12x10"):
        _peds(ped_root)[1]
    (ped_root / "PedMasks" / "b_mask.png").unlink()
    with pytest.raises(DataError, match=r"b_mask.png: file not found"):
        _peds(ped_root)[1]
    (ped_root / "list.txt").write_text("a\nzz\n")
    with pytest.raises(DataError, match=r"image 'zz' of split 'train' not found"):
        _peds(ped_root, "train", splits={"train": "list.txt"})
    with pytest.raises(DataError, match=r"instance mask folder not found"):
        InstanceFolder(ped_root, "all", image_dir="PNGImages")


def test_real_pennfudan_split_and_boxes_match_its_annotations(shared_dir):
    root = shared_dir / "data" / "pennfudan"
    kwargs = dict(image_dir="PNGImages", mask_dir="PedMasks", mask_suffix="_mask.png", classes=["person"],
                  splits={s: str(CONFIGS / "pennfudan" / f"{s}.txt") for s in ("train", "val")})
    train = build_dataset("instance_folder", root=root, split="train", **kwargs)
    val = build_dataset("instance_folder", root=root, split="val", **kwargs)
    names = (root / "list.txt").read_text().split()
    # the committed lists are the reader's own seeded split of list.txt
    assert seeded_split(names, 0.2, seed=0) == {"train": [p.stem for p in map(train.image_path, range(len(train)))],
                                                "val": [p.stem for p in map(val.image_path, range(len(val)))]}
    assert (len(train), len(val)) == (95, 24)
    i = [p.stem for p in map(val.image_path, range(len(val)))].index("FudanPed00004")
    _, target = val.read_raw(i)
    # Annotation/FudanPed00004.txt: (168, 60) - (324, 338) and (9, 61) - (48, 180), 1-based inclusive
    assert target["boxes"].tolist() == [[167, 59, 324, 338], [8, 60, 48, 180]]
