"""Export and fast inference: BatchNorm folding (`fold.py`), ONNX / TorchScript / torch.export files with
the model's metadata inside (`formats.py`), checked against PyTorch on export (`api.py`: `export_model`,
what `seglab export` runs), the onnxruntime runner that makes an exported file a seglab model again
(`runtime.py`), and int8 quantization for onnxruntime (`quantize.py`). docs/deploy.md has the commands
and the measured speed of each path."""
from .api import ExportResult, export_model
from .fold import fold_conv_bn
from .runtime import OnnxModel, load_onnx_model, read_onnx_metadata

__all__ = ["export_model", "ExportResult", "fold_conv_bn", "OnnxModel", "load_onnx_model", "read_onnx_metadata"]
