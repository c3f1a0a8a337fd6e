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
    except Exception as e:  # corrupt or foreign file
        raise SeglabError(f"{p}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SeglabError(f"{p}: expected a state dict of tensors")
    return obj
