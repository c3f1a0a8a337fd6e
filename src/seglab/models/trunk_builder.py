"""One builder for the instance models that sit on a ResNet trunk at a fixed output stride (MNC,
InstanceFCN, the proposal-free network, InstanceCut, SGN): the entrypoint's keyword arguments that name
a constructor parameter of the model go to the model, the rest to `create_backbone` (`width`, ...), and
settings the model cannot honour fail with a one-line `SeglabError`. Not a model family: it registers
nothing."""
from __future__ import annotations

import inspect

from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError

__all__ = ["build_on_trunk"]


def build_on_trunk(model_cls: type[nn.Module], trunk: str, *, entrypoint: str, stride: int, num_classes: int,
                   in_channels: int, backbone_weights: str | None, aux_loss: bool, kwargs: dict) -> nn.Module:
    """`model_cls(create_backbone(trunk, output_stride=stride, ...), num_classes, **model kwargs)`."""
    if aux_loss:
        raise SeglabError(f"{entrypoint} has no auxiliary head; use aux_loss=False")
    if kwargs.get("output_stride", stride) != stride:
        raise SeglabError(f"{entrypoint}: the trunk runs at output_stride {stride}, got {kwargs['output_stride']}")
    kwargs = {k: v for k, v in kwargs.items() if k != "output_stride"}
    own_names = [p for p in inspect.signature(model_cls).parameters if p not in ("backbone", "num_classes")]
    own = {k: kwargs.pop(k) for k in own_names if k in kwargs}
    backbone = create_backbone(trunk, weights=backbone_weights, in_channels=in_channels, output_stride=stride,
                               **kwargs)
    return model_cls(backbone, num_classes, **own)
