"""`seglab export` and the onnxruntime path: an exported file carries the model's metadata and predicts
like the PyTorch model through `seglab predict` and `Predictor.from_pretrained`; TorchScript and .pt2
files round-trip; int8 and fp16 files report their agreement; mistakes are one line."""
import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from seglab.cli import main
from seglab.errors import SeglabError
from seglab.inference import Predictor

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from seglab.export import OnnxModel, export_model, fold_conv_bn, read_onnx_metadata  # noqa: E402

TINY = {"width_mult": 0.25, "head_channels": 16}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("export")
    model = seglab.create_model("bisenetv2", num_classes=4, **TINY).eval()
    path = seglab.save_model(model, tmp / "m.safetensors", classes=list("abcd"),
                             palette=[[0, 0, 0], [200, 0, 0], [0, 200, 0], [0, 0, 200]],
                             extra={"train_size": [48, 64], "mean": [0.5] * 3, "std": [0.25] * 3,
                                    "inference": {"tta": {"flip": True, "scales": [1.0]}}})
    images = tmp / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    return path, images


def test_onnx_file_predicts_like_pytorch_through_cli_and_python(model_file, tmp_path, capsys):
    path, images = model_file
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(path), "--out", str(onnx_path), "--dynamic", "--verify", str(images)]) == 0
    out = capsys.readouterr().out
    assert "3 real image(s)" in out and "100.000%" in out
    meta = read_onnx_metadata(onnx_path)  # the metadata travels inside the file
    assert meta["classes"] == list("abcd") and meta["mean"] == [0.5] * 3 and meta["train_size"] == [48, 64]
    assert meta["export"]["dynamic"] is True and meta["inference"]["tta"]["flip"] is True
    assert main(["predict", "--checkpoint", str(onnx_path), str(images), "--out", str(tmp_path / "ort")]) == 0
    assert "onnxruntime" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(path), str(images), "--out", str(tmp_path / "pt")]) == 0
    for i in range(3):
        a = np.array(Image.open(tmp_path / "ort" / f"im{i}.png"))
        b = np.array(Image.open(tmp_path / "pt" / f"im{i}.png"))
        assert (a == b).mean() >= 0.999
    predictor = Predictor.from_pretrained(onnx_path)  # the same pre / post-processing: stored flip TTA
    assert predictor.flip and isinstance(predictor.model, OnnxModel)
    photo = np.random.default_rng(5).integers(0, 256, (90, 100, 3), dtype=np.uint8)  # any size, any aspect
    ref = Predictor.from_pretrained(path)(photo).labels
    assert (predictor(photo).labels == ref).float().mean() >= 0.999
    with pytest.raises(SeglabError, match="precision"):
        Predictor.from_pretrained(onnx_path, precision="bf16")


def test_fixed_size_file_resizes_to_its_size_and_int8_reports_agreement(model_file, tmp_path):
    path, images = model_file
    result = export_model(path, "onnx", out=tmp_path / "f.onnx", imgsz="48x64", int8=True, calibration=images)
    assert result.checks["agreement"] >= 0.999
    assert result.int8_path.is_file() and 0.5 < result.int8_checks["agreement"] <= 1.0
    assert read_onnx_metadata(result.int8_path)["export"]["precision"] == "int8"
    fixed = OnnxModel(result.path)
    assert fixed.fixed_size == (48, 64) and fixed.seglab_config["inference"]["imgsz"] == [48, 64]
    assert fixed(torch.randn(3, 3, 30, 50)).shape == (3, 4, 30, 50)  # another size: resized in and out
    half = export_model(path, "onnx", out=tmp_path / "h.onnx", precision="fp16", verify=[str(images)])
    assert half.checks["agreement"] > 0.95


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torchscript_and_pt2_round_trip(model_file, tmp_path, fmt):
    path, images = model_file
    result = export_model(path, fmt, out=tmp_path / f"m.{fmt}", verify=[str(images)])
    assert result.path.is_file() and result.checks["agreement"] >= 0.999 and result.checks["real_images"]


