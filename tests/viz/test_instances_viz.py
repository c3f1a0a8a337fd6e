"""Instance overlay: one distinct colour per instance (blended mask, outline, box), labels, threshold."""
import numpy as np
import pytest
import torch
from PIL import Image

from seglab.structures import InstanceResult
from seglab.viz import draw_instances, instance_colors

H, W = 60, 80


def _result(scores) -> InstanceResult:
    masks = torch.zeros(3, H, W, dtype=torch.bool)
    masks[0, 20:40, 5:25] = True
    masks[1, 25:50, 40:70] = True
    masks[2, 45:58, 10:30] = True
    boxes = torch.tensor([[5, 20, 25, 40], [40, 25, 70, 50], [10, 45, 30, 58]], dtype=torch.float32)
    return InstanceResult(boxes, torch.tensor(scores), torch.tensor([0, 1, 1]), masks)


def test_instances_get_distinct_blended_colours_outlines_and_labels():
    image = np.full((H, W, 3), 100, np.uint8)
    result = _result([0.9, 0.8, 0.2])
    out = draw_instances(Image.fromarray(image), result, ["cat", "dog"], score_threshold=0.5, alpha=0.5)
    assert isinstance(out, Image.Image) and out.size == (W, H) and out.mode == "RGB"
    px = np.asarray(out).astype(int)
    colours = instance_colors(3)
    assert len(set(colours)) == 3
    for k in (0, 1):  # an interior pixel: half image, half the instance's colour
        y, x = int(result.boxes[k, 1]) + 10, int(result.boxes[k, 0]) + 10
        assert np.abs(px[y, x] - (np.array(colours[k]) + 100) / 2).max() <= 1
        # the outline (mask border) in the full colour; the bottom edge is below any label text
        assert tuple(px[int(result.boxes[k, 3]) - 1, x]) == colours[k]
    assert not np.array_equal(px[30, 15], px[35, 55])  # the two instances differ
    # below the threshold: the third instance is not drawn (its interior stays the image)
    assert px[52, 20].tolist() == [100, 100, 100]
    # "class score" labels: text pixels in the label box above the first box (y 20 minus the text height)
    label_area = px[:20, 5:40]
    assert (np.abs(label_area - 100).sum(2) > 0).mean() > 0.2
    assert (label_area.sum(2) < 60).any()  # dark text on the coloured label background
    # away from every instance and label the image is unchanged
    assert px[5, 75].tolist() == [100, 100, 100]


def test_threshold_zero_draws_all_and_array_input():
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    result = _result([0.9, 0.8, 0.2])
    all_drawn = np.asarray(draw_instances(image, result, None, score_threshold=0.0))
    assert not np.array_equal(all_drawn[52, 20], image[52, 20])
    none_drawn = np.asarray(draw_instances(image, result, None, score_threshold=0.95))
    assert np.array_equal(none_drawn, image)
    with pytest.raises(ValueError, match="masks are 80x60 but the image is 10x10"):
        draw_instances(np.zeros((10, 10, 3), np.uint8), result)
