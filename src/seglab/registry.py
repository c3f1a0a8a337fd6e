"""The model registry: one dict from entrypoint name to a function that builds the model.

Entrypoints are plain functions decorated with `@register_model`; their name is the function name
(`<arch>_<backbone>`, e.g. `fcn8s_vgg16`). Registering a name twice is a programming error and raises;
asking for an unknown name raises `SeglabError` listing the closest registered names.
"""
from __future__ import annotations

import difflib
from typing import Callable

from .errors import SeglabError

_MODELS: dict[str, Callable] = {}
_TASKS: dict[str, str] = {}


def register_model(fn: Callable | None = None, *, task: str = "semantic"):
    """Decorator that adds a model entrypoint under its function name."""

    def wrap(f: Callable) -> Callable:
        name = f.__name__
        if name in _MODELS:
            raise ValueError(f"model entrypoint {name!r} is registered twice")
        _MODELS[name] = f
        _TASKS[name] = task
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_loaded() -> None:
    # Importing seglab.models runs every @register_model decorator once.
    from . import models  # noqa: F401


def list_models(pattern: str | None = None, *, task: str | None = None) -> list[str]:
    """Sorted names of registered entrypoints, optionally filtered by a substring and a task."""
    _ensure_loaded()
    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if pattern in n]
    if task:
        names = [n for n in names if _TASKS[n] == task]
    return names


def model_task(name: str) -> str:
    get_entrypoint(name)
    return _TASKS[name]


def get_entrypoint(name: str) -> Callable:
    _ensure_loaded()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.4)
        hint = f"; did you mean: {', '.join(close)}?" if close else "; run `seglab models` for the list"
        raise SeglabError(f"unknown model {name!r}{hint}")
    return _MODELS[name]
