"""ONNX export parity for every registered semantic model at tiny widths: the file seglab export writes,
run by onnxruntime, gives PyTorch's logits (within 1e-3 of the largest logit) and labels (>= 99.9% of
pixels), at the export size and, for a --dynamic file, at another size; the models listed in
`seglab.export.formats.NOT_EXPORTABLE` fail with a one-line reason (so the list stays true).
Skipped when onnxruntime / onnx are not installed (pip install seglab[onnx])."""
import pytest
import torch
from tiny_settings import load_tiny_settings

import seglab
from seglab.errors import SeglabError

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from seglab.export import OnnxModel, export_model  # noqa: E402
from seglab.export.formats import FIXED_SIZE_ONLY, NOT_EXPORTABLE  # noqa: E402

TINY = load_tiny_settings("tiny")
MODELS = seglab.list_models(task="semantic")
SIZE = (64, 96)


def _tiny_model(name):
    torch.manual_seed(0)
    model = seglab.create_model(name, num_classes=5, **TINY[name]).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_matches_pytorch(name, tmp_path):
    model = _tiny_model(name)
    dynamic = name not in FIXED_SIZE_ONLY
    out = tmp_path / f"{name}.onnx"
    if name in NOT_EXPORTABLE:
        with pytest.raises(SeglabError, match=f"{name}: ONNX export failed.*exporter dynamo"):
            export_model(model, "onnx", out=out, imgsz=SIZE, dynamic=dynamic)
        return
    size = SIZE if dynamic else (96, 144)  # pyramid pooling: multiples of 48 (formats.FIXED_SIZE_ONLY)
    result = export_model(model, "onnx", out=out, imgsz=size, dynamic=dynamic)
    assert result.checks["agreement"] >= 0.999 and result.checks["max_rel_diff"] < 1e-3
    exported = OnnxModel(out, threads=1)
    assert exported.seglab_config["name"] == name and exported.seglab_config["num_classes"] == 5
    in_channels = TINY[name].get("in_channels", 3)
    x = torch.randn(2, in_channels, *((80, 112) if dynamic else size))
    with torch.no_grad():
        ref, got = model(x), exported(x)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-3 * ref.abs().max()
    assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.999
