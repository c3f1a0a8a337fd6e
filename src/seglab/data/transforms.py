"""Joint image + label transforms for training and evaluation.

The training recipe is the one the DeepLab papers made standard (Chen et al., "DeepLab", TPAMI 2018,
Sec. 4; "Rethinking Atrous Convolution", arXiv 2017, Sec. 4.1) and PSPNet (Zhao et al., CVPR 2017,
Sec. 5.1) uses: random rescaling (0.5x to 2x), a fixed-size random crop where images smaller than the
crop are padded with the mean colour and their labels with the ignore index, random left-right flips,
then photometric jitter and mean/std normalisation. The photometric options that make a model carry
over to other cameras and streets (`Photometric`: colour jitter, gamma, Gaussian blur, Gaussian noise)
are the image-only augmentations of the real-time road-scene recipes (e.g. BiSeNet V2, Yu et al.,
IJCV 2021, Sec. 4.2: colour jitter; the rest are albumentations' standard ops). Geometric ops are albumentations' (Buslaev et al.,
"Albumentations", Information 2020); label maps are always resampled with nearest-neighbour
interpolation, so no new label values appear.

Every transform is a picklable callable `transform(image_uint8_HWC, mask_int64_HW) -> (image
FloatTensor[C, H, W], mask LongTensor[H, W])`.
"""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np
import torch

from ..errors import SeglabError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != len(std) or not mean:
        raise SeglabError(f"mean and std must have one value per channel and the same length, got "
                          f"mean={list(mean)} std={list(std)}")
    if any(s <= 0 for s in std):
        raise SeglabError(f"std values must be positive, got std={list(std)}")
    return mean, std


