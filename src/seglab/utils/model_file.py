"""Model files are untrusted input: checks of a seglab safetensors file before anything is allocated.

A model file may come from anywhere (a download, a colleague, a truncated copy), so `seglab.hub` reads it
in three steps, each failing with one line that names the file:
1. the safetensors header (its length, JSON and tensor table are validated by `safetensors` itself, which
   also checks that the offsets cover the file exactly) and the `seglab` metadata: a JSON object whose
   fields have the types and sizes `check_metadata` lists;
2. the architecture it names, built on PyTorch's "meta" device (shapes without memory), whose state-dict
   names, shapes and dtypes must match the file's tensor table (`check_tensor_table`); so a crafted
   `num_classes` or width asks for no memory: it fails here unless the file really holds tensors that
   size;
3. only then the model itself and the tensors.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from ..errors import SeglabError
from .state_dict import name_difference

# safetensors dtype names -> torch dtypes of the same kind
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64}
_BOOL_DTYPES = {"BOOL"}
MAX_METADATA_CHARS = 10_000_000  # the JSON of a model file's metadata (class names of big label sets fit)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _is_colour(c) -> bool:
    return isinstance(c, (list, tuple)) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)


def _is_names(v) -> bool:
    return isinstance(v, list) and all(isinstance(n, str) for n in v)


def parse_metadata(text: Any, path: Path) -> dict:
    """The `seglab` metadata string of a model file as a checked dict (see `check_metadata`)."""
    if not isinstance(text, str) or len(text) > MAX_METADATA_CHARS:
        raise SeglabError(f"{path}: the seglab metadata is not a JSON text of at most {MAX_METADATA_CHARS} characters")
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise SeglabError(f"{path}: the seglab metadata is not valid JSON ({str(e)[:100]})") from None
    except RecursionError:
        raise SeglabError(f"{path}: the seglab metadata is not valid JSON (nested too deeply)") from None
    return check_metadata(meta, path)


def check_metadata(meta: Any, path: Path) -> dict:
    """`meta` if every field a loader reads has the right type and size, else a one-line SeglabError:
    name (a registered model), num_classes (a positive integer), kwargs (an object, without file
    names), classes / palette / category_ids / categories (one per class), mean and std (finite numbers,
    std > 0, as many as each other), inference (what a config's `eval:` accepts), label spaces."""
    from ..registry import get_entrypoint

    def bad(key: str, expected: str):
        shown = json.dumps(meta.get(key))
        shown = shown if len(shown) <= 60 else shown[:60] + "..."
        return SeglabError(f"{path}: model metadata '{key}' must be {expected}, got {shown}")

    if not isinstance(meta, dict):
        raise SeglabError(f"{path}: the seglab metadata must be a JSON object, got {type(meta).__name__}")
    if not isinstance(meta.get("name"), str):
        raise bad("name", "a model name")
    try:
        get_entrypoint(meta["name"])
    except SeglabError as e:
        raise SeglabError(f"{path}: {e}") from None
    n = meta.get("num_classes")
    if not _is_int(n) or n < 1:
        raise bad("num_classes", "a positive integer")
    kwargs = meta.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise bad("kwargs", "an object of keyword arguments")
    forbidden = sorted(set(kwargs) & {"num_classes", "weights", "backbone_weights"})
    if forbidden:
        raise SeglabError(f"{path}: model metadata 'kwargs' may not hold {', '.join(forbidden)}")
    for key, check, expected in (
            ("classes", lambda v: _is_names(v) and len(v) == n, f"a list of {n} class names"),
            ("palette", lambda v: isinstance(v, list) and len(v) == n and all(map(_is_colour, v)),
             f"a list of {n} [r, g, b] colours (0..255)"),
            ("category_ids", lambda v: isinstance(v, list) and len(v) == n and all(map(_is_int, v)),
             f"a list of {n} integer category ids"),
            ("categories", lambda v: isinstance(v, list) and len(v) == n and all(map(_is_category, v)),
             f"a list of {n} categories ({{id: integer, isthing: 0 or 1, ...}})"),
            ("mean", lambda v: isinstance(v, list) and 0 < len(v) <= 64 and all(map(_is_number, v)),
             "a list of numbers, one per input channel"),
            ("std", lambda v: isinstance(v, list) and 0 < len(v) <= 64 and all(_is_number(x) and x > 0 for x in v),
             "a list of positive numbers, one per input channel"),
            ("label_space_classes", lambda v: isinstance(v, dict) and bool(v) and all(map(_is_names, v.values())),
             "an object of class-name lists"),
            ("label_space_palettes", lambda v: isinstance(v, dict) and all(
                isinstance(p, list) and all(map(_is_colour, p)) for p in v.values()),
             "an object of colour lists")):
        if meta.get(key) is not None and not check(meta[key]):
            raise bad(key, expected)
    if meta.get("mean") is not None and meta.get("std") is not None and len(meta["mean"]) != len(meta["std"]):
        raise SeglabError(f"{path}: model metadata 'mean' and 'std' differ in length "
                          f"({len(meta['mean'])} and {len(meta['std'])})")
    if meta.get("inference") is not None:
        from ..config import EvalConfig

        try:
            EvalConfig.model_validate(meta["inference"])
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise SeglabError(f"{path}: model metadata 'inference' is not valid ({where}: "
                              f"{err['msg'].removeprefix('Value error, ')[:120]})") from None
    return meta


def _is_category(c) -> bool:
    return (isinstance(c, dict) and _is_int(c.get("id")) and c.get("isthing") in (0, 1, True, False)
            and isinstance(c.get("name", ""), str) and (c.get("color") is None or _is_colour(c["color"])))


def tensor_table(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (safetensors dtype, shape)} from a safetensors file's header, without reading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            table = {}
            for k in f.keys():
                s = f.get_slice(k)
                table[k] = (str(s.get_dtype()), tuple(int(d) for d in s.get_shape()))
    except Exception as e:  # SafetensorError, OSError: corrupt, truncated or foreign
        first = (str(e).splitlines() or [""])[0][:160] or "empty or truncated file"
        raise SeglabError(f"{path}: not a readable safetensors file ({type(e).__name__}: {first})") from None
    return table


def check_tensor_table(table: Mapping[str, tuple[str, tuple[int, ...]]], expected: Mapping[str, torch.Tensor],
                       path: Path, what: str) -> None:
    """The file's tensors (`tensor_table`) must be exactly the state dict `expected` (meta tensors are
    fine): the same names and shapes, floating-point tensors stored as a float type, integer ones as the
    same integer type."""
    difference = name_difference(expected, table)
    if difference:
        raise SeglabError(f"{path}: the tensors do not match {what} ({difference}); is it a model of another "
                          f"architecture?")
    for k, t in expected.items():
        dtype, shape = table[k]
        if shape != tuple(t.shape):
            raise SeglabError(f"{path}: tensor {k!r} has shape {list(shape)}, {what} expects {list(t.shape)}")
        if t.is_floating_point():
            ok = dtype in _FLOAT_DTYPES
        elif t.dtype == torch.bool:
            ok = dtype in _BOOL_DTYPES
        else:
            ok = _INT_DTYPES.get(dtype) == t.dtype
        if not ok:
            raise SeglabError(f"{path}: tensor {k!r} is stored as {dtype}, {what} expects {t.dtype}")


def meta_state_dict(build) -> dict[str, torch.Tensor]:
    """The state dict (meta tensors: shapes and dtypes, no memory) of the model `build()` makes."""
    with torch.device("meta"):
        return build().state_dict()
