"""Fake torchvision checkpoints for the converter tests: random tensors of exactly the shapes in
torchvision's key lists (tests/fixtures/torchvision_keys, copied from the project's reference data)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "torchvision_keys"
TIMM_FIXTURES = FIXTURES.parent / "timm_keys"  # timm layouts (xception65), see fixtures/imagenet_layouts.py


def _repeat_block(base: dict, stage: str, blocks: int, drop: str | None = None) -> dict:
    """Layout with `blocks` blocks in `stage` (e.g. 'layer3.'), made by repeating block 1 of `base`."""
    out = {}
    for k, s in base.items():
        m = re.match(rf"(.*{re.escape(stage)})1\.(.*)", k)
        if m is None:
            if drop is None or not re.match(drop, k):
                out[k] = s
        else:
            for b in range(1, blocks):
                out[f"{m[1]}{b}.{m[2]}"] = s
    return out


def keys(name: str) -> dict[str, list[int]]:
    """{key: shape} of torchvision model `name`; resnet34 and deeplabv3_resnet101* are derived."""
    if name == "resnet34":  # resnet18's layout with blocks (3, 4, 6, 3)
        out = keys("resnet18")
        for i, blocks in enumerate((3, 4, 6, 3), 1):
            out = _repeat_block(out, f"layer{i}.", blocks)
        return out
    if name.startswith("deeplabv3_resnet101"):  # resnet50's layout with 23 blocks in layer3
        return _repeat_block(keys(name.replace("resnet101", "resnet50")), "backbone.layer3.", 23,
                             drop=r"backbone\.layer3\.[2-5]\.")
    if (TIMM_FIXTURES / f"{name}.json").is_file():
        return json.loads((TIMM_FIXTURES / f"{name}.json").read_text())
    return json.loads((FIXTURES / f"{name}.json").read_text())


def fake_state(name: str, device: str = "cpu", seed: int | None = None) -> dict[str, torch.Tensor]:
    """Random tensors of exactly torchvision's shapes, scaled so a full forward stays finite."""
    if seed is not None:
        torch.manual_seed(seed)
    state = {}
    for k, shape in keys(name).items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7, dtype=torch.int64, device=device)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, device=device) + 0.5
        elif len(shape) > 1:  # conv / linear weights: fan-in scaling
            state[k] = torch.randn(shape, device=device) / torch.Size(shape[1:]).numel() ** 0.5
        else:
            state[k] = 0.1 * torch.randn(shape, device=device) + (1.0 if k.endswith(".weight") else 0.0)
    return state
