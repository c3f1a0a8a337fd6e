"""Building models by name, and saving / loading whole models as safetensors.

A seglab model file is a safetensors file whose metadata (`seglab` key, JSON) records the entrypoint
name, `num_classes`, the keyword arguments, and optionally class names and palette, so
`load_model(path)` rebuilds the model without the config that trained it. Loading never executes code:
safetensors has no pickle, and torch checkpoints are read with `weights_only=True`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import SeglabError
from .registry import get_entrypoint
from .utils.io import atomic_path
from .utils.model_file import check_tensor_table, meta_state_dict, parse_metadata, tensor_table
from .utils.state_dict import check_file, check_state_dict, read_state_dict

if TYPE_CHECKING:
    from .finetune import WeightsReport

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


def create_model(name: str, *, num_classes: int, weights: str | None = None,
                 backbone_weights: str | None = None, reinit_heads: bool = False, **kwargs) -> nn.Module:
    """Build registered model `name`.

    `weights`: a local file holding the whole model (or the name of a shipped model, see
    `seglab.list_pretrained()`), either seglab's own safetensors or a torchvision checkpoint of the same
    architecture (converted on the fly). `reinit_heads=True` fine-tunes it to another class count: every
    tensor whose name and shape match is kept, the classifier and auxiliary heads are freshly initialised
    (named on `model.seglab_weights_report`). `backbone_weights`: a local ImageNet classifier checkpoint
    for the backbone only (torchvision's resnet / vgg / mobilenet_v2 layout, timm's xception65).
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise SeglabError(f"num_classes must be a positive integer, got {num_classes!r}")
    entry = get_entrypoint(name)
    if weights is not None:  # what the file was built with, unless the caller says otherwise
        kwargs = {**_recorded_kwargs(name, weights), **kwargs}
    if backbone_weights is not None:
        check_file(backbone_weights, "backbone_weights")
        kwargs["backbone_weights"] = str(backbone_weights)
    try:
        model = entry(num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise SeglabError(f"model {name!r}: {e}") from e
    except (ValueError, RuntimeError, ZeroDivisionError, AssertionError, IndexError, KeyError) as e:
        # an argument the entrypoint does not check itself (a float width, an unsupported stride)
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "backbone_weights")
        first = (str(e).splitlines() or [""])[0][:160]
        raise SeglabError(f"model {name!r} cannot be built with {shown or 'its defaults'} "
                          f"({type(e).__name__}: {first})") from e
    kwargs.pop("backbone_weights", None)
    model.seglab_config = {"name": name, "num_classes": num_classes, "kwargs": kwargs}
    if weights is not None:
        model.seglab_weights_report = load_weights(model, weights, reinit_heads=reinit_heads)
    return model


# Switches that `seglab pack` turns off for prediction and that a model being trained wants back.
_TRAINING_ONLY_KWARGS = ("aux_loss",)


def _recorded_kwargs(name: str, weights) -> dict:
    """The model kwargs recorded in a seglab weights file of the same architecture (a head width, say), so
    that `weights=` alone rebuilds a model the file fits; training-only switches are left out."""
    path = resolve_model_file(weights, what="weights")
    meta = read_model_metadata(path, required=False) if path.suffix == ".safetensors" else None
    if not meta or meta.get("name") != name:  # a torchvision checkpoint, or another architecture's file
        return {}
    return {k: v for k, v in (meta.get("kwargs") or {}).items() if k not in _TRAINING_ONLY_KWARGS}


def load_weights(model: nn.Module, path, *, reinit_heads: bool = False) -> WeightsReport:
    """Load a whole-model file (a path or a shipped model's name) into `model`, converting a torchvision
    layout when needed. Strict, unless `reinit_heads`: then tensors that depend on the class count
    (classifiers) and auxiliary heads missing from the file keep the model's fresh initialisation;
    anything else that does not fit is still an error (see `seglab.finetune.match_state_dict`)."""
    from .finetune import match_state_dict

    path = resolve_model_file(path, what="weights")
    state = read_state_dict(path)
    own = model.state_dict()
    if set(state) != set(own) and not _is_seglab_file(path):
        from .convert.torchvision import convert_model_state_dict

        try:
            state = convert_model_state_dict(model, state, allow_missing=reinit_heads)
        except SeglabError as e:  # the converter does not know the file; name it here
            raise SeglabError(f"{path}: {e}") from None
    state, report = match_state_dict(model, state, path, reinit_heads=reinit_heads)
    check_state_dict(state, own, path, "the model")  # dtypes too
    model.load_state_dict(state, strict=True)
    return report


def _is_seglab_file(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    try:
        read_model_metadata(path)
    except SeglabError:
        return False
    return True


# Suffixes of the export formats (seglab export), which a safetensors model file must not carry.
EXPORT_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pt2": "pt2"}


def save_model(model: nn.Module, path, *, classes: list[str] | None = None,
               palette: list | None = None, extra: dict | None = None, half: bool = False) -> Path:
    """Write the model's weights and how to rebuild it to a safetensors file (atomically).

    `half=True` stores floating-point tensors as float16 (half the size; `load_model` casts them back
    to the model's float32)."""
    config = dict(getattr(model, "seglab_config", {}))
    if not config:
        raise ValueError("model was not built by seglab.create_model; cannot record how to rebuild it")
    path = Path(path)
    fmt = EXPORT_SUFFIXES.get(path.suffix.lower())
    if fmt is not None:  # a safetensors file named model.onnx would only fail later, in onnxruntime
        raise SeglabError(f"{path}: seglab model files are .safetensors; to write {path.suffix} use "
                          f"seglab export MODEL --format {fmt} --out {path.name}")
    meta = {**config, "classes": classes, "palette": palette, **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"seglab": json.dumps(meta)})
    return path


