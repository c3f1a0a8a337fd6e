"""The weights registry: every file in seglab/weights is listed with its card (nothing hard-coded), any
model file has a card, and `seglab models --pretrained`, `seglab info`, `seglab config` print them."""
import json

import pytest

import seglab
from seglab import hub, pretrained
from seglab.cli import main
from seglab.config import RECIPES


def test_the_shipped_camvid_model_is_listed_with_its_card():
    cards = {c["name"]: c for c in seglab.list_pretrained()}
    card = cards["bisenetv2.camvid"]
    assert card["task"] == "semantic" and card["num_classes"] == 11 and card["classes"][0] == "sky"
    assert card["dataset"].startswith("CamVid") and "360x480" in card["input_scale"]
    # trained on train + val: the card leads with the sequence-held-out figure, not the val fit
    assert card["figure"].startswith("held-out-sequence mIoU ") and "val mIoU" in card["figure"]
    assert "seglab train camvid/bisenetv2_trainval" in card["command"]
    assert set(cards) == {p.name[:-len(".safetensors")] for p in hub.PACKAGE_WEIGHTS.glob("*.safetensors")}


def test_every_file_in_the_weights_folder_is_listed_with_or_without_its_json(tmp_path, monkeypatch):
    model = seglab.create_model("unet", num_classes=2, base_channels=4)
    seglab.save_model(model, tmp_path / "unet.people.safetensors", classes=["background", "person"],
                      extra={"val_mIoU": 0.5, "epoch": 3, "dataset": "folder"})
    seglab.save_model(model, tmp_path / "unet.other.safetensors")
    (tmp_path / "unet.people.json").write_text(json.dumps({"input_scale": "256x256", "command": "seglab train x"}))
    monkeypatch.setattr(hub, "PACKAGE_WEIGHTS", tmp_path)
    monkeypatch.setattr(pretrained, "PACKAGE_WEIGHTS", tmp_path)
    cards = {c["name"]: c for c in seglab.list_pretrained()}
    assert set(cards) == {"unet.people", "unet.other"}
    people = cards["unet.people"]
    assert people["figure"] == "val mIoU 50.00 (epoch 3)" and people["input_scale"] == "256x256"
    assert people["classes"] == ["background", "person"] and people["dataset"] == "folder"
    assert cards["unet.other"]["figure"] is None and cards["unet.other"]["classes"] == ["0", "1"]
    assert [c["name"] for c in seglab.list_pretrained("people")] == ["unet.people"]
    loaded = seglab.load_model("unet.people")  # and the name works wherever a model file does
    assert loaded.seglab_config["classes"] == ["background", "person"]


def test_models_pretrained_and_info_print_the_registry(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "bisenetv2.camvid" in out and "semantic" in out and "val mIoU" in out
    assert main(["models", "camvid"]) == 0  # no architecture is called that: the pretrained models are shown
    assert "bisenetv2.camvid" in capsys.readouterr().out
    assert main(["info", "bisenetv2.camvid"]) == 0
    out = capsys.readouterr().out
    for field in ("task:", "data set:", "classes:", "input scale:", "figure:", "reproduce:"):
        assert field in out
    assert main(["info", "nope.camvid"]) == 2
    assert "nor a shipped model: bisenetv2.camvid" in capsys.readouterr().err


def test_plain_models_listing_names_the_shipped_weights(capsys):
    """`seglab models` lists architectures; without this line the weights that ship are invisible there."""
    assert main(["models"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("pretrained weights: bisenetv2.camvid") and "model.weights=NAME" in last
    assert main(["models", "bisenet"]) == 0
    assert "pretrained weights that match: bisenetv2.camvid" in capsys.readouterr().out
    assert main(["models", "--task", "instance"]) == 0  # the Penn-Fudan model is instance; the CamVid one is not
    out = capsys.readouterr().out
    assert "mask_rcnn_resnet18_fpn.pennfudan" in out and "bisenetv2.camvid" not in out


def test_info_on_a_training_output_names_its_data_set_and_config(tmp_path, tiny_synthetic, capsys):
    from seglab.config import config_from_dict
    from seglab.engine import train

    cfg = config_from_dict({"model": {"name": "unet", "kwargs": {"base_channels": 4}},
                            "data": {"name": "synthetic", "root": str(tiny_synthetic), "crop_size": [32, 32],
                                     "batch_size": 4},
                            "train": {"epochs": 1, "out_dir": str(tmp_path / "run")}})
    result = train(cfg, log=lambda m: None, progress=False)
    assert main(["info", str(result.best_path)]) == 0
    out = capsys.readouterr().out
    assert "data set:            synthetic" in out and f"seglab train {tmp_path / 'run' / 'config.yaml'}" in out


def test_config_list_and_show(capsys):
    assert main(["config", "list"]) == 0
    assert "camvid/bisenetv2" in capsys.readouterr().out
    assert main(["config", "show", "camvid/bisenetv2"]) == 0
    shown = capsys.readouterr().out
    assert shown == (RECIPES / "camvid" / "bisenetv2.yaml").read_text()
    assert main(["config", "show", "camvid/nope"]) == 2


def test_the_wheel_holds_every_recipe_and_the_shipped_weights(tmp_path):
    """Recipes and weights reach an installed seglab only through package-data: build the wheel and look."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    pytest.importorskip("setuptools")
    repo = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"  # a copy, so that the build's own folders stay out of the working tree
    shutil.copytree(repo, src, symlinks=True, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info",
                                                                            "__pycache__", "tests", "benchmarks", "docs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w",
                    str(tmp_path / "dist")], check=True, capture_output=True, timeout=120)
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("seglab-*.whl"))).namelist())
    recipes = {f"seglab/configs/{p.relative_to(repo / 'configs').as_posix()}" for p in (repo / "configs").rglob("*.yaml")}
    assert "seglab/configs/camvid/bisenetv2.yaml" in recipes and recipes <= names
    shipped = {f"seglab/weights/{p.name}" for p in hub.PACKAGE_WEIGHTS.iterdir() if p.suffix in (".safetensors", ".json")}
    assert "seglab/weights/bisenetv2.camvid.safetensors" in shipped and shipped <= names
