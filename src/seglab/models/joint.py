"""Joint label spaces: one network, one shared trunk, one classifier per label set.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, Sec. 5
("SIFT Flow"; TPAMI 2017, Sec. 5): an FCN-16s with two output heads, 33 semantic and 3 geometric
classes (sky, horizontal, vertical), trained jointly; "learning and inference have similar performance
and computation as independent models". The release (`siftflow-fcn16s/net.py`) shares VGG-16 up to
fc7 and gives each label space its own `score_fr`, `upscore2`, `score_pool4` and `upscore16`, and its
own softmax loss; the total loss is their sum.

`joint16s_vgg16` follows that net:
- VGG-16 trunk up to fc7 (7x7 fc6 and 1x1 fc7, 4096 channels, dropout 0.5), shared by every space.
- Per space: 1x1 `score_fr` on fc7 and `score_pool4` on pool4 (zero-initialised, FCN Sec. 4.1), a 2x
  transposed conv (kernel 4) on the fc7 scores, crop + sum with the pool4 scores, a 16x transposed
  conv (kernel 32) to the input; both transposed convs start as bilinear interpolation and have no
  bias, as in the release.
- Deviations, the same as seglab's single-space `fcn16s_vgg16` (see `seglab.models.fcn`): the upsamplers
  stay learnable (the release freezes them with lr_mult 0; same parameter count, same starting
  function); pools use ceil mode with a top-left crop instead of the 100-pixel input padding; pool4 is
  scaled by 0.01 (`skip_scale=True`) because seglab trains at once, not staged from FCN-32s (the
  release's SIFT Flow net starts from its FCN-32s weights and does not scale).
`joint_resnet18` is the light CPU variant: a dilated ResNet-18 (output stride 8) shared, and per space
the torchvision-style FCN head of `fcn_resnet18` (3x3 conv C -> C/4 + BN + ReLU + dropout 0.1 + 1x1
conv, bilinear upsampling), with an optional auxiliary head per space on layer3 (`aux_loss=True`).

Parameter counts (`tests/models/test_joint.py`): `joint16s_vgg16` at 33 + 3 classes has 135,568,424
parameters: 134,260,544 in the shared trunk, 1,284,690 in the semantic head, 23,190 in the geometric
head (the 33 x 33 x 32 x 32 upscore16 kernel alone is 1,115,136), which is the sum of the layer shapes
of the release's `siftflow-fcn16s` net (the paper gives no count). Two independent FCN-16s nets (33
and 3 classes) hold 269,828,968: the joint net costs one trunk plus a second small head.

Label spaces and `num_classes`: `label_spaces` maps each space's name to its class count, in order,
e.g. `{"semantic": 33, "geometric": 3}`. The first space is the primary one: `num_classes` must equal
its count (it is what `create_model`, saved model files and class names / palettes describe). Without
`label_spaces` the model takes the paper's pairing, `{"semantic": num_classes, "geometric": 3}`.

Contract (registered with task="joint"): `forward(images)` returns `{space: logits (N, K_space, H, W)}`
at the input size, in eval and in training; with `aux_loss=True`, in training each space's entry is
`{"out": logits, "aux": aux_logits}` (the semantic models' form, so each space's loss is the ordinary
`SegmentationLoss`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..errors import ConfigError
from ..layers import resize_to
from ..registry import register_model
from .fcn import FCNHead, add_skip_scores, fuse_skip_scores

__all__ = ["FCNConvHead", "FCNSkipScoreHead", "JointFCN", "check_label_spaces"]

_SPACE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_label_spaces(label_spaces: Mapping[str, int] | None, num_classes: int) -> dict[str, int]:
    """Validated `{name: class count}`; None means `{"semantic": num_classes, "geometric": 3}`."""
    if label_spaces is None:
        return {"semantic": num_classes, "geometric": 3}
    if not isinstance(label_spaces, Mapping) or not label_spaces:
        raise ConfigError(f"label_spaces must be a non-empty mapping of name -> class count, got {label_spaces!r}")
    spaces = {}
    for name, count in label_spaces.items():
        # Names become module and metric keys; "out"/"aux" would read as a semantic model's output dict.
        if not isinstance(name, str) or not _SPACE_NAME.match(name) or name in ("out", "aux"):
            raise ConfigError(f"label space name {name!r} must be an identifier (letters, digits, _) "
                              f"other than 'out' and 'aux'")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 255:
            raise ConfigError(f"label space {name!r}: class count must be an integer in [1, 255], got {count!r}")
        spaces[name] = count
    first, first_count = next(iter(spaces.items()))
    if num_classes != first_count:
        raise ConfigError(f"num_classes is {num_classes} but the first label space {first!r} has "
                          f"{first_count} classes (num_classes is the first space's count)")
    return spaces


class FCNSkipScoreHead(nn.Module):
    """One label space's FCN-16s / 8s / 32s scoring on VGG features [pool1, pool2, pool3, pool4, fc7]."""

    def __init__(self, channels: Sequence[int], num_classes: int, *, stride: int = 16, skip_scale: bool = True):
        super().__init__()
        if stride not in (8, 16, 32):
            raise ConfigError(f"FCN stride must be 8, 16 or 32, got {stride}")
        add_skip_scores(self, channels, num_classes, stride=stride, skip_scale=skip_scale)

    def forward(self, feats: list[torch.Tensor], size) -> torch.Tensor:
        return fuse_skip_scores(self, feats, size)


