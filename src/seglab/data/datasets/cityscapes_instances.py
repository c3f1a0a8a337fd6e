"""Cityscapes instance segmentation (Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene
Understanding", CVPR 2016, Sec. 3 and the instance-level benchmark).

`gtFine/<split>/<city>/*_gtFine_instanceIds.png` stores per pixel `labelId * 1000 + instance` for the
objects of the 8 evaluated thing classes (person, rider, car, truck, bus, train, motorcycle, bicycle)
and the plain labelId (< 1000) everywhere else, where a thing labelId marks a group of objects that
could not be told apart. As in the official scripts (`cityscapesscripts/helpers/labels.py`:
hasInstances and not ignoreInEval) and detectron2's loader, those groups become crowd instances
(`iscrowd` True), caravan and trailer (instances, but ignored in evaluation) are left out, and the
category id of a class is its labelId (24..33).

Layout (as downloaded):
    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError, SeglabError
from ..instances import InstanceDataset, Target, empty_target, masks_to_boxes
from ..io import read_label
from ..palettes import CITYSCAPES_PALETTE
from .cityscapes import CITYSCAPES_SPLITS
from .folder import check_dir, find_pairs

CITYSCAPES_THING_CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
CITYSCAPES_THING_IDS = (24, 25, 26, 27, 28, 31, 32, 33)  # labelIds, in the order of the names above
CITYSCAPES_THING_PALETTE = CITYSCAPES_PALETTE[11:]  # trainIds 11..18 are the same 8 classes
INSTANCE_ID_STRIDE = 1000
MAX_LABEL_ID = 33


class CityscapesInstances(InstanceDataset):
    """Cityscapes gtFine instances, `split` in train / val (test has no public annotations);
    `target["image_id"]` is the sample's index."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        if split not in CITYSCAPES_SPLITS:
            raise SeglabError(f"CityscapesInstances: unknown split {split!r}, expected one of "
                              f"{', '.join(CITYSCAPES_SPLITS)}")
        self.root, self.split = check_dir(Path(root), "Cityscapes root"), split
        self.samples = find_pairs(self.root / "leftImg8bit" / split, self.root / "gtFine" / split,
                                  image_suffix="_leftImg8bit.png", mask_suffix="_gtFine_instanceIds.png",
                                  recursive=True)
        super().__init__(classes=CITYSCAPES_THING_CLASSES, category_ids=CITYSCAPES_THING_IDS,
                         transform=transform, palette=CITYSCAPES_THING_PALETTE)

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, i: int) -> Path:
        return self.samples[i][0]

    def cityscapes_instance_ids(self, i: int) -> np.ndarray:
        """Sample i's raw instanceIds map, the ground truth of Cityscapes' own evaluation
        (`seglab.metrics.cityscapes`: groups, caravan / trailer and void stay as the script sees them)."""
        return read_label(self.samples[i][1])

    def cityscapes_depth(self, i: int) -> np.ndarray | None:
        """Sample i's depth in metres from its stereo disparity (`disparity/<split>/<city>/*_disparity.png`,
        with the baseline and focal length of `camera/<split>/<city>/*_camera.json` when present), for the
        distance-limited APs; None when the data set has no disparity for it."""
        from ...utils.io import read_json

        image = self.samples[i][0]
        rel = image.relative_to(self.root / "leftImg8bit")
        stem = image.name.removesuffix("_leftImg8bit.png")
        disparity = self.root / "disparity" / rel.parent / f"{stem}_disparity.png"
        if not disparity.is_file():
            return None
        camera = self.root / "camera" / rel.parent / f"{stem}_camera.json"
        rig = {}
        if camera.is_file():
            cam = read_json(camera, "Cityscapes camera file")
            try:
                rig = {"baseline": float(cam["extrinsic"]["baseline"]), "fx": float(cam["intrinsic"]["fx"])}
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{camera}: expected extrinsic.baseline and intrinsic.fx numbers") from None
        return cityscapes_disparity_to_depth(read_label(disparity), **rig)

    def load_target(self, i: int, height: int, width: int) -> Target:
        path = self.samples[i][1]
        ids = self.cityscapes_instance_ids(i)
        if ids.shape != (height, width):
            raise DataError(f"{path}: instance map is {ids.shape[1]}x{ids.shape[0]} but its image "
                            f"{self.samples[i][0].name} is {width}x{height}")
        values = np.unique(ids)
        label_ids = np.where(values >= INSTANCE_ID_STRIDE, values // INSTANCE_ID_STRIDE, values)
        bad = values[(label_ids > MAX_LABEL_ID) | (values < 0)]
        if bad.size:
            raise DataError(f"{path}: instance id {int(bad[0])} holds labelId {int(bad[0]) // INSTANCE_ID_STRIDE}, "
                            f"expected labelId * 1000 + instance with labelId in 0..{MAX_LABEL_ID}")
        keep = np.isin(label_ids, CITYSCAPES_THING_IDS)
        values, label_ids = values[keep], label_ids[keep]
        target = empty_target(height, width, i)
        if values.size == 0:
            return target
        masks = ids[None] == values[:, None, None]
        boxes = masks_to_boxes(torch.from_numpy(masks)).numpy()
        target.update(boxes=boxes, masks=masks, iscrowd=values < INSTANCE_ID_STRIDE,
                      labels=np.array([self.category_id_to_label[int(c)] for c in label_ids], np.int64))
        return target


def cityscapes_disparity_to_depth(disparity, *, baseline: float = 0.209313, fx: float = 2262.52) -> np.ndarray:
    """Depth in metres from a Cityscapes `*_disparity.png` (uint16 p; disparity (p - 1) / 256 for p > 0,
    p = 0 invalid): depth = baseline * fx / disparity; invalid pixels get 0. `baseline` (m) and `fx`
    (pixels) are in `camera/<split>/<city>/*_camera.json` (extrinsic.baseline, intrinsic.fx); the
    defaults are typical values of the recording rig."""
    p = np.asarray(disparity.cpu() if hasattr(disparity, "cpu") else disparity).astype(np.float64)
    d = (p - 1.0) / 256.0
    with np.errstate(divide="ignore"):
        return np.where((p > 0) & (d > 0), baseline * fx / np.where(d > 0, d, 1.0), 0.0)
