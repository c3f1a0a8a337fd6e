"""Reading tensors from weight files (safetensors or torch checkpoints read with `weights_only=True`), with
one-line errors naming the file. Shared by `seglab.hub` and the checkpoint converters in `seglab.convert`."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import SeglabError


def check_file(path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise SeglabError(f"{what}: file not found: {p}")
    return p


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Read tensors from a safetensors file or a torch checkpoint (weights_only); unwrap seglab training
    checkpoints (`{'model': ...}`) and common wrappers (`state_dict`, `model_state`)."""
    p = check_file(path, "weights")
    try:
        if p.suffix == ".safetensors":
            return load_file(str(p))
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or foreign file; a pickle that is not plain tensors
        first = (str(e).splitlines() or [""])[0][:200] or "empty or truncated file"
        raise SeglabError(f"{p}: cannot read weights ({type(e).__name__}: {first})") from None
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SeglabError(f"{p}: expected a state dict of tensors")
    return obj


def check_state_dict(state, expected: dict[str, torch.Tensor], path, what: str) -> None:
    """`state` must hold exactly `expected`'s names, with its shapes and the same kind of dtype (float /
    integer / bool), else one line naming the file and the first difference."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise SeglabError(f"{path}: expected a state dict of tensors")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise SeglabError(f"{path}: weights do not match {what} "
                          f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                          f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")
    for k, v in state.items():
        want = expected[k]
        if want.shape != v.shape:
            raise SeglabError(f"{path}: tensor {k!r} has shape {tuple(v.shape)}, {what} expects "
                              f"{tuple(want.shape)} (is num_classes right?)")
        if (v.is_floating_point(), v.dtype == torch.bool) != (want.is_floating_point(), want.dtype == torch.bool) \
                or (not want.is_floating_point() and v.dtype != want.dtype):
            raise SeglabError(f"{path}: tensor {k!r} is {v.dtype}, {what} expects {want.dtype}")
