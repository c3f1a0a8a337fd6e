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
from .scale import resize_ids, resize_images


class PanopticPredictor(ModelPredictor):
    """A panoptic model on normalised (3, H, W) tensors or uint8 images -> its PanopticResult on the CPU."""

    @torch.no_grad()
    def predict_tensor(self, x: torch.Tensor, *, image: np.ndarray | None = None) -> PanopticResult:
        size = tuple(x.shape[-2:])
        target = self.target_size(*size)
        if target is not None:
            x = resize_images(x[None], target)[0]
        with self.autocast():
            result = self.model([self.prepare(x[None].to(self.device))[0]])[0]
        segments, infos = result.segments.cpu(), [dict(i) for i in result.segments_info]
        if target is not None:  # back to the image's size; areas counted again, vanished segments dropped
            segments = resize_ids(segments, size)
            ids, counts = torch.unique(segments, return_counts=True)
            area = dict(zip(ids.tolist(), counts.tolist()))
            infos = [{**i, "area": int(area[i["id"]])} for i in infos if area.get(i["id"], 0) > 0]
        return PanopticResult(segments=segments, segments_info=infos)


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
    output_suffixes = ("_panoptic.png", "_panoptic_vis.png")

    def __init__(self, out_dir: Path, *, categories: Sequence[dict], class_to_category: Sequence[int],
                 alpha: float = 0.6):
        self.out_dir, self.categories = Path(out_dir), [dict(c) for c in categories]
        self.class_to_category, self.alpha = list(class_to_category), alpha
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    @property
    def json_path(self) -> Path:
        return self.out_dir / "panoptic.json"

    def render(self, image: np.ndarray, prediction: PanopticResult) -> np.ndarray:
        from ..data.panoptic import to_category_ids
        from ..viz import draw_panoptic

        infos = to_category_ids(list(prediction.segments_info), self.class_to_category)
        return np.asarray(draw_panoptic(image, prediction.segments.numpy(), infos, self.categories, self.alpha))

    def write(self, item, image: np.ndarray, prediction: PanopticResult, *, picture: bool = True) -> None:
        from ..data.panoptic import to_category_ids, write_panoptic
        from ..viz.panoptic import save_panoptic_prediction

        image_id = len(self.images) + 1
        if picture:
            annotation = save_panoptic_prediction(
                self.out_dir, item.name, image, prediction, self.categories, image_id=image_id, alpha=self.alpha,
                class_to_category=self.class_to_category)
        else:
            infos = to_category_ids(list(prediction.segments_info), self.class_to_category)
            annotation = write_panoptic(self.out_dir, f"{item.name}_panoptic.png", prediction.segments.numpy(), infos,
                                        image_id=image_id)
        self.annotations.append(annotation)
        self.images.append({"id": image_id, "file_name": item.path.name if item.key.name == item.path.stem else item.name,
                            "height": int(image.shape[0]), "width": int(image.shape[1])})

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
