"""Fine-tuning: starting from a trained model on a new task.

- `match_state_dict`: which tensors of a weights file go into a model. Strict by default; with
  `reinit_heads` (config `model.reinit_heads: true`) a file trained for another class count loads into
  the new model: every tensor whose name and shape match is kept, the tensors whose shape depends on the
  class count (found by building the same architecture with one class more: the classifiers, EncNet's
  SE-loss layer, ...) start from N(0, 0.01) weights and zero biases (as torchvision's and mmsegmentation's
  heads; the entrypoints' He initialisation of a 1024 -> 2 classifier gives logits in the tens and a first
  loss near 10, whose gradients disturb the pretrained trunk), auxiliary heads absent from the file (a
  packed model ships without them) keep the model's fresh initialisation, and the report names them. Anything else that does not fit (another
  architecture, other widths) is still an error: re-initialising a trunk silently would be training from
  scratch under a pretrained name.
- `trunk_prefixes`, `freeze_modules`: the pretrained trunk of a model (`train.freeze: [backbone]`,
  `train.backbone_lr_mult`): its `backbone` module, or the modules a model lists in `backbone_modules`
  (BiSeNet V2 has no ImageNet backbone: its detail and semantic branches are the trunk); any other entry
  of `train.freeze` names a module by its dotted path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, SeglabError


@dataclass
class WeightsReport:
    """What `load_weights` did with a file: tensors kept, re-initialised, and left out of the file."""
    path: Path
    kept: int
    reinitialised: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        s = f"weights {self.path}: {self.kept} tensors loaded"
        if self.reinitialised:
            s += f"; re-initialised (model.reinit_heads): {', '.join(self.reinitialised)}"
        if self.dropped:
            s += f"; not used (auxiliary heads the model is built without): {_short(self.dropped)}"
        return s


def _short(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _is_aux(key: str) -> bool:
    return any(part.startswith("aux") for part in key.split("."))


def class_dependent_keys(model: nn.Module) -> set[str]:
    """Keys whose shape changes with the class count: the same entrypoint built with one class more."""
    from .registry import get_entrypoint

    cfg = getattr(model, "seglab_config", None)
    if not cfg:
        return set()
    other = get_entrypoint(cfg["name"])(num_classes=cfg["num_classes"] + 1, **cfg.get("kwargs", {}))
    theirs = other.state_dict()
    return {k for k, v in model.state_dict().items() if k in theirs and theirs[k].shape != v.shape}


def match_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path, *,
                     reinit_heads: bool = False) -> tuple[dict[str, torch.Tensor], WeightsReport]:
    """(a full state dict for `model` built from `state`, the report) or a one-line error naming `path`."""
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    dropped = [k for k in unexpected if _is_aux(k)]  # trained with aux heads, used without them
    unexpected = [k for k in unexpected if not _is_aux(k)]
    missing = sorted(set(own) - set(state))
    shapes = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
    if unexpected:
        raise SeglabError(f"{path}: weights do not match the model {_model(model)} (unexpected "
                          f"{_short(unexpected, 3)}; missing {_short(missing, 3) or 'none'})")
    reinit: list[str] = []
    heads: set[str] = set()
    if missing or shapes:
        if not reinit_heads:
            first = shapes[0] if shapes else None
            what = (f"tensor {first!r} has shape {tuple(state[first].shape)}, the model expects "
                    f"{tuple(own[first].shape)}" if first else f"missing {_short(missing, 3)}")
            raise SeglabError(f"{path}: weights do not fit the model {_model(model)} ({what}); is num_classes "
                              f"right? To fine-tune to another class count or without its auxiliary heads, set "
                              f"model.reinit_heads=true (keeps every matching tensor, re-initialises the "
                              f"classifier and auxiliary heads)")
        heads = class_dependent_keys(model)
        other = [k for k in shapes if k not in heads] + [k for k in missing if not _is_aux(k) and k not in heads]
        if other:
            detail = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" if k in state else f"{k} "
                               f"missing" for k in other[:3])
            raise SeglabError(f"{path}: weights do not fit the model {_model(model)} beyond its classifier and "
                              f"auxiliary heads ({detail}{'...' if len(other) > 3 else ''}): another architecture "
                              f"or other model.kwargs than the file was trained with?")
        reinit = sorted(set(shapes) | set(missing))
    merged = {k: (_fresh(own[k], k in heads) if k in reinit else state[k]) for k in own}
    return merged, WeightsReport(Path(path), kept=len(own) - len(reinit), reinitialised=_group(reinit),
                                 dropped=dropped)


def _fresh(t: torch.Tensor, classifier: bool) -> torch.Tensor:
    """The model's own initialisation, except classifier tensors: N(0, 0.01) weights and zero biases (the
    heads of torchvision and mmsegmentation), so the first steps send no large gradients into the trunk."""
    if not classifier or not t.is_floating_point():
        return t
    return torch.randn_like(t) * 0.01 if t.dim() > 1 else torch.zeros_like(t)


def _model(model: nn.Module) -> str:
    cfg = getattr(model, "seglab_config", {})
    return f"{cfg.get('name', type(model).__name__)} ({cfg.get('num_classes', '?')} classes)"


def _group(keys: list[str]) -> list[str]:
    """Re-initialised keys grouped by module (`aux_heads.0.* (8 tensors)`), so the log stays one line."""
    by_module: dict[str, list[str]] = {}
    for k in keys:
        parts = k.split(".")
        module = ".".join(parts[:2]) if _is_aux(k) and len(parts) > 2 else ".".join(parts[:-1])
        by_module.setdefault(module, []).append(k)
    out = []
    for module, ks in by_module.items():
        out += ks if len(ks) <= 2 else [f"{module}.* ({len(ks)} tensors)"]
    return out


# --- the trunk: freezing and a lower learning rate ---------------------------------------------------------

def trunk_prefixes(model: nn.Module) -> list[str]:
    """Module paths of the model's pretrained trunk: `backbone`, or the model's `backbone_modules`."""
    names = getattr(model, "backbone_modules", None)
    if names is None:
        names = ("backbone",) if isinstance(getattr(model, "backbone", None), nn.Module) else ()
    if not names:
        top = ", ".join(n for n, _ in model.named_children())
        raise ConfigError(f"model {_model(model)} has no backbone module; name its modules instead "
                          f"(train.freeze: [...]; top-level modules: {top})")
    return list(names)


def resolve_module_names(model: nn.Module, names: list[str]) -> list[str]:
    """`train.freeze` entries as module paths ('backbone' -> the trunk); unknown paths raise."""
    modules = dict(model.named_modules())
    out: list[str] = []
    for name in names:
        paths = trunk_prefixes(model) if name == "backbone" else [name]
        for p in paths:
            if p not in modules:
                top = ", ".join(n for n, _ in model.named_children())
                raise ConfigError(f"train.freeze: model {_model(model)} has no module {p!r} (top-level "
                                  f"modules: {top}; 'backbone' names the pretrained trunk)")
            out.append(p)
    return out


def freeze_modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Stop gradients into the named modules (`requires_grad=False`); returns them so the training loop
    keeps them in eval mode (BatchNorm statistics frozen too, as Detectron2's FrozenBatchNorm does)."""
    modules = dict(model.named_modules())
    frozen = [modules[p] for p in resolve_module_names(model, names)]
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen


def trunk_parameters(model: nn.Module) -> set[int]:
    """ids of the trunk's parameters (for `train.backbone_lr_mult`)."""
    modules = dict(model.named_modules())
    return {id(p) for prefix in trunk_prefixes(model) for p in modules[prefix].parameters()}
