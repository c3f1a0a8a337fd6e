"""Instance predictions drawn over their image: each instance in its own colour (mask blended in, mask
outline, box) with a "class score" label, the usual picture of the instance segmentation papers
(e.g. Mask R-CNN, He et al., ICCV 2017, Fig. 2 and 5).

Colours walk the hue circle by the golden angle, so neighbouring indices (and the first few instances)
get clearly different hues; instances are drawn from the lowest score up, so the most confident one
ends up on top.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..structures import InstanceResult

_GOLDEN_HUE_STEP = 0.618033988749895


def instance_colors(n: int) -> list[tuple[int, int, int]]:
    """`n` distinct saturated RGB colours (hue steps of the golden ratio of a turn)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((0.05 + i * _GOLDEN_HUE_STEP) % 1.0, 0.85, 0.95)
        out.append((round(255 * r), round(255 * g), round(255 * b)))
    return out


def as_rgb(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")).copy()
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, 2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be a PIL image or a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    return image.copy()


def _outline(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (or on the image border)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def draw_instances(image, result: InstanceResult, class_names: Sequence[str] | None = None,
                   score_threshold: float = 0.5, *, alpha: float = 0.45) -> Image.Image:
    """The image with every instance scoring >= `score_threshold`: mask blended with weight `alpha` in
    the instance's colour, its outline and box in that colour, and "class score" above the box (PIL's
    default font). `class_names[label]` names a class (the label index when not given)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = as_rgb(image).astype(np.float32)
    h, w = rgb.shape[:2]
    masks = result.masks.detach().cpu().numpy().astype(bool) if isinstance(result.masks, torch.Tensor) \
        else np.asarray(result.masks, bool)
    scores = torch.as_tensor(result.scores).detach().cpu().float().numpy().reshape(-1)
    labels = torch.as_tensor(result.labels).detach().cpu().long().numpy().reshape(-1)
    boxes = torch.as_tensor(result.boxes).detach().cpu().float().numpy().reshape(-1, 4)
    if masks.shape[0] and masks.shape[1:] != (h, w):
        raise ValueError(f"masks are {masks.shape[2]}x{masks.shape[1]} but the image is {w}x{h}")
    shown = [i for i in np.argsort(scores, kind="stable") if scores[i] >= score_threshold]
    colors = instance_colors(len(scores))
    for i in shown:
        m = masks[i]
        color = np.array(colors[i], np.float32)
        rgb[m] = (1 - alpha) * rgb[m] + alpha * color
        rgb[_outline(m)] = color
    out = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i in shown:
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colors[i])  # xyxy is exclusive
        name = class_names[labels[i]] if class_names is not None else str(labels[i])
        text = f"{name} {scores[i]:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        ty = y0 - (bottom - top) - 2 if y0 - (bottom - top) - 2 >= 0 else y0  # above the box if it fits
        draw.rectangle([x0, ty, x0 + right - left + 2, ty + bottom - top + 2], fill=colors[i])
        draw.text((x0 + 1 - left, ty + 1 - top), text, fill=(0, 0, 0), font=font)
    return out
