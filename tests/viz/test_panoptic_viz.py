"""draw_panoptic: stuff in its category colour, each thing a distinct shade of its category colour, VOID
left as the image, segment borders."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data.panoptic import load_panoptic_json, read_panoptic, read_panoptic_png
from seglab.errors import DataError
from seglab.structures import PanopticResult
from seglab.viz.panoptic import (
    draw_panoptic,
    panoptic_colors,
    save_panoptic_prediction,
    segment_borders,
)


@pytest.fixture
def sample(shared_dir):
    root = shared_dir / "data" / "coco-panoptic-sample"
    if not (root / "panoptic_examples.json").is_file():
        pytest.skip(f"COCO panoptic sample not found at {root}")
    data = load_panoptic_json(root / "panoptic_examples.json")
    ann = data["annotations"][1]  # image 439180: 14 persons, 2 trucks, 12 horses, 4 stuff
    ids, infos = read_panoptic(root / "panoptic_examples", ann)
    image = np.asarray(Image.open(root / "input_images" / "000000439180.jpg").convert("RGB"))
    return image, ids, infos, data["categories"]


def test_stuff_in_category_colour_things_in_distinct_shades(sample):
    image, ids, infos, categories = sample
    color_of = {c["id"]: tuple(c["color"]) for c in categories}
    out = np.asarray(draw_panoptic(image, ids, infos, categories, alpha=1.0, border_color=None))
    thing_colors = []
    for s in infos:
        pixels = np.unique(out[ids == s["id"]], axis=0)
        assert len(pixels) == 1  # one flat colour per segment
        color = tuple(int(v) for v in pixels[0])
        base = color_of[s["category_id"]]
        if s["category_id"] >= 92:  # COCO stuff ids
            assert color == base
        else:
            assert max(abs(a - b) for a, b in zip(color, base)) <= 30
            thing_colors.append(color)
    assert len(thing_colors) == 28 and len(set(thing_colors)) == 28
    assert np.array_equal(out[ids == 0], image[ids == 0])  # VOID shows the image
    # the first thing of a category (lowest id) keeps the category colour itself
    first_horse = min(s["id"] for s in infos if s["category_id"] == 19)
    assert tuple(out[ids == first_horse][0]) == color_of[19]
    assert panoptic_colors(infos, categories) == panoptic_colors(list(reversed(infos)), categories)


def test_alpha_blend_and_borders():
    ids = np.array([[1, 1, 2], [1, 1, 2], [0, 0, 2]])
    infos = [{"id": 1, "category_id": 7}, {"id": 2, "category_id": 8}]
    cats = [{"id": 7, "isthing": 0, "color": [200, 0, 0]}, {"id": 8, "isthing": 1, "color": [0, 0, 100]}]
    image = np.full((3, 3, 3), 100, np.uint8)
    assert segment_borders(ids).tolist() == [[False, True, False], [True, True, False], [False, True, False]]
    out = np.asarray(draw_panoptic(image, ids, infos, cats, alpha=0.5, border_color=(255, 255, 0)))
    assert out[0, 0].tolist() == [150, 50, 50] and out[0, 2].tolist() == [50, 50, 100]
    assert out[2, 0].tolist() == [100, 100, 100] and out[1, 1].tolist() == [255, 255, 0]
    plain = np.asarray(draw_panoptic(image, ids, infos, cats, alpha=0.0, border_color=None))
    assert np.array_equal(plain, image)
    with pytest.raises(DataError, match="segment 2 has category_id 9"):
        draw_panoptic(image, ids, [infos[0], {"id": 2, "category_id": 9}], cats)


def test_save_panoptic_prediction(tmp_path):
    ids = torch.tensor([[1, 1, 2], [1, 1, 2]])
    result = PanopticResult(ids, [{"id": 1, "category_id": 7, "isthing": 0}, {"id": 2, "category_id": 8, "isthing": 1}])
    cats = [{"id": 7, "isthing": 0, "color": [200, 0, 0]}, {"id": 8, "isthing": 1, "color": [0, 0, 100]}]
    ann = save_panoptic_prediction(tmp_path, "img", np.zeros((2, 3, 3), np.uint8), result, cats, image_id=5)
    assert ann["file_name"] == "img_panoptic.png" and ann["image_id"] == 5
    assert [(s["id"], s["area"], s["bbox"]) for s in ann["segments_info"]] == [(1, 4, [0, 0, 2, 2]), (2, 2, [2, 0, 1, 2])]
    assert np.array_equal(read_panoptic_png(tmp_path / "img_panoptic.png"), ids.numpy())
    assert Image.open(tmp_path / "img_panoptic_vis.png").size == (3, 2)
