"""The rest of the command line, option by option: values that are out of range or of the wrong kind are
one line naming the option, before any work or file."""
from __future__ import annotations

import pytest

import seglab
from seglab.errors import SeglabError

from robustness.conftest import assert_refused, run_cli, write_config

MODELS = [
    (["models", "--params", "--num-classes", "0"], ["--num-classes"]),
    (["models", "--params", "--num-classes", "1000000000"], ["--num-classes", "100000"]),
    (["models", "--params", "--num-classes", "x"], ["--num-classes"]),
    (["models", "upsnet", "--params", "--num-things", "100"], ["--num-things", "21"]),
    (["models", "upsnet", "--params", "--num-things", "-3"], ["--num-things"]),
    (["models", "--task", "nope"], ["--task"]),
    (["demo", "--epochs", "0"], ["--epochs"]),
    (["no-such-command"], ["no-such-command"]),
    (["train"], ["config"]),
]


@pytest.mark.parametrize("argv,fragments", MODELS, ids=[" ".join(a) for a, _ in MODELS])
def test_bad_command_line(argv, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(run_cli(*argv), *fragments)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("device,fragment", [("banana", "banana"), ("cuda:3", "cuda:3"), ("mps", "mps"),
                                             ("cuda:-1", "cuda:-1")])
def test_bad_device(device, fragment, model_file, tiny_synthetic, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run")
    assert_refused(run_cli("eval", cfg, "--checkpoint", model_file, "--out", tmp_path / "o", "--device", device),
                   fragment)
    assert_refused(run_cli("train", cfg, f"train.device={device}"), fragment)
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


def test_pack_refuses_settings_it_could_not_load_back(model_file, tmp_path):
    out = tmp_path / "p.safetensors"
    for spec in ("scales=1000", "scales=0", "bogus"):
        assert_refused(run_cli("pack", model_file, "--out", out, "--tta", spec), "--tta")
        assert not out.exists()
    with pytest.raises(SeglabError, match="inference"):
        seglab.hub.pack_model(model_file, out, inference={"tta": {"scales": [50.0]}})
    assert not out.exists()


@pytest.mark.parametrize("value", ["nan", "-1", "2", "x"])
def test_bad_score_threshold(value, model_file, photo, tmp_path):
    assert_refused(run_cli("predict", "--checkpoint", model_file, photo, "--out", tmp_path / "o", "--score-thresh",
                           value), "--score-thresh")
    assert not (tmp_path / "o").exists()


def test_python_api_refuses_a_bool_class_count():
    with pytest.raises(SeglabError, match="num_classes"):
        seglab.create_model("unet", num_classes=True)
