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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SeglabError

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}
MIN_AGREEMENT = 0.999       # float32 exports: share of pixels whose label must agree with PyTorch
DEFAULT_SIZE = (512, 512)   # export size of a model that does not record its training size


@dataclass
class ExportResult:
    path: Path
    checks: dict = field(default_factory=dict)       # {"max_rel_diff", "agreement", "images", "real_images"}
    int8_path: Path | None = None
    int8_checks: dict = field(default_factory=dict)

    @property
    def summary(self) -> str:
        def line(c):
            return (f"labels agree with PyTorch on {100 * c['agreement']:.3f}% of pixels, largest logit difference "
                    f"{c['max_rel_diff']:.1e} of the largest logit")
        where = f"{self.checks['images']} {'real' if self.checks['real_images'] else 'generated'} image(s)"
        s = f"checked on {where}: {line(self.checks)}"
        if self.int8_path is not None:
            s += f"; int8 file {self.int8_path}: {line(self.int8_checks)}"
        return s


def export_size(model: nn.Module, imgsz) -> tuple[int, int]:
    if imgsz is None:
        train = getattr(model, "seglab_config", {}).get("train_size")
        return tuple(int(v) for v in train) if train else DEFAULT_SIZE
    if isinstance(imgsz, int):
        return (imgsz, imgsz)
    if isinstance(imgsz, str):
        parts = imgsz.lower().split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise SeglabError(f"--imgsz: expected HxW like 360x480, got {imgsz!r}") from None
        if len(nums) not in (1, 2) or min(nums) < 1:
            raise SeglabError(f"--imgsz: expected HxW like 360x480, got {imgsz!r}")
        return (nums[0], nums[-1])
    h, w = imgsz
    return (int(h), int(w))


def generated_images(size: tuple[int, int], count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Smooth random pictures (bilinear-upsampled coarse noise plus fine noise): a stand-in when no real
    images are given."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        coarse = torch.rand(1, 3, 6, 8, generator=g)
        img = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0]
        img = (img * 0.85 + 0.15 * torch.rand(3, *size, generator=g)).clamp(0, 1)
        out.append((img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    return out


def image_files(paths: Sequence[str | os.PathLike] | str | os.PathLike | None, limit: int = 16) -> list[Path]:
    from ..inference.inputs import collect_inputs

    if paths is None:
        return []
    items = collect_inputs([paths] if isinstance(paths, (str, os.PathLike)) else list(paths))
    return [i.path for i in items if not i.is_video][:limit]


def normalised_inputs(model: nn.Module, files: Sequence[Path], size: tuple[int, int]) -> tuple[list[torch.Tensor], bool]:
    """(normalised (1, C, h, w) tensors at `size`, whether they come from real images)."""
    from ..data.io import read_photo
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image
    from ..inference.scale import resize_images

    config = getattr(model, "seglab_config", {})
    in_channels = int(config.get("kwargs", {}).get("in_channels", 3))
    arrays = [read_photo(f, in_channels)[0] for f in files] or generated_images(size)
    if in_channels != 3 and not files:
        arrays = [a[:, :, :1].repeat(in_channels, axis=2) for a in arrays]
    mean, std = config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)
    tensors = [resize_images(normalize_image(a, mean, std)[None], size) for a in arrays]
    return tensors, bool(files)


def compare(reference: Callable, exported: Callable, inputs: Sequence[torch.Tensor]) -> dict:
    """Largest logit difference (relative to the largest logit) and label agreement over `inputs`."""
    agree = total = 0
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ref, got = reference(x).float(), exported(x).float()
            if ref.shape != got.shape:
                raise SeglabError(f"the exported graph returns {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
            worst = max(worst, (ref - got).abs().max().item() / (ref.abs().max().item() + 1e-12))
            agree += (ref.argmax(1) == got.argmax(1)).sum().item()
            total += ref.shape[0] * ref.shape[2] * ref.shape[3]
    return {"max_rel_diff": worst, "agreement": agree / total, "images": len(inputs)}


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
    model = model_or_source.eval() if isinstance(model_or_source, nn.Module) else load_model(model_or_source)
    config = dict(getattr(model, "seglab_config", {}))
    if not config:
        raise SeglabError("the model was not built by seglab.create_model / load_model (no seglab_config)")
    task = model_task(config["name"])
    if task != "semantic":
        raise SeglabError(f"{config['name']} is a {task} model: seglab export writes semantic models (instance and "
                          f"panoptic graphs hold NMS, RoI steps and mask pasting; see docs/deploy.md)")
    size = export_size(model, imgsz)
    if out is None:
        src = Path(str(model_or_source)) if not isinstance(model_or_source, nn.Module) else Path(config["name"])
        stem = src.name.removesuffix(".safetensors") if src.is_file() else src.name
        out = (src.parent if src.is_file() else Path(".")) / (stem + FORMATS[fmt] if fmt != "onnx" or precision == "fp32"
                                                                  else f"{stem}.{precision}.onnx")
    out = Path(out)
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
    files = image_files(verify if verify else calibration)
    inputs, real = normalised_inputs(model, files, size)
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

        calib_files = image_files(calibration, limit=32) if calibration else files
        calib, _ = normalised_inputs(model, calib_files, size)
        result.int8_path = quantize_int8(out, out.with_name(out.name.removesuffix(".onnx") + ".int8.onnx"),
                                         [x.numpy() for x in calib])
        result.int8_checks = {**compare(model, OnnxModel(result.int8_path), inputs), "real_images": real}
    return result
