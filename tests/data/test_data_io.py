"""read_image / read_label, and every bad-input case raising a DataError that names the file."""
import os

import numpy as np
import pytest

from seglab.data import SegmentationFolder, read_image, read_label
from seglab.data.palettes import VOC_PALETTE
from seglab.errors import DataError, SeglabError


def test_read_image_modes(tmp_path, save_png, rgb):
    arr = rgb(5, 7)
    assert np.array_equal(read_image(save_png(tmp_path / "x.png", arr)), arr)
    gray = save_png(tmp_path / "g.png", arr[:, :, 0], "L")
    out = read_image(gray, in_channels=1)
    assert out.shape == (5, 7, 1) and out.dtype == np.uint8
    pal = save_png(tmp_path / "p.png", np.array([[0, 1], [2, 15]], np.uint8), "P", VOC_PALETTE)
    out = read_image(pal)  # palette images are colour images
    assert out.shape == (2, 2, 3) and tuple(out[1, 1]) == VOC_PALETTE[15]


def test_read_label_palette_and_gray(tmp_path, save_png):
    idx = np.array([[0, 15, 255]], np.uint8)
    lbl = read_label(save_png(tmp_path / "p.png", idx, "P", VOC_PALETTE))
    assert lbl.dtype == np.int64 and lbl.tolist() == [[0, 15, 255]]
    assert read_label(save_png(tmp_path / "l.png", idx, "L")).tolist() == [[0, 15, 255]]
    wide = np.array([[0, 300]], np.uint16)
    assert read_label(save_png(tmp_path / "w.png", wide)).tolist() == [[0, 300]]


