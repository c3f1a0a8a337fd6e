"""`seglab export`: a semantic model to ONNX / TorchScript / .pt2, checked against PyTorch on export.

The check: the exported file and the PyTorch model (float32, as trained) predict the same images, which
are read and normalised as `seglab predict` reads them and resized to the export size: the largest
logit difference relative to the largest logit, and the share of pixels whose label (argmax) agrees.
A float32 export must agree on at least `MIN_AGREEMENT` of the pixels, or the file is removed and the
export fails; fp16 / bf16 / int8 files report their agreement (they do not keep every label). Real images
give the meaningful figure (`verify=[...]` or `calibration=folder`); without them the check runs on
generated smooth images and says so.

Instance and panoptic models are not exported here: their graphs hold data-dependent steps (proposal
selection, NMS, RoI pooling of a variable number of boxes, mask pasting) that belong in Python
post-processing; see docs/deploy.md.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import SeglabError
from .checks import ExportResult, compare, export_size, image_files, normalised_inputs

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}
MIN_AGREEMENT = 0.999       # float32 exports: share of pixels whose label must agree with PyTorch


def export_model(model_or_source, fmt: str = "onnx", *, out: str | os.PathLike | None = None, dynamic: bool = False,
                 opset: int | None = None, precision: str = "fp32", imgsz=None, int8: bool = False,
                 calibration: str | os.PathLike | None = None, verify: Sequence[str] | None = None,
                 exporter: str = "torchscript", log: Callable[[str], None] | None = None) -> ExportResult:
    """Export a semantic model (object, model file or shipped name) and check it; see the module's note."""
    from .. import __version__
    from ..hub import load_model
    from ..registry import model_task
    from . import formats

    if fmt not in FORMATS:
        raise SeglabError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if int8 and fmt != "onnx":
        raise SeglabError("--int8 quantizes ONNX files (for onnxruntime); use --format onnx")
    if fmt == "onnx":
        formats.check_opset(opset, exporter)
    model = model_or_source.eval() if isinstance(model_or_source, nn.Module) else load_model(model_or_source)
    config = dict(getattr(model, "seglab_config", {}))
    if not config:
        raise SeglabError("the model was not built by seglab.create_model / load_model (no seglab_config)")
    task = model_task(config["name"])
    size = export_size(model, imgsz)
    files = image_files(verify if verify else calibration)  # read before anything is written
    sources = [Path(str(model_or_source))] if not isinstance(model_or_source, nn.Module) else []
    if task == "instance" and fmt == "onnx" and not int8 and precision == "fp32":
        out = Path(out) if out is not None else Path(f"{config['name']}.onnx")
        refuse_overwriting_inputs([out], sources + files)
        return export_split(model, out, size, config, opset=opset, files=files, log=log)
    if task != "semantic":
        raise SeglabError(f"{config['name']} is a {task} model: seglab export writes semantic models, and YOLACT and "
                          f"affinity instance models as fp32 ONNX (graph + Python post-processing; see docs/deploy.md)")
    if out is None:
        src = Path(str(model_or_source)) if not isinstance(model_or_source, nn.Module) else Path(config["name"])
        stem = src.name.removesuffix(".safetensors") if src.is_file() else src.name
        out = (src.parent if src.is_file() else Path(".")) / (stem + FORMATS[fmt] if fmt != "onnx" or precision == "fp32"
                                                                  else f"{stem}.{precision}.onnx")
    out = Path(out)
    int8_out = out.with_name(out.name.removesuffix(".onnx") + ".int8.onnx")
    calib_files = image_files(calibration, limit=32) if int8 and calibration else files
    refuse_overwriting_inputs([out] + ([int8_out] if int8 else []), sources + files + calib_files)
    inputs, real = normalised_inputs(model, files, size)
    calib = normalised_inputs(model, calib_files, size)[0] if int8 else None
    in_channels = int(config.get("kwargs", {}).get("in_channels", 3))
    example = torch.randn(1, in_channels, *size)
    traced = formats.prepare(model, precision, example)
    inference = dict(config.get("inference") or {})
    if not dynamic:  # a fixed-size graph predicts at its size: one resize, no second interpolation
        inference.pop("scale", None)
        inference["imgsz"] = list(size)
    metadata = {**config, "inference": inference,
                "export": {"format": fmt, "size": list(size), "dynamic": dynamic, "precision": precision,
                           "opset": opset or (formats.DEFAULT_OPSET if exporter == "torchscript" else 18),
                           "exporter": exporter, "torch": torch.__version__, "seglab": __version__}}
    if fmt == "onnx":
        formats.export_onnx(traced, out, example, metadata=metadata, dynamic=dynamic, opset=opset, exporter=exporter)
    elif fmt == "torchscript":
        formats.export_torchscript(traced, out, example, metadata=metadata)
    else:
        formats.export_pt2(traced, out, example, metadata=metadata, dynamic=dynamic)
    if log is not None:
        log(f"exported {config['name']} ({precision}, {'any size' if dynamic else f'{size[0]}x{size[1]}'}) to {out}; "
            f"checking it against PyTorch")
    if fmt == "onnx":
        from .runtime import OnnxModel

        exported = OnnxModel(out)
    else:
        exported = formats.load_torch_export(out, fmt)
    checks = {**compare(model, exported, inputs), "real_images": real}
    result = ExportResult(out, checks)
    if precision == "fp32" and checks["agreement"] < MIN_AGREEMENT:
        out.unlink(missing_ok=True)
        raise SeglabError(f"{config['name']}: the exported file disagrees with PyTorch ({result.summary}); "
                          f"file removed")
    if int8:
        from .quantize import quantize_int8

        result.int8_path = quantize_int8(out, int8_out, [x.numpy() for x in calib])
        result.int8_checks = {**compare(model, OnnxModel(result.int8_path), inputs), "real_images": real}
    return result


