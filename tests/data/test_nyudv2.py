"""NYUDv2 (40 classes, rgb / rgbd / hha / rgbhha inputs) on a tiny generated folder of real PNG files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data import build_dataset
from seglab.data.hha import depth_to_hha
from seglab.data.nyudv2 import (
    NYUDV2_CLASSES,
    NYUDv2,
    modality_mean_std,
    read_depth,
    write_hha,
)
from seglab.data.transforms import TrainTransform
from seglab.errors import DataError, SeglabError

H, W = 48, 64
K = (60.0, 60.0, 31.5, 23.5)  # intrinsics of the generated frames


def _depth_mm(seed: int) -> np.ndarray:
    """A receding floor-like plane (2 to 5 m) with a few missing (0) pixels, uint16 millimetres."""
    rows = np.linspace(5.0, 2.0, H)[:, None] + np.zeros((1, W)) + 0.1 * seed
    depth = np.rint(rows * 1000).astype(np.uint16)
    depth[10:13, 20:25] = 0
    return depth


@pytest.fixture
def nyud_root(tmp_path, save_png, rgb) -> Path:
    """FCN's naming (ids are numbers, files img_<n>.png) for two samples, plain `<id>.png` for one."""
    root = tmp_path / "nyud"
    for k, (sample_id, name) in enumerate([("5001", "img_5001"), ("5002", "img_5002"), ("kitchen_7", "kitchen_7")]):
        save_png(root / "images" / f"{name}.png", rgb(H, W, k))
        save_png(root / "depth" / f"{name}.png", _depth_mm(k))
        label = np.zeros((H, W), np.uint8)  # 0: unlabelled
        label[:, 10:30] = 1  # wall
        label[30:, 30:] = 40  # otherprop
        label[0, 0] = 22  # ceiling
        save_png(root / "labels40" / f"{name}.png", label)
    (root / "train.txt").write_text("5001\nkitchen_7\n")
    (root / "test.txt").write_text("5002\n")
    return root


def test_layout_split_and_40_classes(nyud_root):
    ds = NYUDv2(nyud_root, split="train")
    assert len(ds) == 2 and ds.num_classes == 40 and ds.classes[0] == "wall" and ds.classes[-1] == "otherprop"
    assert NYUDV2_CLASSES[21] == "ceiling"
    assert len(NYUDv2(nyud_root, split="test")) == 1
    sample = ds[0]
    assert sample["image"].shape == (3, H, W) and sample["image"].dtype == torch.float32
    mask = sample["mask"]
    assert mask[0, 0] == 21 and mask[5, 15] == 0 and mask[40, 40] == 39  # stored k -> class k - 1
    assert mask[5, 5] == 255  # 0 (unlabelled) is ignored


@pytest.mark.parametrize("modality, channels", [("rgb", 3), ("rgbd", 4), ("hha", 3), ("rgbhha", 6)])
def test_modalities_give_3_4_3_6_channels(nyud_root, modality, channels):
    ds = build_dataset("nyudv2", root=nyud_root, split="train", modality=modality, intrinsics=K)
    image, mask = ds.read_raw(1)
    assert image.shape == (H, W, channels) and image.dtype == np.uint8 and mask.shape == (H, W)
    rgb = np.asarray(Image.open(nyud_root / "images" / "kitchen_7.png"))
    if modality in ("rgb", "rgbd", "rgbhha"):
        assert np.array_equal(image[..., :3], rgb)  # RGB always comes first
    item = ds[1]["image"]
    assert item.shape == (channels, H, W)
    mean, std = modality_mean_std(modality)
    assert len(mean) == len(std) == channels
    torch.testing.assert_close(item[:, 7, 9], (torch.from_numpy(image[7, 9]).float() / 255 - torch.tensor(mean))
                               / torch.tensor(std))


def test_rgbd_depth_channel_is_depth_over_10_m(nyud_root):
    image, _ = NYUDv2(nyud_root, split="test", modality="rgbd").read_raw(0)
    depth_m = _depth_mm(1) / 1000.0
    np.testing.assert_array_equal(image[..., 3], np.rint(depth_m * 25.5).astype(np.uint8))
    assert image[11, 22, 3] == 0  # missing stays 0


def test_hha_is_computed_from_depth_or_read_when_precomputed(nyud_root):
    ds = NYUDv2(nyud_root, split="test", modality="hha", intrinsics=K)
    hha, _ = ds.read_raw(0)
    expected = depth_to_hha(read_depth(nyud_root / "depth" / "img_5002.png"), K)
    np.testing.assert_array_equal(hha, expected)
    assert write_hha(nyud_root, intrinsics=K) == 3 and write_hha(nyud_root, intrinsics=K) == 0  # kept
    np.testing.assert_array_equal(np.asarray(Image.open(nyud_root / "hha" / "img_5002.png")), expected)
    # A precomputed file is read as it is, not recomputed (and no depth is needed then).
    Image.fromarray(np.full((H, W, 3), 7, np.uint8)).save(nyud_root / "hha" / "img_5002.png")
    (nyud_root / "depth" / "img_5002.png").unlink()
    image, _ = NYUDv2(nyud_root, split="test", modality="rgbhha").read_raw(0)
    assert (image[..., 3:] == 7).all() and image.shape == (H, W, 6)


def test_six_channel_training_transform_pads_and_crops(nyud_root):
    mean, std = modality_mean_std("rgbhha")
    transform = TrainTransform(crop_size=(56, 72), scale_range=(1.0, 1.0), color_jitter=0.0, mean=mean, std=std)
    ds = build_dataset("nyudv2", root=nyud_root, split="train", modality="rgbhha", intrinsics=K, transform=transform)
    sample = ds[0]  # the crop is larger than the frame: padded (labels with the ignore index)
    assert sample["image"].shape == (6, 56, 72) and sample["mask"].shape == (56, 72)
    assert (sample["mask"] == 255).sum() >= 56 * 72 - H * W


def test_mistakes_are_clear_errors(nyud_root, save_png):
    with pytest.raises(SeglabError, match="modality"):
        NYUDv2(nyud_root, modality="depth")
    with pytest.raises(SeglabError, match="split"):
        NYUDv2(nyud_root, split="validation")
    with pytest.raises(DataError, match="val.txt"):
        NYUDv2(nyud_root, split="val")
    with pytest.raises(SeglabError, match="unknown dataset"):
        build_dataset("nyud", root=nyud_root, split="train")
    with pytest.raises(SeglabError, match="fx, fy, cx, cy"):
        NYUDv2(nyud_root, modality="hha", intrinsics=(1.0, 2.0))
    (nyud_root / "depth" / "kitchen_7.png").unlink()
    NYUDv2(nyud_root, modality="rgb")  # RGB needs no depth
    with pytest.raises(DataError, match="kitchen_7.png"):
        NYUDv2(nyud_root, modality="rgbd")
    save_png(nyud_root / "depth" / "kitchen_7.png", np.full((H, W), 30, np.uint8))  # 8-bit: not millimetres
    with pytest.raises(DataError, match="16-bit"):
        NYUDv2(nyud_root, modality="rgbd").read_raw(1)
    save_png(nyud_root / "depth" / "kitchen_7.png", np.zeros((H, W + 1), np.uint16))
    with pytest.raises(DataError, match="differ in size"):
        NYUDv2(nyud_root, modality="rgbd").read_raw(1)
