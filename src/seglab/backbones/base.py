"""Backbone lookup by name, and loading of ImageNet classifier weights from a local file."""
from __future__ import annotations

import difflib
from typing import Callable

from torch import nn

from ..errors import SeglabError

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _BACKBONES:
        raise ValueError(f"backbone {fn.__name__!r} is registered twice")
    _BACKBONES[fn.__name__] = fn
    return fn


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def create_backbone(name: str, *, weights: str | None = None, **kwargs) -> nn.Module:
    """Build backbone `name`; `weights` is a local torchvision ImageNet checkpoint of that network."""
    if name not in _BACKBONES:
        close = difflib.get_close_matches(name, list(_BACKBONES), n=3, cutoff=0.4)
        raise SeglabError(f"unknown backbone {name!r}" + (f"; did you mean: {', '.join(close)}?" if close else ""))
    model = _BACKBONES[name](**kwargs)
    if weights is not None:
        from ..convert.torchvision import load_backbone_weights

        load_backbone_weights(model, name, weights)
    return model
