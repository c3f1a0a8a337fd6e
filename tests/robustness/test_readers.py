"""Every data set reader (VOC, Cityscapes, ADE20K, CamVid, folder, NYUDv2, SIFT Flow) against one broken
file at a time: broken, bomb and odd-mode images and labels, text files in other encodings, empty and
malformed lists, folders where files should be. Each case is one line naming the file (or its list), and
no input file is changed. A CLI case per reader proves the same line reaches the user with exit 2."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from seglab.errors import SeglabError

from robustness import layouts
from robustness.conftest import assert_refused, run_cli, snapshot, write_config
from robustness.corpus import READABLE_ENCODINGS, bomb_png, image_cases, png_bytes, text_cases

IMAGE_BREAKS = ["zero_bytes", "random_bytes", "truncated_png", "text_named_png", "bomb_12000x12000"]
LABEL_BREAKS = {
    "zero_bytes": b"",
    "truncated": png_bytes(np.random.default_rng(0).integers(0, 200, (12, 16), dtype=np.uint8))[:70],
    "rgb_colour": png_bytes(np.zeros((12, 16, 3), np.uint8)),
    "bomb": bomb_png(12000, 12000),
    "other_size": png_bytes(np.zeros((5, 7), np.uint8)),
}
# readers whose label mapping sends every stored value to a class or the ignore index
FULL_LUT = {"cityscapes", "ade20k"}
PNG_LABELS = ["voc", "cityscapes", "ade20k", "folder", "camvid", "nyudv2"]
LISTED = ["voc", "folder", "camvid", "nyudv2", "siftflow"]


def _refused(layout, *paths) -> str:
    before = snapshot(layout.root)
    with pytest.raises(SeglabError) as info:
        layouts.read_all(layout)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 1000, msg
    assert any(str(p) in msg for p in paths), f"none of {paths} in: {msg}"
    assert snapshot(layout.root) == before
    return msg


@pytest.mark.parametrize("reader", sorted(layouts.ALL))
def test_every_layout_reads_when_intact(reader, tmp_path):
    assert layouts.read_all(layouts.ALL[reader](tmp_path)) == 1


@pytest.mark.parametrize("reader", sorted(layouts.ALL))
@pytest.mark.parametrize("case", IMAGE_BREAKS)
def test_broken_image(reader, case, tmp_path):
    layout = layouts.ALL[reader](tmp_path)
    image = layout.files["image"]
    image.write_bytes(image_cases()[case])
    _refused(layout, image)


@pytest.mark.parametrize("reader", sorted(layouts.ALL))
def test_image_that_is_a_folder_or_missing(reader, tmp_path):
    layout = layouts.ALL[reader](tmp_path)
    image = layout.files["image"]
    image.unlink()
    where = [image, *[p for p in image.parents if layout.root in p.parents]]
    _refused(layout, *where)
    image.mkdir()
    _refused(layout, *where)


@pytest.mark.parametrize("reader", PNG_LABELS)
@pytest.mark.parametrize("case", sorted(LABEL_BREAKS))
def test_broken_label(reader, case, tmp_path):
    layout = layouts.SEMANTIC[reader](tmp_path)
    label = layout.files["label"]
    label.write_bytes(LABEL_BREAKS[case])
    _refused(layout, label)


@pytest.mark.parametrize("reader", sorted(set(PNG_LABELS) - FULL_LUT))
def test_label_values_outside_the_classes(reader, tmp_path):
    layout = layouts.SEMANTIC[reader](tmp_path)
    label = layout.files["label"]
    label.write_bytes(png_bytes(np.full((12, 16), 200, np.uint8)))
    assert "200" in _refused(layout, label)


@pytest.mark.parametrize("reader", LISTED + ["folder_classes"])
@pytest.mark.parametrize("encoding", sorted(text_cases("x\n")))
def test_list_files_in_other_encodings(reader, encoding, tmp_path):
    layout = layouts.SEMANTIC[reader.removesuffix("_classes")](tmp_path)
    path = layout.files["classes" if reader.endswith("_classes") else "list"]
    path.write_bytes(text_cases(path.read_text())[encoding])
    if encoding in READABLE_ENCODINGS:  # what Windows editors write is read as the same list
        assert layouts.read_all(layout) == 1
    else:
        msg = _refused(layout, path)
        assert "UTF-8" in msg or "NUL" in msg


@pytest.mark.parametrize("reader", LISTED)
@pytest.mark.parametrize("text", ["", "\n\n# only a comment\n", "a b c d e\n", "../../../etc/passwd\n",
                                  "\x00\x00\n"])
def test_empty_or_malformed_lists(reader, text, tmp_path):
    layout = layouts.SEMANTIC[reader](tmp_path)
    layout.files["list"].write_text(text)
    _refused(layout, layout.files["list"], layout.root)


@pytest.mark.parametrize("reader", sorted(layouts.ALL))
def test_root_missing_or_a_file(reader, tmp_path):
    layout = layouts.ALL[reader](tmp_path)
    shutil.rmtree(layout.root)
    _refused(layout, layout.root)
    layout.root.write_text("not a folder")
    _refused(layout, layout.root)


@pytest.mark.parametrize("case", ["rgb_mode", "bomb", "zero_bytes", "other_size"])
def test_nyudv2_depth(case, tmp_path):
    layout = layouts.nyudv2(tmp_path)
    depth = layout.files["depth"]
    depth.write_bytes({"rgb_mode": png_bytes(np.zeros((12, 16, 3), np.uint8)), "bomb": bomb_png(12000, 12000),
                       "zero_bytes": b"", "other_size": png_bytes(np.zeros((5, 5), np.uint16))}[case])
    _refused(layout, depth)


@pytest.mark.parametrize("case", ["random_bytes", "zero_bytes", "no_field_S", "other_size", "strings"])
def test_siftflow_mat_files(case, tmp_path):
    import scipy.io

    layout = layouts.siftflow(tmp_path)
    mat = layout.files["label"]
    if case == "random_bytes":
        mat.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
    elif case == "zero_bytes":
        mat.write_bytes(b"")
    elif case == "no_field_S":
        scipy.io.savemat(mat, {"T": np.zeros((12, 16))})
    elif case == "other_size":
        scipy.io.savemat(mat, {"S": np.zeros((3, 3))})
    else:
        scipy.io.savemat(mat, {"S": np.array(["abc", "def"])})
    _refused(layout, mat)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"modality": "xyz"}, "modality"), ({"modality": 3}, "modality"), ({"intrinsics": [1, 2]}, "intrinsics"),
    ({"intrinsics": "abc"}, "intrinsics"), ({"bogus": 1}, "bogus")])
def test_nyudv2_options(kwargs, fragment, tmp_path):
    layout = layouts.nyudv2(tmp_path)
    layout.kwargs = kwargs
    with pytest.raises(SeglabError, match=fragment):
        layouts.read_all(layout)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"classes": 5}, "classes"), ({"classes": []}, "classes"), ({"in_channels": "three"}, "in_channels"),
    ({"in_channels": True}, "in_channels"), ({"label_map": {"a": 1}}, "label_map"),
    ({"label_map": [[1, 2], [3, 4]]}, "label_map"), ({"palette": [[0, 0]]}, "palette"),
    ({"recursive": "yes"}, "recursive"), ({"image_dir": 3}, "image_dir"), ({"unknown_option": 1}, "unknown_option"),
    ({"list_file": "val.txt", "image_dir": "img"}, "list_file")])
def test_folder_options(kwargs, fragment, tmp_path):
    layout = layouts.folder(tmp_path)
    layout.kwargs = kwargs
    with pytest.raises(SeglabError, match=fragment):
        layouts.read_all(layout)


@pytest.mark.parametrize("reader", ["voc", "cityscapes", "ade20k", "folder", "camvid", "nyudv2"])
def test_cli_eval_reports_a_broken_label_in_one_line(reader, tmp_path):
    import seglab

    layout = layouts.SEMANTIC[reader](tmp_path)
    layout.files["label"].write_bytes(b"")
    in_channels = 4 if layout.kwargs.get("modality") == "rgbd" else 3
    model = seglab.create_model("unet", num_classes=layout.num_classes, base_channels=4, in_channels=in_channels)
    ckpt = seglab.save_model(model, tmp_path / "m.safetensors")
    data = {"name": reader, "root": str(layout.root), "val_split": layout.split, "kwargs": layout.kwargs}
    if in_channels == 4:
        data.update(mean=[0.5] * 4, std=[0.25] * 4)
    cfg = write_config(tmp_path / "c.yaml", layout.root, tmp_path / "run", data=data)
    before = snapshot(layout.root)
    assert_refused(run_cli("eval", cfg, "--checkpoint", ckpt, "--out", tmp_path / "ev"), str(layout.files["label"]))
    assert snapshot(layout.root) == before
    assert not (tmp_path / "ev").exists()
