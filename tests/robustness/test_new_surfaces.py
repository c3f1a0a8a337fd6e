"""Hostile inputs for the surfaces issues 15 and 16 added: `seglab export` (bad model, --imgsz, --opset,
an --out that is an input or a folder), `seglab predict` with ONNX files and videos (broken files, ONNX
files from elsewhere, inputs whose outputs share a name, --model NAME unknown, sizes that ask for
petabytes), `seglab info` on hostile files, and `seglab data check / convert` (palette files, sizes,
output folders, a failure half-way). Each case: exit 2, one line, inputs unchanged, nothing written."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.export.formats import native_stderr_captured

from robustness.conftest import assert_refused, run_cli, snapshot, temp_files
from robustness.corpus import bomb_png, model_file_cases, png_bytes, write


@pytest.fixture(scope="module")
def onnx_file(model_file, tmp_path_factory) -> Path:
    """A valid exported ONNX file (32x32) of the tiny model."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    run = run_cli("export", model_file, "--out", out, "--imgsz", "32x32")
    assert run.status == 0, run.err
    return out


def _assert_nothing_written(root: Path, before: dict, *absent: Path) -> None:
    assert snapshot(root) == before
    for p in absent:
        assert not p.exists(), p
    assert not temp_files(root)


# --- seglab export ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args,fragment", [
    (["--imgsz", "0x0"], "--imgsz"),
    (["--imgsz", "100000x100000"], "--imgsz"),                 # asked for 120 GB
    (["--imgsz", "99999999999999999999x2"], "--imgsz"),        # overflowed torch.randn
    (["--imgsz", "abc"], "--imgsz"),
    (["--opset", "0"], "--opset"),                             # was the default opset, silently
    (["--opset", "6"], "--opset"),
    (["--opset", "999"], "--opset"),                           # printed the whole traced graph
    (["--opset", "-1"], "--opset"),
    (["--opset", "abc"], "--opset"),
    (["--int8", "--format", "torchscript"], "--int8"),
    (["--verify", "nope.png"], "nope.png"),
])
def test_export_bad_options(args, fragment, model_file, tmp_path):
    out = tmp_path / "x.onnx"
    before = snapshot(model_file.parent)
    assert_refused(run_cli("export", model_file, "--out", out, *args), fragment)
    assert not out.exists() and snapshot(model_file.parent) == before


@pytest.mark.parametrize("case", ["random_bytes", "truncated", "zero_bytes", "num_classes_huge"])
def test_export_hostile_model_file(case, model_file, tmp_path):
    bad = write(tmp_path, "m.safetensors", model_file_cases(model_file)[case])
    assert_refused(run_cli("export", bad, "--out", tmp_path / "x.onnx"), str(bad))
    assert not (tmp_path / "x.onnx").exists()


def test_export_unknown_model_name(tmp_path):
    assert_refused(run_cli("export", "no_such_model_zz", "--out", tmp_path / "x.onnx"), "no_such_model_zz")
    assert not (tmp_path / "x.onnx").exists()


def test_export_never_overwrites_its_inputs(model_file, photo, tmp_path):
    import shutil

    model = shutil.copy(model_file, tmp_path / "m.safetensors")
    images = tmp_path / "calib"
    images.mkdir()
    shutil.copy(photo, images / "a.png")
    before = snapshot(tmp_path)
    # --out = the model file turned the model into an ONNX file
    assert_refused(run_cli("export", model, "--out", model), "--out", "input")
    assert_refused(run_cli("export", model, "--format", "torchscript", "--out", model), "--out", "input")
    assert_refused(run_cli("export", model, "--verify", images / "a.png", "--out", images / "a.png"), "input")
    assert_refused(run_cli("export", model, "--int8", "--calibration", images, "--out", images / "a.png"), "input")
    (tmp_path / "folder.onnx").mkdir()
    assert_refused(run_cli("export", model, "--out", tmp_path / "folder.onnx"), "folder.onnx")
    _assert_nothing_written(tmp_path, before)


