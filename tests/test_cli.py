"""One test per `seglab` subcommand (in-process, tiny model and data) and one per bad-input case:
each bad input gives exit status 2 and one line naming the file, key or value, and leaves no output."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from seglab.cli import main

TINY_MODEL = {"name": "unet", "kwargs": {"base_channels": 4}}


def _write_config(path, data_root, out_dir, **sections):
    cfg = {"model": TINY_MODEL,
           "data": {"name": "synthetic", "root": str(data_root), "crop_size": [48, 48], "batch_size": 4},
           "train": {"epochs": 1, "optimizer": "adamw", "lr": 0.01, "out_dir": str(out_dir)}}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def trained(tiny_synthetic, tmp_path_factory):
    """A config and the model that `seglab train` wrote for it (trained once for the module)."""
    tmp = tmp_path_factory.mktemp("cli")
    cfg = _write_config(tmp / "cfg.yaml", tiny_synthetic, tmp / "run")
    assert main(["train", str(cfg)]) == 0
    return cfg, tmp / "run"


def test_train_writes_model_curve_and_log(trained, capsys):
    _, run = trained
    for name in ("best.safetensors", "last.pt", "metrics.jsonl", "curves.png", "config.yaml"):
        assert (run / name).is_file()


def test_train_resume_and_override(trained, tiny_synthetic, capsys):
    cfg, run = trained
    assert main(["train", str(cfg), "train.epochs=2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "epoch   2/2" in out
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


def test_eval_prints_table_and_writes_metrics(trained, tmp_path, capsys):
    cfg, run = trained
    assert main(["eval", str(cfg), "--checkpoint", str(run / "best.safetensors"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "triangle" in out
    metrics = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert 0 <= metrics["mIoU"] <= 1 and metrics["num_images"] == 4
    assert (tmp_path / "confusion_matrix.png").is_file()
    # key=value overrides are accepted after the options too
    assert main(["eval", str(cfg), "--checkpoint", str(run / "best.safetensors"), "--out", str(tmp_path / "o"),
                 "data.batch_size=2"]) == 0
    with pytest.raises(SystemExit):
        main(["eval", str(cfg), "--checkpoint", str(run / "best.safetensors"), "--bogus"])
    # last.pt (the training state) evaluates to the same numbers when it holds the same weights
    assert main(["eval", str(cfg), "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "b"),
                 "--slide", "32,stride=16"]) == 0


def test_predict_writes_label_pngs_and_overlays(trained, tiny_synthetic, tmp_path, capsys):
    _, run = trained
    images = sorted((tiny_synthetic / "images").glob("val_*.png"))[:2]
    assert main(["predict", "--checkpoint", str(run / "best.safetensors"), *map(str, images),
                 "--out", str(tmp_path)]) == 0
    for img in images:
        labels = np.array(Image.open(tmp_path / f"{img.stem}.png"))
        assert labels.shape == np.array(Image.open(img)).shape[:2]
        assert labels.max() < 6
        assert (tmp_path / f"{img.stem}_overlay.png").is_file()
    assert str(tmp_path) in capsys.readouterr().out
    # bf16 autocast and sliding-window options run and give labels of the same size
    assert main(["predict", "--checkpoint", str(run / "best.safetensors"), str(images[0]), "--out",
                 str(tmp_path / "bf16"), "--bf16", "--slide", "32,stride=16"]) == 0
    bf16 = np.array(Image.open(tmp_path / "bf16" / f"{images[0].stem}.png"))
    assert bf16.shape == np.array(Image.open(images[0])).shape[:2]


def test_models_lists_and_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "fcn8s_vgg16" in out and "unet" in out and "bisenetv2" in out
    assert main(["models", "bisenet", "--params", "--num-classes", "19"]) == 0
    out = capsys.readouterr().out
    assert "bisenetv2" in out and "fcn" not in out


@pytest.mark.slow
def test_demo_reaches_the_promised_miou(tmp_path):
    """The main job, exactly as a user runs it (console script, default settings)."""
    exe = shutil.which("seglab") or pytest.skip("seglab console script not installed")
    proc = subprocess.run([exe, "demo", "--out", str(tmp_path / "demo")], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "demo" / "eval_metrics.json").read_text())
    assert metrics["mIoU"] >= 0.90
    for name in ("best.safetensors", "curves.png", "confusion_matrix.png"):
        assert (tmp_path / "demo" / name).is_file()
    assert len(list((tmp_path / "demo" / "overlays").glob("*_overlay.png"))) == 4
    assert "demo finished" in proc.stdout


# --- bad input ----------------------------------------------------------------------------------

def _eval_folder(tmp_path, folder_set, model_path, capsys):
    cfg = _write_config(tmp_path / "f.yaml", folder_set, tmp_path / "run", data={"name": "folder", "batch_size": 1})
    out = tmp_path / "evalout"
    code = main(["eval", str(cfg), "--checkpoint", str(model_path), "--out", str(out)])
    return code, _error_line(capsys), out


@pytest.fixture
def two_class_model(tmp_path):
    import seglab

    model = seglab.create_model("unet", num_classes=2, base_channels=4)
    return seglab.save_model(model, tmp_path / "m.safetensors")


def test_label_values_out_of_range(tmp_path, folder_set, two_class_model, capsys):
    Image.fromarray(np.full((16, 20), 7, np.uint8)).save(folder_set / "lbl" / "b.png")
    code, err, out = _eval_folder(tmp_path, folder_set, two_class_model, capsys)
    assert code == 2 and "b.png" in err and "7" in err
    assert not out.exists() or not any(out.iterdir())


def test_image_and_label_of_different_sizes(tmp_path, folder_set, two_class_model, capsys):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder_set / "lbl" / "b.png")
    code, err, _ = _eval_folder(tmp_path, folder_set, two_class_model, capsys)
    assert code == 2 and "b.png" in err


def test_missing_data_file(tmp_path, folder_set, two_class_model, capsys):
    (folder_set / "img" / "b.png").unlink()
    code, err, _ = _eval_folder(tmp_path, folder_set, two_class_model, capsys)
    assert code == 2 and "b.png" in err


def test_corrupt_image_stops_predict_before_any_output(tmp_path, two_class_model, capsys):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(good)
    bad.write_bytes(good.read_bytes()[:40])
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(two_class_model), str(good), str(bad), "--out", str(out)]) == 2
    assert "bad.png" in _error_line(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_wrong_number_of_channels(tmp_path, two_class_model, capsys):
    import seglab

    rgb = tmp_path / "rgb.png"  # an RGB photo for an RGB-D (4-channel) model: nothing to convert it to
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(rgb)
    rgbd = seglab.save_model(seglab.create_model("unet", num_classes=2, base_channels=4, in_channels=4),
                             tmp_path / "rgbd.safetensors")
    assert main(["predict", "--checkpoint", str(rgbd), str(rgb), "--out", str(tmp_path / "o")]) == 2
    err = _error_line(capsys)
    assert "rgb.png" in err and "4" in err and "3" in err


def test_missing_input_file(tmp_path, two_class_model, capsys):
    assert main(["predict", "--checkpoint", str(two_class_model), str(tmp_path / "nope.png"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "nope.png" in _error_line(capsys)


def test_unknown_model_name_suggests_close_matches(tmp_path, tiny_synthetic, capsys):
    cfg = _write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run", model={"name": "unett"})
    assert main(["train", str(cfg)]) == 2
    err = _error_line(capsys)
    assert "unett" in err and "unet" in err.split("did you mean")[1]


def test_unknown_config_key(tmp_path, tiny_synthetic, capsys):
    cfg = _write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run", train={"epoch": 3})
    assert main(["train", str(cfg)]) == 2
    assert "train.epoch" in _error_line(capsys)


def test_non_numeric_learning_rate(tmp_path, tiny_synthetic, capsys):
    cfg = _write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run")
    assert main(["train", str(cfg), "train.lr=fast"]) == 2
    err = _error_line(capsys)
    assert "train.lr" in err and "'fast'" in err
    assert not (tmp_path / "run").exists()


def test_console_script_exit_status_and_debug_traceback(tmp_path):
    cmd = [sys.executable, "-m", "seglab.cli", "predict", "--checkpoint", str(tmp_path / "x.safetensors"),
           str(tmp_path / "in.png"), "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("seglab: error: ") and "Traceback" not in proc.stderr
    debug = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_eval_with_tta_and_crf_and_crf_search(trained, tmp_path, capsys):
    cfg, run = trained
    model = str(run / "best.safetensors")
    assert main(["eval", str(cfg), "--checkpoint", model, "--out", str(tmp_path / "plain")]) == 0
    assert main(["eval", str(cfg), "--checkpoint", model, "--out", str(tmp_path / "tta"),
                 "--tta", "flip,scales=0.75,1", "--crf", "iterations=2"]) == 0
    out = capsys.readouterr().out
    assert "trimap" in out
    plain = json.loads((tmp_path / "plain" / "eval_metrics.json").read_text())
    refined = json.loads((tmp_path / "tta" / "eval_metrics.json").read_text())
    assert "trimap_acc@2px" in refined and refined["confusion"] != plain["confusion"]
    # a bare --crf uses the default parameters (and must not be mistaken for "no CRF")
    assert main(["eval", str(cfg), "--checkpoint", model, "--out", str(tmp_path / "crf"), "--crf"]) == 0
    crf_only = json.loads((tmp_path / "crf" / "eval_metrics.json").read_text())
    assert crf_only["confusion"] != plain["confusion"]
    assert main(["crf-search", str(cfg), "--checkpoint", model, "--grid", "bi_w=3,5;bi_rgb_std=3",
                 "--base", "iterations=2", "--max-images", "2", "--out", str(tmp_path / "s.json")]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())
    assert len(rows) == 3 and sum(r["params"] is None for r in rows) == 1
    assert "best: eval.crf = {" in capsys.readouterr().out


def test_bad_tta_and_crf_flags(trained, tmp_path, capsys):
    cfg, run = trained
    model = str(run / "best.safetensors")
    assert main(["eval", str(cfg), "--checkpoint", model, "--tta", "flip,scales=big"]) == 2
    assert "--tta" in _error_line(capsys)
    assert main(["eval", str(cfg), "--checkpoint", model, "--crf", "bi_ww=3"]) == 2
    assert "bi_ww" in _error_line(capsys)
