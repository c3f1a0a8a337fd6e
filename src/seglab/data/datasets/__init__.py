"""Segmentation data sets and `build_dataset(name, ...)`, the one place a data set is chosen by name.

Sources: CamVid (Brostow et al., PRL 2008; SegNet split, TPAMI 2017), Pascal VOC 2012 (Everingham et
al., IJCV 2010; SBD, Hariharan et al., ICCV 2011), Cityscapes (Cordts et al., CVPR 2016), ADE20K
(Zhou et al., CVPR 2017), a folder / list-file layout, and the generated synthetic set.
"""
from __future__ import annotations

import collections.abc
import inspect
import os
import types
import typing
from pathlib import Path

from ...errors import ConfigError, DataError, SeglabError
from ..nyudv2 import NYUDv2
from ..siftflow import SIFTFlow, SyntheticJoint
from .ade20k import ADE20K
from .camvid import CamVid
from .cityscapes import Cityscapes
from .cityscapes_instances import CityscapesInstances
from .coco import CocoInstances, coco_instances
from .coco_panoptic import CityscapesPanoptic, PanopticDataset, SyntheticPanoptic, coco_panoptic
from .folder import SegmentationDataset, SegmentationFolder, flat_folder_problem, parse_classes_file
from .instance_folder import InstanceFolder, seeded_split
from .synthetic import SyntheticSegmentation
from .synthetic_instances import SyntheticInstances
from .voc import VOCSegmentation

DATASETS = {"synthetic": SyntheticSegmentation, "folder": SegmentationFolder, "camvid": CamVid,
            "voc": VOCSegmentation, "cityscapes": Cityscapes, "ade20k": ADE20K,
            "siftflow": SIFTFlow, "synthetic_joint": SyntheticJoint, "nyudv2": NYUDv2}
# Instance segmentation sets: dataset[i] is (image, target dict), see seglab.data.instances.
INSTANCE_DATASETS = {"coco_instances": coco_instances, "cityscapes_instances": CityscapesInstances,
                     "synthetic_instances": SyntheticInstances, "instance_folder": InstanceFolder}
DATASETS.update(INSTANCE_DATASETS)
# Panoptic sets: dataset[i] is (image, target dict with "semantic" and "panoptic"), see .coco_panoptic.
PANOPTIC_DATASETS = {"coco_panoptic": coco_panoptic, "cityscapes_panoptic": CityscapesPanoptic,
                     "synthetic_panoptic": SyntheticPanoptic}
DATASETS.update(PANOPTIC_DATASETS)


