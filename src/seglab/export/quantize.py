"""int8 quantization of an exported ONNX file for onnxruntime.

Static quantization in the QDQ format (Jacob et al., CVPR 2018: weights int8 per output channel,
activations uint8 with scales calibrated on real images), with onnxruntime's own tools
(`onnxruntime.quantization.quantize_static` after `quant_pre_process`). On CPUs with AVX-512 VNNI (this
machine) onnxruntime runs the quantized convolutions as int8 dot products. Choices, measured on the
shipped CamVid model (label agreement with float32 on validation images, docs/deploy.md): only the
convolutions are quantized (activations between them stay float), scales from the 99.999th percentile
of the calibration activations rather than their extremes, and the last `keep_float` convolutions (the
classifier and the layer feeding it, where a coarse scale moves most labels) stay float32: quantizing
every convolution agreed on 62-72% of the pixels, keeping the two head convolutions float on 97%.
Dynamic quantization (`quantize_dynamic`: int8 weights, activations quantized per call) is the other
choice onnxruntime offers; benchmarks/predict_speed.py measures both (docs/deploy.md).

Labels move: quantization is not label-preserving, so `seglab export --int8` reports the pixel agreement
with the float model on the calibration / verification images, and `seglab predict` never picks an
int8 file by itself.
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SeglabError


def quantize_int8(src: Path, dst: Path, calibration: Sequence[np.ndarray], *, per_channel: bool = True,
                  keep_float: int = 2) -> Path:
    """Write `dst`, the int8 (QDQ) version of the ONNX file `src`, calibrated on `calibration` (normalised
    (1, C, H, W) float32 arrays at the file's input size), its last `keep_float` convolutions left in
    float32; the seglab metadata is carried over with `export.precision` = "int8"."""
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise SeglabError("int8 quantization needs onnxruntime and onnx: pip install 'seglab[onnx]'") from None
    if not calibration:
        raise SeglabError("int8 quantization needs calibration images")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"images": a} for a in calibration])

        def get_next(self):
            return next(self.items, None)

    from ..utils.io import atomic_path

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]  # in topological order
        out = Path(tmp) / "int8.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"],
                            nodes_to_exclude=convs[len(convs) - keep_float:] if keep_float else [],
                            calibrate_method=CalibrationMethod.Percentile)
        model = onnx.load(str(out))
        source = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
        meta = json.loads(source["seglab"])
        meta.setdefault("export", {})["precision"] = "int8"
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = "seglab", json.dumps(meta)
        with atomic_path(dst) as final:
            onnx.save(model, str(final))
    return dst
