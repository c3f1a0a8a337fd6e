"""`seglab pack` / `seglab.hub.pack_model`: a trained model file made ready to ship (no training-only
heads, float16, prediction settings stored) that load_model, predict and eval use as they are."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

import seglab
from seglab import hub
from seglab.cli import main
from seglab.engine import load_predictor
from seglab.inference.tta import TTAPredictor

TINY = {"width_mult": 0.25, "head_channels": 16, "aux_channels": 8}


@pytest.fixture()
def trained_file(tmp_path):
    torch.manual_seed(0)
    model = seglab.create_model("bisenetv2", num_classes=6, **TINY)
    model.eval()
    path = hub.save_model(model, tmp_path / "best.safetensors", classes=[f"c{i}" for i in range(6)],
                          palette=[[i * 40, 0, 0] for i in range(6)], extra={"mean": [0.5] * 3, "std": [0.25] * 3})
    return model, path


def test_pack_drops_aux_heads_halves_weights_and_keeps_predictions(trained_file, tmp_path):
    model, src = trained_file
    out = hub.pack_model(src, tmp_path / "packed.safetensors", inference={"tta": {"flip": True, "scales": [1.0]}})
    tensors = load_file(str(out))
    assert not any(k.startswith("aux") for k in tensors), "training-only heads must be left out"
    assert any(k.startswith("aux") for k in load_file(str(src)))
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.is_floating_point())
    assert out.stat().st_size < 0.6 * src.stat().st_size
    packed = seglab.load_model(out)
    assert packed.seglab_config["classes"][5] == "c5" and packed.seglab_config["mean"] == [0.5] * 3
    assert packed.seglab_config["inference"]["tta"]["flip"] is True
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref, got = model(x), packed(x)
    assert next(packed.parameters()).dtype == torch.float32
    assert (got - ref).abs().max().item() < 0.05 * ref.abs().max().item()
    assert (got.argmax(1) == ref.argmax(1)).float().mean().item() > 0.98


def test_predict_uses_the_stored_settings_unless_flags_say_otherwise(trained_file, tmp_path):
    _, src = trained_file
    out = hub.pack_model(src, tmp_path / "packed.safetensors", inference={"tta": {"flip": True, "scales": [0.5, 1.0]}})
    model = seglab.load_model(out)
    _, predictor, _ = load_predictor(model, device="cpu")
    assert isinstance(predictor, TTAPredictor) and predictor.flip and list(predictor.scales) == [0.5, 1.0]
    assert not isinstance(load_predictor(model, device="cpu", tta="none")[1], TTAPredictor)


def test_shipped_name_loads_and_evaluates_through_a_config(trained_file, tmp_path, tiny_synthetic,
                                                           monkeypatch, capsys):
    _, src = trained_file
    weights = tmp_path / "weights"
    weights.mkdir()
    assert main(["pack", str(src), "--out", str(weights / "bisenetv2.synthetic.safetensors"), "--tta", "flip"]) == 0
    assert "bisenetv2.synthetic.safetensors" in capsys.readouterr().out
    monkeypatch.setattr(hub, "PACKAGE_WEIGHTS", weights)
    assert seglab.load_model("bisenetv2.synthetic").seglab_config["num_classes"] == 6
    # the config names the model with its aux heads; the packed file, which has none, still evaluates
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": "bisenetv2", "kwargs": TINY},
                                   "data": {"name": "synthetic", "root": str(tiny_synthetic)}}))
    assert main(["eval", str(cfg), "--checkpoint", "bisenetv2.synthetic", "--out", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "eval_metrics.json").is_file()


def test_class_count_mismatch_and_missing_model_are_one_line_errors(tmp_path, tiny_synthetic, capsys):
    other = seglab.create_model("bisenetv2", num_classes=3, **TINY)
    hub.save_model(other, tmp_path / "three.safetensors")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": "bisenetv2", "kwargs": TINY},
                                   "data": {"name": "synthetic", "root": str(tiny_synthetic)}}))
    assert main(["eval", str(cfg), "--checkpoint", str(tmp_path / "three.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "3 classes" in err and "has 6" in err and len(err.splitlines()) == 1
    assert main(["pack", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "nope.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_pack_stores_a_prediction_size_and_keeps_the_training_size(trained_file, tmp_path, capsys):
    _, src = trained_file
    meta = hub.read_model_metadata(src)
    hub.save_model(seglab.load_model(src), src, classes=meta["classes"], palette=meta["palette"],
                   extra={"mean": meta["mean"], "std": meta["std"], "train_size": [48, 64]})
    out = tmp_path / "p.safetensors"
    assert main(["pack", str(src), "--out", str(out), "--tta", "flip"]) == 0
    assert main(["pack", str(out), "--out", str(out), "--imgsz", "96"]) == 0  # settings given later add to the stored
    packed = seglab.load_model(out)
    assert packed.seglab_config["train_size"] == [48, 64]
    assert packed.seglab_config["inference"] == {"tta": {"flip": True, "scales": [1.0]}, "imgsz": 96}
    _, predictor, options = load_predictor(packed, device="cpu")
    assert options.resize.short_side == 96 and predictor.flip


def test_pack_to_an_export_suffix_is_refused_and_names_seglab_export(trained_file, tmp_path, capsys):
    _, src = trained_file
    for name, fmt in [("model.onnx", "onnx"), ("model.pt2", "pt2")]:
        assert main(["pack", str(src), "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--format {fmt}" in err and "seglab export" in err and len(err.splitlines()) == 1
        assert not (tmp_path / name).exists()
