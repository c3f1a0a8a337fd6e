from pathlib import Path

import pytest

from seglab import list_models
from seglab.config import Config, config_from_dict, load_config, parse_overrides
from seglab.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_overrides_are_parsed_as_yaml_into_a_tree():
    assert parse_overrides(["train.lr=0.02", "model.kwargs.width_mult=0.5", "data.crop_size=[64, 96]"]) == {
        "train": {"lr": 0.02}, "model": {"kwargs": {"width_mult": 0.5}}, "data": {"crop_size": [64, 96]}}


def test_unknown_key_is_reported_by_dotted_path_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key train\.lrr \(did you mean: lr\?\)"):
        config_from_dict({"model": {"name": "unet"}, "train": {"lrr": 0.1}})


def test_non_numeric_learning_rate_names_the_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.lr: .*number.*'fast'"):
        config_from_dict({"model": {"name": "unet"}}, ["train.lr=fast"])


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        config_from_dict({"model": {"name": "unet"}, "train": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"train\.optimizer"):
        config_from_dict({"model": {"name": "unet"}, "train": {"optimizer": "adam"}})


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: unet\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate_and_name_registered_models(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.model.name in list_models()


def test_eval_section_takes_slide_tta_and_crf_options():
    cfg = config_from_dict({"model": {"name": "unet"}, "eval": {
        "slide": {"crop": [64, 64], "stride": [32, 32]}, "tta": {"flip": True, "scales": [0.5, 1.0]},
        "crf": {"bi_w": 5, "iterations": 3}}})
    assert cfg.eval.tta.scales == (0.5, 1.0) and cfg.eval.crf.bi_w == 5 and cfg.eval.crf.pos_w == 3.0
    with pytest.raises(ConfigError, match=r"unknown config key eval\.crf\.bi_ww"):
        config_from_dict({"model": {"name": "unet"}, "eval": {"crf": {"bi_ww": 5}}})