def _matches(value, annotation) -> bool:
    """Whether a config value (YAML data: str, int, float, bool, list, dict, None) fits a reader's type
    hint; hints this does not know are taken as fitting (the reader then checks the value itself)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any or annotation is inspect.Parameter.empty:
        return True
    if annotation is type(None) or annotation is None:
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str or annotation in (os.PathLike, Path):
        return isinstance(value, str)
    if origin in (collections.abc.Sequence, list, tuple) or annotation in (collections.abc.Sequence, list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else typing.Any
        return all(_matches(v, item) for v in value)
    if origin in (collections.abc.Mapping, dict) or annotation in (collections.abc.Mapping, dict):
        if not isinstance(value, dict):
            return False
        k, v = args if len(args) == 2 else (typing.Any, typing.Any)
        digits = k is int  # {"255": 0}: integer keys written as strings (JSON) are read as integers
        return all((_matches(a, k) or digits and isinstance(a, str) and a.lstrip("-").isdigit()) and _matches(b, v)
                   for a, b in value.items())
    if isinstance(annotation, type) and annotation.__module__ == "numpy":
        return False  # arrays are not written in configs
    return True


def check_reader_kwargs(reader, kwargs: dict, where: str, *, given: tuple = ()) -> None:
    """`kwargs` (a config's data.kwargs) must name parameters of `reader` and fit their type hints; one
    line naming the key otherwise. `given`: parameters build_dataset itself passes."""
    params = inspect.signature(reader).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in kwargs:
        if key in given or (key not in params and not accepts_any) or \
                (key in params and params[key].kind is inspect.Parameter.POSITIONAL_ONLY):
            known = [n for n, p in params.items() if n not in given and n != "self"
                     and p.kind is not inspect.Parameter.VAR_KEYWORD]
            raise SeglabError(f"{where}: unknown option data.kwargs.{key} (options: {', '.join(known)})")
    try:
        hints = typing.get_type_hints(reader.__init__ if isinstance(reader, type) else reader)
    except Exception:  # hints that cannot be resolved at run time: the reader checks its values itself
        return
    for key, value in kwargs.items():
        if key in hints and not _matches(value, hints[key]):
            hint = str(hints[key]).replace("typing.", "").replace("collections.abc.", "")
            raise SeglabError(f"{where}: data.kwargs.{key} must be {hint}, got {value!r:.80}")


def _folder(root, split, transform, **kwargs) -> SegmentationFolder:
    """`folder`: kwargs go to SegmentationFolder. Without list_file / image_dir, `<root>/<split>.txt`
    is used when it exists, else `<root>/images/<split>` + `<root>/labels/<split>`. Without classes,
    `<root>/classes.txt` is read: one class per line, `name` or `name r g b` (its colour in the palette)."""
    root = Path(root)
    if "list_file" not in kwargs and "image_dir" not in kwargs and not (root / f"{split}.txt").is_file() \
            and (flat := flat_folder_problem(root, split)):
        raise DataError(flat)
    if "classes" not in kwargs:
        names = root / "classes.txt"
        if not names.is_file():
            raise SeglabError(f"dataset 'folder': give classes=[...] or write {names} (one class name per line)")
        kwargs["classes"], colours = parse_classes_file(names)
        if colours is not None and "palette" not in kwargs:
            kwargs["palette"] = colours
    if "list_file" not in kwargs and "image_dir" not in kwargs:
        if (root / f"{split}.txt").is_file():
            kwargs["list_file"] = root / f"{split}.txt"
        else:
            kwargs["image_dir"], kwargs["mask_dir"] = Path("images") / split, Path("labels") / split
    return SegmentationFolder(root=root, transform=transform, **kwargs)


def build_dataset(name: str, *, root, split: str, transform=None, **kwargs) -> SegmentationDataset:
    """A data set by name: synthetic, folder, camvid, voc, cityscapes, ade20k, nyudv2; siftflow and
    synthetic_joint hold several label spaces per image (`seglab.data.siftflow`); coco_instances,
    cityscapes_instances, synthetic_instances and instance_folder (images + instance-id PNGs) give
    (image, target) instance samples (`seglab.data.instances`)."""
    if name not in DATASETS:
        raise SeglabError(f"unknown dataset {name!r}, expected one of: {', '.join(DATASETS)}")
    if root is None:
        raise ConfigError(f"data.root is not set: no default location can exist for data set {name!r}; pass "
                          f"data.root=/path/to/{name} (e.g. seglab train CONFIG data.root=/data/{name})")
    if name == "folder":
        check_reader_kwargs(SegmentationFolder, kwargs, "dataset 'folder'", given=("root", "transform"))
        return _folder(root, split, transform, **kwargs)
    cls = DATASETS[name]
    check_reader_kwargs(cls, kwargs, f"dataset {name!r}", given=("root", "split", "transform"))
    return cls(root, split=split, transform=transform, **kwargs)


__all__ = ["ADE20K", "CamVid", "Cityscapes", "SegmentationDataset", "SegmentationFolder",
           "SyntheticSegmentation", "VOCSegmentation", "DATASETS", "build_dataset",
           "INSTANCE_DATASETS", "CocoInstances", "CityscapesInstances", "SyntheticInstances", "InstanceFolder",
           "seeded_split",
           "PANOPTIC_DATASETS", "PanopticDataset", "CityscapesPanoptic", "SyntheticPanoptic"]
