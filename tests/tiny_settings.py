"""Tiny-width settings per entrypoint for the model contracts: one YAML file per family in a folder of
tests/models/ (`tiny/` semantic, `tiny_instance/`, `tiny_panoptic/`), `entrypoint: {kwarg: value}`."""
from __future__ import annotations

from pathlib import Path

import yaml


def load_tiny_settings(folder: str) -> dict[str, dict]:
    settings: dict[str, dict] = {}
    for f in sorted((Path(__file__).parent / "models" / folder).glob("*.yaml")):
        for name, kwargs in (yaml.safe_load(f.read_text()) or {}).items():
            assert name not in settings, f"{name} has tiny settings in two files"
            settings[name] = kwargs or {}
    return settings
