"""Panoptic prediction: `PanopticPredictor` (a panoptic model, Panoptic FPN or UPSNet, on photos or
normalised tensors) and `PanopticWriter` for `seglab predict`: per image the COCO panoptic PNG
`<stem>_panoptic.png`, a picture `<stem>_panoptic_vis.png` (stuff in its class colour, each thing a
distinct shade, segment borders), and one COCO panoptic JSON (images, annotations, categories).

The models put contiguous class indices in `category_id`; the writer maps them to the category ids
recorded in the model file (`model_categories`), so predictions of a model trained on COCO carry COCO's ids.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..structures import PanopticResult
from .base import ModelPredictor


class PanopticPredictor(ModelPredictor):
    """A panoptic model on normalised (3, H, W) tensors or uint8 images -> its PanopticResult on the CPU."""

    @torch.no_grad()
    def predict_tensor(self, x: torch.Tensor, *, image: np.ndarray | None = None) -> PanopticResult:
        with self.autocast():
            result = self.model([x.to(self.device)])[0]
        return PanopticResult(segments=result.segments.cpu(), segments_info=list(result.segments_info))


def model_categories(meta: dict) -> tuple[list[dict], list[int]]:
    """(COCO panoptic categories in class order, category id per class) of a model file's metadata: the
    ones recorded in training, else made from its class names, palette and num_things (ids 0..C-1)."""
    if meta.get("categories") and meta.get("category_ids"):
        return [dict(c) for c in meta["categories"]], [int(c) for c in meta["category_ids"]]
    from ..data.palettes import default_palette

    num_classes = int(meta["num_classes"])
    num_things = int(meta.get("kwargs", {}).get("num_things", 0))
    names = meta.get("classes") or [str(i) for i in range(num_classes)]
    palette = meta.get("palette") or default_palette(num_classes)
    categories = [{"id": i, "name": names[i], "isthing": int(i >= num_classes - num_things),
                   "color": [int(v) for v in palette[i]]} for i in range(num_classes)]
    return categories, list(range(num_classes))


class PanopticWriter:
    """Per image `<stem>_panoptic.png` + `<stem>_panoptic_vis.png`; `panoptic.json` written by `close`."""

    def __init__(self, out_dir: Path, *, categories: Sequence[dict], class_to_category: Sequence[int],
                 alpha: float = 0.6):
        self.out_dir, self.categories = Path(out_dir), [dict(c) for c in categories]
        self.class_to_category, self.alpha = list(class_to_category), alpha
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    @property
    def json_path(self) -> Path:
        return self.out_dir / "panoptic.json"

    def write(self, source: Path, image: np.ndarray, prediction: PanopticResult) -> None:
        from ..viz.panoptic import save_panoptic_prediction

        self.out_dir.mkdir(parents=True, exist_ok=True)
        image_id = len(self.images) + 1
        self.annotations.append(save_panoptic_prediction(
            self.out_dir, source.stem, image, prediction, self.categories, image_id=image_id, alpha=self.alpha,
            class_to_category=self.class_to_category))
        self.images.append({"id": image_id, "file_name": source.name, "height": int(image.shape[0]),
                            "width": int(image.shape[1])})

    def close(self) -> list[str]:
        from ..data.panoptic import save_panoptic_json
        from .instances import file_image_ids

        ids = file_image_ids([Path(im["file_name"]) for im in self.images])
        for im, ann, image_id in zip(self.images, self.annotations, ids):  # COCO ids when the names are numbers
            im["id"] = ann["image_id"] = image_id
        save_panoptic_json(self.json_path, {"images": self.images, "annotations": self.annotations,
                                            "categories": self.categories})
        return [f"predicted {len(self.images)} image(s): panoptic PNGs (*_panoptic.png) and pictures "
                f"(*_panoptic_vis.png) in {self.out_dir}/, COCO panoptic JSON in {self.json_path}"]
