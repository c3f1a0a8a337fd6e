"""Folding BatchNorm into the convolution before it, for inference.

In eval mode BatchNorm is a per-channel affine map, y = (x - mean) / sqrt(var + eps) * gamma + beta, so a
convolution followed by it is one convolution with scaled weights and a shifted bias (the folding of
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, Sec. 3.2; `torch.nn.utils.fusion.fuse_conv_bn_eval` does the arithmetic). It saves
one pass over every activation map.

Which BatchNorm follows which convolution is found by running the model once on an example input with
hooks: a BatchNorm whose input is the very tensor a Conv2d returned (each called once) is folded into
it and replaced by `nn.Identity`. The folded copy is checked against the original on the example:
`fold_conv_bn` raises if the outputs differ by more than float rounding, so a model whose convolution
output is also used elsewhere (which folding would change) is never folded silently.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import SeglabError


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flat(v)]
    return [t for v in vars(out).values() for t in _flat(v)] if hasattr(out, "__dict__") else []


def conv_bn_pairs(model: nn.Module, run: Callable[[nn.Module], Any]) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name) pairs where the BatchNorm reads the convolution's output directly,
    found by one `run(model)` with hooks."""
    outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # the tensors kept alive: ids stay unique
    calls: dict[nn.Module, int] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(module, _inputs, output):
        calls[module] = calls.get(module, 0) + 1
        outputs[id(output)] = (module, output)

    def before_bn(module, inputs):
        calls[module] = calls.get(module, 0) + 1
        conv, output = outputs.get(id(inputs[0]), (None, None))
        if conv is not None and output is inputs[0]:
            pairs.append((conv, module))

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(after_conv))
        elif isinstance(m, nn.BatchNorm2d):
            hooks.append(m.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            run(model)
    finally:
        for h in hooks:
            h.remove()
    names = {m: n for n, m in model.named_modules()}
    return [(names[c], names[b]) for c, b in pairs if calls[c] == 1 and calls[b] == 1
            and type(b) is nn.BatchNorm2d and b.track_running_stats and c.out_channels == b.num_features]


def fold_conv_bn(model: nn.Module, run: Callable[[nn.Module], Any], *, rtol: float = 1e-4) -> tuple[nn.Module, int]:
    """(a copy of `model` in eval mode with every foldable BatchNorm folded into its convolution, the number
    folded). `run(model)` calls the model on an example input; the copy's outputs on it must equal the
    original's within `rtol` of their largest magnitude, else `SeglabError`."""
    model = model.eval()
    folded = copy.deepcopy(model)
    pairs = conv_bn_pairs(folded, run)
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        fused = fuse_conv_bn_eval(conv, bn)
        conv.weight, conv.bias = fused.weight, fused.bias
        parent, _, attr = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent), attr, nn.Identity())
    folded.eval()  # the new Identity modules too: some forwards branch on `module.training`
    if hasattr(model, "seglab_config"):
        folded.seglab_config = model.seglab_config
    with torch.no_grad():
        ref, got = _flat(run(model)), _flat(run(folded))
    for a, b in zip(ref, got):
        if a.is_floating_point():
            scale = a.abs().max().item() + 1e-6
            if (a.float() - b.float()).abs().max().item() > rtol * scale:
                raise SeglabError("folding BatchNorm changed the model's outputs (a convolution's output is also "
                                  "read elsewhere); predict with backend 'eager'")
    return folded, len(pairs)
