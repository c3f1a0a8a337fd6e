"""Instance segmentation data: the per-image target, a base data set, joint transforms and the collate.

Target of one image (DESIGN.md, instance model contract), as the transforms return it:
    "boxes"    FloatTensor (K, 4)  xyxy in pixels, pixel-edge convention: a box around pixel columns
                                   x0..x1 is [x0, x1 + 1) (COCO's x, y, w, h box in another form)
    "labels"   LongTensor (K,)     contiguous thing-class indices 0..C-1 (the data set maps its ids)
    "masks"    BoolTensor (K, H, W)
    "iscrowd"  BoolTensor (K,)     COCO crowd regions / Cityscapes groups (matched but not counted)
    "image_id" int                 the data set's image id (COCO's own id), used by the evaluator
Before the transform (`InstanceDataset.read_raw`) the same keys hold numpy arrays.

The training transform is the scale augmentation of the detection recipes (Mask R-CNN, He et al.,
ICCV 2017, Sec. 3.1 trains at several scales; YOLACT, Bolya et al., ICCV 2019, crops): a random
rescale, padding to and a random crop of a fixed size, and a left-right flip. Image and masks go
through the same geometry (bilinear for the image, nearest with half-pixel centres for the masks, so
both use the same sampling grid); boxes are then recomputed as the tight boxes of the transformed masks,
and instances whose masks vanished (cropped away) are dropped.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import DataError, SeglabError
from .palettes import default_palette
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Photometric, mean_std, normalize_image

Target = dict[str, Any]


def empty_target(height: int, width: int, image_id: int) -> Target:
    """The numpy target of an image without instances."""
    return {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
            "masks": np.zeros((0, height, width), bool), "iscrowd": np.zeros(0, bool), "image_id": int(image_id)}


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes (K, 4) of (K, H, W) masks, pixel-edge convention ([x0, x1 + 1)); empty -> 0."""
    k, h, w = masks.shape
    if k == 0:
        return torch.zeros(0, 4)
    rows, cols = masks.any(2), masks.any(1)
    ys = torch.arange(h).expand(k, h)
    xs = torch.arange(w).expand(k, w)
    y0 = torch.where(rows, ys, h).amin(1)
    y1 = torch.where(rows, ys + 1, 0).amax(1)
    x0 = torch.where(cols, xs, w).amin(1)
    x1 = torch.where(cols, xs + 1, 0).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    return torch.where(rows.any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An H x W x 3 uint8 RGB array; grayscale and palette images are converted (COCO has both)."""
    from .io import open_image

    with open_image(path, "image") as img:
        return np.array(img.convert("RGB"), dtype=np.uint8)


class InstanceDataset(Dataset):
    """Images with instance targets; `dataset[i]` is `(image FloatTensor[3, H, W], target dict)`.

    Subclasses give the thing classes in label order with their original category ids, and implement
    `__len__`, `image_path(i)` and `load_target(i, height, width)` (the numpy target, checked there
    with errors naming the file and the annotation). Without a transform, images are only normalised.
    """

    def __init__(self, *, classes: Sequence[str], category_ids: Sequence[int], transform: Callable | None = None,
                 palette: Sequence[Sequence[int]] | None = None):
        if len(classes) != len(category_ids) or not classes:
            raise SeglabError(f"{type(self).__name__}: need one category id per class, got {len(classes)} "
                              f"classes and {len(category_ids)} ids")
        self.classes = [str(c) for c in classes]
        self.category_ids = [int(c) for c in category_ids]
        self.category_id_to_label = {c: i for i, c in enumerate(self.category_ids)}
        self.palette = [tuple(c) for c in (palette or default_palette(len(self.classes)))]
        self.transform = InstanceEvalTransform() if transform is None else transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def categories(self) -> list[dict]:
        """COCO-style categories in label order (label i has id `categories[i]["id"]`), for the evaluator."""
        return [{"id": c, "name": n} for c, n in zip(self.category_ids, self.classes)]

    def __len__(self) -> int:
        raise NotImplementedError

    def image_path(self, i: int) -> Path:
        raise NotImplementedError

    def load_target(self, i: int, height: int, width: int) -> Target:
        raise NotImplementedError

    def read_raw(self, i: int) -> tuple[np.ndarray, Target]:
        """(uint8 H x W x 3 image, numpy target) without any transform."""
        image = read_rgb(self.image_path(i))
        h, w = image.shape[:2]
        target = self.load_target(i, h, w)
        if target["masks"].shape[1:] != (h, w):
            raise DataError(f"{self.image_path(i)}: masks are {target['masks'].shape[2]}x"
                            f"{target['masks'].shape[1]} but the image is {w}x{h}")
        return image, target

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        image, target = self.read_raw(i)
        return self.transform(image, target)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} thing classes)"


def _target_tensors(target: Target) -> Target:
    out = dict(target)
    out["boxes"] = torch.as_tensor(np.asarray(target["boxes"], np.float32).reshape(-1, 4))
    out["labels"] = torch.as_tensor(np.asarray(target["labels"], np.int64))
    out["masks"] = torch.as_tensor(np.asarray(target["masks"])).bool()
    k = out["labels"].shape[0]
    out["iscrowd"] = torch.as_tensor(np.asarray(target.get("iscrowd", np.zeros(k, bool)))).bool()
    if not (out["boxes"].shape[0] == out["masks"].shape[0] == out["iscrowd"].shape[0] == k):
        raise SeglabError(f"target of image {target.get('image_id')}: boxes, labels, masks and iscrowd "
                          f"hold {out['boxes'].shape[0]}, {k}, {out['masks'].shape[0]} and "
                          f"{out['iscrowd'].shape[0]} instances")
    return out


class InstanceEvalTransform:
    """Normalisation only; image, masks and boxes keep their size."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = mean_std(mean, std)

    def __call__(self, image: np.ndarray, target: Target) -> tuple[torch.Tensor, Target]:
        return normalize_image(image, self.mean, self.std), _target_tensors(target)

    def __repr__(self) -> str:
        return f"InstanceEvalTransform(mean={self.mean}, std={self.std})"


class InstanceTrainTransform:
    """`Photometric` image-only augmentation (off unless given), random scale (`scale_range`), then with
    `crop_size` (h, w) padding to at least that size (image: the mean colour, masks: background) and a
    random crop of it, random left-right flip, normalisation;
    boxes are the tight boxes of the transformed masks and vanished instances are dropped.

    Random numbers come from torch's global generator: `torch.manual_seed` makes a run reproducible and
    every DataLoader worker draws differently (torch seeds each worker).
    """

    def __init__(self, crop_size: int | Sequence[int] | None = (512, 512),
                 scale_range: Sequence[float] = (0.5, 2.0), hflip: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, *,
                 color_jitter: float | None = 0.0, gamma: float = 0.0, blur_prob: float = 0.0,
                 noise_std: float = 0.0):
        self.photometric = Photometric(color_jitter or 0.0, gamma, blur_prob, noise_std)
        self._pipeline = None  # the photometric ops, built on first use (in each worker)
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        if crop_size is not None:
            crop_size = tuple(int(c) for c in crop_size)
            if len(crop_size) != 2 or min(crop_size) < 1:
                raise SeglabError(f"crop_size must be (height, width) with positive values or None, got {crop_size}")
        scale_range = tuple(float(s) for s in scale_range)
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise SeglabError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.crop_size, self.scale_range, self.hflip = crop_size, scale_range, bool(hflip)
        self.mean, self.std = mean_std(mean, std)

    def __call__(self, image: np.ndarray, target: Target) -> tuple[torch.Tensor, Target]:
        if self.photometric:
            image = self._photometric(image)
        x = normalize_image(image, self.mean, self.std)  # the mean colour is 0 from here on
        t = _target_tensors(target)
        masks = t["masks"]
        if masks.shape[1:] != x.shape[1:]:
            raise SeglabError(f"image is {x.shape[2]}x{x.shape[1]} but masks are {masks.shape[2]}x{masks.shape[1]}")
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * float(torch.rand(()))
        size = (max(1, round(x.shape[1] * scale)), max(1, round(x.shape[2] * scale)))
        if size != tuple(x.shape[1:]):
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
            if masks.shape[0]:
                masks = F.interpolate(masks[None].to(torch.uint8), size=size, mode="nearest-exact")[0].bool()
            else:
                masks = masks.new_zeros((0, *size))
        if self.crop_size is not None:
            x, masks = self._pad_and_crop(x, masks)
        if self.hflip and float(torch.rand(())) < 0.5:
            x, masks = x.flip(-1), masks.flip(-1)
        keep = masks.flatten(1).any(1)
        t["masks"] = masks[keep]
        t["boxes"] = masks_to_boxes(t["masks"])
        t["labels"], t["iscrowd"] = t["labels"][keep], t["iscrowd"][keep]
        return x.contiguous(), t

    def _photometric(self, image: np.ndarray) -> np.ndarray:
        import albumentations as A

        if self._pipeline is None:
            self._pipeline = A.Compose(self.photometric.ops(np.asarray(image).shape[-1]))
        self._pipeline.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))  # torch's stream decides
        return self._pipeline(image=np.ascontiguousarray(image))["image"]

    def __getstate__(self):
        return {**self.__dict__, "_pipeline": None}

    def _pad_and_crop(self, x: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ch, cw = self.crop_size
        h, w = x.shape[1:]
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        if pad_h or pad_w:  # pad at the bottom and right: pixel coordinates stay as they are
            x = F.pad(x, (0, pad_w, 0, pad_h))
            masks = F.pad(masks, (0, pad_w, 0, pad_h))
        top = int(torch.randint(0, x.shape[1] - ch + 1, ()))
        left = int(torch.randint(0, x.shape[2] - cw + 1, ()))
        return x[:, top:top + ch, left:left + cw], masks[:, top:top + ch, left:left + cw]

    def __repr__(self) -> str:
        return (f"InstanceTrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, "
                f"hflip={self.hflip}, {self.photometric}, mean={self.mean}, std={self.std})")


def collate_instances(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """DataLoader collate: (list of images, list of targets); images may differ in size."""
    return [image for image, _ in batch], [target for _, target in batch]
