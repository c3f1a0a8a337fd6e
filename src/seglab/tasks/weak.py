"""Training from image-level labels (`train.supervision: image_labels`): MIL-FCN's recipe (Pathak,
Shelhamer, Long, Darrell, "Fully Convolutional Multi-Class Multiple Instance Learning", ICLR
workshop 2015) inside the ordinary training loop.

The training set yields images with multi-hot class lists, either from the class-list file
`data.image_labels` (see `seglab.data.image_labels`) or, without one, derived from the label maps of
the configured training split; the criterion is the multi-class MIL loss (`seglab.losses.mil`).
Validation is unchanged: pixel mIoU on the configured val split, whose classes the class lists use.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..config import Config
from ..errors import ConfigError


def uses_image_labels(cfg: Config) -> bool:
    """True for weak training; a class-list file given without it is a mistake, reported here."""
    weak = cfg.train.supervision == "image_labels"
    if cfg.data.image_labels is not None and not weak:
        raise ConfigError(f"data.image_labels is set ({cfg.data.image_labels!r}) but train.supervision is "
                          f"{cfg.train.supervision!r}; set train.supervision=image_labels to train from it")
    if weak and cfg.train.class_weights != "none":
        raise ConfigError(f"train.class_weights: {cfg.train.class_weights!r} needs pixel labels, expected 'none' "
                          "with train.supervision=image_labels")
    if weak and cfg.train.ohem is not None:
        raise ConfigError("train.ohem needs pixel labels, remove it with train.supervision=image_labels")
    return weak


def resolve_labels_file(cfg: Config) -> Path:
    """`data.image_labels` as given when it exists (or is absolute), else relative to `data.root`."""
    path = Path(cfg.data.image_labels)
    return path if path.is_absolute() or path.exists() else Path(cfg.data.root) / path


def build_image_label_train_set(cfg: Config, val, transform: Callable):
    """The weak training set: images through `transform` with multi-hot labels over `val`'s classes."""
    from ..data import build_dataset
    from ..data.image_labels import ImageLabelDataset, ImageLabelsFromMasks

    d = cfg.data
    if d.image_labels is not None:
        return ImageLabelDataset(resolve_labels_file(cfg), classes=val.classes, palette=val.palette,
                                 transform=transform, in_channels=getattr(val, "in_channels", 3))
    pixel_set = build_dataset(d.name, root=d.root, split=d.train_split, transform=transform, **d.kwargs)
    return ImageLabelsFromMasks(pixel_set)


def build_mil_criterion(cfg: Config, log: Callable[[str], None] = print) -> nn.Module:
    from ..losses.mil import MILLoss

    log("image-level supervision: multi-class MIL loss (MIL-FCN); validation against pixel labels")
    return MILLoss(aux_weight=cfg.train.aux_weight)
