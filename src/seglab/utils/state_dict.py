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


def load_torch_file(path: Path, what: str, map_location="cpu"):
    """`torch.load(path, weights_only=True)` on the CPU, or one line naming the file and what is wrong with
    it: empty or truncated, not a PyTorch file, or holding Python objects besides tensors (never loaded:
    unpickling them could run code). PyTorch's own warnings about the file are not printed."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith(("Trying to load unsupported", "Unsupported"))), "")
        raise SeglabError(f"{path}: cannot read {what}: not a plain file of tensors (holds Python objects or is "
                          f"corrupt{': ' + detail[:100] if detail else ''}); seglab never unpickles objects, which "
                          f"could run code") from None
    except Exception as e:  # empty, truncated or not a PyTorch file at all
        first = (str(e).splitlines() or [""])[0][:160] or "empty or truncated file"
        raise SeglabError(f"{path}: cannot read {what} ({type(e).__name__}: {first})") from None


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Read tensors from a safetensors file or a torch checkpoint (weights_only); unwrap seglab training
    checkpoints (`{'model': ...}`) and common wrappers (`state_dict`, `model_state`)."""
    p = check_file(path, "weights")
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except Exception as e:  # corrupt, truncated or foreign file
            first = (str(e).splitlines() or [""])[0][:200] or "empty or truncated file"
            raise SeglabError(f"{p}: cannot read weights ({type(e).__name__}: {first})") from None
    obj = load_torch_file(p, "weights")
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SeglabError(f"{p}: expected a state dict of tensors")
    return obj


def name_difference(expected, got) -> str:
    """"missing [...], unexpected [...]" for two collections of tensor names (the first three of each), or
    "" when they hold the same names."""
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if not missing and not unexpected:
        return ""
    return (f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")


def check_state_dict(state, expected: dict[str, torch.Tensor], path, what: str) -> None:
    """`state` must hold exactly `expected`'s names, with its shapes and the same kind of dtype (float /
    integer / bool), else one line naming the file and the first difference."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise SeglabError(f"{path}: expected a state dict of tensors")
    difference = name_difference(expected, state)
    if difference:
        raise SeglabError(f"{path}: weights do not match {what} ({difference})")
    for k, v in state.items():
        want = expected[k]
        if want.shape != v.shape:
            raise SeglabError(f"{path}: tensor {k!r} has shape {tuple(v.shape)}, {what} expects "
                              f"{tuple(want.shape)} (is num_classes right?)")
        if (v.is_floating_point(), v.dtype == torch.bool) != (want.is_floating_point(), want.dtype == torch.bool) \
                or (not want.is_floating_point() and v.dtype != want.dtype):
            raise SeglabError(f"{path}: tensor {k!r} is {v.dtype}, {what} expects {want.dtype}")
