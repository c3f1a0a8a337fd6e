"""Instance data: COCO polygon / RLE decoding (numpy fallback == pycocotools), the COCO, Cityscapes and
synthetic instance sets, their errors for bad annotations, and the box-keeping transforms."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data import (CityscapesInstances, CocoInstances, InstanceEvalTransform, InstanceTrainTransform,
                         SyntheticInstances, build_dataset, collate_instances, generate_synthetic,
                         normalize_image)
from seglab.data.coco_masks import (counts_to_string, mask_to_counts, mask_to_rle, polygons_to_mask,
                                    rle_to_mask, segmentation_to_mask, string_to_counts)
from seglab.data.synthetic import SEGMENT_ID_STRIDE, decode_panoptic
from seglab.errors import DataError


def _has_pycocotools() -> bool:
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        return False
    return True


needs_pycocotools = pytest.mark.skipif(not _has_pycocotools(), reason="pycocotools not installed")
BACKENDS = ["numpy", pytest.param("pycocotools", marks=needs_pycocotools)]

# A 3 x 4 mask; column-major it reads 0 0 1 | 1 1 1 | 1 0 0 | 0 0 0, i.e. runs 2 zeros, 5 ones, 5 zeros.
SMALL_MASK = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]], bool)


# ------------------------------------------------------------------------------------------ decoding
@pytest.mark.parametrize("backend", BACKENDS)
def test_polygons_decode_to_hand_made_masks(backend):
    # A pixel is inside when its centre (x + 0.5, y + 0.5) is strictly inside the polygon.
    rect = polygons_to_mask([[1, 1, 5, 1, 5, 4, 1, 4]], 6, 8, backend=backend)
    want = np.zeros((6, 8), bool)
    want[1:4, 1:5] = True
    assert np.array_equal(rect, want)
    tri = polygons_to_mask([[0, 0, 3, 0, 0, 3]], 5, 5, backend=backend)
    want = np.zeros((5, 5), bool)
    want[0, :2] = want[1, 0] = True
    assert np.array_equal(tri, want)
    two_parts = polygons_to_mask([[1, 1, 5, 1, 5, 4, 1, 4], [6, 0, 8, 0, 8, 2, 6, 2]], 6, 8, backend=backend)
    assert np.array_equal(two_parts, rect | np.pad(np.ones((2, 2), bool), ((0, 4), (6, 0))))


@pytest.mark.parametrize("backend", BACKENDS)
def test_rle_both_kinds_decode_to_hand_made_mask(backend):
    assert mask_to_counts(SMALL_MASK) == [2, 5, 5]
    assert counts_to_string([2, 5, 5]) == "255"
    uncompressed = {"size": [3, 4], "counts": [2, 5, 5]}
    compressed = {"size": [3, 4], "counts": "255"}
    assert np.array_equal(rle_to_mask(uncompressed, backend=backend), SMALL_MASK)
    assert np.array_equal(rle_to_mask(compressed, backend=backend), SMALL_MASK)
    assert np.array_equal(rle_to_mask({"size": [3, 4], "counts": b"255"}, backend=backend), SMALL_MASK)
    # a mask starting with a foreground pixel starts with a zero-length run of background
    assert mask_to_counts(~SMALL_MASK) == [0, 2, 5, 5]
    with pytest.raises(ValueError, match="12"):
        rle_to_mask({"size": [3, 4], "counts": [2, 5, 4]}, backend=backend)


def test_compressed_rle_string_round_trip_with_long_and_shrinking_runs():
    counts = [0, 1, 40, 3, 1000, 2, 7, 70000, 1]  # differences to the run two before go negative
    assert string_to_counts(counts_to_string(counts)) == counts


@needs_pycocotools
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools 2.0.8's decode under numpy 2
def test_numpy_fallback_equals_pycocotools():
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    for trial in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        xy = rng.uniform(-3, max(h, w) + 3, 2 * int(rng.integers(3, 8)))
        if trial % 3 == 0:
            xy = np.round(xy)  # vertices on the pixel grid
        if trial % 5 == 0:
            xy = np.concatenate([xy, xy[:2]])  # closed outline: first point repeated
        polys = [xy.tolist()]
        ref = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polys, h, w))).astype(bool)
        assert np.array_equal(polygons_to_mask(polys, h, w, backend="numpy"), ref), polys
        m = rng.random((h, w)) < rng.random()
        rle = mask_to_rle(m, backend="pycocotools")
        assert mask_to_rle(m, backend="numpy") == rle
        assert np.array_equal(rle_to_mask(rle, backend="numpy"), m)


def test_segmentation_errors():
    with pytest.raises(ValueError, match="empty polygon"):
        segmentation_to_mask([], 4, 4)
    with pytest.raises(ValueError, match="empty polygon"):
        segmentation_to_mask([[0, 0, 2, 2]], 4, 4)
    with pytest.raises(ValueError, match="does not match the image size 5x4"):
        segmentation_to_mask({"size": [3, 4], "counts": "255"}, 4, 5)


# ------------------------------------------------------------------------------------------ COCO
def _coco_root(tmp_path, annotations=None, images=None):
    """Three 10 x 12 images (image 3 without annotations) and categories with ids 7, 3, 12."""
    (tmp_path / "val2017").mkdir(parents=True, exist_ok=True)
    for i in (1, 2, 3):
        Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp_path / "val2017" / f"{i:03d}.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "val2017" / "001.png")  # grayscale file
    big = np.zeros((10, 12), bool)
    big[2:9, 3:10] = True
    if annotations is None:
        annotations = [
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 3], "iscrowd": 0,
             "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]},
            {"id": 12, "image_id": 1, "category_id": 12, "bbox": [3, 2, 7, 7], "iscrowd": 1,
             "segmentation": {"size": [10, 12], "counts": mask_to_counts(big)}},
            {"id": 13, "image_id": 2, "category_id": 3, "bbox": [1, 0, 3, 3], "iscrowd": 0,
             "segmentation": {"size": [10, 12], "counts": mask_to_rle(np.pad(SMALL_MASK, ((0, 7), (0, 8))))["counts"]}},
        ]
    data = {"images": images or [{"id": i, "file_name": f"{i:03d}.png", "height": 10, "width": 12} for i in (1, 2, 3)],
            "annotations": annotations,
            "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 12, "name": "crowd thing"}]}
    (tmp_path / "annotations").mkdir(exist_ok=True)
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return tmp_path


def test_coco_targets_category_mapping_and_empty_image(tmp_path):
    root = _coco_root(tmp_path)
    ds = build_dataset("coco_instances", root=root, split="val")
    assert isinstance(ds, CocoInstances) and len(ds) == 3
    assert ds.classes == ["dog", "cat", "crowd thing"] and ds.category_ids == [3, 7, 12]  # sorted by id
    image, t = ds[0]
    assert image.shape == (3, 10, 12) and image.dtype == torch.float32
    assert t["image_id"] == 1 and t["labels"].tolist() == [1, 2] and t["iscrowd"].tolist() == [False, True]
    assert t["boxes"].tolist() == [[1, 1, 5, 4], [3, 2, 10, 9]]
    assert t["masks"].dtype == torch.bool and t["masks"].shape == (2, 10, 12)
    assert t["masks"][0].sum() == 12 and t["masks"][1].sum() == 49
    _, t = ds[1]
    assert t["labels"].tolist() == [0] and np.array_equal(t["masks"][0, :3, :4].numpy(), SMALL_MASK)
    _, t = ds[2]
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 10, 12) and t["image_id"] == 3


def _bad(tmp_path, **changes):
    ann = {"id": 99, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 3], "iscrowd": 0,
           "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]}
    ann.update(changes)
    return _coco_root(tmp_path, annotations=[ann])


@pytest.mark.parametrize("changes, message", [
    ({"bbox": [8, 1, 6, 3]}, r"annotation 99: box \[x, y, w, h\] = \[8, 1, 6, 3\] lies outside its image 001.png"),
    ({"segmentation": []}, "annotation 99: empty polygon list"),
    ({"segmentation": [[1, 1, 5, 1]]}, r"annotation 99: empty polygon: 2 point\(s\)"),
    ({"category_id": 5}, r"annotation 99: unknown category_id 5, expected one of \[3, 7, 12\]"),
    ({"segmentation": {"size": [8, 12], "counts": [96]}}, "annotation 99: mask size 12x8 does not match the image size 12x10"),
])
def test_bad_coco_annotation_raises_one_line(tmp_path, changes, message):
    root = _bad(tmp_path, **changes)
    with pytest.raises(DataError, match=message) as info:
        CocoInstances(root / "val2017", root / "annotations" / "instances_val2017.json")
    assert "instances_val2017.json" in str(info.value) and "\n" not in str(info.value)
    with pytest.warns(UserWarning, match="skipped 1 invalid annotation"):
        ds = CocoInstances(root / "val2017", root / "annotations" / "instances_val2017.json", skip_invalid=True)
    assert len(ds[0][1]["labels"]) == 0


def test_coco_image_size_mismatch_raises_on_read(tmp_path):
    images = [{"id": 1, "file_name": "001.png", "height": 11, "width": 12}]
    root = _coco_root(tmp_path, annotations=[], images=images)
    ds = CocoInstances(root / "val2017", root / "annotations" / "instances_val2017.json")
    with pytest.raises(DataError, match=r"001.png: image is 12x10 but .*instances_val2017.json gives 12x11"):
        ds[0]


# ------------------------------------------------------------------------------------------ Cityscapes
def test_cityscapes_instances_things_groups_and_bad_ids(tmp_path, save_png, rgb):
    stem = "aachen_000000_000019"
    save_png(tmp_path / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png", rgb(6, 8))
    ids = np.full((6, 8), 7, np.uint16)  # road; a 16-bit PNG as released
    ids[0:2, 0:3] = 26000  # car 0
    ids[3:5, 0:2] = 26001  # car 1
    ids[0:3, 5:7] = 24000  # person 0
    ids[5, 3:8] = 26  # a group of cars: crowd
    ids[4, 4] = 29000  # caravan: an instance, but not evaluated
    label_path = tmp_path / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_instanceIds.png"
    save_png(label_path, ids)
    image, t = CityscapesInstances(tmp_path, "train")[0]
    assert image.shape == (3, 6, 8)
    # np.unique order: 26 (group), 24000, 26000, 26001
    assert t["labels"].tolist() == [2, 0, 2, 2] and t["iscrowd"].tolist() == [True, False, False, False]
    assert t["boxes"].tolist() == [[3, 5, 8, 6], [5, 0, 7, 3], [0, 0, 3, 2], [0, 3, 2, 5]]
    assert t["masks"].sum((1, 2)).tolist() == [5, 6, 6, 4]
    ids[0, 0] = 40000
    save_png(label_path, ids)
    with pytest.raises(DataError, match="instance id 40000 holds labelId 40"):
        CityscapesInstances(tmp_path, "train")[0]


# ------------------------------------------------------------------------------------------ synthetic
def test_synthetic_instances_match_panoptic_thing_segments(tmp_path):
    root = generate_synthetic(tmp_path, num_train=3, num_val=0, size=(40, 48), seed=2)
    ds = SyntheticInstances(root, "train")
    pan = json.loads((root / "panoptic_train.json").read_text())
    assert [c["id"] for c in ds.categories] == [3, 4, 5] and ds.classes == ["circle", "rectangle", "triangle"]
    for i, (info, ann) in enumerate(zip(pan["images"], pan["annotations"])):
        _, t = ds[i]
        things = [s for s in ann["segments_info"] if s["isthing"]]
        assert t["image_id"] == info["id"] and len(t["labels"]) == len(things) > 0
        seg = decode_panoptic(np.array(Image.open(root / ann["file_name"])))
        for mask, label in zip(t["masks"].numpy(), t["labels"].tolist()):
            segment = np.unique(seg[mask])
            assert len(segment) == 1 and segment[0] // SEGMENT_ID_STRIDE - 1 == ds.category_ids[label]
            assert np.array_equal(seg == segment[0], mask)


# ------------------------------------------------------------------------------------------ transforms
def _coloured_instances(h: int = 40, w: int = 50):
    """An image where each instance has its own flat colour, and its target."""
    image = np.full((h, w, 3), 128, np.uint8)
    masks = np.zeros((4, h, w), bool)
    masks[0, 3:15, 2:20] = True
    masks[1, 20:36, 30:46] = True
    yy, xx = np.mgrid[:h, :w]
    masks[2] = (yy - 28) ** 2 + (xx - 12) ** 2 <= 36
    masks[3, 36:40, 0:3] = True  # small, in a corner: often cropped away
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
    for m, c in zip(masks, colours):
        image[m] = c
    target = {"boxes": np.zeros((4, 4), np.float32), "labels": np.array([0, 1, 2, 1]), "masks": masks,
              "iscrowd": np.array([False, False, True, False]), "image_id": 5}
    return image, target, colours


def test_train_transform_keeps_boxes_masks_and_pixels_aligned():
    image, target, colours = _coloured_instances()
    transform = InstanceTrainTransform(crop_size=(32, 36), scale_range=(0.5, 1.6), mean=(0, 0, 0), std=(1, 1, 1))
    dropped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        x, t = transform(image, target)
        assert x.shape == (3, 32, 36) and t["masks"].shape[1:] == (32, 36) and t["image_id"] == 5
        dropped += 4 - len(t["labels"])
        for mask, box, label, crowd in zip(t["masks"].numpy(), t["boxes"].tolist(), t["labels"].tolist(),
                                           t["iscrowd"].tolist()):
            ys, xs = np.nonzero(mask)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # the tight box of the mask
            # the instance's own colour lies under its mask: image and masks went through one geometry
            median = np.median(x[:, mask].numpy(), 1)
            assert [k for k in range(4) if target["labels"][k] == label and target["iscrowd"][k] == crowd
                    and np.allclose(median, colours[k] / 255, atol=0.05)]
    assert dropped > 0  # some crops lose instances, and those are dropped


def test_train_transform_flip_and_pad():
    image, target, _ = _coloured_instances()  # 40 x 50
    transform = InstanceTrainTransform(crop_size=(44, 56), scale_range=(1.0, 1.0))
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        x, t = transform(image, target)
        masks, pixels = t["masks"].numpy(), x.numpy()
        assert x.shape == (3, 44, 56) and len(masks) == 4  # padded to the crop, nothing cut away
        flipped = not np.array_equal(masks[:, :40, :50], target["masks"])
        if flipped:
            masks, pixels = masks[:, :, ::-1], pixels[:, :, ::-1]
        seen.add(flipped)
        assert np.array_equal(masks[:, :40, :50], target["masks"]) and not masks[:, 40:].any() \
            and not masks[:, :, 50:].any()
        assert np.allclose(pixels[:, :40, :50], normalize_image(image).numpy())
        assert not pixels[:, 40:].any() and not pixels[:, :, 50:].any()  # padded with the mean colour
    assert seen == {False, True}


def test_eval_transform_and_collate():
    image, target, _ = _coloured_instances(12, 14)
    x, t = InstanceEvalTransform()(image, dict(target, boxes=np.ones((4, 4), np.float32)))
    assert x.shape == (3, 12, 14) and t["boxes"].tolist() == [[1.0] * 4] * 4 and t["masks"].shape == (4, 12, 14)
    images, targets = collate_instances([(x, t), (x[:, :5], t)])
    assert [im.shape[1] for im in images] == [12, 5] and targets[1] is t