def refuse_overwriting_inputs(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """An export never replaces the model file it reads or an image it checks with (--out m.safetensors
    once turned the model into an ONNX file)."""
    taken = {p.resolve(): p for p in inputs if p.exists()}
    for out in outputs:
        if out.resolve() in taken:
            raise SeglabError(f"--out {out}: is an input of this export ({taken[out.resolve()]}); choose another file")


def export_split(model: nn.Module, out, size: tuple[int, int], config: dict, *, opset: int | None = None,
                 files=(), log: Callable[[str], None] | None = None):
    """Export a split instance model to ONNX at `size` (rounded up to the family's stride) and check the
    runtime's detections against PyTorch's on `files` (or generated images)."""
    from .. import __version__
    from .instances import compare_instances, export_instance_onnx, split_for
    from .runtime import load_onnx_model

    split = split_for(model)
    if split is None:
        raise SeglabError(f"{config['name']}: instance models of this family are not exported (their RoI heads need "
                          f"several graphs; YOLACT and the affinity network are; see docs/deploy.md)")
    d = split.divisor
    size = (-(-size[0] // d) * d, -(-size[1] // d) * d)
    out = Path(out) if out is not None else Path(f"{config['name']}.onnx")
    inference = {**(config.get("inference") or {}), "imgsz": list(size)}
    inference.pop("scale", None)
    metadata = {**config, "inference": inference,
                "export": {"format": "onnx", "size": list(size), "dynamic": False, "precision": "fp32",
                           "opset": opset or 17, "exporter": "torchscript", "split": list(split.outputs),
                           "torch": torch.__version__, "seglab": __version__}}
    export_instance_onnx(model, out, size, metadata=metadata, opset=opset)
    if log is not None:
        log(f"exported {config['name']} ({size[0]}x{size[1]}; NMS and masks stay in Python) to {out}; checking it")
    exported = load_onnx_model(out)
    inputs, real = normalised_inputs(model, list(files), size)
    with torch.no_grad():
        reference = [model([x[0]])[0] for x in inputs]
        got = [exported([x[0]])[0] for x in inputs]
    checks = compare_instances(reference, got)
    total = sum(len(r.scores) for r in reference)
    agreement = checks["mask_agreement"] if checks["same_count"] else 0.0
    result = ExportResult(out, {"agreement": agreement, "max_rel_diff": checks["max_score_diff"], "images": len(inputs),
                                "real_images": real, **checks, "detections": total})
    if not checks["same_count"] or checks["mask_agreement"] < 0.999:
        out.unlink(missing_ok=True)
        raise SeglabError(f"{config['name']}: the exported model's detections differ from PyTorch's ({checks}); file removed")
    return result