def test_rgb_label_rejected(tmp_path, save_png, rgb):
    path = save_png(tmp_path / "lbl.png", rgb(4, 4))
    with pytest.raises(DataError, match="lbl.png.*single-channel or palette"):
        read_label(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        read_label(tmp_path / "nope.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, save_png, rgb, suffix):
    path = save_png(tmp_path / f"img{suffix}", rgb(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"img\{suffix}: cannot read image"):
        read_image(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"junk\.png: cannot read label"):
        read_label(path)


def test_wrong_channel_count(tmp_path, save_png, rgb):
    rgba = np.concatenate([rgb(4, 4), np.full((4, 4, 1), 255, np.uint8)], -1)
    path = save_png(tmp_path / "rgba.png", rgba, "RGBA")
    with pytest.raises(DataError, match=r"rgba\.png: image has 4 channels \(RGBA\), expected 3"):
        read_image(path)
    gray = save_png(tmp_path / "gray.png", rgb(4, 4)[:, :, 0], "L")
    with pytest.raises(DataError, match=r"gray\.png: image has 1 channel \(L\), expected 3"):
        read_image(gray)
    with pytest.raises(DataError, match=r"x\.png: image has 3 channels \(RGB\), expected 1"):
        read_image(save_png(tmp_path / "x.png", rgb(4, 4)), in_channels=1)


def _pair(tmp_path, save_png, rgb, image, label, mode="L"):
    save_png(tmp_path / "images" / "img.png", image, "RGBA" if image.ndim == 3 and image.shape[2] == 4 else None)
    save_png(tmp_path / "labels" / "img.png", label, mode)
    return SegmentationFolder(tmp_path / "images", mask_dir=tmp_path / "labels", classes=["a", "b", "c"])


def test_dataset_size_mismatch(tmp_path, save_png, rgb):
    ds = _pair(tmp_path, save_png, rgb, rgb(360, 480), np.zeros((240, 320), np.uint8))
    with pytest.raises(DataError, match=r"img\.png and .*img\.png differ in size: 480x360 vs 320x240"):
        ds[0]
    with pytest.raises(DataError, match="differ in size"):
        ds.read_mask(0)


def test_dataset_out_of_range_label(tmp_path, save_png, rgb):
    lbl = np.zeros((4, 4), np.uint8)
    lbl[0, 0], lbl[1, 1], lbl[2, 2] = 3, 7, 255
    ds = _pair(tmp_path, save_png, rgb, rgb(4, 4), lbl)
    with pytest.raises(DataError, match=r"labels/img\.png: label values 3, 7 are outside \[0, 3\)"):
        ds.read_raw(0)


def test_dataset_wrong_channels_and_rgb_label(tmp_path, save_png, rgb):
    rgba = np.concatenate([rgb(4, 4), np.full((4, 4, 1), 255, np.uint8)], -1)
    ds = _pair(tmp_path, save_png, rgb, rgba, np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"images/img\.png: image has 4 channels"):
        ds[0]
    ds = _pair(tmp_path, save_png, rgb, rgb(4, 4), rgb(4, 4), None)
    with pytest.raises(DataError, match=r"labels/img\.png: label map has mode RGB"):
        ds[0]


def test_dataset_corrupt_and_deleted_files(tmp_path, save_png, rgb):
    ds = _pair(tmp_path, save_png, rgb, rgb(32, 32), np.zeros((32, 32), np.uint8))
    img = tmp_path / "images" / "img.png"
    img.write_bytes(img.read_bytes()[:60])
    with pytest.raises(DataError, match=r"images/img\.png: cannot read image"):
        ds[0]
    (tmp_path / "labels" / "img.png").unlink()
    with pytest.raises(DataError, match=r"labels/img\.png: file not found"):
        ds.read_mask(0)


def test_construction_errors(tmp_path, save_png, rgb):
    with pytest.raises(DataError, match=r"missing: data set root not found"):
        SegmentationFolder(list_file="train.txt", root=tmp_path / "missing", classes=["a"])
    with pytest.raises(DataError, match=r"train\.txt: list file not found"):
        SegmentationFolder(list_file="train.txt", root=tmp_path, classes=["a"])
    (tmp_path / "train.txt").write_text("a.png b.png\n")
    with pytest.raises(DataError, match=r"train\.txt:1: listed file not found: .*a\.png"):
        SegmentationFolder(list_file="train.txt", root=tmp_path, classes=["a"])
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.txt: list file is empty"):
        SegmentationFolder(list_file=tmp_path / "empty.txt", classes=["a"])
    (tmp_path / "imgs").mkdir()
    (tmp_path / "lbls").mkdir()
    with pytest.raises(DataError, match=r"imgs: no images"):
        SegmentationFolder(tmp_path / "imgs", mask_dir=tmp_path / "lbls", classes=["a"])
    save_png(tmp_path / "imgs" / "x.png", rgb(2, 2))
    with pytest.raises(DataError, match=r"lbls/x\.png: label file not found \(for image .*x\.png\)"):
        SegmentationFolder(tmp_path / "imgs", mask_dir=tmp_path / "lbls", classes=["a"])
    with pytest.raises(DataError, match=r"nolabels: label folder not found"):
        SegmentationFolder(tmp_path / "imgs", mask_dir=tmp_path / "nolabels", classes=["a"])
    with pytest.raises(SeglabError, match="palette needs one"):
        save_png(tmp_path / "lbls" / "x.png", np.zeros((2, 2), np.uint8), "L")
        SegmentationFolder(tmp_path / "imgs", mask_dir=tmp_path / "lbls", classes=["a", "b"], palette=[(0, 0, 0)])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count open files")
def test_reading_leaves_no_open_files(tmp_path, save_png, rgb):
    # DataLoader workers read thousands of files: no handle may stay open after a read
    img, lbl = save_png(tmp_path / "x.png", rgb(4, 4)), save_png(tmp_path / "l.png", np.zeros((4, 4), np.uint8))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        read_image(img)
        read_label(lbl)
    assert len(os.listdir("/proc/self/fd")) <= before


# --- read_photo: what prediction reads (any common photo, converted with a note) ---------------------

def test_read_photo_applies_exif_orientation(tmp_path, rgb):
    from PIL import Image

    from seglab.data import read_photo

    upright = rgb(6, 10)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what a phone writes: pixels turned, a tag to undo it
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    img.save(tmp_path / "phone.png", exif=exif)
    array, note = read_photo(tmp_path / "phone.png")
    assert note is None and array.shape == (6, 10, 3)
    assert np.array_equal(array, upright)


@pytest.mark.parametrize("mode, expect", [
    ("RGBA", "RGBA image converted to RGB (alpha dropped)"), ("LA", "LA image converted to RGB (alpha dropped)"),
    ("P", "palette image converted to RGB"), ("L", "grayscale image converted to RGB"),
    ("I;16", "I;16 image scaled to 8 bits (value / 257), converted to RGB")])
def test_read_photo_converts_modes_with_a_one_line_note(tmp_path, rgb, mode, expect):
    from PIL import Image

    from seglab.data import read_photo

    base = rgb(5, 7)
    if mode == "I;16":
        img = Image.fromarray(base[:, :, 0].astype(np.uint16) * 257)
    elif mode == "P":
        img = Image.fromarray(base).convert("P")
    else:
        img = Image.fromarray(base).convert(mode)
    path = tmp_path / f"x_{mode.replace(';', '')}.png"
    img.save(path)
    array, note = read_photo(path)
    assert array.shape == (5, 7, 3) and array.dtype == np.uint8
    assert note == f"{path}: {expect}"
    if mode in ("RGBA",):
        assert np.array_equal(array, base)
    if mode in ("L", "LA", "I;16"):  # gray values kept (16-bit: v * 257 / 257), repeated to RGB
        gray = np.asarray(Image.fromarray(base).convert("L")) if mode != "I;16" else base[:, :, 0]
        assert np.array_equal(array[:, :, 0], gray) and np.array_equal(array[:, :, 2], gray)
    gray, note = read_photo(path, in_channels=1)
    assert gray.shape == (5, 7, 1) and (note is None) == (mode == "L")


def test_read_photo_keeps_rgb_and_names_bad_files(tmp_path, save_png, rgb):
    from seglab.data import read_photo

    arr = rgb(4, 6)
    array, note = read_photo(save_png(tmp_path / "x.png", arr))
    assert note is None and np.array_equal(array, arr)
    (tmp_path / "junk.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"junk\.jpg: cannot read image"):
        read_photo(tmp_path / "junk.jpg")
