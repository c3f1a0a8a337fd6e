"""Config holes: values that passed validation and crashed later or meant nonsense, YAML that is hostile
(duplicate keys, alias bombs, deep nesting, Python tags), and override edge cases. Each is one line
naming the key (or the file and line) with exit status 2."""
from __future__ import annotations

import pytest
import yaml

from seglab.config import load_config
from seglab.errors import ConfigError

from robustness.conftest import TINY_MODEL, assert_refused, run_cli, snapshot, write_config
from robustness.corpus import yaml_bomb

# (override, fragments the error line must hold)
BAD_VALUES = [
    ("eval.slide={crop: [32, 32], stride: [0, 0]}", ["eval.slide.stride"]),
    ("eval.slide={crop: [32, 32], stride: [64, 64]}", ["eval.slide", "larger than the window"]),
    ("eval.tta={scales: [1000]}", ["eval.tta.scales", "1000"]),
    ("eval.tta={scales: []}", ["eval.tta.scales"]),
    ("eval.crf={iterations: 1000000000}", ["eval.crf.iterations"]),
    ("train.epochs=true", ["train.epochs", "true / false"]),
    ("train.lr=false", ["train.lr", "true / false"]),
    ("data.batch_size=true", ["data.batch_size"]),
    ("data.crop_size=[true, 32]", ["data.crop_size"]),
    ("data.crop_size=[0, 32]", ["data.crop_size"]),
    ("data.scale_range=[-1, 2]", ["data.scale_range"]),
    ("data.std=[0, 0, 0]", ["data.std"]),
    ("data.num_workers=-1", ["data.num_workers"]),
    ("train.lr=.inf", ["train.lr"]),
    ("train.lr=.nan", ["train.lr"]),
    ("train.seed=-1", ["train.seed"]),
    ("train.seed=100000000000000000000000", ["train.seed"]),
    ("model.num_classes=true", ["model.num_classes"]),
    ("data.kwargs={no_such_option: 1}", ["no_such_option"]),
    ("train.epochs=2021-13-45", ["train.epochs"]),
]


@pytest.mark.parametrize("override,fragments", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_key(override, fragments, tiny_synthetic, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run")
    before = snapshot(tiny_synthetic)
    assert_refused(run_cli("train", cfg, override), *fragments)
    assert not (tmp_path / "run").exists()
    assert snapshot(tiny_synthetic) == before


@pytest.mark.parametrize("option,fragments", [
    (["--slide", "32,stride=0"], ["--slide"]),
    (["--slide", "1"], None),  # a 1-pixel window with the default stride works
    (["--slide", "16,stride=40"], ["--slide", "larger than the window"]),
    (["--tta", "scales=1000"], ["--tta", "1000"]),
    (["--tta", "scales=0"], ["--tta"]),
    (["--tta", "scales=nan"], ["--tta"]),
    (["--crf", "iterations=1000000000"], ["--crf", "iterations"]),
    (["--crf", "bi_w=inf"], ["--crf", "bi_w"]),
])
def test_bad_inference_option(option, fragments, model_file, photo, tmp_path):
    run = run_cli("predict", "--checkpoint", model_file, photo, "--out", tmp_path / "o", *option)
    if fragments is None:
        assert run.status == 0, run.err
    else:
        assert_refused(run, *fragments)
        assert not (tmp_path / "o").exists()


def test_crf_search_with_no_images_is_refused(model_file, tiny_synthetic, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run")
    for n in ("0", "-3"):
        assert_refused(run_cli("crf-search", cfg, "--checkpoint", model_file, "--max-images", n,
                               "--out", tmp_path / "s.json"), "--max-images")
    assert not (tmp_path / "s.json").exists()


def test_duplicate_key_names_both_lines(tiny_synthetic, tmp_path):
    text = (f"model: {{name: unet, kwargs: {{base_channels: 4}}}}\n"
            f"data: {{name: synthetic, root: {tiny_synthetic}}}\n"
            f"train:\n  epochs: 1\n  lr: 0.01\n  epochs: 50\n")
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    assert_refused(run_cli("train", path), str(path), "line 6", "'epochs'", "line 4")
    with pytest.raises(ConfigError):
        load_config(path)


def test_alias_bomb_is_refused_quickly_in_one_short_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml_bomb())
    assert len(path.read_bytes()) < 1000
    line = assert_refused(run_cli("train", path), str(path), "alias")
    assert len(line) < 300


def test_recursive_alias_and_deep_nesting(tmp_path):
    rec = tmp_path / "rec.yaml"
    rec.write_text("model: &m {name: unet, kwargs: {self: *m}}\n")
    assert_refused(run_cli("train", rec), str(rec))
    deep = tmp_path / "deep.yaml"
    deep.write_text("model: " + "[" * 50000 + "]" * 50000 + "\n")
    assert_refused(run_cli("train", deep), str(deep))


def test_python_tags_never_build_objects(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "tag.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    assert_refused(run_cli("train", path), str(path))
    assert not marker.exists()


def test_overrides_replace_mappings_and_keep_dotted_merges(tiny_synthetic, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", tiny_synthetic, tmp_path / "run",
                       model={"kwargs": {"base_channels": 4, "bilinear": True}})
    assert load_config(cfg, ["model.kwargs={}"]).model.kwargs == {}
    assert load_config(cfg, ["model.kwargs={base_channels: 8}"]).model.kwargs == {"base_channels": 8}
    assert load_config(cfg, ["model.kwargs.base_channels=8"]).model.kwargs == {"base_channels": 8, "bilinear": True}
    for bad in ("=3", "train..lr=3", ".lr=3"):
        assert_refused(run_cli("train", cfg, bad), repr(bad))
    assert_refused(run_cli("train", cfg, "model.kwargs={a: 1, a: 2}"), "'a'", "twice")


def test_load_config_does_not_change_the_callers_dict(tiny_synthetic):
    from seglab.config import config_from_dict

    raw = {"model": {**TINY_MODEL, "kwargs": {"base_channels": 4}}, "data": {"root": str(tiny_synthetic)}}
    config_from_dict(raw, ["model.kwargs.base_channels=8"])
    assert raw["model"]["kwargs"] == {"base_channels": 4}


def test_a_config_folder_or_a_list_is_refused(tmp_path):
    assert_refused(run_cli("train", tmp_path), str(tmp_path))
    lst = tmp_path / "list.yaml"
    lst.write_text(yaml.safe_dump([1, 2]))
    assert_refused(run_cli("train", lst), str(lst), "mapping")
