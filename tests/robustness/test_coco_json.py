"""COCO instance and panoptic JSON from other tools: wrong types anywhere, missing fields, deep nesting,
ground truth whose PNG and records disagree, prediction files named alike. Each is one line naming the
file (and the annotation), nothing is treated as VOID in silence, and no two predictions share a file."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from seglab.data.panoptic import id2rgb
from seglab.errors import SeglabError

from robustness import layouts
from robustness.conftest import snapshot


def _break(layout, mutate) -> None:
    path = layout.files["json"]
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))


def _refused(layout, *fragments) -> str:
    before = snapshot(layout.root)
    with pytest.raises(SeglabError) as info:
        layouts.read_all(layout)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 1000, msg
    for f in (str(layout.files["json"]), *fragments):
        assert f in msg, f"{f!r} not in: {msg}"
    assert snapshot(layout.root) == before
    return msg


def _ann(data) -> dict:
    return data["annotations"][0]


INSTANCE_BREAKS = {
    "flat_segmentation": lambda d: _ann(d).update(segmentation=[2, 2, 8, 2, 8, 7, 2, 7]),
    "segmentation_of_dicts": lambda d: _ann(d).update(segmentation=[[{"x": 1}]]),
    "segmentation_a_string": lambda d: _ann(d).update(segmentation="polygon"),
    "rle_size_strings": lambda d: _ann(d).update(segmentation={"size": ["a", "b"], "counts": [192]}),
    "rle_counts_dicts": lambda d: _ann(d).update(segmentation={"size": [12, 16], "counts": [{}]}),
    "bbox_string": lambda d: _ann(d).update(bbox="1234"),
    "bbox_strings": lambda d: _ann(d).update(bbox=["a", "b", "c", "d"]),
    "bbox_nan": lambda d: _ann(d).update(bbox=[float("nan"), 0, 1, 1]),
    "bbox_bools": lambda d: _ann(d).update(bbox=[True, True, True, True]),
    "annotation_a_number": lambda d: d.update(annotations=[5]),
    "annotation_a_list": lambda d: d.update(annotations=[[1, 2]]),
    "annotations_an_object": lambda d: d.update(annotations={"a": 1}),
    "image_id_a_list": lambda d: _ann(d).update(image_id=[1]),
    "category_id_an_object": lambda d: _ann(d).update(category_id={"id": 3}),
    "iscrowd_yes": lambda d: _ann(d).update(iscrowd="yes"),
    "category_without_name": lambda d: d["categories"][0].pop("name"),
    "category_id_string": lambda d: d["categories"][0].update(id="one"),
    "category_a_string": lambda d: d.update(categories=["thing"]),
    "category_id_twice": lambda d: d["categories"][1].update(id=1),
    "categories_empty": lambda d: d.update(categories=[]),
    "image_height_string": lambda d: d["images"][0].update(height="12"),
    "image_width_zero": lambda d: d["images"][0].update(width=0),
    "image_a_string": lambda d: d.update(images=["000000000001.jpg"]),
    "image_id_twice": lambda d: d["images"].append(dict(d["images"][0])),
    "top_level_a_list": None,
    "deeply_nested": None,
    "huge_integer": None,
    "not_utf8": None,
}


@pytest.mark.parametrize("case", sorted(INSTANCE_BREAKS))
def test_coco_instances_json(case, tmp_path):
    layout = layouts.coco_instances(tmp_path)
    path = layout.files["json"]
    if case == "top_level_a_list":
        path.write_text("[1, 2, 3]")
    elif case == "deeply_nested":
        path.write_text('{"images": ' + "[" * 100000 + "]" * 100000 + "}")
    elif case == "huge_integer":
        path.write_text('{"images": [{"id": ' + "9" * 20000 + "}]}")
    elif case == "not_utf8":
        path.write_bytes(path.read_bytes().replace(b'"thing"', b'"th\xe9ng"'))
    else:
        _break(layout, INSTANCE_BREAKS[case])
    _refused(layout)


def _segments(data) -> list:
    return data["annotations"][0]["segments_info"]


PANOPTIC_BREAKS = {
    "isthing_yes": (lambda d: d["categories"][0].update(isthing="yes"), "isthing"),
    "category_without_id": (lambda d: d["categories"][0].pop("id"), "id"),
    "category_colour_bad": (lambda d: d["categories"][0].update(color=[0, 0]), "color"),
    "categories_missing": (lambda d: d.pop("categories"), "categories"),
    "annotation_a_string": (lambda d: d.update(annotations=["x"]), "annotation"),
    "segments_info_a_dict": (lambda d: d["annotations"][0].update(segments_info={"id": 1}), "segments_info"),
    "segment_id_string": (lambda d: _segments(d)[0].update(id="1001"), "segment"),
    "segment_iscrowd_yes": (lambda d: _segments(d)[0].update(iscrowd="yes"), "segment"),
    "segment_category_string": (lambda d: _segments(d)[0].update(category_id="1"), "segment"),
    "png_id_without_record": (lambda d: _segments(d).pop(1), "2001"),
    "record_without_pixels": (lambda d: _segments(d).append({"id": 3001, "category_id": 2}), "3001"),
    "record_of_unknown_category": (lambda d: _segments(d)[1].update(category_id=99), "99"),
    "record_listed_twice": (lambda d: _segments(d).append(dict(_segments(d)[0])), "1001"),
    "image_id_not_in_images": (lambda d: d["annotations"][0].update(image_id=77), "77"),
    "two_annotations_one_png": (lambda d: (d["images"].append({**d["images"][0], "id": 2}), d["annotations"].append(
        {**copy.deepcopy(d["annotations"][0]), "image_id": 2})), "000000000001.png"),
}


@pytest.mark.parametrize("case", sorted(PANOPTIC_BREAKS))
def test_coco_panoptic_json(case, tmp_path):
    layout = layouts.coco_panoptic(tmp_path)
    mutate, fragment = PANOPTIC_BREAKS[case]
    _break(layout, mutate)
    msg = _refused(layout)
    assert fragment in msg


def test_pq_compute_reads_categories_from_the_ground_truth_only(tmp_path):
    """A prediction JSON without categories is what other tools write; the evaluation does not need them."""
    from seglab.metrics.panoptic import pq_compute

    layout = layouts.coco_panoptic(tmp_path)
    gt_json = layout.files["json"]
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    (pred_dir / "000000000001.png").write_bytes(layout.files["panoptic_png"].read_bytes())
    data = json.loads(gt_json.read_text())
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps({"annotations": data["annotations"]}))
    results = pq_compute(gt_json, pred_json, gt_folder=layout.files["panoptic_png"].parent, pred_folder=pred_dir)
    assert results["All"]["pq"] == pytest.approx(1.0)
    # ground truth with a PNG id and no record is refused, not scored as VOID
    data["annotations"][0]["segments_info"].pop(1)
    gt_json.write_text(json.dumps(data))
    with pytest.raises(SeglabError, match="2001"):
        pq_compute(gt_json, pred_json, gt_folder=layout.files["panoptic_png"].parent, pred_folder=pred_dir)


def test_predictions_of_ground_truth_files_with_one_base_name_do_not_overwrite(tmp_path):
    from seglab.tasks.panoptic import prediction_name

    assert prediction_name("a/x.png", 0) != prediction_name("b/x.png", 1)
    assert prediction_name("a/x.png", 0) == "a/x.png"
    for hostile in ("../x.png", "/etc/x.png", "C:/x.png", "..\\..\\x.png"):
        name = prediction_name(hostile, 3)
        assert "/" not in name and name.startswith("000003_"), name


def test_panoptic_eval_writes_one_prediction_per_ground_truth_file(tmp_path):
    """Two ground-truth PNGs named x.png in two folders give two prediction files, and pq_compute reads
    back the result seglab eval printed."""
    import yaml

    import seglab
    from seglab.cli import main
    from seglab.metrics.panoptic import pq_compute

    layout = layouts.coco_panoptic(tmp_path)
    root = layout.root
    data = json.loads(layout.files["json"].read_text())
    ids = np.full((12, 16), 1001, np.int64)
    ids[3:8, 4:10] = 2001
    annotations, images = [], []
    for k, folder in enumerate(("a", "b")):
        png = root / "annotations" / "panoptic_val2017" / folder / "x.png"
        png.parent.mkdir(parents=True)
        from PIL import Image

        Image.fromarray(id2rgb(ids)).save(png)
        images.append({**data["images"][0], "id": k + 1})
        annotations.append({**data["annotations"][0], "image_id": k + 1, "file_name": f"{folder}/x.png"})
    data.update(images=images, annotations=annotations)
    layout.files["json"].write_text(json.dumps(data))
    model = seglab.create_model("panoptic_fpn_resnet18", num_classes=2, num_things=1)
    ckpt = seglab.save_model(model, tmp_path / "m.safetensors", classes=["grass", "car"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": "panoptic_fpn_resnet18"},
                                   "data": {"name": "coco_panoptic", "root": str(root), "val_split": "val",
                                            "train_split": "val"}}))
    out = tmp_path / "ev"
    assert main(["eval", str(cfg), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    written = sorted(p.relative_to(out / "panoptic_predictions") for p in (out / "panoptic_predictions").rglob("*.png"))
    assert [str(p) for p in written] == ["a/x.png", "b/x.png"]
    pred = json.loads((out / "panoptic_predictions.json").read_text())
    assert [a["file_name"] for a in pred["annotations"]] == ["a/x.png", "b/x.png"]
    pq_compute(layout.files["json"], out / "panoptic_predictions.json",
               gt_folder=root / "annotations" / "panoptic_val2017", pred_folder=out / "panoptic_predictions")
