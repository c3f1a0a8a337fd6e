"""class_statistics against a hand-computed two-image example."""
import numpy as np
import pytest
import torch

from seglab.data import SegmentationFolder, class_statistics
from seglab.errors import SeglabError


@pytest.fixture
def two_images(tmp_path, save_png, rgb):
    # image 1 (2x3): classes 0 0 1 / 1 1 255  -> class 0: 2 px, class 1: 3 px, 6 px in all
    # image 2 (2x2): classes 2 2 / 2 0        -> class 0: 1 px, class 2: 3 px, 4 px in all
    save_png(tmp_path / "im" / "1.png", rgb(2, 3))
    save_png(tmp_path / "lb" / "1.png", np.array([[0, 0, 1], [1, 1, 255]], np.uint8), "L")
    save_png(tmp_path / "im" / "2.png", rgb(2, 2))
    save_png(tmp_path / "lb" / "2.png", np.array([[2, 2], [2, 0]], np.uint8), "L")
    return SegmentationFolder(tmp_path / "im", mask_dir=tmp_path / "lb", classes=["a", "b", "c", "d"])


def test_hand_computed(two_images):
    counts, present = class_statistics(two_images, 4)
    assert counts.dtype == torch.int64 and present.dtype == torch.int64
    assert counts.tolist() == [3, 3, 3, 0]
    # class 0 is in both images (6 + 4 px), class 1 only in image 1, class 2 only in image 2
    assert present.tolist() == [10, 6, 4, 0]


def test_uses_read_raw_without_read_mask(two_images):
    class Raw:
        def __len__(self):
            return len(two_images)

        def read_raw(self, i):
            return two_images.read_raw(i)

    assert [t.tolist() for t in class_statistics(Raw(), 4)] == [[3, 3, 3, 0], [10, 6, 4, 0]]
    with pytest.raises(SeglabError, match=r"values \[2\] outside \[0, 2\)"):
        class_statistics(Raw(), 2)