def test_folding_keeps_outputs_and_refuses_when_it_would_not():
    torch.manual_seed(0)
    model = seglab.create_model("bisenetv2", num_classes=4, **TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    folded, count = fold_conv_bn(model, lambda m: m(x))
    assert count > 20 and not any(isinstance(m, torch.nn.BatchNorm2d) and n.endswith("conv1.1")
                                  for n, m in folded.named_modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)

    class Shared(torch.nn.Module):  # the conv output is read twice: folding would change the second use
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(2.0)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    with pytest.raises(SeglabError, match="folding"):
        fold_conv_bn(Shared().eval(), lambda m: m(x))


@pytest.mark.parametrize("name", ["yolact_resnet18", "affinity_resnet18"])
def test_split_instance_models_export_with_python_post_processing(name, tmp_path):
    from tiny_settings import load_tiny_settings

    from seglab.export.instances import OnnxInstanceModel

    torch.manual_seed(0)
    model = seglab.create_model(name, num_classes=3, **load_tiny_settings("tiny_instance")[name]).eval()
    path = seglab.save_model(model, tmp_path / "m.safetensors", classes=list("abc"), extra={"train_size": [64, 80]})
    result = export_model(path, "onnx", out=tmp_path / "m.onnx")
    checks = result.checks
    assert checks["same_count"] and checks["detections"] > 0 and checks["mask_agreement"] >= 0.999
    assert checks["max_score_diff"] < 1e-4 and checks["max_box_diff"] < 1e-2
    assert read_onnx_metadata(result.path)["export"]["size"] == [64, 96]   # rounded up to the stride
    predictor = Predictor.from_pretrained(result.path)
    assert isinstance(predictor.model, OnnxInstanceModel)
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    got = predictor(image)
    ref = Predictor.from_pretrained(path, imgsz="64x96")(image)  # PyTorch at the graph's size
    assert got.masks.shape == (len(got.scores), 70, 90) and len(got.scores) == len(ref.scores)
    assert torch.allclose(got.scores, ref.scores, atol=1e-4)


def test_unsplit_models_and_bad_options_are_one_line_errors(tmp_path, capsys):
    from tiny_settings import load_tiny_settings

    name = "mask_rcnn_resnet18_fpn"
    model = seglab.create_model(name, num_classes=3, **load_tiny_settings("tiny_instance")[name])
    path = seglab.save_model(model, tmp_path / "r.safetensors")
    assert main(["export", str(path), "--out", str(tmp_path / "r.onnx")]) == 2
    err = capsys.readouterr().err
    assert "RoI" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "r.onnx").exists()
    assert main(["export", str(path), "--format", "pt2", "--int8"]) == 2
    assert "--int8" in capsys.readouterr().err


def test_seglab_eval_runs_an_onnx_file_like_its_model(tiny_synthetic, tmp_path, capsys):
    import json

    import yaml

    torch.manual_seed(0)
    model = seglab.create_model("bisenetv2", num_classes=6, **TINY).eval()
    path = seglab.save_model(model, tmp_path / "m.safetensors", extra={"train_size": [48, 64]})
    export_model(path, "onnx", out=tmp_path / "m.onnx", dynamic=True)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": "bisenetv2", "kwargs": TINY},
                                   "data": {"name": "synthetic", "root": str(tiny_synthetic)}}))
    for ckpt, out in [(path, "pt"), (tmp_path / "m.onnx", "onnx")]:
        assert main(["eval", str(cfg), "--checkpoint", str(ckpt), "--out", str(tmp_path / out)]) == 0
    pt, onnx = (json.loads((tmp_path / o / "eval_metrics.json").read_text()) for o in ("pt", "onnx"))
    assert np.array_equal(pt["confusion"], onnx["confusion"])


def test_without_the_onnx_extra_an_onnx_file_is_a_one_line_error_naming_it(model_file, tmp_path, capsys, monkeypatch):
    path, images = model_file
    onnx_path = export_model(path, "onnx", out=tmp_path / "m.onnx", imgsz="48x64").path
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as on an install without seglab[onnx]
    assert main(["predict", "--checkpoint", str(onnx_path), str(images), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'seglab[onnx]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
