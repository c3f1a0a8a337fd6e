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


def test_colour_masks_in_the_folder_layout_point_to_the_converter(converted, tmp_path, capsys):
    """RGB masks where class indices belong: data check and train both name `seglab data convert --palette`."""
    import shutil

    root = tmp_path / "rgb_layout"
    shutil.copytree(converted, root)
    for split in ("train", "val"):
        for f in (root / "labels" / split).iterdir():
            m = np.asarray(Image.open(f)) > 0
            Image.fromarray(np.where(m[..., None], CAMVID_PALETTE[9], CAMVID_PALETTE[0]).astype(np.uint8)).save(f)
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert "mode RGB" in err and "seglab data convert SRC --out DST --palette" in err
    assert main(["train", str(_config(tmp_path / "cfg.yaml", root, tmp_path / "run"))]) == 2
    line = _one_error_line(capsys)
    assert "mode RGB" in line and "seglab data convert SRC --out DST --palette" in line


def test_the_two_documented_commands_fine_tune_the_shipped_model(converted, tmp_path, capsys):
    """docs/custom_data.md's second command as written (the `examples/folder` recipe: bisenetv2.camvid with
    reinit_heads), shortened to one epoch on small crops; `converted` ran the first one."""
    run = tmp_path / "run"
    assert main(["train", "examples/folder", f"data.root={converted}", "data.kwargs.label_map={255: 1}",
                 "train.epochs=1", "data.crop_size=[64,64]", "data.batch_size=3", f"train.out_dir={run}"]) == 0
    log = capsys.readouterr().out
    assert "bisenetv2.camvid.safetensors" in log and "re-initialised (model.reinit_heads)" in log
    assert "head.2.weight" in log
    meta = seglab.hub.read_model_metadata(run / "best.safetensors")
    assert meta["name"] == "bisenetv2" and meta["classes"] == ["background", "person"]


def test_train_warns_about_a_class_without_training_pixels(converted, tmp_path, capsys):
    cfg = _config(tmp_path / "cfg.yaml", converted, tmp_path / "run", label_map={255: 1},
                  classes=["background", "person", "bicycle"])
    assert main(["train", str(cfg), "train.epochs=1"]) == 0
    assert "warning: train split: no training pixels for class 2 ('bicycle')" in capsys.readouterr().out


def test_instance_id_masks_convert_to_coco_that_coco_instances_reads(tmp_path, capsys):
    """Penn-Fudan's own masks are instance-id PNGs (pedestrian k = value k): --instances writes the COCO
    layout, and `coco_instances` with data.root alone reads back every pedestrian as its mask."""
    import shutil

    from conftest import SHARED

    from seglab.data.datasets import build_dataset

    src = SHARED / "data" / "pennfudan"
    if not src.is_dir():
        pytest.skip(f"{src} not found: reference data is only in the project workspace")
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "masks").mkdir()
    truth = {}
    for name in sorted(p.stem for p in (src / "PNGImages").glob("*.png"))[:4]:
        img = Image.open(src / "PNGImages" / f"{name}.png").convert("RGB")
        size = (64, round(64 * img.height / img.width))
        img.resize(size, Image.BILINEAR).save(flat / "images" / f"{name}.png")
        ids = Image.open(src / "PedMasks" / f"{name}_mask.png").resize(size, Image.NEAREST)
        ids.save(flat / "masks" / f"{name}.png")
        truth[f"{name}.png"] = np.asarray(ids)
    out = tmp_path / "coco"
    assert main(["data", "convert", str(flat), "--out", str(out), "--instances", "--classes", "person",
                 "--split", "0.5"]) == 0
    assert "data.name=coco_instances data.root=" in capsys.readouterr().out
    seen = 0
    for split in ("train", "val"):
        ds = build_dataset("coco_instances", root=str(out), split=split)
        assert ds.classes == ["person"] and len(ds) == 2
        for i in range(len(ds)):
            ids = truth[ds.images[i]["file_name"]]
            target = ds.load_target(i, *ids.shape)
            expected = [ids == k for k in np.unique(ids[ids > 0])]
            assert len(target["masks"]) == len(expected) > 0
            assert all(np.array_equal(m, e) for m, e in zip(target["masks"], expected))
            seen += 1
    assert seen == 4
    assert main(["data", "convert", str(flat), "--out", str(tmp_path / "x"), "--instances",
                 "--classes", "a,b", "--split", "0.5"]) == 2
    assert "one class for every object" in _one_error_line(capsys)
    binary = tmp_path / "binary"
    shutil.copytree(flat, binary)
    for f in (binary / "masks").iterdir():
        Image.fromarray(np.where(np.asarray(Image.open(f)) > 0, 255, 0).astype(np.uint8)).save(f)
    assert main(["data", "convert", str(binary), "--out", str(tmp_path / "b"), "--instances", "--split", "0.5"]) == 0
    assert "each image became one object" in capsys.readouterr().out
    assert "each image became one object" not in _convert_log(flat, tmp_path / "c", capsys)


def _convert_log(src, out, capsys) -> str:
    assert main(["data", "convert", str(src), "--out", str(out), "--instances", "--split", "0.5"]) == 0
    return capsys.readouterr().out


def test_a_flat_folder_given_to_check_or_train_says_to_split_it(flat_folder, tmp_path, capsys):
    """The user's folder as it comes (images/ and masks/ side by side) is what they try first."""
    assert main(["data", "check", str(flat_folder)]) == 2
    line = _one_error_line(capsys)
    assert "a flat folder" in line and f"seglab data convert {flat_folder} --out DST --split 0.8" in line
    assert main(["train", str(_config(tmp_path / "cfg.yaml", flat_folder, tmp_path / "run"))]) == 2
    assert f"seglab data convert {flat_folder} --out DST --split 0.8" in _one_error_line(capsys)
