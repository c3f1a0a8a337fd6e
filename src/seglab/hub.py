"""Building models by name, and saving / loading whole models as safetensors.

A seglab model file is a safetensors file whose metadata (`seglab` key, JSON) records the entrypoint
name, `num_classes`, the keyword arguments, and optionally class names and palette, so
`load_model(path)` rebuilds the model without the config that trained it. Loading never executes code:
safetensors has no pickle, and torch checkpoints are read with `weights_only=True`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import SeglabError
from .registry import get_entrypoint
from .utils.io import atomic_path
from .utils.state_dict import check_file, read_state_dict

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


def create_model(name: str, *, num_classes: int, weights: str | None = None,
                 backbone_weights: str | None = None, **kwargs) -> nn.Module:
    """Build registered model `name`.

    `weights`: a local file holding the whole model, either seglab's own safetensors or a torchvision
    checkpoint of the same architecture (converted on the fly). `backbone_weights`: a local torchvision
    ImageNet classifier checkpoint (resnet / vgg layout) for the backbone only.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise SeglabError(f"num_classes must be a positive integer, got {num_classes!r}")
    entry = get_entrypoint(name)
    if backbone_weights is not None:
        check_file(backbone_weights, "backbone_weights")
        kwargs["backbone_weights"] = str(backbone_weights)
    try:
        model = entry(num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise SeglabError(f"model {name!r}: {e}") from e
    kwargs.pop("backbone_weights", None)
    model.seglab_config = {"name": name, "num_classes": num_classes, "kwargs": kwargs}
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, path) -> None:
    """Load a whole-model file into `model` strictly, converting a torchvision layout when needed."""
    state = read_state_dict(path)
    own = model.state_dict()
    if set(state) != set(own):
        from .convert.torchvision import convert_model_state_dict

        try:
            state = convert_model_state_dict(model, state)
        except SeglabError as e:  # the converter does not know the file; name it here
            raise SeglabError(f"{path}: {e}") from None
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise SeglabError(f"{path}: weights do not match the model "
                          f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                          f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise SeglabError(f"{path}: tensor {k!r} has shape {tuple(v.shape)}, the model expects "
                              f"{tuple(own[k].shape)} (is num_classes right?)")
    model.load_state_dict(state, strict=True)


def save_model(model: nn.Module, path, *, classes: list[str] | None = None,
               palette: list | None = None, extra: dict | None = None, half: bool = False) -> Path:
    """Write the model's weights and how to rebuild it to a safetensors file (atomically).

    `half=True` stores floating-point tensors as float16 (half the size; `load_model` casts them back
    to the model's float32)."""
    config = dict(getattr(model, "seglab_config", {}))
    if not config:
        raise ValueError("model was not built by seglab.create_model; cannot record how to rebuild it")
    meta = {**config, "classes": classes, "palette": palette, **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"seglab": json.dumps(meta)})
    return path


def read_model_metadata(path) -> dict:
    p = check_file(path, "model")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = (f.metadata() or {}).get("seglab")
    except Exception as e:
        raise SeglabError(f"{p}: not a readable safetensors model file ({e})") from e
    if meta is None:
        raise SeglabError(f"{p}: safetensors file has no seglab metadata (was it saved by seglab.save_model?)")
    return json.loads(meta)


def resolve_model_file(name_or_path) -> Path:
    """A path to an existing file, or the name of a model shipped inside the package (`<arch>.<data>`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = PACKAGE_WEIGHTS / f"{name_or_path}.safetensors"
    if shipped.is_file():
        return shipped
    names = sorted(f.stem for f in PACKAGE_WEIGHTS.glob("*.safetensors")) if PACKAGE_WEIGHTS.is_dir() else []
    raise SeglabError(f"model file not found: {name_or_path}"
                      + (f" (shipped models: {', '.join(names)})" if names else ""))


# Metadata a model file may record beside the architecture, carried onto `model.seglab_config`.
CARRIED_METADATA = ("classes", "palette", "mean", "std", "inference", "category_ids", "categories",
                    "label_space_classes", "label_space_palettes")


def load_model(name_or_path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_model` (a path, or a shipped name) in eval mode on `device`. Its
    class names, palette, input normalisation (mean, std), stored inference settings and category ids,
    when recorded, are on `model.seglab_config`."""
    p = resolve_model_file(name_or_path)
    meta = read_model_metadata(p)
    model = create_model(meta["name"], num_classes=meta["num_classes"], **meta.get("kwargs", {}))
    model.load_state_dict(load_file(str(p)), strict=True)  # float16 files are cast to float32 here
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
    if inference or src_meta.get("inference"):
        extra["inference"] = inference or src_meta["inference"]
    return save_model(model, dst, classes=src_meta.get("classes"), palette=src_meta.get("palette"),
                      extra=extra, half=half)
