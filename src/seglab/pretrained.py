"""The weights registry: the models shipped inside the package, and a card for any seglab model file.

Every `<arch>.<data>.safetensors` in `seglab/weights/` is a shipped model, usable by name wherever a
weights file is accepted (`model.weights`, `--checkpoint`, `load_model`, `create_model(weights=)`). Its
card comes from the file itself (the architecture, class names, normalisation, stored prediction settings
and the validation figures `seglab train` records) and from an optional `<arch>.<data>.json` beside it for
what a file cannot know about itself:

    {"dataset": "...", "input_scale": "...", "figure": "...", "command": "...", "docs": "..."}

(`figure` overrides the figure derived from the recorded validation values). Nothing is hard-coded here:
a file dropped into `seglab/weights/` (with or without its JSON) is listed.
"""
from __future__ import annotations

import json

from .errors import SeglabError
from .hub import PACKAGE_WEIGHTS, read_model_metadata, resolve_model_file, shipped_model_names

CARD_KEYS = ("dataset", "input_scale", "figure", "command", "eval_command", "docs")
# validation values `seglab train` records in best.safetensors, in the order a card shows them
_FIGURES = (("val_mIoU", "val mIoU"), ("val_mask_AP", "val mask AP"), ("val_mask_AP50", "val mask AP50"),
            ("val_PQ", "val PQ"))


def model_card(name_or_path) -> dict:
    """The card of a shipped model (by name) or of any seglab model file: name, file, size, task,
    architecture, classes, dataset, input_scale, figure, command (how to reproduce it), docs, and the
    stored prediction settings."""
    from .registry import model_task

    path = resolve_model_file(name_or_path)
    meta = read_model_metadata(path)
    shipped = path.parent.resolve() == PACKAGE_WEIGHTS.resolve()
    name = path.name[:-len(".safetensors")] if path.name.endswith(".safetensors") else path.stem
    side = path.with_name(f"{name}.json")
    extra = {}
    if side.is_file():
        try:
            extra = json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise SeglabError(f"{side}: not valid JSON ({e})") from None
    classes = meta.get("classes") or [str(i) for i in range(meta["num_classes"])]
    card = {
        "name": name if shipped else str(path),
        "file": str(path),
        "size_mb": round(path.stat().st_size / 1e6, 1),
        "task": _task(model_task, meta["name"]),
        "architecture": meta["name"] + "".join(f" {k}={v}" for k, v in meta.get("kwargs", {}).items()),
        "num_classes": meta["num_classes"],
        "classes": classes,
        "dataset": meta.get("dataset"),
        "input_scale": None,
        "figure": _figure(meta),
        "command": None,
        "eval_command": None,
        "docs": None,
        "inference": meta.get("inference"),
        "mean": meta.get("mean"),
        "std": meta.get("std"),
    }
    card.update({k: v for k, v in extra.items() if k in CARD_KEYS and v is not None})
    if card["command"] is None and not shipped:
        config = path.parent / "config.yaml"
        if config.is_file():
            card["command"] = f"seglab train {config}"
    return card


def _task(model_task, name: str) -> str:
    try:
        return model_task(name)
    except SeglabError:
        return "unknown (architecture not registered in this version)"


def _figure(meta: dict) -> str | None:
    parts = [f"{label} {100 * meta[key]:.2f}" for key, label in _FIGURES if isinstance(meta.get(key), (int, float))]
    if not parts:
        return None
    epoch = f" (epoch {meta['epoch']})" if meta.get("epoch") else ""
    return ", ".join(parts) + epoch


def list_pretrained(pattern: str | None = None) -> list[dict]:
    """The cards of every model shipped in `seglab/weights/`, optionally filtered by a substring of the
    name, task, architecture or data set."""
    cards = [model_card(n) for n in shipped_model_names()]
    if pattern:
        p = pattern.lower()
        cards = [c for c in cards if any(p in str(c.get(k) or "").lower() for k in ("name", "task", "architecture",
                                                                                   "dataset"))]
    return cards


def format_card(card: dict) -> str:
    """The card as aligned `key: value` lines (`seglab info`)."""
    classes = card["classes"]
    shown = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)" if len(classes) > 20 else "")
    rows = [("name", card["name"]), ("file", f"{card['file']} ({card['size_mb']} MB)"), ("task", card["task"]),
            ("architecture", card["architecture"]), ("data set", card["dataset"]),
            ("classes", f"{card['num_classes']}: {shown}"), ("input scale", card["input_scale"]),
            ("figure", card["figure"]), ("reproduce", card["command"]), ("evaluate", card["eval_command"]),
            ("prediction defaults", json.dumps(card["inference"]) if card["inference"] else None),
            ("normalisation", f"mean {card['mean']}, std {card['std']}" if card["mean"] else None),
            ("docs", card["docs"])]
    return "\n".join(f"{k + ':':<21}{v}" for k, v in rows if v not in (None, ""))


def pretrained_table(cards: list[dict]) -> str:
    """One line per shipped model (`seglab models --pretrained`)."""
    if not cards:
        return f"no pretrained models shipped (none in {PACKAGE_WEIGHTS})"
    width = max(26, *(len(c["name"]) for c in cards))  # names line up however long the longest is
    lines = [f"{'name':<{width}} {'task':<9} {'data set':<28} {'classes':>7}  figure"]
    for c in cards:
        dataset = (c["dataset"] or "-").split(" (")[0]
        lines.append(f"{c['name']:<{width}} {c['task']:<9} {dataset:<28} {c['num_classes']:>7}  {c['figure'] or '-'}")
    lines.append("seglab info NAME prints a model's card (classes, input scale, the command that reproduces it); "
                 "use NAME wherever a weights file goes (model.weights=NAME, --checkpoint NAME)")
    return "\n".join(lines)


__all__ = ["model_card", "list_pretrained", "format_card", "pretrained_table"]
