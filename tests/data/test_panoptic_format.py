"""The COCO panoptic format (round trip on the real sample), conversions, Cityscapes panoptic, and the
panoptic data sets' aligned targets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data import generate_synthetic
from seglab.data.datasets import build_dataset
from seglab.data.datasets.coco_panoptic import (
    CityscapesPanoptic,
    PanopticTrainTransform,
    coco_panoptic,
    collate_panoptic,
)
from seglab.data.datasets.synthetic_instances import SyntheticInstances
from seglab.data.instances import masks_to_boxes
from seglab.data.io import read_label
from seglab.data.panoptic import (
    cityscapes_instance_ids_to_panoptic,
    cityscapes_panoptic_categories,
    id2rgb,
    load_panoptic_json,
    panoptic_to_instances,
    panoptic_to_semantic,
    read_panoptic,
    rgb2id,
    save_panoptic_json,
    segment_stats,
    semantic_instance_to_panoptic,
    write_panoptic,
    write_panoptic_png,
)
from seglab.errors import DataError, SeglabError


@pytest.fixture
def sample(shared_dir):
    root = shared_dir / "data" / "coco-panoptic-sample"
    if not (root / "panoptic_examples.json").is_file():
        pytest.skip(f"COCO panoptic sample not found at {root}")
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("syn"), num_train=3, num_val=1, size=(40, 48), workers=1)


def test_rgb2id_id2rgb():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 256 ** 3 - 1, 258]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb[1, 3].tolist() == [2, 1, 0] and rgb[1, 2].tolist() == [255] * 3
    assert np.array_equal(rgb2id(rgb), ids)
    assert rgb2id((1, 2, 3)) == 1 + 2 * 256 + 3 * 65536
    for bad in (-1, 256 ** 3):
        with pytest.raises(SeglabError, match="256"):
            id2rgb(np.array([[bad]]))


def test_coco_sample_round_trip(sample, tmp_path):
    data = load_panoptic_json(sample / "panoptic_examples.json")
    annotations = []
    for ann in data["annotations"]:
        ids, infos = read_panoptic(sample / "panoptic_examples", ann)
        stats = segment_stats(ids)  # our area / bbox agree with COCO's records
        assert {s["id"]: (s["area"], s["bbox"]) for s in infos} == {k: (a, b) for k, (a, b) in stats.items()}
        annotations.append(write_panoptic(tmp_path / "out", ann["file_name"], ids, infos, image_id=ann["image_id"]))
        original = np.asarray(Image.open(sample / "panoptic_examples" / ann["file_name"]))
        written = np.asarray(Image.open(tmp_path / "out" / ann["file_name"]))
        assert written.dtype == original.dtype and np.array_equal(written, original)
    save_panoptic_json(tmp_path / "out.json", {**data, "annotations": annotations})
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads((sample / "panoptic_examples.json").read_text())


def test_write_panoptic_fills_records_and_rejects_mismatch(tmp_path):
    ids = np.array([[0, 5, 5], [7, 7, 5]])
    ann = write_panoptic(tmp_path, "a.png", ids, [{"id": 5, "category_id": 1}, {"id": 7, "category_id": 2,
                                                                                  "area": 99}], image_id=3)
    assert ann == {"image_id": 3, "file_name": "a.png", "segments_info": [
        {"id": 5, "category_id": 1, "area": 3, "bbox": [1, 0, 2, 2]},
        {"id": 7, "category_id": 2, "area": 99, "bbox": [0, 1, 2, 1]}]}
    with pytest.raises(DataError, match="image 3: segment id 7 is in the PNG but not in segments_info"):
        write_panoptic(tmp_path, "b.png", ids, [{"id": 5, "category_id": 1}], image_id=3)
    assert not (tmp_path / "b.png").exists()
    with pytest.raises(DataError, match="panoptic PNG has mode L"):
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "gray.png")
        read_panoptic(tmp_path, {"file_name": "gray.png", "segments_info": []})


def test_synthetic_semantic_instances_panoptic_round_trip(synthetic):
    # semantic + instances -> panoptic gives the generator's own panoptic files, and -> semantic gives
    # the class map back; the thing segments are SyntheticInstances' instances.
    data = load_panoptic_json(synthetic / "panoptic_train.json")
    instances = SyntheticInstances(synthetic, "train")
    for i, ann in enumerate(data["annotations"]):
        name = ann["file_name"].split("/")[-1]
        semantic, inst = read_label(synthetic / "labels" / name), read_label(synthetic / "instances" / name)
        ids, infos = semantic_instance_to_panoptic(semantic, inst, thing_ids=[3, 4, 5])
        file_ids, file_infos = read_panoptic(synthetic, ann)
        assert np.array_equal(ids, file_ids) and infos == file_infos
        assert np.array_equal(panoptic_to_semantic(ids, infos), semantic)
        target = panoptic_to_instances(ids, infos, {3: 0, 4: 1, 5: 2}, image_id=i)
        order = np.argsort([s["id"] % 1000 for s in infos if s["isthing"]])  # SyntheticInstances' order
        target = {k: v[order] if k != "image_id" else v for k, v in target.items()}
        expected = instances.load_target(i, *semantic.shape)
        assert np.array_equal(target["masks"], expected["masks"]) and np.array_equal(target["labels"], expected["labels"])
        assert np.array_equal(target["boxes"], expected["boxes"]) and not target["iscrowd"].any()


def test_semantic_instance_to_panoptic_crowd_void_and_ignore():
    semantic = np.array([[0, 0, 3, 3], [0, 255, 3, 3], [4, 4, 0, 3]])
    inst = np.array([[9, 0, 1, 1], [0, 0, 2, 0], [0, 0, 0, 0]])  # 9 on stuff is not an instance
    ids, infos = semantic_instance_to_panoptic(semantic, inst, thing_ids=[3, 4], label_divisor=10)
    assert ids.tolist() == [[10, 10, 41, 41], [10, 0, 42, 40], [50, 50, 10, 40]]
    assert [(s["id"], s["category_id"], s["iscrowd"], s["isthing"], s["area"]) for s in infos] == [
        (10, 0, 0, 0, 4), (40, 3, 1, 1, 2), (41, 3, 0, 1, 2), (42, 3, 0, 1, 1), (50, 4, 1, 1, 2)]
    ids, _ = semantic_instance_to_panoptic(semantic, inst, [3, 4], label_divisor=10, unassigned_things="void")
    assert ids.tolist() == [[10, 10, 41, 41], [10, 0, 42, 0], [0, 0, 10, 0]]
    assert panoptic_to_semantic(ids, _, ignore=7, category_to_label={0: 5, 3: 6}).tolist() == [
        [5, 5, 6, 6], [5, 7, 6, 7], [7, 7, 5, 7]]
    with pytest.raises(SeglabError, match="instance ids in"):
        semantic_instance_to_panoptic(semantic, inst * 10, [3, 4], label_divisor=10)


def test_cityscapes_instance_ids_to_panoptic_by_hand():
    # 8x8 instanceIds: road 7, sky 23, person 24001 / 24002, a person group 24 (crowd), car 26001,
    # caravan 29 / 29001 (instances, but ignored in evaluation -> VOID), parking 9 and unlabeled 0 (VOID)
    m = np.full((8, 8), 7)
    m[0, :] = 23
    m[1:4, 0:2] = 24001
    m[1:4, 2:3] = 24002
    m[4:6, 0:3] = 24
    m[5:8, 5:8] = 26001
    m[1, 7] = 29
    m[2, 7] = 29001
    m[7, 0] = 9
    m[7, 1] = 0
    ids, infos = cityscapes_instance_ids_to_panoptic(m)
    expected = np.where(np.isin(m, [29, 29001, 9, 0]), 0, m)
    assert np.array_equal(ids, expected)
    assert [(s["id"], s["category_id"], s["iscrowd"], s["area"], s["bbox"]) for s in infos] == [
        (7, 7, 0, 64 - 8 - 6 - 3 - 6 - 9 - 4, [0, 1, 8, 7]), (23, 23, 0, 8, [0, 0, 8, 1]),
        (24, 24, 1, 6, [0, 4, 3, 2]), (24001, 24, 0, 6, [0, 1, 2, 3]), (24002, 24, 0, 3, [2, 1, 1, 3]),
        (26001, 26, 0, 9, [5, 5, 3, 3])]
    _, train = cityscapes_instance_ids_to_panoptic(m, use_train_id=True)
    assert [s["category_id"] for s in train] == [0, 10, 11, 11, 11, 13]
    cats = cityscapes_panoptic_categories()
    assert len(cats) == 19 and [c["id"] for c in cats if c["isthing"]] == [24, 25, 26, 27, 28, 31, 32, 33]
    with pytest.raises(DataError, match="40001"):
        cityscapes_instance_ids_to_panoptic(np.array([[40001]]))


def _check_aligned(ds, x, t):
    """Target consistency: semantic = class of each segment (255 on VOID), thing masks = the thing
    segments, boxes = tight boxes, labels = semantic class - num_stuff under each mask."""
    pan, sem = t["panoptic"], t["semantic"]
    assert x.shape[1:] == pan.shape == sem.shape == t["masks"].shape[1:]
    assert torch.equal(sem == 255, pan == 0)
    by_id = {s["id"]: s for s in t["segments_info"]}
    assert set(torch.unique(pan).tolist()) - {0} == set(by_id)
    for sid, s in by_id.items():
        assert torch.all(sem[pan == sid] == ds.category_to_class[s["category_id"]])
    things = [sid for sid, s in by_id.items() if s["isthing"]]
    assert len(t["masks"]) == len(things) == len(t["labels"]) == len(t["iscrowd"])
    assert torch.equal(t["masks"].any(0), torch.isin(pan, torch.tensor(things, dtype=torch.long)))
    assert torch.equal(t["boxes"], masks_to_boxes(t["masks"]))
    for mask, label in zip(t["masks"], t["labels"]):
        assert torch.unique(sem[mask]).tolist() == [int(label) + ds.num_stuff]


def test_coco_panoptic_sample_targets_after_train_transform(sample):
    ds = coco_panoptic(sample, "val", PanopticTrainTransform(crop_size=(120, 160), scale_range=(0.3, 0.6)),
                       image_dir="input_images", annotation_json="panoptic_examples.json",
                       panoptic_dir="panoptic_examples")
    assert (ds.num_stuff, ds.num_things, ds.classes[0], ds.classes[ds.num_stuff]) == (53, 80, "banner", "person")
    images, targets = collate_panoptic([ds[0], ds[1]])
    for x, t in zip(images, targets):
        _check_aligned(ds, x, t)
    assert targets[0]["image_id"] == 142238 and targets[0]["iscrowd"].sum() <= 1


def test_train_transform_keeps_image_and_ids_aligned():
    # blocks of 4x4 pixels, each its own segment with its own grey level: after scaling by 2, cropping and
    # flipping, every pixel inside a segment (its 3x3 neighbourhood too: bilinear reads one source pixel
    # beyond the nearest one) still shows that segment's grey; a one-pixel offset would break this.
    ids = np.repeat(np.repeat(np.arange(1, 21).reshape(4, 5), 4, 0), 4, 1)
    image = np.repeat((ids * 10).astype(np.uint8)[..., None], 3, 2)
    transform = PanopticTrainTransform(crop_size=(30, 36), scale_range=(2.0, 2.0), mean=(0, 0, 0), std=(1, 1, 1))
    flips = set()
    for seed in range(4):
        torch.manual_seed(seed)
        x, out = transform(image, ids)
        grey = torch.round(x[0] * 255).long()
        pad = torch.nn.functional.pad(out[None, None].float(), (1, 1, 1, 1), value=-1)[0, 0]
        windows = pad.unfold(0, 3, 1).unfold(1, 3, 1)
        deep = (windows == out[..., None, None]).flatten(2).all(2)
        assert deep.sum() > 400 and torch.equal(grey[deep], out[deep] * 10)
        flips.add(bool(out[0, 0] > out[0, -1]))
    assert flips == {True, False}


def test_synthetic_and_cityscapes_panoptic_sets(synthetic, tmp_path):
    ds = build_dataset("synthetic_panoptic", root=synthetic, split="val",
                       transform=PanopticTrainTransform(crop_size=(32, 32), scale_range=(0.8, 1.2)))
    x, t = ds[0]
    _check_aligned(ds, x, t)
    assert ds.classes == ["grass", "water", "sand", "circle", "rectangle", "triangle"] and ds.num_stuff == 3
    # a one-image Cityscapes layout as createPanopticImgs writes it (image ids are strings)
    root = tmp_path / "cityscapes"
    m = np.full((6, 8), 7)
    m[1:4, 1:3], m[4:, 5:] = 24001, 24
    ids, infos = cityscapes_instance_ids_to_panoptic(m)
    stem = "aachen_000000_000019"
    write_panoptic_png(root / "gtFine" / "cityscapes_panoptic_val" / f"{stem}_gtFine_panoptic.png", ids)
    city = root / "leftImg8bit" / "val" / "aachen"
    city.mkdir(parents=True)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(city / f"{stem}_leftImg8bit.png")
    save_panoptic_json(root / "gtFine" / "cityscapes_panoptic_val.json", {
        "images": [{"id": stem, "file_name": f"{stem}_leftImg8bit.png", "width": 8, "height": 6}],
        "annotations": [{"image_id": stem, "file_name": f"{stem}_gtFine_panoptic.png", "segments_info": infos}],
        "categories": cityscapes_panoptic_categories()})
    cs = CityscapesPanoptic(root, "val")
    x, t = cs[0]
    assert cs.image_ids == [stem] and t["image_id"] == 0 and (cs.num_stuff, cs.num_things) == (11, 8)
    assert t["labels"].tolist() == [0, 0] and t["iscrowd"].tolist() == [True, False]
    assert t["semantic"].unique().tolist() == [0, 11]