def test_exporter_failures_print_no_native_graph_dump(capfd):
    """PyTorch's TorchScript exporter logs the whole traced graph to file descriptor 2 when it fails."""
    with native_stderr_captured():
        os.write(2, b"Torch IR graph at exception: ...\n")
    assert "Torch IR graph" not in capfd.readouterr().err
    os.write(2, b"still here\n")
    assert "still here" in capfd.readouterr().err


# --- seglab predict / info with ONNX files ----------------------------------------------------------

def _onnx_with_metadata(path: Path, value: str | None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph)
    if value is not None:
        model.metadata_props.add(key="seglab", value=value)
    onnx.save(model, path)
    return path


ONNX_CASES = {
    "random_bytes": lambda p, good: p.write_bytes(np.random.default_rng(0).bytes(5000)),
    "truncated": lambda p, good: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
    "zero_bytes": lambda p, good: p.write_bytes(b""),
    "text": lambda p, good: p.write_text("hello"),
    "folder": lambda p, good: p.mkdir(),
    "no_metadata": lambda p, good: _onnx_with_metadata(p, None),
    "metadata_not_json": lambda p, good: _onnx_with_metadata(p, "not json"),
    "metadata_a_list": lambda p, good: _onnx_with_metadata(p, "[]"),
    "metadata_name_a_number": lambda p, good: _onnx_with_metadata(p, '{"name": 5}'),
    "metadata_classes_a_string": lambda p, good: _onnx_with_metadata(p, '{"name": "unet", "num_classes": "x"}'),
    "metadata_bad_export_size": lambda p, good: _onnx_with_metadata(
        p, '{"name": "unet", "num_classes": 3, "export": {"size": [0, "a"]}}'),
    "graph_other_than_metadata": lambda p, good: _onnx_with_metadata(p, '{"name": "unet", "num_classes": 3}'),
}


@pytest.mark.parametrize("case", sorted(ONNX_CASES))
def test_hostile_onnx_file(case, onnx_file, photo, tmp_path):
    bad = tmp_path / "bad.onnx"
    ONNX_CASES[case](bad, onnx_file)
    out = tmp_path / "pred"
    assert_refused(run_cli("predict", "--checkpoint", bad, photo, "--out", out), str(bad))
    assert not out.exists() or not any(out.rglob("*.png"))
    if case != "graph_other_than_metadata":  # its metadata is valid: info shows it
        assert_refused(run_cli("info", bad), str(bad))


def test_a_valid_onnx_file_predicts(onnx_file, photo, tmp_path):
    assert run_cli("predict", "--checkpoint", onnx_file, photo, "--out", tmp_path / "p").status == 0
    assert (tmp_path / "p" / f"{photo.stem}.png").is_file()


# --- seglab predict: videos, names, sizes -----------------------------------------------------------

@pytest.mark.parametrize("content", ["random", "empty"])
def test_broken_video(content, model_file, tmp_path):
    video = tmp_path / "in" / "clip.mp4"
    video.parent.mkdir()
    video.write_bytes(np.random.default_rng(1).bytes(4000) if content == "random" else b"")
    assert_refused(run_cli("predict", "--checkpoint", model_file, video, "--out", tmp_path / "o"), str(video))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_inputs_whose_outputs_share_a_name_are_refused(model_file, photo, tmp_path):
    """a.png's overlay is a_overlay.png, which is also a_overlay.png's label map."""
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(photo, photos / "a.png")
    shutil.copy(photo, photos / "a_overlay.png")
    assert_refused(run_cli("predict", "--checkpoint", model_file, photos, "--out", tmp_path / "o"),
                   "a_overlay.png", "a.png")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--model", "no_such_model_zz"], "no_such_model_zz"),
    (["--model", "../../etc/passwd"], "../../etc/passwd"),
    ([], "--checkpoint"),
    (["--checkpoint", "MODEL", "--model", "x"], "not both"),
    (["--checkpoint", "MODEL", "--imgsz", "99999999"], "--imgsz"),   # asked for 10^17 bytes
    (["--checkpoint", "MODEL", "--imgsz", "0"], "--imgsz"),
    (["--checkpoint", "MODEL", "--scale", "1000"], "--scale"),        # the OOM killer ended the process
    (["--checkpoint", "MODEL", "--scale", "nan"], "--scale"),
])
def test_predict_model_and_size_options(args, fragment, model_file, photo, tmp_path):
    args = [str(model_file) if a == "MODEL" else a for a in args]
    assert_refused(run_cli("predict", *args, photo, "--out", tmp_path / "o"), fragment)
    assert not (tmp_path / "o").exists()


