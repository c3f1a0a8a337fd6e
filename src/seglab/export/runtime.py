"""Running an exported ONNX file with onnxruntime, behind the interface of a seglab model.

`load_onnx_model(path)` returns an `OnnxModel`: an `nn.Module` without parameters whose forward runs the
onnxruntime session on (N, C, H, W) float tensors and returns float32 logits as tensors, and whose
`seglab_config` is the metadata stored in the file at export (architecture name, class names, palette,
normalisation, training size, prediction settings). So the semantic predictors (sliding window,
flip / multi-scale TTA, dense CRF, resizing to the training scale), the writers, `seglab predict` and
`Predictor.from_pretrained` work on it unchanged: the same pre- and post-processing as the PyTorch
path. A file exported at a fixed size stores that size as its prediction size; an input of another size
(a TTA scale, `--imgsz`) is resized to it and the logits resized back.

onnxruntime is an optional dependency: `pip install seglab[onnx]`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError

METADATA_KEY = "seglab"


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise SeglabError("running ONNX files needs onnxruntime: pip install 'seglab[onnx]'") from None
    return onnxruntime


def session_options(threads: int | None = None):
    """onnxruntime session options: all graph optimisations; `threads` intra-op threads (default:
    torch's thread count, so both runtimes use the same cores)."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return options


def read_onnx_metadata(path) -> dict:
    """The seglab metadata stored in an exported ONNX file (without loading the graph into a session)."""
    p = Path(path)
    if not p.is_file():
        raise SeglabError(f"{p}: file not found")
    ort = require_onnxruntime()
    try:
        session = ort.InferenceSession(str(p), session_options(1), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise SeglabError(f"{p}: not a readable ONNX file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return _metadata(session, p)


def _metadata(session, path: Path) -> dict:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise SeglabError(f"{path}: ONNX file has no seglab metadata (export it with seglab export)")
    from ..utils.model_file import parse_metadata

    meta = parse_metadata(raw, path)  # an ONNX file from elsewhere is as untrusted as a model file
    export = meta.get("export", {})
    size = export.get("size") if isinstance(export, dict) else None
    if not isinstance(export, dict) or (size is not None and not (
            isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 16 for v in size))):
        raise SeglabError(f"{path}: model metadata 'export' must be an object whose 'size' is [height, width], "
                          f"got {json.dumps(export)[:80]}")
    return meta


class OnnxModel(nn.Module):
    """An exported ONNX file in an onnxruntime session, called like the model it was exported from."""

    is_exported = True

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        super().__init__()
        ort = require_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise SeglabError(f"{self.path}: file not found")
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise SeglabError(f"{self.path}: onnxruntime cannot load it ({type(e).__name__}: "
                              f"{str(e).splitlines()[0]})") from None
        meta = _metadata(self.session, self.path)
        self.export_info = meta.pop("export", {})
        self.seglab_config = meta
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        fixed = self.export_info.get("size")
        self.fixed_size = tuple(fixed) if fixed and not self.export_info.get("dynamic") else None

    def describe(self) -> str:
        info = self.export_info
        size = "any size" if self.fixed_size is None else f"{self.fixed_size[0]}x{self.fixed_size[1]}"
        return f"{self.path.name}: {info.get('precision', 'fp32')}, {size}, onnxruntime {require_onnxruntime().__version__}"

    def run(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every output of the graph for the input batch `x`, as float32 tensors."""
        feed = x.detach().float().cpu().contiguous().numpy().astype(self.input_dtype, copy=False)
        try:
            outputs = self.session.run(None, {self.input_name: feed})
        except Exception as e:  # a graph that does not take what its metadata promises (a foreign or edited file)
            raise SeglabError(f"{self.path}: onnxruntime cannot run it on a {tuple(x.shape)} input "
                              f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None
        return [torch.from_numpy(o).float() for o in outputs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        if self.fixed_size is not None and size != self.fixed_size:
            x = F.interpolate(x, size=self.fixed_size, mode="bilinear", align_corners=False)
        out = self.run(x)[0]
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out

    def train(self, mode: bool = True):
        return super().train(False)  # an exported graph has no training mode


def load_onnx_model(path, *, threads: int | None = None) -> nn.Module:
    """An exported file as a seglab model: semantic models as `OnnxModel`; split instance models (graph +
    the model's own post-processing) as `seglab.export.instances.OnnxInstanceModel`."""
    from ..registry import model_task

    model = OnnxModel(path, threads=threads)
    if model_task(model.seglab_config["name"]) == "semantic":
        return model
    from .instances import OnnxInstanceModel, python_half, split_for

    half = python_half(model.seglab_config)
    split = split_for(half)
    if split is None:
        raise SeglabError(f"{path}: holds a {model.seglab_config['name']} graph, which seglab does not run from ONNX")
    return OnnxInstanceModel(model, split, half)
