"""The custom-data path of docs/custom_data.md on small real photos (Penn-Fudan pedestrians, downscaled):
a flat folder of images and 0/255 binary masks -> `seglab data convert --split` -> `seglab data check`
(which catches the 0/255 trap) -> `seglab train` (which refuses it too) -> the fix `label_map={255: 1}`
-> fine-tuning, evaluation and a rerun from the run's own config.yaml. Every trap ends in exit status 2
and one line that says what to do."""
import json

import numpy as np
import pytest
import yaml
from PIL import Image

import seglab
from seglab.cli import main
from seglab.data.palettes import CAMVID_PALETTE

NAMES = 8


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
    """8 Penn-Fudan photos at about 80 px and their pedestrian masks as 0/255 PNGs, in one flat folder."""
    from conftest import SHARED

    src = SHARED / "data" / "pennfudan"
    if not src.is_dir():
        pytest.skip(f"{src} not found: reference data is only in the project workspace")
    root = tmp_path_factory.mktemp("flat")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for name in sorted(p.stem for p in (src / "PNGImages").glob("*.png"))[:NAMES]:
        img = Image.open(src / "PNGImages" / f"{name}.png").convert("RGB")
        size = (80, round(80 * img.height / img.width))
        img.resize(size, Image.BILINEAR).save(root / "images" / f"{name}.png")
        mask = np.asarray(Image.open(src / "PedMasks" / f"{name}_mask.png").resize(size, Image.NEAREST))
        Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(root / "masks" / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def converted(flat_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "people"
    assert main(["data", "convert", str(flat_folder), "--out", str(out), "--split", "0.75", "--seed", "0",
                 "--classes", "background,person"]) == 0
    assert (out / "classes.txt").read_text() == "background 0 0 0\nperson 128 0 0\n"
    return out


def _config(path, root, out_dir, **data_kwargs):
    cfg = {"model": {"name": "unet", "kwargs": {"base_channels": 4}},
           "data": {"name": "folder", "root": str(root), "crop_size": [48, 48], "batch_size": 2, "kwargs": data_kwargs},
           "train": {"epochs": 4, "optimizer": "adamw", "lr": 0.01, "out_dir": str(out_dir)}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_convert_splits_a_flat_folder_reproducibly(converted, flat_folder, tmp_path):
    train = sorted(p.name for p in (converted / "images" / "train").iterdir())
    val = sorted(p.name for p in (converted / "images" / "val").iterdir())
    assert len(train) == 6 and len(val) == 2 and not set(train) & set(val)
    assert sorted(p.name for p in (converted / "labels" / "train").iterdir()) == train
    again = tmp_path / "again"
    assert main(["data", "convert", str(flat_folder), "--out", str(again), "--split", "0.75", "--seed", "0"]) == 0
    assert sorted(p.name for p in (again / "images" / "train").iterdir()) == train
    other = tmp_path / "other"
    assert main(["data", "convert", str(flat_folder), "--out", str(other), "--split", "0.75", "--seed", "3"]) == 0
    assert sorted(p.name for p in (other / "images" / "train").iterdir()) != train
    label = Image.open(converted / "labels" / "train" / train[0])
    assert label.mode == "P" and set(np.unique(np.asarray(label))) <= {0, 255}


def test_a_flat_folder_without_split_says_how(flat_folder, tmp_path, capsys):
    assert main(["data", "convert", str(flat_folder), "--out", str(tmp_path / "x")]) == 2
    assert "pass --split 0.8" in _one_error_line(capsys)


def test_data_check_catches_binary_masks_stored_as_0_255(converted, capsys):
    assert main(["data", "check", str(converted)]) == 2
    line = _one_error_line(capsys)
    assert "{0, 255}" in line and "did you mean 255 -> 1" in line and "data.kwargs.label_map={255: 1}" in line


def test_train_refuses_binary_masks_and_an_empty_foreground(converted, tmp_path, capsys):
    cfg = _config(tmp_path / "cfg.yaml", converted, tmp_path / "run")
    assert main(["train", str(cfg)]) == 2
    assert "label_map={255: 1}" in _one_error_line(capsys)
    assert not (tmp_path / "run" / "best.safetensors").exists()
    # background only, without the 0/255 pattern: a label_map that sends every pedestrian pixel to 0
    assert main(["train", str(cfg), "data.kwargs.label_map={255: 0}"]) == 2
    assert "foreground is empty" in _one_error_line(capsys)


def test_fine_tune_on_the_fixed_data_then_rerun_and_evaluate_from_the_saved_config(converted, tmp_path, capsys):
    assert main(["data", "check", str(converted), "--config", str(_config(tmp_path / "c.yaml", converted, tmp_path)),
                 "data.kwargs.label_map={255: 1}"]) == 0
    out = capsys.readouterr().out
    assert "person" in out and "data check passed" in out
    # a 3-class model stands in for a pretrained one: its trunk is kept, its classifier re-initialised
    start = seglab.create_model("unet", num_classes=3, base_channels=4)
    seglab.save_model(start, tmp_path / "start.safetensors")
    cfg = _config(tmp_path / "cfg.yaml", converted, tmp_path / "run", label_map={255: 1})
    assert main(["train", str(cfg), f"model.weights={tmp_path / 'start.safetensors'}"]) == 2
    assert "model.reinit_heads=true" in _one_error_line(capsys)
    assert main(["train", str(cfg), f"model.weights={tmp_path / 'start.safetensors'}", "model.reinit_heads=true"]) == 0
    log = capsys.readouterr().out
    assert "re-initialised (model.reinit_heads)" in log
    run = tmp_path / "run"
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    saved = run / "config.yaml"
    assert "255: 1" in saved.read_text()  # the integer key survives the saved config
    assert main(["eval", str(saved), "--checkpoint", str(run / "best.safetensors"), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "eval_metrics.json").read_text())
    assert metrics["classes"] == ["background", "person"] and metrics["IoU"][1] is not None
    assert main(["train", str(saved), f"train.out_dir={tmp_path / 'rerun'}"]) == 0
    assert (tmp_path / "rerun" / "best.safetensors").is_file()


def test_data_check_reports_unpaired_files_size_mismatches_and_classes_without_pixels(converted, tmp_path, capsys):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(converted, root)
    labels = sorted((root / "labels" / "train").iterdir())
    labels[0].unlink()                                                   # an image without label
    shutil.copy(labels[1], root / "labels" / "train" / "stray.png")      # a label without image
    small = Image.open(labels[2])
    small.resize((small.width // 2, small.height // 2), Image.NEAREST).save(labels[2])  # size mismatch
    assert main(["data", "check", str(root), "--config", str(_config(tmp_path / "c.yaml", root, tmp_path)),
                 "data.kwargs.label_map={255: 1}"]) == 2
    err = capsys.readouterr().err
    assert "1 images without a label" in err and "stray.png" in err
    labels[0].with_name("stray.png").unlink()
    shutil.copy(converted / "labels" / "train" / labels[0].name, labels[0])
    (root / "classes.txt").write_text("background\nperson\nbicycle\n")
    assert main(["data", "check", str(root), "data.kwargs.label_map={255: 1}",
                 "--config", str(_config(tmp_path / "c.yaml", root, tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "differ in size" in err and labels[2].name in err
    assert "no training pixels" in err and "'bicycle'" in err


def test_rgb_colour_masks_convert_through_a_data_sets_palette(flat_folder, tmp_path, capsys):
    src = tmp_path / "rgb"
    (src / "labels").mkdir(parents=True)
    import shutil

    shutil.copytree(flat_folder / "images", src / "images")
    sky, person = CAMVID_PALETTE[0], CAMVID_PALETTE[9]
    for f in sorted((flat_folder / "masks").iterdir()):
        m = np.asarray(Image.open(f)) > 0
        Image.fromarray(np.where(m[..., None], person, sky).astype(np.uint8)).save(src / "labels" / f.name)
    out = tmp_path / "out"
    assert main(["data", "convert", str(src), "--out", str(out), "--palette", "camvid", "--split", "0.5"]) == 0
    first = sorted((out / "labels" / "train").iterdir())[0]
    values = np.asarray(Image.open(first))
    truth = np.asarray(Image.open(flat_folder / "masks" / first.name)) > 0
    assert np.array_equal(values, np.where(truth, 9, 0))
    assert (out / "classes.txt").read_text().splitlines()[9] == "pedestrian 64 64 0"
    # a colour outside the palette stops with the file and the colour, unless asked to ignore it
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(src / "labels" / first.name)
    Image.new("RGB", (4, 4)).save(src / "images" / first.name)
    assert main(["data", "convert", str(src), "--out", str(tmp_path / "o2"), "--palette", "camvid", "--split", "0.5"]) == 2
    line = _one_error_line(capsys)
    assert first.name in line and "(7, 7, 7)" in line and "--unknown ignore" in line
    assert main(["data", "convert", str(src), "--out", str(tmp_path / "o3"), "--palette", "camvid", "--split", "0.5",
                 "--unknown", "ignore"]) == 0
    written = next((tmp_path / "o3" / "labels").rglob(first.name))
    assert np.all(np.asarray(Image.open(written)) == 255)
