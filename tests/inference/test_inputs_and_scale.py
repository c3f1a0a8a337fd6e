"""What `seglab predict` reads (recursive folders mirrored into the output folder, outputs that never
overwrite inputs, the default output folder) and the scale images are predicted at."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from seglab.errors import SeglabError
from seglab.inference import Predictor
from seglab.inference.inputs import collect_inputs, default_out_dir
from seglab.inference.options import resolve_options
from seglab.inference.scale import InputScale, parse_imgsz, resize_ids


def _png(path: Path, h=8, w=10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)
    return path


def test_folders_are_walked_recursively_and_mirrored(tmp_path):
    _png(tmp_path / "in" / "a.png")
    _png(tmp_path / "in" / "sub" / "deeper" / "b.jpg")
    _png(tmp_path / "in" / ".hidden" / "c.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    items = collect_inputs([tmp_path / "in"], tmp_path / "out")
    assert [str(i.key) for i in items] == ["a", "sub/deeper/b"]
    assert items[1].output(tmp_path / "out", "_overlay.png") == tmp_path / "out" / "sub" / "deeper" / "b_overlay.png"


def test_outputs_never_overwrite_inputs(tmp_path):
    photo = _png(tmp_path / "photos" / "x.png")
    with pytest.raises(SeglabError, match="output folder"):
        collect_inputs([tmp_path / "photos"], tmp_path / "photos")        # --out = the input folder
    with pytest.raises(SeglabError, match="inside the output folder"):
        collect_inputs([photo], tmp_path / "photos")                      # a file inside --out
    # an output folder inside the input folder is skipped by the walk (a second run does not read outputs)
    _png(tmp_path / "photos" / "pred" / "x.png")
    items = collect_inputs([tmp_path / "photos"], tmp_path / "photos" / "pred")
    assert [i.path for i in items] == [photo]


def test_same_output_name_and_missing_inputs_are_errors(tmp_path):
    a, b = _png(tmp_path / "a" / "x.png"), _png(tmp_path / "b" / "x.jpg")
    with pytest.raises(SeglabError, match="same name"):
        collect_inputs([a, b], tmp_path / "o")
    with pytest.raises(SeglabError, match="input not found"):
        collect_inputs([tmp_path / "nope.png"], tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeglabError, match="no images"):
        collect_inputs([tmp_path / "empty"], tmp_path / "o")


def test_default_out_dir_is_a_new_numbered_folder(tmp_path):
    root = tmp_path / "runs" / "predict"
    assert default_out_dir(root) == root / "1"
    (root / "1").mkdir(parents=True)
    (root / "7").mkdir()
    (root / "other").mkdir()
    assert default_out_dir(root) == root / "8"


def test_input_scale_targets():
    assert InputScale(short_side=360).target(1440, 1920) == (360, 480)
    assert InputScale(short_side=360).target(1920, 1080) == (640, 360)   # portrait: the width is short
    assert InputScale(short_side=360).target(360, 480) is None           # already there: untouched
    assert InputScale(size=(360, 480)).target(100, 100) == (360, 480)
    assert InputScale(factor=0.5).target(101, 200) == (50, 100)
    assert parse_imgsz("512") == InputScale(short_side=512)
    assert parse_imgsz("360x480") == InputScale(size=(360, 480))
    assert parse_imgsz("native").target(1440, 1920) is None
    with pytest.raises(SeglabError, match="--imgsz"):
        parse_imgsz("big")


def test_resize_ids_keeps_exact_values():
    ids = torch.tensor([[1, 2], [3, 2**30]])
    out = resize_ids(ids, (4, 4))
    assert out.dtype == ids.dtype and set(out.unique().tolist()) == {1, 2, 3, 2**30}
    assert out[3, 3] == 2**30 and out[0, 0] == 1


def test_options_take_the_training_size_then_stored_then_explicit():
    config = {"train_size": [360, 480], "inference": {"tta": {"flip": True, "scales": [1.0]}}}
    assert resolve_options(model_config=config).resize == InputScale(short_side=360)
    assert resolve_options(model_config=config).tta["flip"] is True
    assert resolve_options(model_config={**config, "inference": {"imgsz": 512}}).resize == InputScale(short_side=512)
    assert resolve_options(model_config=config, eval_config={"scale": 1.0}).resize == InputScale(factor=1.0)
    assert resolve_options(model_config=config, imgsz="240x320").resize == InputScale(size=(240, 320))
    assert resolve_options(model_config=config, scale=0.5).resize == InputScale(factor=0.5)
    assert resolve_options().resize is None  # a model that does not record its size: images as they are
    with pytest.raises(SeglabError, match="not both"):
        resolve_options(imgsz=360, scale=1.0)


class ShapeModel(nn.Module):
    """A 1x1 conv that records the sizes it is fed."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.conv(x)


def test_predictor_predicts_at_the_training_scale_and_returns_the_image_size():
    model = ShapeModel()
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    result = Predictor(model, resize=InputScale(short_side=30)).predict_image(image)
    assert model.sizes == [(30, 40)]
    assert result.labels.shape == (120, 160) and result.probs.shape == (4, 120, 160)
    # a pixelwise model on a smooth image gives nearly the labels of full-size prediction
    smooth = np.asarray(Image.fromarray(image[::20, ::20]).resize((160, 120), Image.BILINEAR))
    small = Predictor(model, resize=InputScale(short_side=60)).predict_image(smooth).labels
    full = Predictor(model).predict_image(smooth).labels
    assert (small == full).float().mean() > 0.9


def test_files_are_read_ahead_in_order_and_batched_by_size():
    from seglab.inference.files import read_ahead, same_size_batches

    assert list(read_ahead(range(7), lambda i: i * 10, depth=3)) == [0, 10, 20, 30, 40, 50, 60]
    sizes = [(2, 3)] * 5 + [(4, 4)] + [(2, 3)] * 2 + [(100, 100)] * 3
    batches = list(same_size_batches(range(len(sizes)), lambda i: sizes[i], batch_size=4, max_pixels=20_000))
    assert batches == [[0, 1, 2, 3], [4], [5], [6, 7], [8, 9], [10]]
