"""Load torchvision checkpoints (local files; nothing is downloaded) into seglab models.

Backbones (`load_backbone_weights`): ImageNet classifiers.
- resnet18/34/50/101: seglab's ResNet uses torchvision's parameter names; only the classifier `fc.*`
  is dropped.
- detnet59: not a torchvision model; the ImageNet checkpoint of the DetNet_pytorch release
  (`detnet59.pth`) has seglab's names (ResNet layout + `layer4/5.*.extra_conv`), `fc.*` is dropped.
- densenet121/161: seglab's DenseNet uses torchvision's names; `classifier.*` is dropped, the
  `denselayerN.norm.1`-style keys of the published ImageNet files are renamed (`norm1`), missing BatchNorm
  step counters are set to 0, and `features.norm5.*` is dropped for a trunk built without it (DenseASPP).
- vgg16: `features.*` load as they are; the fully connected layers become convolutions (FCN, Long et
  al., CVPR 2015, Sec. 3.1): `classifier.0` (4096 x 25088) -> `fc6` (4096, 512, 7, 7), `classifier.3`
  -> `fc7` (4096, 4096, 1, 1); `classifier.6` (the 1000 ImageNet classes) is dropped. When the trunk's
  fc6/fc7 are smaller, e.g. DeepLab-LargeFOV's 1024-channel 3x3 fc6 (Chen et al., ICLR 2015, Sec. 4.1),
  they are subsampled as DeepLab did: every 4th channel and every 3rd tap (`w[::4, :, ::3, ::3]`).

- mobilenetv2 (torchvision `mobilenet_v2`): seglab's trunk keeps torchvision's names (`features.0 ..
  features.17`); the 1x1 conv to 1280 channels `features.18.*` and the classifier are dropped.
- xception65: timm's layout (`seglab.convert.timm`).

Whole models (`convert_model_state_dict`): torchvision segmentation checkpoints. seglab's FCN-ResNet
(fcn_resnet50/101) and DeepLab v3 (deeplabv3_resnet50/101: `classifier.0.convs.*` /
`classifier.0.project.*` ASPP, `classifier.1/2/4`, FCN `aux_classifier`) keep torchvision's layout, so
the mapping is the identity plus dropping the auxiliary head when the model has none; `_RENAMES` is
where a layout that differs adds its rules. Mask R-CNN (maskrcnn_resnet50_fpn -> mask_rcnn_resnet50_fpn
with num_classes=90, torchvision's 91 with background): `backbone.body.*` -> `backbone.*`,
`backbone.fpn.*` -> `fpn.*`, the rest as is; its FrozenBatchNorm2d trunk has no `num_batches_tracked`
(set to 0).
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import SeglabError
from ..utils.state_dict import read_state_dict
from . import timm

# (regex on a torchvision key, replacement) applied in order to whole-model checkpoints; FCN and
# DeepLab v3 need none (their module names are torchvision's). Mask R-CNN (maskrcnn_resnet50_fpn):
# the trunk and FPN sit under `backbone.body` / `backbone.fpn` there, `backbone` / `fpn` here;
# `rpn.*` and `roi_heads.*` keep their names.
_RENAMES: list[tuple[str, str]] = [(r"^backbone\.body\.", "backbone."), (r"^backbone\.fpn\.", "fpn.")]
# Heads a torchvision checkpoint may carry that a seglab model may be built without (aux_loss=False).
_OPTIONAL_PREFIXES = ("aux_classifier.",)


def _fill_step_counters(state: dict, target: dict) -> dict:
    """Zero `num_batches_tracked` for every BatchNorm of `target` whose statistics `state` holds but whose
    step counter it lacks (checkpoints written before PyTorch 0.4.1, or from FrozenBatchNorm2d)."""
    for k in target:
        if k.endswith(".num_batches_tracked") and k not in state and k[:-20] + ".running_mean" in state:
            state[k] = torch.zeros_like(target[k], device="cpu")
    return state


def _resnet(state: dict, target: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _subsample(w: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """DeepLab's reduction of the ImageNet fc weights: a step per dim so that dim fits `shape`
    (channels: 4096 -> 1024 takes every 4th; taps: 7 -> 3 takes every 3rd, i.e. 0, 3, 6)."""
    if w.shape == shape or w.dim() != len(shape):
        return w  # a wrong rank is reported by the shape check
    steps = [max(a // b, 1) if i < 2 else max((a - 1) // max(b - 1, 1), 1)
             for i, (a, b) in enumerate(zip(w.shape, shape))]
    return w[tuple(slice(None, None, s) for s in steps)]


def _vgg16(state: dict, target: dict) -> dict:
    out = {k: v for k, v in state.items() if k.startswith("features.")}
    if "fc6.weight" in target:  # trunk built with fc=True
        fc6 = state.get("classifier.0.weight")
        fc7 = state.get("classifier.3.weight")
        if fc6 is not None:  # (out, C*7*7) -> (out, C, 7, 7): torchvision flattens pool5 as C, H, W
            fc6 = fc6.reshape(fc6.shape[0], -1, 7, 7)
            out["fc6.weight"] = _subsample(fc6, target["fc6.weight"].shape)
            out["fc6.bias"] = _subsample(state["classifier.0.bias"], target["fc6.bias"].shape)
        if fc7 is not None:
            out["fc7.weight"] = _subsample(fc7[:, :, None, None], target["fc7.weight"].shape)
            out["fc7.bias"] = _subsample(state["classifier.3.bias"], target["fc7.bias"].shape)
    return out


# torchvision's DenseNet checkpoints predate '.'-free module names: `denselayerN.norm.1.weight` there is
# `denselayerN.norm1.weight` in the model (torchvision's `_load_state_dict` renames them the same way).
_DENSELAYER_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$")


def _densenet(state: dict, target: dict) -> dict:
    out = {}
    for key, v in state.items():
        if key.startswith("classifier."):
            continue
        m = _DENSELAYER_OLD_KEY.match(key)
        out[m[1] + m[2] if m else key] = v
    if "features.norm5.weight" not in target:  # a trunk built with final_norm=False (DenseASPP)
        out = {k: v for k, v in out.items() if not k.startswith("features.norm5.")}
    return _fill_step_counters(out, target)  # the 2017 checkpoint files have no BatchNorm step counters


def _mobilenet_v2(state: dict, target: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(("features.18.", "classifier."))}


_BACKBONES = {"resnet18": _resnet, "resnet34": _resnet, "resnet50": _resnet, "resnet101": _resnet,
              "vgg16": _vgg16, "detnet59": _resnet, "densenet121": _densenet, "densenet161": _densenet,
              "mobilenetv2": _mobilenet_v2, "xception65": timm.xception65}


def map_backbone_state_dict(model: nn.Module, name: str, state: dict) -> dict:
    """Map a torchvision ImageNet state dict of network `name` onto `model`'s keys (not yet loaded)."""
    if name not in _BACKBONES:
        raise SeglabError(f"no torchvision weight mapping for backbone {name!r} "
                          f"(supported: {', '.join(sorted(_BACKBONES))})")
    return _BACKBONES[name](state, model.state_dict())


