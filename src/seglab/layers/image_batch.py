"""Batching images of different sizes for detection-style models (Mask R-CNN, FCIS, YOLACT, the
panoptic models): zero-pad bottom/right to a common size divisible by the network's largest stride,
and remember each image's own size (boxes are clipped to it, masks cut back to it)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import SeglabError

__all__ = ["batch_images"]


def batch_images(images, size_divisible: int = 32) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """A (N, C, H, W) batch zero-padded (bottom/right) to sides divisible by `size_divisible`, and
    each image's own (h, w). `images`: a (N, C, H, W) Tensor or a list of (C, H_i, W_i) Tensors."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise SeglabError(f"images must be (N, C, H, W) or a list of (C, H, W), got shape {tuple(images.shape)}")
        sizes = [tuple(images.shape[-2:])] * images.shape[0]
        images = list(images)
    else:
        images = list(images)
        if not images or any(not isinstance(im, torch.Tensor) or im.dim() != 3 for im in images):
            raise SeglabError("images must be (N, C, H, W) or a non-empty list of (C, H, W) Tensors")
        sizes = [tuple(im.shape[-2:]) for im in images]
    height = -(-max(s[0] for s in sizes) // size_divisible) * size_divisible
    width = -(-max(s[1] for s in sizes) // size_divisible) * size_divisible
    batch = torch.stack([F.pad(im, (0, width - im.shape[-1], 0, height - im.shape[-2])) for im in images])
    return batch, [(int(h), int(w)) for h, w in sizes]
