"""Training checkpoints: the whole training state (model, optimizer, schedule, gradient scaler, epoch,
history, the run's config and process count), written atomically (temp file + rename) and read back
with `weights_only=True`, so loading never executes code. No random-generator state is stored: every
epoch restarts its random streams from (seed, epoch) (`engine/sampling.py`), so a run resumed at an
epoch boundary continues exactly. Model weights for use are saved separately as safetensors
(`seglab.save_model`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import SeglabError
from ..utils.io import atomic_path
from ..utils.state_dict import check_state_dict, load_torch_file


def save_checkpoint(path, state: dict) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # through a Python file, a failed write surfaces as an OSError (disk full)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """A training state written by `save_checkpoint`, its tensors on `map_location` (trained on a GPU,
    resumed or evaluated on a CPU, and the other way round)."""
    path = Path(path)
    if not path.is_file():
        raise SeglabError(f"checkpoint not found: {path}")
    state = load_torch_file(path, "checkpoint", map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise SeglabError(f"{path}: not a seglab training checkpoint (expected a dict with 'model')")
    return state


# Config keys that may change between a run and its resumption without changing what it computes.
# train.epochs may grow (or shrink) to continue a run: the poly schedule then decays over the new count.
RESUME_FREE_KEYS = ("train.out_dir", "train.device", "data.root", "data.num_workers", "train.val_interval",
                    "train.max_minutes", "train.val_every_minutes", "train.epochs")


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: saved -> current' for every leaf that differs (dotted keys), outside RESUME_FREE_KEYS."""
    out = []
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if path in RESUME_FREE_KEYS:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{path}.")
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")
    return out


def check_resume(state: dict, path: Path, *, config: dict, world_size: int) -> None:
    """A resumed run must be the same run: the same config (up to RESUME_FREE_KEYS) and process count."""
    saved_world = state.get("world_size", 1)
    if not isinstance(saved_world, int) or not isinstance(state.get("config", {}), dict):
        raise SeglabError(f"{path}: not a seglab training checkpoint (world_size or config has the wrong type)")
    if saved_world != world_size:
        raise SeglabError(f"--resume: {path} was written by a run with {saved_world} process(es), this one has "
                          f"{world_size}; resume with the same number of processes (the global batch and the "
                          f"data order depend on it)")
    if "config" in state:
        diffs = config_differences(state["config"], config)
        if diffs:
            shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
            raise SeglabError(f"--resume: the config differs from the run in {path.parent} ({shown}); resume "
                              f"with that run's config.yaml, or start a new run in another train.out_dir")


def restore_training_state(state: dict, path: Path, *, model, optimizer, scheduler, scaler) -> tuple[int, list, dict]:
    """Load a checked training state into the run's objects; returns (next epoch, history, best). A state
    that does not fit (another architecture or optimizer, missing or mistyped entries) is one line
    naming the file."""
    check_state_dict(state.get("model"), model.state_dict(), path, "the config's model")
    try:
        epoch, history, best = state["epoch"], state["history"], state["best"]
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0 or not isinstance(history, list) \
                or not isinstance(best, dict):
            raise TypeError("epoch, history or best has the wrong type")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        first = (str(e).splitlines() or [""])[0][:160]
        raise SeglabError(f"{path}: not a usable training state for this run ({type(e).__name__}: {first}); "
                          f"start a new run in another train.out_dir") from None
    return epoch + 1, list(history), dict(best)