def read_model_metadata(path, *, required: bool = True) -> dict | None:
    """The checked `seglab` metadata of a model file (`seglab.utils.model_file.check_metadata`); a file
    without any is an error, or None when not `required`."""
    p = check_file(path, "model")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = (f.metadata() or {}).get("seglab")
    except Exception as e:  # SafetensorError, OSError: corrupt, truncated or foreign
        first = (str(e).splitlines() or [""])[0][:160] or "empty or truncated file"
        raise SeglabError(f"{p}: not a readable safetensors model file ({type(e).__name__}: {first})") from None
    if meta is None:
        if not required:
            return None
        raise SeglabError(f"{p}: safetensors file has no seglab metadata (was it saved by seglab.save_model?)")
    return parse_metadata(meta, p)


def shipped_model_names() -> list[str]:
    """Names of the models shipped inside the package: every `<arch>.<data>.safetensors` in seglab/weights."""
    return sorted(f.name[:-len(".safetensors")] for f in PACKAGE_WEIGHTS.glob("*.safetensors")) \
        if PACKAGE_WEIGHTS.is_dir() else []


def resolve_model_file(name_or_path, *, what: str = "model") -> Path:
    """A path to an existing file, or the name of a model shipped inside the package (`<arch>.<data>`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = PACKAGE_WEIGHTS / f"{name_or_path}.safetensors"
    if shipped.is_file():
        return shipped
    names = shipped_model_names()
    raise SeglabError(f"{what} file not found: {name_or_path}"
                      + (f" (nor a shipped model: {', '.join(names)}; see seglab models --pretrained)"
                         if names else ""))


# Metadata a model file may record beside the architecture, carried onto `model.seglab_config`.
CARRIED_METADATA = ("classes", "palette", "mean", "std", "inference", "category_ids", "categories",
                    "label_space_classes", "label_space_palettes", "train_size")


def load_model(name_or_path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_model` (a path, or a shipped name) in eval mode on `device`. Its
    class names, palette, input normalisation (mean, std), stored inference settings, category ids and
    training image size, when recorded, are on `model.seglab_config`."""
    p = resolve_model_file(name_or_path)
    meta = read_model_metadata(p)

    def build():
        try:
            return create_model(meta["name"], num_classes=meta["num_classes"], **meta.get("kwargs", {}))
        except SeglabError as e:
            raise SeglabError(f"{p}: {e}") from None
        except Exception as e:  # stored kwargs of the wrong type or value
            raise SeglabError(f"{p}: cannot build {meta['name']} with the stored settings "
                              f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]})") from None

    # Names, shapes and dtypes checked on the meta device first: a crafted file allocates nothing.
    check_tensor_table(tensor_table(p), meta_state_dict(build), p, f"model {meta['name']!r}")
    model = build()
    try:
        state = load_file(str(p))
    except Exception as e:
        raise SeglabError(f"{p}: cannot read the tensors ({type(e).__name__}: {str(e)[:160]})") from None
    model.load_state_dict(state, strict=True)  # float16 files are cast to float32 here
    model.seglab_config.update({k: meta[k] for k in CARRIED_METADATA if meta.get(k)})
    return model.to(device).eval()


def pack_model(src, dst, *, half: bool = True, drop_aux: bool = True,
               inference: dict | None = None) -> Path:
    """Turn a trained model file (e.g. best.safetensors) into one to ship or deploy.

    `drop_aux`: rebuild with `aux_loss=False` when the entrypoint has auxiliary heads, leaving out the
    weights that only serve training; `half`: store float16; `inference`: prediction settings kept
    with the model (e.g. `{"tta": {"flip": True, "scales": [1.0]}}`) that `seglab predict` applies by
    default. Class names, palette and normalisation are carried over."""
    src_meta = read_model_metadata(resolve_model_file(src))
    if inference is not None:  # checked as a model file's settings are, before anything is written
        from .utils.model_file import check_metadata

        check_metadata({**src_meta, "inference": inference}, Path(dst))
    model = load_model(src)
    kwargs = dict(src_meta.get("kwargs", {}))
    if drop_aux and kwargs.get("aux_loss", True) is not False:
        try:
            lean = create_model(src_meta["name"], num_classes=src_meta["num_classes"], **{**kwargs, "aux_loss": False})
        except SeglabError:  # the entrypoint has no aux_loss argument: nothing to drop
            lean = None
        if lean is not None:
            state = model.state_dict()
            lean.load_state_dict({k: state[k] for k in lean.state_dict()}, strict=True)
            model = lean
    skip = {"name", "num_classes", "kwargs", "classes", "palette", "inference"}
    extra = {k: v for k, v in src_meta.items() if k not in skip}
    if inference or src_meta.get("inference"):  # settings given now replace the stored ones, key by key
        extra["inference"] = {**(src_meta.get("inference") or {}), **(inference or {})}
    return save_model(model, dst, classes=src_meta.get("classes"), palette=src_meta.get("palette"),
                      extra=extra, half=half)
