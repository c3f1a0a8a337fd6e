"""Writing a semantic model as ONNX, TorchScript or a torch.export program (.pt2).

The exported graph is the model's forward: normalised images (N, C, H, W) float32 in, logits
(N, num_classes, H, W) float32 out; the batch size is always free, height and width are fixed (the
export size) unless `dynamic`. Normalisation, resizing, test-time augmentation, the CRF and the argmax
stay outside the graph, in the code the PyTorch path runs too (`seglab.export.runtime`). At fp16 / bf16
the weights and arithmetic are in that precision and the graph casts its input and output, so callers
always exchange float32. BatchNorm is folded into the convolutions first (`seglab.export.fold`).

ONNX goes through PyTorch's TorchScript-based exporter by default (`exporter="torchscript"`): about a
second for a small model, and it exports every seglab semantic model except the ones in `NOT_EXPORTABLE`
(docs/deploy.md). `exporter="dynamo"` uses the torch.export-based exporter (it needs `onnxscript`; a
minute or more per model on 2 CPU cores), which exports SegNet at a fixed size. The model's seglab metadata
(name, classes, palette, mean/std, training size, prediction settings) and the export settings travel in
the file: ONNX `metadata_props["seglab"]`, and an extra file `seglab.json` in TorchScript and .pt2 archives.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..errors import SeglabError

DEFAULT_OPSET = 17
OPSETS = {"torchscript": (7, 20), "dynamo": (18, 23)}   # the opsets PyTorch 2.13's exporters write
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Semantic models the default ONNX export cannot take (checked by tests/export/test_onnx_parity.py):
# {name: why}. The reason is specific to the export route, not to the model.
NOT_EXPORTABLE = {
    "segnet_vgg16": "max-unpooling with the encoder's indices: F.max_unpool2d checks its output size with a "
                    "tensor condition the TorchScript exporter cannot trace; export it with --exporter dynamo "
                    "(pip install onnxscript) at a fixed size",
}
# Exportable only at a fixed size whose stride-8 feature map the pyramid bins (1, 2, 3, 6) divide, i.e.
# height and width multiples of 48: ONNX has no adaptive pooling, so the exporter writes fixed windows.
FIXED_SIZE_ONLY = {"pspnet_resnet50": "pyramid pooling needs a fixed input size with height and width "
                                      "multiples of 48 (adaptive pooling becomes fixed windows in ONNX)",
                   "pspnet_resnet101": "as pspnet_resnet50"}


class Float32IO(nn.Module):
    """The model in `dtype`, taking and returning float32 (so the file's interface does not change)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model.to(dtype), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


def prepare(model: nn.Module, precision: str, example: torch.Tensor) -> nn.Module:
    """The model to trace: eval mode, BatchNorm folded, in `precision` with float32 input and output."""
    from .fold import fold_conv_bn

    if precision not in DTYPES:
        raise SeglabError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
    try:
        model, _ = fold_conv_bn(model, lambda m: m(example))
    except SeglabError:  # folding would change the outputs: export the model as it is
        model = model.eval()
    return model if precision == "fp32" else Float32IO(model, DTYPES[precision]).eval()


def check_opset(opset, exporter: str = "torchscript") -> None:
    """--opset: an integer the exporter writes (checked before tracing: a bad one made PyTorch print the
    whole traced graph before failing)."""
    if opset is None:
        return
    low, high = OPSETS.get(exporter, OPSETS["torchscript"])
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise SeglabError(f"--opset: the {exporter} exporter writes ONNX opsets {low} to {high}, got {opset!r}")


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Send what C++ code writes to the process's stderr (file descriptor 2) to a discarded file: PyTorch's
    TorchScript exporter logs the whole traced graph there when it fails (its ONNX log is always on during
    an export), thousands of lines before the one-line error. No-op where fd 2 cannot be redirected."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor, *, metadata: dict, dynamic: bool = False,
                opset: int | None = None, exporter: str = "torchscript") -> None:
    """Trace `model` on `example` into an ONNX file at `path` with `metadata` stored under "seglab"."""
    try:
        import onnx
    except ImportError:
        raise SeglabError("ONNX export needs the onnx package: pip install 'seglab[onnx]'") from None
    check_opset(opset, exporter)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    name = metadata.get("name", type(model).__name__)
    try:
        with warnings.catch_warnings(), torch.no_grad(), native_stderr_captured():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings say nothing about this model
            if exporter == "dynamo":
                try:
                    import onnxscript  # noqa: F401  (the torch.export-based exporter writes through it)
                except ImportError:
                    raise SeglabError("exporter 'dynamo' needs onnxscript: pip install onnxscript") from None
                dims = {i: torch.export.Dim(n) for i, n in axes.items()}
                program = torch.onnx.export(model, (example,), None, dynamo=True, input_names=["images"],
                                            output_names=["logits"], dynamic_shapes=(dims,),
                                            opset_version=opset or 18, verbose=False)
                proto = program.model_proto
            else:
                buffer = io.BytesIO()
                torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset or DEFAULT_OPSET,
                                  input_names=["images"], output_names=["logits"],
                                  dynamic_axes={"images": axes, "logits": axes}, do_constant_folding=True)
                proto = onnx.load_from_string(buffer.getvalue())
    except SeglabError:
        raise
    except Exception as e:  # the exporters raise many types; one line names the model and the cause
        reason = NOT_EXPORTABLE.get(name) or FIXED_SIZE_ONLY.get(name)
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise SeglabError(f"{name}: ONNX export failed ({reason or first})") from e
    entry = proto.metadata_props.add()
    entry.key, entry.value = "seglab", json.dumps(metadata)
    from ..utils.io import atomic_path

    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def export_torchscript(model: nn.Module, path: Path, example: torch.Tensor, *, metadata: dict) -> None:
    """`torch.jit.trace` + `torch.jit.freeze`, saved with `seglab.json` inside the archive."""
    from ..utils.io import atomic_path

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated in favour of torch.export; it still loads in C++
        torch.jit.save(traced, str(tmp), _extra_files={"seglab.json": json.dumps(metadata)})


def export_pt2(model: nn.Module, path: Path, example: torch.Tensor, *, metadata: dict, dynamic: bool = False) -> None:
    """`torch.export.export` (batch size free; height and width too when `dynamic`), saved as .pt2 with
    `seglab.json` inside."""
    from ..utils.io import atomic_path

    batch = torch.export.Dim("batch", max=1024)
    shapes = ({0: batch, 2: torch.export.Dim("height", min=32, max=8192),
               3: torch.export.Dim("width", min=32, max=8192)} if dynamic else {0: batch},)
    example2 = torch.cat([example, example])  # a batch of 2: a batch of 1 would be specialised
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, (example2,), dynamic_shapes=shapes, strict=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise SeglabError(f"{metadata.get('name')}: torch.export failed ({first})") from e
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp), extra_files={"seglab.json": json.dumps(metadata)})


def load_torch_export(path: Path, fmt: str):
    """The callable module of a TorchScript or .pt2 file written here (used to verify the export)."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()