def _check_image(image: np.ndarray, mean: tuple[float, ...]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.dtype != np.uint8:
        raise SeglabError(f"expected an H x W x C uint8 image, got shape {image.shape} dtype {image.dtype}")
    if image.shape[2] != len(mean):
        raise SeglabError(f"image has {image.shape[2]} channels but mean/std have {len(mean)} values: "
                          f"pass mean=... and std=... with {image.shape[2]} values each")
    return image


def normalize_image(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 H x W x C -> FloatTensor[C, H, W] holding (pixel / 255 - mean) / std."""
    mean, std = mean_std(mean, std)
    image = _check_image(image, mean)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return x.sub_(m).div_(s)


def _mask_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))


class Photometric:
    """Image-only augmentation, applied in this order: colour jitter (`color_jitter` = brightness /
    contrast / saturation strength, hue strength / 8), gamma drawn from [1 - gamma, 1 + gamma], a
    Gaussian blur (sigma 0.1-1.5, kernel 3-5) with probability `blur_prob`, and additive Gaussian noise
    whose std is drawn from [0, noise_std] (a fraction of the 0-255 range) on every image. 0 disables
    each; images that are not RGB get brightness / contrast instead of colour jitter."""

    def __init__(self, color_jitter: float = 0.0, gamma: float = 0.0, blur_prob: float = 0.0,
                 noise_std: float = 0.0):
        for name, value, top in (("color_jitter", color_jitter, 1), ("gamma", gamma, 0.9),
                                 ("blur_prob", blur_prob, 1), ("noise_std", noise_std, 1)):
            if not 0 <= value <= top:
                raise SeglabError(f"{name} must be in [0, {top}], got {value}")
        self.color_jitter, self.gamma = float(color_jitter), float(gamma)
        self.blur_prob, self.noise_std = float(blur_prob), float(noise_std)

    def __bool__(self) -> bool:
        return any((self.color_jitter, self.gamma, self.blur_prob, self.noise_std))

    def ops(self, channels: int) -> list:
        """The albumentations ops (image-only: masks pass through unchanged)."""
        import albumentations as A

        ops, cj = [], self.color_jitter
        if cj > 0 and channels == 3:
            ops.append(A.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=cj / 8, p=1.0))
        elif cj > 0:
            ops.append(A.RandomBrightnessContrast(brightness_limit=cj, contrast_limit=cj, p=1.0))
        if self.gamma > 0:
            ops.append(A.RandomGamma(gamma_limit=(100 * (1 - self.gamma), 100 * (1 + self.gamma)), p=1.0))
        if self.blur_prob > 0:
            ops.append(A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.1, 1.5), p=self.blur_prob))
        if self.noise_std > 0:
            ops.append(A.GaussNoise(std_range=(0.0, self.noise_std), p=1.0))
        return ops

    def __repr__(self) -> str:
        return (f"Photometric(color_jitter={self.color_jitter}, gamma={self.gamma}, blur_prob={self.blur_prob}, "
                f"noise_std={self.noise_std})")


class EvalTransform:
    """Normalisation only; the image keeps its original size."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = mean_std(mean, std)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None):
        img = normalize_image(image, self.mean, self.std)
        return img, (None if mask is None else _mask_tensor(mask))

    def __repr__(self) -> str:
        return f"EvalTransform(mean={self.mean}, std={self.std})"


class TrainTransform:
    """Random scale, pad (image: mean colour, label: `ignore_index`) + random crop to `crop_size`,
    horizontal flip, `Photometric` (colour jitter, 0.2 unless given, and optionally gamma, blur and
    noise), normalisation.

    The random state is albumentations' own. `set_random_seed(s)` seeds it explicitly (for the calling
    process). Otherwise it is seeded from `torch.initial_seed()` in each process: a DataLoader gives
    every worker a different seed (so workers never repeat each other's crops), and a run started after
    `torch.manual_seed(s)` with `num_workers=0` is reproducible.
    """

    def __init__(self, crop_size: int | Sequence[int] = (512, 512), scale_range: Sequence[float] = (0.5, 2.0),
                 hflip: bool = True, color_jitter: float | None = 0.2, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, ignore_index: int = 255, gamma: float = 0.0,
                 blur_prob: float = 0.0, noise_std: float = 0.0):
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        crop_size = tuple(int(c) for c in crop_size)
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise SeglabError(f"crop_size must be (height, width) with positive values, got {crop_size}")
        scale_range = tuple(float(s) for s in scale_range)
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise SeglabError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        color_jitter = 0.2 if color_jitter is None else color_jitter
        self.photometric = Photometric(color_jitter, gamma, blur_prob, noise_std)
        if not 0 <= ignore_index <= 255:
            raise SeglabError(f"ignore_index must be in [0, 255], got {ignore_index}")
        self.crop_size, self.scale_range = crop_size, scale_range
        self.hflip, self.color_jitter = bool(hflip), float(color_jitter)
        self.mean, self.std = mean_std(mean, std)
        self.ignore_index = int(ignore_index)
        self._pipeline = None
        self._key = None
        self._seed = None  # (pid, seed) from set_random_seed

    def set_random_seed(self, seed: int) -> None:
        """Restart the augmentation stream from `seed` (in this process; workers keep their own). A
        pipeline already built for explicit seeds is reseeded in place (rebuilding it costs ~1 ms)."""
        self._seed = (os.getpid(), int(seed) % 2**32)
        if self._pipeline is not None and self._key is not None and self._key[:2] == ("explicit", os.getpid()):
            self._pipeline.set_random_seed(self._seed[1])
        else:
            self._pipeline = None

    def _build(self, channels: int, seed: int):
        import albumentations as A

        h, w = self.crop_size
        fill = tuple(float(round(m * 255)) for m in self.mean)
        if channels > 4:  # albumentations pads in 4-channel chunks, each given the whole fill: OpenCV takes <= 4
            fill = float(round(255 * sum(self.mean) / len(self.mean)))
        ops = []
        lo, hi = self.scale_range
        if (lo, hi) != (1.0, 1.0):
            ops.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                                     mask_interpolation=cv2.INTER_NEAREST, p=1.0))
        ops.append(A.PadIfNeeded(min_height=h, min_width=w, position="top_left",
                                 border_mode=cv2.BORDER_CONSTANT, fill=fill, fill_mask=self.ignore_index))
        ops.append(A.RandomCrop(height=h, width=w))
        if self.hflip:
            ops.append(A.HorizontalFlip(p=0.5))
        ops += self.photometric.ops(channels)
        return A.Compose(ops, seed=seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray):
        image = _check_image(image, self.mean)
        mask = np.asarray(mask)
        if mask.shape != image.shape[:2]:
            raise SeglabError(f"image and mask differ in shape: {image.shape[:2]} vs {mask.shape}")
        pid = os.getpid()
        if self._seed is not None and self._seed[0] == pid:
            seed, key = self._seed[1], ("explicit", pid, image.shape[2])
        else:
            seed, key = torch.initial_seed() % 2**32, (pid, torch.initial_seed(), image.shape[2])
        if self._pipeline is None or self._key != key:
            self._pipeline = self._build(image.shape[2], seed)
            self._key = key
        # OpenCV has no int64: uint8 covers class indices and the ignore index, int32 anything else.
        small = mask.size == 0 or (mask.min() >= 0 and mask.max() <= 255)
        m = mask.astype(np.uint8 if small else np.int32)
        out = self._pipeline(image=image, mask=m)
        img, m = out["image"], out["mask"]
        if img.ndim == 2:
            img = img[:, :, None]
        return normalize_image(img, self.mean, self.std), _mask_tensor(m)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pipeline"], state["_key"] = None, None  # rebuilt (and reseeded) in each worker
        return state

    def __repr__(self) -> str:
        return (f"TrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, "
                f"hflip={self.hflip}, {self.photometric}, mean={self.mean}, std={self.std}, "
                f"ignore_index={self.ignore_index})")


def default_eval_transform(in_channels: int = 3) -> EvalTransform:
    """What a data set uses when given no transform: ImageNet statistics for RGB, 0.5 / 0.5 otherwise."""
    if in_channels == 3:
        return EvalTransform(IMAGENET_MEAN, IMAGENET_STD)
    return EvalTransform((0.5,) * in_channels, (0.5,) * in_channels)
