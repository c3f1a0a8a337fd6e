"""Property-based fuzzing (Hypothesis) of the readers and the config parser: whatever the bytes or the
structure, a reader returns a result or raises seglab's own one-line error, never anything else.

Examples are derived deterministically (`derandomize=True`), so a CI run tries the same cases each time;
`FUZZ_EXAMPLES` below sets how many per property (the count docs/reliability.md reports)."""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from seglab.errors import SeglabError

from robustness.corpus import png_bytes, safetensors_bytes

FUZZ_EXAMPLES = 60
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
_TMP = Path(tempfile.mkdtemp(prefix="seglab-fuzz-"))


def _file(name: str, data: bytes) -> Path:
    path = _TMP / name
    path.write_bytes(data)
    return path


def _one_line(e: BaseException) -> None:
    assert isinstance(e, SeglabError), f"{type(e).__name__}: {e}"
    assert "\n" not in str(e) and len(str(e)) < 3000, str(e)[:3000]


def _calls(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except SeglabError as e:
        _one_line(e)
        return None


# --- mutated image files ------------------------------------------------------------------------------
_VALID = {
    "rgb.png": png_bytes(np.random.default_rng(0).integers(0, 255, (9, 11, 3), dtype=np.uint8)),
    "label.png": png_bytes(np.random.default_rng(1).integers(0, 5, (9, 11), dtype=np.uint8)),
    "depth.png": png_bytes(np.random.default_rng(2).integers(0, 9000, (9, 11), dtype=np.uint16)),
}
_buf = io.BytesIO()
Image.fromarray(np.random.default_rng(3).integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(_buf, format="JPEG")
_VALID["photo.jpg"] = _buf.getvalue()


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` with a few bytes changed, a range cut out or repeated, or cut short."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "truncate", "insert", "header"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if kind == "flip":
            b[i] = draw(st.integers(0, 255))
        elif kind == "cut":
            del b[i: i + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del b[i:]
        elif kind == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=32))
        else:  # the header's width / height fields (PNG IHDR) or JPEG markers
            j = draw(st.integers(16, 24)) if len(b) > 24 else i
            b[j] = draw(st.integers(0, 255))
    return bytes(b)


@pytest.mark.parametrize("name", sorted(_VALID))
def test_fuzz_image_readers(name):
    from seglab.data.instances import read_rgb
    from seglab.data.io import read_image, read_label
    from seglab.data.nyudv2 import read_depth
    from seglab.data.panoptic import read_panoptic_png

    @FUZZ
    @given(mutated(_VALID[name]))
    def check(data):
        path = _file(name, data)
        for reader in (read_image, read_label, read_depth, read_rgb, read_panoptic_png):
            _calls(reader, path)

    check()


# --- the config parser ----------------------------------------------------------------------------------
_KEYS = {"model": ["name", "num_classes", "kwargs", "weights"],
         "data": ["name", "root", "crop_size", "scale_range", "batch_size", "mean", "std", "num_workers", "kwargs"],
         "train": ["epochs", "lr", "optimizer", "momentum", "seed", "precision", "ohem", "max_minutes", "bf16"],
         "eval": ["slide", "tta", "crf"]}
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@st.composite
def configs(draw) -> dict:
    cfg = {}
    for section in draw(st.lists(st.sampled_from(sorted(_KEYS)), max_size=4, unique=True)):
        keys = draw(st.lists(st.sampled_from(_KEYS[section]), max_size=4, unique=True))
        cfg[section] = {k: draw(_values) for k in keys} if draw(st.booleans()) else draw(_values)
    if draw(st.booleans()):
        cfg.setdefault("model", {})
        if isinstance(cfg["model"], dict):
            cfg["model"]["name"] = "unet"
    return cfg


@FUZZ
@given(configs(), st.lists(st.text(max_size=20), max_size=3))
def test_fuzz_config_structures_and_overrides(raw, overrides):
    from seglab.config import config_from_dict

    _calls(config_from_dict, raw, overrides)


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_fuzz_config_text(text):
    from seglab.config import load_config

    path = _TMP / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    _calls(load_config, path)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_config_bytes(data):
    from seglab.config import load_config

    _calls(load_config, _file("fuzz_bytes.yaml", data))


@FUZZ
@given(st.text(max_size=40))
def test_fuzz_command_line_option_parsers(text):
    from seglab.inference.crf_search import parse_crf_params, parse_grid
    from seglab.inference.options import parse_slide, resolve_options

    for fn in (parse_slide, parse_grid, parse_crf_params):
        _calls(fn, text)
    _calls(resolve_options, tta=text)
    _calls(resolve_options, slide=text)
    _calls(resolve_options, crf=text)


# --- text files: list files and class lists --------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_fuzz_list_and_class_files(data):
    from seglab.data.datasets.folder import read_list_file
    from seglab.data.image_labels import read_image_labels
    from seglab.utils.io import read_text_file

    path = _file("list.txt", data)
    _calls(read_text_file, path)
    _calls(read_list_file, path)
    _calls(read_image_labels, path, ["a", "b"])


# --- JSON: COCO instances and panoptic -------------------------------------------------------------------
_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats() | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["id", "image_id", "category_id", "bbox", "segmentation", "name",
                                          "isthing", "iscrowd", "file_name", "height", "width", "size",
                                          "counts", "segments_info", "area"]), inner, max_size=6),
                     max_leaves=20)


@st.composite
def coco_like(draw) -> dict:
    image = {"id": 1, "file_name": "a.png", "height": 6, "width": 8}
    data = {"images": draw(st.sampled_from([[image], draw(_json)])),
            "categories": draw(st.sampled_from([[{"id": 1, "name": "x", "isthing": 1}], draw(_json)])),
            "annotations": draw(st.lists(st.fixed_dictionaries(
                {"id": st.integers(0, 3), "image_id": st.sampled_from([1, 2, "1", None]),
                 "category_id": st.sampled_from([1, 2, "1"]), "bbox": _json | st.just([1, 1, 3, 3]),
                 "segmentation": _json | st.just([[1, 1, 5, 1, 5, 4]]), "iscrowd": _json,
                 "file_name": st.sampled_from(["a.png", "b.png", 3]),
                 "segments_info": _json}), max_size=3) | _json)}
    return data


@FUZZ
@given(coco_like())
def test_fuzz_coco_json(data):
    from seglab.data.datasets.coco import CocoInstances
    from seglab.data.panoptic import load_panoptic_json

    folder = _TMP / "coco"
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(folder / "a.png")
    path = folder / "ann.json"
    path.write_text(json.dumps(data))
    ds = _calls(CocoInstances, folder, path)
    if ds is not None:
        for i in range(len(ds)):
            _calls(ds.__getitem__, i)
    _calls(load_panoptic_json, path)
    _calls(load_panoptic_json, path, categories=False)


# --- model files --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tensors():
    import seglab

    model = seglab.create_model("unet", num_classes=2, base_channels=4)
    return {k: v.numpy() for k, v in model.state_dict().items()}


_meta_values = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["unet", "fcn32s_vgg16", "nope", 3, None]),
    "num_classes": st.sampled_from([2, 3, 0, -1, True, "2", 10**12, 2.0]),
    "kwargs": st.sampled_from([{"base_channels": 4}, {}, [], {"base_channels": "x"}, {"base_channels": 10**6},
                               {"weights": "x"}]),
    "classes": _json, "palette": _json, "mean": _json, "std": _json, "inference": _json,
    "category_ids": _json, "categories": _json, "label_space_classes": _json})


@FUZZ
@given(meta=_meta_values, raw=st.booleans(), cut=st.integers(0, 400))
def test_fuzz_model_files(tiny_tensors, meta, raw, cut):
    import seglab
    from seglab.hub import read_model_metadata

    data = safetensors_bytes(tiny_tensors, {"seglab": json.dumps(meta)})
    if raw:
        data = data[: len(data) - cut]
    path = _file("model.safetensors", data)
    _calls(read_model_metadata, path)
    _calls(seglab.load_model, path)