def test_a_resize_past_the_pixel_limit_is_refused():
    from seglab.errors import SeglabError
    from seglab.inference.scale import InputScale

    with pytest.raises(SeglabError, match="limit"):
        InputScale(factor=16.0).target(4000, 3000)
    assert InputScale(factor=16.0).target(30, 40) == (480, 640)


# --- seglab info --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["random_bytes", "truncated", "zero_bytes", "header_length_huge",
                                  "header_not_json", "classes_wrong_length"])
def test_info_on_hostile_model_files(case, model_file, tmp_path):
    cases = model_file_cases(model_file)
    bad = write(tmp_path, "m.safetensors", cases[case])
    assert_refused(run_cli("info", bad), str(bad))


@pytest.mark.parametrize("name", ["no_such_model_zz", "folder", "photo.png", "state.pt"])
def test_info_on_what_is_not_a_model(name, photo, tmp_path):
    import torch

    (tmp_path / "folder").mkdir()
    Image.open(photo).save(tmp_path / "photo.png")
    torch.save({"a": 1}, tmp_path / "state.pt")
    target = name if name == "no_such_model_zz" else tmp_path / name
    assert_refused(run_cli("info", target), name)


# --- seglab data convert / check --------------------------------------------------------------------

def _flat(root: Path, n: int = 3, rgb: bool = True, label_size=None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(root / "images" / f"i{k}.png")
        h, w = label_size or (16, 20)
        if rgb:
            mask = np.zeros((h, w, 3), np.uint8)
            mask[: h // 2] = [128, 0, 0]                       # VOC's 'aeroplane'
        else:
            mask = (np.arange(h * w).reshape(h, w) % 2).astype(np.uint8)
        Image.fromarray(mask).save(root / "masks" / f"i{k}.png")
    return root


PALETTE_FILES = {
    "non_numeric": "bg 0 0 x\n",
    "over_255": "bg 0 0 0\nred 300 0 0\n",
    "two_values": "bg 0 0\n",
    "empty": "",
    "latin1": "b\xe9g 0 0 0\n".encode("latin-1"),
    "folder": None,
}


@pytest.mark.parametrize("case", sorted(PALETTE_FILES))
def test_convert_bad_palette_file(case, tmp_path):
    src = _flat(tmp_path / "src")
    palette = tmp_path / "palette.txt"
    if PALETTE_FILES[case] is None:
        palette.mkdir()
    else:
        write(tmp_path, "palette.txt", PALETTE_FILES[case])
    before = snapshot(tmp_path)
    assert_refused(run_cli("data", "convert", src, "--out", tmp_path / "out", "--palette", palette, "--split", "0.5"),
                   "palette")
    _assert_nothing_written(tmp_path, before, tmp_path / "out")


@pytest.mark.parametrize("args,fragment", [
    (["--palette", "no_such_palette"], "no_such_palette"),
    (["--palette", "camvid"], "colours not in the palette"),          # VOC colours through CamVid's palette
    (["--palette", "voc", "--classes", "a,b"], "--classes"),
    (["--split", "0"], "--split"), (["--split", "1"], "--split"), (["--split", "1.5"], "--split"),
    (["--split", "nan"], "--split"), (["--split", "abc"], "--split"),
])
def test_convert_bad_options(args, fragment, tmp_path):
    src = _flat(tmp_path / "src")
    before = snapshot(tmp_path)
    args = args if "--split" in args else [*args, "--split", "0.5"]
    assert_refused(run_cli("data", "convert", src, "--out", tmp_path / "out", *args), fragment)
    _assert_nothing_written(tmp_path, before, tmp_path / "out")


@pytest.mark.parametrize("case", ["size_mismatch", "garbage_mask", "bomb_mask", "bomb_image"])
def test_convert_stops_half_way_without_a_half_converted_set(case, tmp_path):
    """The last pair is broken: the pairs before it were written into a staging folder that goes away."""
    src = _flat(tmp_path / "src", n=4, rgb=False)
    last_mask, last_image = src / "masks" / "i3.png", src / "images" / "i3.png"
    if case == "size_mismatch":
        Image.fromarray(np.zeros((8, 10), np.uint8)).save(last_mask)
    elif case == "garbage_mask":
        last_mask.write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    elif case == "bomb_mask":
        last_mask.write_bytes(bomb_png(12000, 12000))
    else:
        last_image.write_bytes(bomb_png(12000, 12000))
    before = snapshot(tmp_path)
    assert_refused(run_cli("data", "convert", src, "--out", tmp_path / "out", "--split", "0.75"), "i3")
    _assert_nothing_written(tmp_path, before, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["src"]               # no staging folder left


def test_convert_output_folders(tmp_path):
    src = _flat(tmp_path / "src", rgb=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    (tmp_path / "a_file").write_text("x")
    before = snapshot(tmp_path)
    for out, fragment in ((src, "src"), (src / "images" / "conv", "inside the source"),
                          (tmp_path / "taken", "not empty"), (tmp_path / "a_file", "a_file")):
        assert_refused(run_cli("data", "convert", src, "--out", out, "--split", "0.5"), fragment)
    _assert_nothing_written(tmp_path, before)
    (tmp_path / "empty").mkdir()   # an empty folder is fine
    assert run_cli("data", "convert", src, "--out", tmp_path / "empty", "--split", "0.5").status == 0
    assert (tmp_path / "empty" / "labels" / "train").is_dir()


@pytest.mark.parametrize("case", ["missing", "a_file"])
def test_data_check_of_no_folder_is_one_line(case, tmp_path):
    root = tmp_path / "root"
    if case == "a_file":
        root.write_text("x")
    assert_refused(run_cli("data", "check", root), str(root))


@pytest.mark.parametrize("case", ["bomb_image", "garbage_label", "size_mismatch"])
def test_data_check_names_the_broken_file(case, tmp_path):
    """`data check` is a report (one `problem:` line per problem, exit 2), never a traceback."""
    root = tmp_path / "set"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.full((16, 20, 3), 60 * k, np.uint8)).save(root / "images" / split / f"{k}.png")
            Image.fromarray((np.arange(320).reshape(16, 20) % 2).astype(np.uint8)).save(root / "labels" / split / f"{k}.png")
    (root / "classes.txt").write_text("a\nb\n")
    broken = {"bomb_image": root / "images" / "train" / "1.png", "garbage_label": root / "labels" / "train" / "1.png",
              "size_mismatch": root / "labels" / "train" / "1.png"}[case]
    broken.write_bytes({"bomb_image": bomb_png(12000, 12000), "garbage_label": b"\x89PNG\r\n\x1a\nxx",
                        "size_mismatch": png_bytes(np.zeros((8, 10), np.uint8))}[case])
    before = snapshot(root)
    run = run_cli("data", "check", root)
    assert run.status == 2 and "Traceback" not in run.err + run.out
    assert str(broken) in run.err + run.out
    assert snapshot(root) == before
