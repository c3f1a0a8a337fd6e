"""The data set readers on tiny fake layouts, CamVid on the shared copy, and build_dataset."""
import pickle

import numpy as np
import pytest
import torch

from seglab.data import (ADE20K, CAMVID_CLASSES, CITYSCAPES_CLASSES, VOC_CLASSES, CamVid,
                         Cityscapes, EvalTransform, SegmentationFolder, SyntheticSegmentation, TrainTransform,
                         VOCSegmentation, build_dataset, generate_synthetic)
from seglab.errors import DataError, SeglabError


def _check_sample(sample, c, h, w):
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (c, h, w)
    assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (h, w)
    assert isinstance(sample["path"], str)


def test_voc(voc_root):
    ds = VOCSegmentation(voc_root, split="train")  # VOCdevkit/ found its VOC2012/
    assert len(ds) == 1 and ds.classes == VOC_CLASSES and ds.num_classes == 21 and ds.ignore_index == 255
    assert ds.palette[15] == (192, 128, 128) and ds.palette[1] == (128, 0, 0)
    s = ds[0]
    _check_sample(s, 3, 20, 30)
    assert s["path"].endswith("2007_000001.jpg")
    assert set(torch.unique(s["mask"]).tolist()) == {0, 7, 15, 255}
    assert (s["mask"][4, 4:13] == 255).all()
    image, mask = ds.read_raw(0)
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3) and mask.dtype == np.int64
    assert len(VOCSegmentation(voc_root / "VOC2012", split="val")) == 1


def test_voc_trainaug(voc_root, save_png):
    root = voc_root / "VOC2012"
    with pytest.raises(DataError, match="SegmentationClassAug: SBD label folder"):
        VOCSegmentation(voc_root, split="trainaug")
    lbl = np.full((20, 30), 3, np.uint8)
    save_png(root / "SegmentationClassAug" / "2007_000001.png", lbl, "L")
    save_png(root / "SegmentationClassAug" / "2007_000002.png", lbl, "L")
    sets = root / "ImageSets" / "Segmentation"
    (sets / "train_aug.txt").write_text("2007_000001\n/JPEGImages/2007_000002.jpg /SegmentationClassAug/2007_000002.png\n")
    ds = VOCSegmentation(voc_root, split="trainaug")
    assert len(ds) == 2 and torch.unique(ds[1]["mask"]).tolist() == [3]
    with pytest.raises(SeglabError, match="unknown split 'test'"):
        VOCSegmentation(voc_root, split="test")


def test_cityscapes_train_ids(cityscapes_root):
    ds = Cityscapes(cityscapes_root, split="train")
    assert len(ds) == 1 and ds.classes == CITYSCAPES_CLASSES and ds.num_classes == 19
    assert ds.palette[0] == (128, 64, 128) and ds.palette[13] == (0, 0, 142)
    mask = ds[0]["mask"]
    # stored ids 7 road, 26 car, 0 unlabeled, 33 bicycle, 24 person, 9 parking, 255
    assert mask[0, ::2].tolist() == [0, 13, 255, 18, 11, 255, 255]
    assert ds.read_mask(0)[3, ::2].tolist() == [0, 13, 255, 18, 11, 255, 255]
    with pytest.raises(DataError, match="leftImg8bit/val: image folder not found"):
        Cityscapes(cityscapes_root, split="val")


def test_ade20k_reduce_zero_label(ade_root):
    ds = ADE20K(ade_root, split="training")
    assert len(ds) == 1 and ds.num_classes == 150 and len(ds.palette) == 150
    assert ds.classes[0] == "wall" and ds.classes[149] == "flag"
    assert ds[0]["mask"][0, ::3].tolist() == [255, 0, 12, 149]
    assert len(ADE20K(ade_root / "ADEChallengeData2016", split="train")) == 1  # either root, alias


def test_ade20k_out_of_range_names_stored_value(ade_root, save_png):
    path = ade_root / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000001.png"
    save_png(path, np.full((10, 12), 151, np.uint8), "L")
    with pytest.raises(DataError, match=r"ADE_train_00000001\.png: label values 151 \(as stored"):
        ADE20K(ade_root, split="training")[0]


def test_folder_modes(folder_root):
    by_dir = SegmentationFolder("images", mask_dir="labels", root=folder_root, classes=["x", "y"])
    by_list = SegmentationFolder(list_file="train.txt", root=folder_root, classes=["x", "y"])
    assert len(by_dir) == len(by_list) == 2
    for ds in (by_dir, by_list):
        assert ds.palette == [(0, 0, 0), (128, 0, 0)]  # default_palette
        for i in range(2):
            s = ds[i]
            _check_sample(s, 3, 16, 24)
            assert (s["mask"][0] == 255).all() and (s["mask"][1:] == i).all()
    assert [p[0].name for p in by_dir.samples] == ["a.jpg", "b.png"]


