"""Image-level class lists: the class-list file format, labels derived from label maps, the writer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.data import SyntheticSegmentation, TrainTransform
from seglab.data.image_labels import (
    ImageLabelDataset,
    ImageLabelsFromMasks,
    image_labels_from_masks,
    read_image_labels,
    write_image_labels,
)
from seglab.errors import DataError

CLASSES = ["sky", "road", "car", "traffic light"]


@pytest.fixture
def image_folder(tmp_path, save_png, rgb):
    for name in ("a", "b", "c"):
        save_png(tmp_path / "images" / f"{name}.png", rgb(12, 16, seed=ord(name)))
    return tmp_path


def test_class_lists_by_name_index_stem_and_path(image_folder):
    (image_folder / "image_labels.txt").write_text(
        "# weak labels\n\nimages/a.png sky road  # trailing comment\nimages/b 2 3 sky\nimages/c -\n")
    ds = ImageLabelDataset(image_folder / "image_labels.txt", classes=CLASSES)
    assert len(ds) == 3 and ds.num_classes == 4
    assert ds.image_paths[1] == image_folder / "images" / "b.png"
    assert ds.image_labels.int().tolist() == [[1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]]
    sample = ds[1]
    assert sample["image"].shape == (3, 12, 16) and sample["labels"].dtype == torch.float32
    assert sample["labels"].tolist() == [1.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("line, message", [
    ("images/b.png sky cat", r"image_labels.txt:2: unknown class 'cat'"),
    ("images/b.png rod", r"image_labels.txt:2: unknown class 'rod' \(did you mean: road\?\)"),
    ("images/b.png 4", r"image_labels.txt:2: class index 4 is out of range, expected 0..3"),
    ("images/zzz.png sky", r"image_labels.txt:2: image file not found: .*zzz.png"),
    ("images/zzz sky", r"image_labels.txt:2: no image .*zzz\.\* found"),
    ("images/a.png", r"image_labels.txt:2: image 'images/a.png' lists no classes"),
    ("images/a sky", r"image_labels.txt:2: image 'images/a' is listed twice \(first on line 1\)"),
])
def test_bad_lines_name_the_file_and_line(image_folder, line, message):
    (image_folder / "image_labels.txt").write_text(f"images/a.png sky\n{line}\n")
    with pytest.raises(DataError, match=message):
        read_image_labels(image_folder / "image_labels.txt", CLASSES)


def test_missing_or_empty_class_list_file(tmp_path):
    with pytest.raises(DataError, match="class-list file not found"):
        read_image_labels(tmp_path / "nope.txt", CLASSES)
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DataError, match="no images listed"):
        read_image_labels(tmp_path / "empty.txt", CLASSES)


def test_labels_from_masks_are_the_classes_of_the_full_label_map(tiny_synthetic):
    pixel = SyntheticSegmentation(tiny_synthetic, "train")
    labels = image_labels_from_masks(pixel, progress=False)
    assert labels.shape == (12, 6) and labels.dtype == torch.bool
    for i in range(len(pixel)):
        present = np.unique(pixel.read_mask(i))
        assert torch.nonzero(labels[i]).flatten().tolist() == present.tolist()
    # a crop smaller than the image still gets the whole image's classes (image-level supervision)
    weak = ImageLabelsFromMasks(pixel, transform=TrainTransform(crop_size=(16, 16), scale_range=(1, 1)))
    sample = weak[3]
    assert sample["image"].shape == (3, 16, 16) and "mask" not in sample
    assert torch.equal(sample["labels"], labels[3].float())
    assert weak.classes == pixel.classes and weak.num_classes == 6


def test_written_class_lists_read_back_to_the_same_labels(tiny_synthetic, tmp_path):
    pixel = SyntheticSegmentation(tiny_synthetic, "val")
    path = write_image_labels(tmp_path / "lists" / "image_labels.txt", pixel, progress=False)
    first = path.read_text().splitlines()[1].split()
    assert first[0].endswith("images/val_00000.png") and set(first[1:]) <= set(pixel.classes)
    back = ImageLabelDataset(path, classes=pixel.classes)
    assert [p.resolve() for p in back.image_paths] == [p.resolve() for p, _ in pixel.samples]
    assert torch.equal(back.image_labels, image_labels_from_masks(pixel, progress=False))
    again = write_image_labels(tmp_path / "lists" / "again.txt", back)
    assert again.read_text() == path.read_text()


def test_writer_uses_indices_for_names_that_are_not_safe_tokens(image_folder):
    (image_folder / "image_labels.txt").write_text("images/a.png 3 sky\nimages/b.png -\n")
    ds = ImageLabelDataset(image_folder / "image_labels.txt", classes=CLASSES)
    out = write_image_labels(image_folder / "out.txt", ds).read_text().splitlines()
    assert out[1:] == ["images/a.png sky 3", "images/b.png -"]
    assert torch.equal(ImageLabelDataset(image_folder / "out.txt", classes=CLASSES).image_labels, ds.image_labels)
