"""SIFT Flow (tiny real .jpg + .mat files in the release's layout) and the synthetic two-space set."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data import build_dataset
from seglab.data.siftflow import (
    SIFTFLOW_SUBDIR,
    SIFTFlow,
    SyntheticJoint,
    pack_label_maps,
    unpack_label_maps,
)
from seglab.data.synthetic import SYNTHETIC_THING_IDS
from seglab.data.transforms import TrainTransform
from seglab.errors import DataError, SeglabError

scipy_io = pytest.importorskip("scipy.io")

H, W = 6, 8
# Semantic: 0 void, 1 awning, 28 sky, 33 window; geometric: -1 and 0 void, 1 sky, 3 vertical.
SEMANTIC = np.array([0, 1, 28, 33] * 2, dtype=np.uint8)[None].repeat(H, 0)
GEOMETRIC = np.array([-1, 0, 1, 3] * 2, dtype=np.int16)[None].repeat(H, 0)


def _write_sample(root: Path, name: str, seed: int, semantic=SEMANTIC, geometric=GEOMETRIC) -> None:
    for folder in ("Images", "SemanticLabels", "GeoLabels"):
        (root / folder / SIFTFLOW_SUBDIR).mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "Images" / SIFTFLOW_SUBDIR / f"{name}.jpg")
    scipy_io.savemat(root / "SemanticLabels" / SIFTFLOW_SUBDIR / f"{name}.mat", {"S": semantic})
    scipy_io.savemat(root / "GeoLabels" / SIFTFLOW_SUBDIR / f"{name}.mat", {"S": geometric})


@pytest.fixture
def siftflow_root(tmp_path) -> Path:
    root = tmp_path / "SiftFlow"
    for i, name in enumerate(["coast_natu975", "street_par177", "forest_for114"]):
        _write_sample(root, name, i)
    # Split lines as bare names, file names or Windows-style paths: the stem names the image.
    (root / "TrainSet1.txt").write_text(f"coast_natu975\r\n{SIFTFLOW_SUBDIR}\\street_par177.jpg\n\n")
    (root / "TestSet1.txt").write_text("forest_for114.jpg\n")
    return root


def test_labels_shift_to_zero_based_with_void_ignored(siftflow_root):
    ds = SIFTFlow(siftflow_root, split="train")
    assert len(ds) == 2 and ds.names == ["coast_natu975", "street_par177"]
    assert ds.num_classes_per_space == {"semantic": 33, "geometric": 3}
    assert ds.label_spaces["semantic"][27] == "sky" and ds.label_spaces["geometric"] == ["sky", "horizontal", "vertical"]
    image, labels = ds.read_raw(1)
    assert image.shape == (H, W, 3)
    assert labels["semantic"][0, :4].tolist() == [255, 0, 27, 32]
    assert labels["geometric"][0, :4].tolist() == [255, 255, 0, 2]


def test_sample_holds_every_space_and_the_primary_as_mask(siftflow_root):
    sample = SIFTFlow(siftflow_root, split="test")[0]
    assert sample["image"].shape == (3, H, W) and sample["path"].endswith("forest_for114.jpg")
    assert set(sample["masks"]) == {"semantic", "geometric"}
    assert torch.equal(sample["mask"], sample["masks"]["semantic"])
    assert sample["masks"]["geometric"][0, :4].tolist() == [255, 255, 0, 2]


def test_label_space_choice_and_order(siftflow_root):
    ds = SIFTFlow(siftflow_root, split="test", label_spaces=("geometric",))
    assert ds.num_classes == 3 and ds.classes == ["sky", "horizontal", "vertical"]
    assert ds.read_mask(0)[0, :4].tolist() == [255, 255, 0, 2]
    with pytest.raises(SeglabError, match="label_spaces"):
        SIFTFlow(siftflow_root, label_spaces=("semantic", "depth"))


def test_release_split_files_and_build_dataset(siftflow_root):
    (siftflow_root / "TrainSet1.txt").unlink()
    (siftflow_root / "trainval.txt").write_text("forest_for114\n")
    ds = build_dataset("siftflow", root=siftflow_root, split="trainval")
    assert isinstance(ds, SIFTFlow) and ds.names == ["forest_for114"]
    (siftflow_root / "trainval.txt").unlink()
    with pytest.raises(DataError, match="TrainSet1.txt or trainval.txt"):
        SIFTFlow(siftflow_root, split="train")
    with pytest.raises(SeglabError, match="unknown split"):
        SIFTFlow(siftflow_root, split="val")


def test_bad_files_name_the_file(siftflow_root):
    (siftflow_root / "GeoLabels" / SIFTFLOW_SUBDIR / "street_par177.mat").unlink()
    with pytest.raises(DataError, match="street_par177.mat: file not found"):
        SIFTFlow(siftflow_root, split="train")
    _write_sample(siftflow_root, "forest_for114", 0, semantic=SEMANTIC + 1)  # 34: no such class
    with pytest.raises(DataError, match=r"forest_for114.mat \(labels of forest_for114.jpg\): semantic label values \[33\]"):
        SIFTFlow(siftflow_root, split="test")[0]
    scipy_io.savemat(siftflow_root / "SemanticLabels" / SIFTFLOW_SUBDIR / "forest_for114.mat", {"L": SEMANTIC})
    with pytest.raises(DataError, match="no field 'S'"):
        SIFTFlow(siftflow_root, split="test")[0]


def test_pack_unpack_round_trip_and_padding():
    rng = np.random.default_rng(0)
    a = np.where(rng.random((5, 7)) < 0.2, 255, rng.integers(0, 33, (5, 7)))
    b = np.where(rng.random((5, 7)) < 0.2, 255, rng.integers(0, 3, (5, 7)))
    packed = pack_label_maps([a, b], [33, 3])
    assert packed.dtype == np.int32 and packed.min() >= 256  # never mistaken for the pad value 255
    got = unpack_label_maps(torch.from_numpy(packed), [33, 3])
    assert np.array_equal(got[0].numpy(), a) and np.array_equal(got[1].numpy(), b)
    pad = unpack_label_maps(torch.tensor([255, 0]), [33, 3])
    assert all(p.tolist() == [255, 255] for p in pad)


def test_train_transform_moves_every_space_together(tiny_synthetic):
    """Scale, crop, flip and padding act on both spaces at once: stuff_thing stays a function of the
    semantic label at every pixel, and padded pixels are ignored in both."""
    ds = SyntheticJoint(tiny_synthetic, "train", TrainTransform(crop_size=(72, 72), scale_range=(0.5, 1.5)))
    ds.transform.set_random_seed(0)
    thing = torch.tensor([int(c in SYNTHETIC_THING_IDS) for c in range(6)])
    saw_padding = False
    for i in range(4):
        m = ds[i]["masks"]
        sem, kind = m["semantic"], m["stuff_thing"]
        assert sem.shape == kind.shape == (72, 72)
        assert torch.equal(sem == 255, kind == 255)
        valid = sem != 255
        assert torch.equal(thing[sem[valid]], kind[valid])
        saw_padding |= bool((~valid).any())
    assert saw_padding  # 48x64 images padded to 72x72


def test_synthetic_joint_derives_stuff_and_thing(tiny_synthetic):
    ds = build_dataset("synthetic_joint", root=tiny_synthetic, split="val")
    assert ds.num_classes_per_space == {"semantic": 6, "stuff_thing": 2} and ds.num_classes == 6
    _, labels = ds.read_raw(0)
    assert np.array_equal(labels["stuff_thing"], np.isin(labels["semantic"], SYNTHETIC_THING_IDS).astype(np.int64))
    assert set(np.unique(labels["stuff_thing"])) == {0, 1}