def _mismatch(own: dict, state: dict) -> str | None:
    """One-line description of the first differences between two state dicts, or None."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    parts = [f"{what} {items[:3]}{'...' if len(items) > 3 else ''}"
             for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items]
    return "; ".join(parts) or None


def load_backbone_weights(model: nn.Module, name: str, path) -> None:
    """Load a local torchvision ImageNet checkpoint of `name` into seglab backbone `model`, strictly."""
    state = map_backbone_state_dict(model, name, read_state_dict(path))
    problem = _mismatch(model.state_dict(), state)
    if problem:
        source = "timm" if name == "xception65" else "torchvision"
        raise SeglabError(f"{path}: {source} {name} ImageNet weights do not fit this backbone ({problem})")
    model.load_state_dict(state, strict=True)


def convert_model_state_dict(model: nn.Module, state: dict, *, allow_missing: bool = False) -> dict:
    """Map a torchvision whole-model checkpoint (fcn_resnet50/101, deeplabv3_resnet50/101, with or
    without aux; maskrcnn_resnet50_fpn into mask_rcnn_resnet50_fpn at num_classes=90) onto `model`.

    Returns the renamed state dict; the caller (`seglab.hub.load_weights`) checks shapes and loads it
    strictly. Raises `SeglabError` when the checkpoint lacks tensors the model needs, unless
    `allow_missing` (fine-tuning: the caller decides which missing tensors may stay initialised).
    """
    out = {}
    for key, v in state.items():
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = v
    own = model.state_dict()
    for prefix in _OPTIONAL_PREFIXES:  # trained with an aux head, used without one: drop it
        if not any(k.startswith(prefix) for k in own):
            out = {k: v for k, v in out.items() if not k.startswith(prefix)}
    out = _fill_step_counters(out, own)  # FrozenBatchNorm2d checkpoints (Mask R-CNN) have none
    missing = [k for k in own if k not in out]
    if missing and not allow_missing:
        hint = ""
        if all(k.startswith(_OPTIONAL_PREFIXES) for k in missing):
            hint = " (the checkpoint has no auxiliary head: build the model with aux_loss=False)"
        raise SeglabError(f"checkpoint lacks {len(missing)} tensors the model needs, e.g. {missing[:3]}{hint}")
    return out