def test_folder_label_map_and_grayscale(tmp_path, save_png):
    save_png(tmp_path / "im" / "g.png", np.full((4, 5), 100, np.uint8), "L")
    save_png(tmp_path / "lb" / "g.png", np.array([[10, 20, 30, 99, 0]] * 4, np.uint8), "L")
    ds = SegmentationFolder(tmp_path / "im", mask_dir=tmp_path / "lb", classes=["a", "b", "c"], in_channels=1,
                            label_map={10: 0, 20: 1, 30: 2, 99: 255, 0: 255})
    s = ds[0]
    assert s["image"].shape == (1, 4, 5)
    assert torch.allclose(s["image"], torch.full((1, 4, 5), (100 / 255 - 0.5) / 0.5))
    assert s["mask"][0].tolist() == [0, 1, 2, 255, 255]


def test_camvid_shared(shared_dir):
    root = shared_dir / "data" / "camvid"
    train, val = CamVid(root, split="train"), CamVid(root, split="val")
    assert len(train) == 367 and len(val) == 101
    assert train.classes == CAMVID_CLASSES and train.num_classes == 11 and train.ignore_index == 255
    assert train.palette[4] == (60, 40, 222)
    s = val[0]
    _check_sample(s, 3, 360, 480)
    values = set(torch.unique(s["mask"]).tolist())
    assert values <= set(range(11)) | {255} and 255 in values  # void (11) became 255
    with pytest.raises(DataError, match=r"test\.txt: list file not found"):
        CamVid(root, split="test")


def test_build_dataset(tmp_path, folder_root, voc_root):
    with pytest.raises(SeglabError, match="unknown dataset 'kitti', expected one of: synthetic, folder, camvid"):
        build_dataset("kitti", root=tmp_path, split="train")
    ds = build_dataset("folder", root=folder_root, split="train", classes=["x", "y"])
    assert len(ds) == 2 and ds.samples[0][0].name == "a.jpg"
    with pytest.raises(SeglabError, match="classes.txt"):
        build_dataset("folder", root=folder_root, split="train")
    (folder_root / "classes.txt").write_text("x\ny\n")
    assert build_dataset("folder", root=folder_root, split="train").classes == ["x", "y"]
    assert len(build_dataset("voc", root=voc_root, split="val")) == 1
    with pytest.raises(DataError, match="camvid_missing: CamVid root not found"):
        build_dataset("camvid", root=tmp_path / "camvid_missing", split="train")
    with pytest.raises(SeglabError, match="dataset 'voc'"):
        build_dataset("voc", root=voc_root, split="val", bogus=1)


def test_synthetic_dataset(tmp_path):
    with pytest.raises(DataError, match="meta.json: file not found.*generate_synthetic"):
        SyntheticSegmentation(tmp_path, split="train")
    root = generate_synthetic(tmp_path / "syn", num_train=3, num_val=2, size=(32, 40))
    ds = build_dataset("synthetic", root=root, split="train",
                       transform=TrainTransform(crop_size=(24, 24), color_jitter=0.1))
    assert len(ds) == 3 and ds.num_classes == 6
    s = ds[0]
    _check_sample(s, 3, 24, 24)
    val = SyntheticSegmentation(root, split="val", transform=EvalTransform())
    assert len(val) == 2 and val[1]["image"].shape == (3, 32, 40)
    # picklable for DataLoader workers, and a worker gives the same sample as the main process
    clone = pickle.loads(pickle.dumps(val))
    assert torch.equal(clone[1]["image"], val[1]["image"])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 24, 24) and batch["mask"].shape == (3, 24, 24)


def test_camvid_sequence_held_out_folds(shared_dir):
    """configs/camvid/folds: for each of CamVid's three train + val sequences, the images of the other two
    (training) and of that one (validation), read as list-file splits; together they are train + val."""
    from pathlib import Path

    root = shared_dir / "data" / "camvid"
    folds = Path(__file__).resolve().parents[2] / "configs" / "camvid" / "folds"
    trainval = {p for p, _ in CamVid(root, split="trainval").samples}
    assert len(trainval) == 468
    for seq, size in (("0001TP", 62), ("0006R0", 101), ("0016E5", 305)):
        train = CamVid(root, split=str(folds / f"without_{seq}.txt"))
        val = CamVid(root, split=str(folds / f"only_{seq}.txt"))
        train_paths, val_paths = {p for p, _ in train.samples}, {p for p, _ in val.samples}
        assert len(val_paths) == size and all(p.name.startswith(seq) for p in val_paths)
        assert not any(p.name.startswith(seq) for p in train_paths)
        assert train_paths | val_paths == trainval and not train_paths & val_paths
    with pytest.raises(SeglabError, match="unknown split 'fold1'"):
        CamVid(root, split="fold1")