class FCNConvHead(nn.Module):
    """One label space's torchvision-style FCN head on the last feature map (+ aux head on the one before)."""

    def __init__(self, channels: Sequence[int], num_classes: int, *, aux_loss: bool = False):
        super().__init__()
        self.classifier = FCNHead(channels[-1], num_classes)
        self.aux_classifier = FCNHead(channels[-2], num_classes) if aux_loss else None

    def forward(self, feats: list[torch.Tensor], size):
        out = resize_to(self.classifier(feats[-1]), size)
        if self.aux_classifier is None or not self.training:
            return out
        return {"out": out, "aux": resize_to(self.aux_classifier(feats[-2]), size)}


class JointFCN(nn.Module):
    """A shared trunk run once per image and one head per label space; forward -> {space: logits}."""

    def __init__(self, backbone: nn.Module, heads: Mapping[str, nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    @property
    def label_spaces(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: torch.Tensor) -> dict:
        size = x.shape[-2:]
        feats = self.backbone(x)
        return {name: head(feats, size) for name, head in self.heads.items()}


@register_model(task="joint")
def joint16s_vgg16(*, num_classes: int, label_spaces: Mapping[str, int] | None = None, in_channels: int = 3,
                   backbone_weights: str | None = None, aux_loss: bool = False, skip_scale: bool = True,
                   **kwargs) -> JointFCN:
    """FCN-16s on VGG-16 with one head per label space (the paper's SIFT Flow net). kwargs go to the
    trunk (`width_div`, `fc_channels`, `dropout`)."""
    if aux_loss:
        raise ConfigError("joint16s_vgg16 has no auxiliary head; use aux_loss=False")
    spaces = check_label_spaces(label_spaces, num_classes)
    backbone = create_backbone("vgg16", weights=backbone_weights, in_channels=in_channels, **kwargs)
    heads = {name: FCNSkipScoreHead(backbone.out_channels, k, stride=16, skip_scale=skip_scale)
             for name, k in spaces.items()}
    return JointFCN(backbone, heads)


@register_model(task="joint")
def joint_resnet18(*, num_classes: int, label_spaces: Mapping[str, int] | None = None, in_channels: int = 3,
                   backbone_weights: str | None = None, aux_loss: bool = False, output_stride: int = 8,
                   **kwargs) -> JointFCN:
    """Dilated ResNet-18 with an FCN head per label space (light CPU variant). kwargs go to the trunk
    (`width`, `multi_grid`)."""
    spaces = check_label_spaces(label_spaces, num_classes)
    backbone = create_backbone("resnet18", weights=backbone_weights, in_channels=in_channels,
                               output_stride=output_stride, **kwargs)
    heads = {name: FCNConvHead(backbone.out_channels, k, aux_loss=aux_loss) for name, k in spaces.items()}
    return JointFCN(backbone, heads)
