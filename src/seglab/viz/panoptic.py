"""Panoptic segmentations drawn over their image: stuff in its category colour, every thing in its own
shade of its category colour, and segment borders, the picture of Kirillov et al., "Panoptic
Segmentation", CVPR 2019 (Fig. 1, 2).

Thing shades follow panopticapi's `IdGenerator` (cocodataset/panopticapi, utils.py): the first thing of
a category gets the category colour, later ones a colour jittered by up to +-`max_shift` per channel
around it, never a colour already used in the picture; the jitter is drawn from a generator seeded with
the category id, so the same segments always get the same colours.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.palettes import default_palette
from ..data.panoptic import VOID, to_category_ids, write_panoptic
from ..errors import DataError, SeglabError
from ..structures import PanopticResult
from ..utils.io import save_image_atomic
from .instances import as_rgb

Color = tuple[int, int, int]


def _category_colors(categories: Sequence[dict]) -> dict[int, tuple[Color, bool]]:
    """{category id: (colour, isthing)}; categories without a colour take the default palette's."""
    fallback = default_palette(len(categories))
    try:
        return {int(c["id"]): (tuple(int(v) for v in c["color"]) if "color" in c else fallback[i],
                               bool(int(c.get("isthing", 0))))
                for i, c in enumerate(categories)}
    except (KeyError, TypeError, ValueError) as e:
        raise SeglabError(f"categories must be dicts with 'id' (and 'color', 'isthing'): {e}") from e


def _shade(base: Color, rng: np.random.Generator, taken: set[Color], max_shift: int) -> Color:
    if base not in taken:
        return base
    shift = max_shift
    while True:  # widen the jitter if the neighbourhood of the base colour is used up
        for _ in range(64):
            c = tuple(int(v) for v in np.clip(np.array(base) + rng.integers(-shift, shift + 1, 3), 0, 255))
            if c not in taken:
                return c
        shift = min(255, 2 * shift)


def panoptic_colors(segments_info: Sequence[dict], categories: Sequence[dict], *,
                    max_shift: int = 30) -> dict[int, Color]:
    """{segment id: RGB}: stuff segments their category's colour, thing segments (in id order) distinct
    shades of theirs."""
    colors = _category_colors(categories)
    out: dict[int, Color] = {}
    taken: set[Color] = {(0, 0, 0)}
    rngs: dict[int, np.random.Generator] = {}
    for s in sorted(segments_info, key=lambda s: int(s["id"])):
        cat = int(s["category_id"])
        if cat not in colors:
            raise DataError(f"segment {s['id']} has category_id {cat}, which is not in the categories")
        base, isthing = colors[cat]
        if not isthing:
            out[int(s["id"])] = base
            taken.add(base)
    for s in sorted(segments_info, key=lambda s: int(s["id"])):
        cat = int(s["category_id"])
        base, isthing = colors[cat]
        if isthing:
            color = _shade(base, rngs.setdefault(cat, np.random.default_rng(cat)), taken, max_shift)
            out[int(s["id"])] = color
            taken.add(color)
    return out


def _ids_array(ids) -> np.ndarray:
    arr = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise SeglabError(f"ids must be an (H, W) integer segment id map, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


def segment_borders(ids) -> np.ndarray:
    """(H, W) bool: pixels whose right or lower neighbour belongs to another segment (1-pixel lines)."""
    ids = _ids_array(ids)
    border = np.zeros(ids.shape, bool)
    border[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    border[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return border


def draw_panoptic(image, ids, segments_info: Sequence[dict], categories: Sequence[dict], alpha: float = 0.6,
                  *, border_color: Color | None = (255, 255, 255), max_shift: int = 30) -> Image.Image:
    """The image (PIL or uint8 (H, W, 3); None: black) with every segment blended in with weight `alpha`
    in its colour (`panoptic_colors`), VOID and unlisted ids left as they are, and segment borders in
    `border_color` (None: no borders)."""
    if not 0.0 <= alpha <= 1.0:
        raise SeglabError(f"alpha must be in [0, 1], got {alpha}")
    ids = _ids_array(ids)
    rgb = np.zeros((*ids.shape, 3), np.uint8) if image is None else as_rgb(image)
    if rgb.shape[:2] != ids.shape:
        raise SeglabError(f"ids are {ids.shape[1]}x{ids.shape[0]} but the image is {rgb.shape[1]}x{rgb.shape[0]}")
    colors = panoptic_colors(segments_info, categories, max_shift=max_shift)
    uniq, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(ids.shape)
    table = np.array([colors.get(int(u), (0, 0, 0)) for u in uniq], np.float32).reshape(-1, 3)
    painted = np.array([int(u) in colors and int(u) != VOID for u in uniq], bool)[inverse]
    out = rgb.astype(np.float32)
    out[painted] = (1 - alpha) * out[painted] + alpha * table[inverse][painted]
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if border_color is not None:
        out[segment_borders(ids)] = border_color
    return Image.fromarray(out)


def save_panoptic_prediction(folder: str | os.PathLike, stem: str, image, result: PanopticResult,
                             categories: Sequence[dict], *, image_id: Any, alpha: float = 0.6,
                             class_to_category: Sequence[int] | None = None) -> dict:
    """Write `<stem>_panoptic.png` (COCO panoptic PNG) and `<stem>_panoptic_vis.png` (`draw_panoptic` over
    the image) into `folder`, atomically; returns the annotation record for the predictions' JSON (collect
    them and write `{"annotations": [...], "categories": categories}` with `save_panoptic_json`).
    `class_to_category` maps the models' contiguous class indices to category ids (e.g. a panoptic data
    set's `category_ids`); without it the records' category_id must already be category ids."""
    ids = _ids_array(result.segments)
    infos = list(result.segments_info)
    if class_to_category is not None:
        infos = to_category_ids(infos, class_to_category)
    annotation = write_panoptic(folder, f"{stem}_panoptic.png", ids, infos, image_id=image_id)
    picture = draw_panoptic(image, ids, infos, categories, alpha)
    save_image_atomic(Path(folder) / f"{stem}_panoptic_vis.png", picture)
    return annotation
