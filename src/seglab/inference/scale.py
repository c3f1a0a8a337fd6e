"""The scale an image is predicted at.

A network learns objects at the scale of its training images: BiSeNet V2 trained on 480x360 CamVid
frames labels a 1920x1440 photo of the same street badly at full size (road becomes tree), and well once
the photo is resized to 480x360. So a model file records the typical size of its training images
(`train_size`, written at training time by the task's `model_metadata`), and prediction resizes each
image so that its short side matches (aspect ratio kept), predicts, and resizes the prediction back to
the image's own size. `--imgsz 512` (a short side), `--imgsz 360x480` (an exact size) or `--scale 0.5` (a
factor of each image's size; `--scale 1` predicts at the image's own size) override it. Sliding windows
and test-time augmentation run on the resized image.

Downscaling uses antialiased bilinear interpolation (what an image library does when shrinking a photo);
probabilities and logits are resized back bilinearly, label and segment maps by nearest neighbour.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import SeglabError


MAX_SIDE = 8192              # longest requested side (--imgsz 99999999 asked for 10^16 pixels)
MAX_FACTOR = 16.0            # largest --scale
MAX_RESIZED_PIXELS = 2 ** 26  # an image is never enlarged past 67 M pixels (e.g. 8192 x 8192)


@dataclass(frozen=True)
class InputScale:
    """One of: `short_side` (resize so the shorter side has this length), `size` (exact (h, w)) or
    `factor` (multiply both sides). `target(h, w)` is None when the image stays as it is."""
    short_side: int | None = None
    size: tuple[int, int] | None = None
    factor: float | None = None

    def __post_init__(self):
        sides = [self.short_side] if self.short_side is not None else list(self.size or [])
        if any(not 1 <= v <= MAX_SIDE for v in sides):
            raise SeglabError(f"--imgsz: sizes must be between 1 and {MAX_SIDE} pixels, got "
                              f"{'x'.join(str(v) for v in sides)}")
        if self.factor is not None and not 0 < self.factor <= MAX_FACTOR:
            raise SeglabError(f"--scale: expected a factor in (0, {MAX_FACTOR:g}], got {self.factor:g}")

    def target(self, h: int, w: int) -> tuple[int, int] | None:
        out = self._target(h, w)
        if out is not None and out[0] * out[1] > max(h * w, MAX_RESIZED_PIXELS):
            raise SeglabError(f"an image of {w}x{h} {self.describe()} would be {out[1]}x{out[0]} pixels, more than "
                              f"the limit of {MAX_RESIZED_PIXELS}; choose a smaller --imgsz or --scale")
        return out

    def _target(self, h: int, w: int) -> tuple[int, int] | None:
        if self.size is not None:
            out = tuple(self.size)
        elif self.short_side is not None:
            f = self.short_side / min(h, w)
            out = (max(1, round(h * f)), max(1, round(w * f)))
        elif self.factor is not None:
            out = (max(1, round(h * self.factor)), max(1, round(w * self.factor)))
        else:
            return None
        return None if out == (h, w) else out

    def describe(self) -> str:
        if self.size is not None:
            return f"resized to {self.size[0]}x{self.size[1]}"
        if self.short_side is not None:
            return f"resized to short side {self.short_side}"
        if self.factor is not None and self.factor != 1.0:
            return f"scaled by {self.factor:g}"
        return "at their own size"

    @classmethod
    def from_imgsz(cls, imgsz) -> InputScale:
        """360 -> short side 360; (360, 480) -> exact size."""
        if isinstance(imgsz, int):
            return cls(short_side=imgsz)
        h, w = (int(v) for v in imgsz)
        return cls(size=(h, w))


def parse_imgsz(text: str) -> InputScale:
    """`--imgsz`: '360' (short side), '360x480' (height x width) or 'native' (the image's own size)."""
    t = str(text).strip().lower()
    if t in ("native", "none", "orig", "original"):
        return InputScale(factor=1.0)
    parts = t.split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise SeglabError(f"--imgsz: expected a short side like 360, a size like 360x480 or 'native', "
                          f"got {text!r}") from None
    if len(nums) not in (1, 2) or min(nums) < 1:
        raise SeglabError(f"--imgsz: expected positive sizes like 360 or 360x480, got {text!r}")
    return InputScale(short_side=nums[0]) if len(nums) == 1 else InputScale(size=(nums[0], nums[1]))


def parse_scale(value) -> InputScale:
    try:
        factor = float(value)
    except (TypeError, ValueError):
        raise SeglabError(f"--scale: expected a positive number like 0.5, got {value!r}") from None
    if not factor > 0 or factor == float("inf"):
        raise SeglabError(f"--scale: expected a positive number like 0.5, got {value!r}")
    if factor > MAX_FACTOR:
        raise SeglabError(f"--scale: at most {MAX_FACTOR:g} (each side times the factor), got {value!r}")
    return InputScale(factor=factor)


def resize_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) float images -> (N, C, *size): bilinear, antialiased when shrinking."""
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def resize_maps(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) probabilities / logits -> (N, C, *size), bilinear (no antialiasing: they are smooth)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def resize_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An (H, W) integer map (labels, segment ids) -> *size, nearest neighbour (pixel centres, as
    `nearest-exact`), by indexing: ids keep their exact values whatever their range."""
    def source(n_out: int, n_in: int) -> torch.Tensor:
        return ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out)).long().clamp_(max=n_in - 1)

    return ids[source(size[0], ids.shape[0]).to(ids.device)][:, source(size[1], ids.shape[1]).to(ids.device)]
