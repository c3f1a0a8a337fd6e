"""Load timm ImageNet checkpoints (local files; nothing is downloaded) into seglab backbones.

- xception65: timm's `xception65` (timm/models/xception_aligned.py, Ross Wightman's port of the
  TensorFlow DeepLab Xception-65 ImageNet checkpoint, `tf_xception_65-c9ae96e8.pth`, now published as
  `xception65.tf_in1k`; `xception65.ra3_in1k` has the same layout). seglab's `Xception65` uses timm's
  parameter names (`stem.N.conv/bn`, `blocks.N.shortcut.conv/bn`, `blocks.N.stack.convK.{conv_dw, bn_dw,
  conv_pw, bn_pw}`), so only the ImageNet classifier `head.fc.*` is dropped.
"""
from __future__ import annotations


def xception65(state: dict, target: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("head.")}
