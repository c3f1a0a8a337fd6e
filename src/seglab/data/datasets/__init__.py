"""Segmentation data sets and `build_dataset(name, ...)`, the one place a data set is chosen by name.

Sources: CamVid (Brostow et al., PRL 2008; SegNet split, TPAMI 2017), Pascal VOC 2012 (Everingham et
al., IJCV 2010; SBD, Hariharan et al., ICCV 2011), Cityscapes (Cordts et al., CVPR 2016), ADE20K
(Zhou et al., CVPR 2017), a folder / list-file layout, and the generated synthetic set.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from ...errors import SeglabError
from ..nyudv2 import NYUDv2
from ..siftflow import SIFTFlow, SyntheticJoint
from .ade20k import ADE20K
from .camvid import CamVid
from .cityscapes import Cityscapes
from .cityscapes_instances import CityscapesInstances
from .coco import CocoInstances, coco_instances
from .coco_panoptic import CityscapesPanoptic, PanopticDataset, SyntheticPanoptic, coco_panoptic
from .folder import SegmentationDataset, SegmentationFolder
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


def _folder(root, split, transform, **kwargs) -> SegmentationFolder:
    """`folder`: kwargs go to SegmentationFolder. Without list_file / image_dir, `<root>/<split>.txt`
    is used when it exists, else `<root>/images/<split>` + `<root>/labels/<split>`. Without classes,
    `<root>/classes.txt` (one name per line) is read."""
    root = Path(root)
    if "classes" not in kwargs:
        names = root / "classes.txt"
        if not names.is_file():
            raise SeglabError(f"dataset 'folder': give classes=[...] or write {names} (one class name per line)")
        kwargs["classes"] = [ln.strip() for ln in names.read_text().splitlines() if ln.strip()]
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
    if name == "folder":
        return _folder(root, split, transform, **kwargs)
    cls = DATASETS[name]
    try:
        inspect.signature(cls).bind(root, split=split, transform=transform, **kwargs)
    except TypeError as e:
        raise SeglabError(f"dataset {name!r}: {e}") from e
    return cls(root, split=split, transform=transform, **kwargs)


__all__ = ["ADE20K", "CamVid", "Cityscapes", "SegmentationDataset", "SegmentationFolder",
           "SyntheticSegmentation", "VOCSegmentation", "DATASETS", "build_dataset",
           "INSTANCE_DATASETS", "CocoInstances", "CityscapesInstances", "SyntheticInstances", "InstanceFolder",
           "seeded_split",
           "PANOPTIC_DATASETS", "PanopticDataset", "CityscapesPanoptic", "SyntheticPanoptic"]
