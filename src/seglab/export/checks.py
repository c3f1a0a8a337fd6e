"""Checking an export against PyTorch: the images (real ones given by the user, else generated smooth
pictures), read and normalised as `seglab predict` reads them and resized to the export size, and the
comparisons (logits and labels for semantic models)."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SeglabError

DEFAULT_SIZE = (512, 512)   # export size of a model that does not record its training size


@dataclass
class ExportResult:
    path: Path
    checks: dict = field(default_factory=dict)       # {"max_rel_diff", "agreement", "images", "real_images"}
    int8_path: Path | None = None
    int8_checks: dict = field(default_factory=dict)

    @property
    def summary(self) -> str:
        def line(c):
            return (f"labels agree with PyTorch on {100 * c['agreement']:.3f}% of pixels, largest logit difference "
                    f"{c['max_rel_diff']:.1e} of the largest logit")
        where = f"{self.checks['images']} {'real' if self.checks['real_images'] else 'generated'} image(s)"
        if "mask_agreement" in self.checks:  # a split instance model
            c = self.checks
            return (f"checked on {where}: the same {c['detections']} detections as PyTorch, masks agree on "
                    f"{100 * c['mask_agreement']:.3f}% of pixels, largest score difference {c['max_score_diff']:.1e}, "
                    f"largest box difference {c['max_box_diff']:.1e} px")
        s = f"checked on {where}: {line(self.checks)}"
        if self.int8_path is not None:
            s += f"; int8 file {self.int8_path}: {line(self.int8_checks)}"
        return s


MAX_EXPORT_SIDE = 8192     # pixels per side of an export size (an 8K frame; a larger graph needs tens of GB)


def export_size(model: nn.Module, imgsz) -> tuple[int, int]:
    h, w = _export_size(model, imgsz)
    if not (1 <= h <= MAX_EXPORT_SIDE and 1 <= w <= MAX_EXPORT_SIDE):
        raise SeglabError(f"--imgsz: height and width must be between 1 and {MAX_EXPORT_SIDE}, got {h}x{w}")
    return h, w


def _export_size(model: nn.Module, imgsz) -> tuple[int, int]:
    if imgsz is None:
        train = getattr(model, "seglab_config", {}).get("train_size")
        return tuple(int(v) for v in train) if train else DEFAULT_SIZE
    if isinstance(imgsz, int):
        return (imgsz, imgsz)
    if isinstance(imgsz, str):
        parts = imgsz.lower().split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise SeglabError(f"--imgsz: expected HxW like 360x480, got {imgsz!r}") from None
        if len(nums) not in (1, 2) or min(nums) < 1:
            raise SeglabError(f"--imgsz: expected HxW like 360x480, got {imgsz!r}")
        return (nums[0], nums[-1])
    h, w = imgsz
    return (int(h), int(w))


def generated_images(size: tuple[int, int], count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Smooth random pictures (bilinear-upsampled coarse noise plus fine noise): a stand-in when no real
    images are given."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        coarse = torch.rand(1, 3, 6, 8, generator=g)
        img = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0]
        img = (img * 0.85 + 0.15 * torch.rand(3, *size, generator=g)).clamp(0, 1)
        out.append((img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    return out


def image_files(paths: Sequence[str | os.PathLike] | str | os.PathLike | None, limit: int = 16) -> list[Path]:
    from ..inference.inputs import collect_inputs

    if paths is None:
        return []
    items = collect_inputs([paths] if isinstance(paths, (str, os.PathLike)) else list(paths))
    return [i.path for i in items if not i.is_video][:limit]


def normalised_inputs(model: nn.Module, files: Sequence[Path], size: tuple[int, int]) -> tuple[list[torch.Tensor], bool]:
    """(normalised (1, C, h, w) tensors at `size`, whether they come from real images)."""
    from ..data.io import read_photo
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image
    from ..inference.scale import resize_images

    config = getattr(model, "seglab_config", {})
    in_channels = int(config.get("kwargs", {}).get("in_channels", 3))
    arrays = [read_photo(f, in_channels)[0] for f in files] or generated_images(size)
    if in_channels != 3 and not files:
        arrays = [a[:, :, :1].repeat(in_channels, axis=2) for a in arrays]
    mean, std = config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)
    tensors = [resize_images(normalize_image(a, mean, std)[None], size) for a in arrays]
    return tensors, bool(files)


def compare(reference: Callable, exported: Callable, inputs: Sequence[torch.Tensor]) -> dict:
    """Largest logit difference (relative to the largest logit) and label agreement over `inputs`."""
    agree = total = 0
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ref, got = reference(x).float(), exported(x).float()
            if ref.shape != got.shape:
                raise SeglabError(f"the exported graph returns {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
            worst = max(worst, (ref - got).abs().max().item() / (ref.abs().max().item() + 1e-12))
            agree += (ref.argmax(1) == got.argmax(1)).sum().item()
            total += ref.shape[0] * ref.shape[2] * ref.shape[3]
    return {"max_rel_diff": worst, "agreement": agree / total, "images": len(inputs)}
