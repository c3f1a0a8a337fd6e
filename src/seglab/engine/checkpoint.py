"""Training checkpoints: the whole training state (model, optimizer, schedule, epoch, RNG states),
written atomically (temp file + rename) and read back with `weights_only=True`, so loading never
executes code. Model weights for use are saved separately as safetensors (`seglab.save_model`)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..errors import SeglabError
from ..utils.io import atomic_path


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state holds an ndarray, which the weights-only loader refuses; store it as a tensor.
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path, state: dict) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SeglabError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SeglabError(f"{path}: cannot read checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
