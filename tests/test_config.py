from pathlib import Path

import pytest

from seglab import list_models
from seglab.config import Config, config_from_dict, load_config, parse_overrides
from seglab.errors import ConfigError, SeglabError

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


def _with_root(path):
    """A recipe with data.root: null needs it given; the others load as they are."""
    cfg = load_config(path)
    return cfg if cfg.data.root is not None else load_config(path, ["data.root=/data/x"])


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(CONFIGS[0].parents[0])) for p in CONFIGS])
def test_every_config_round_trips_through_its_saved_yaml(path, tmp_path):
    from seglab.config import dump_config

    cfg = _with_root(path)
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(cfg))  # what seglab train writes into train.out_dir
    assert load_config(saved) == cfg


def test_label_map_integer_keys_survive_the_saved_config(tmp_path):
    from seglab.config import dump_config
    from seglab.data.datasets.folder import make_lut

    cfg = config_from_dict({"model": {"name": "unet"}, "data": {"name": "folder", "kwargs": {"label_map": {255: 1, 7: 0}}}})
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(cfg))
    assert load_config(saved).data.kwargs["label_map"] == {255: 1, 7: 0}
    # a config written as JSON (string keys) maps the same values
    assert (make_lut({"255": 1, "7": 0}) == make_lut({255: 1, 7: 0})).all()
    with pytest.raises(SeglabError, match=r"label_map must map stored values to class indices"):
        make_lut({255: "person"})


def test_recipes_ship_in_the_package_and_load_by_name():
    from seglab.config import RECIPES, list_recipes

    assert "camvid/bisenetv2" in list_recipes() and "demo" in list_recipes()
    assert RECIPES.parent.name == "seglab" and (RECIPES / "camvid" / "bisenetv2.yaml").is_file()
    assert load_config("camvid/bisenetv2") == load_config(RECIPES / "camvid" / "bisenetv2.yaml")
    assert load_config("configs/camvid/bisenetv2.yaml").model.name == "bisenetv2"
    with pytest.raises(ConfigError, match=r"config file not found: camvid/bisenet \(nor a shipped recipe: did you "
                                          r"mean camvid/bisenetv2"):
        load_config("camvid/bisenet")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_recipes_name_no_development_tree_path(path):
    text = path.read_text()
    assert "../shared" not in text and "/work/" not in text


def test_a_recipe_without_data_root_says_to_pass_it():
    from seglab.tasks import task_for_model

    cfg = load_config("camvid/bisenetv2")
    assert cfg.data.root is None
    with pytest.raises(ConfigError, match=r"data\.root is not set: no default location can exist for data set "
                                          r"'camvid'; pass data\.root=/path/to/camvid"):
        task_for_model(cfg.model.name).build_datasets(cfg)
