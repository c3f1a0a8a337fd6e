"""Instance prediction: `InstancePredictor` (an instance model on photos or normalised tensors) and
`InstanceWriter` for `seglab predict`: per image an overlay PNG (`seglab.viz.draw_instances`: one colour
per instance, its mask, outline, box and "class score" label), and one COCO result JSON for all images
(the format of COCO's detection challenge: image_id, category_id, segmentation as compressed RLE, score,
bbox [x, y, w, h]; each entry also names its `file_name`)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..structures import InstanceResult
from .base import ModelPredictor
from .scale import resize_images


def float_result(result: InstanceResult) -> InstanceResult:
    """Low-precision autocast leaves boxes and scores in bf16 / fp16, which numpy (and so COCO) cannot read."""
    return InstanceResult(boxes=result.boxes.float().cpu(), scores=result.scores.float().cpu(),
                          labels=result.labels.long().cpu(), masks=result.masks.bool().cpu())


def inference_layout(model: nn.Module) -> nn.Module:
    """Models that run faster with channels-last weights and activations say so with a class attribute
    `channels_last_inference = True` (Mask R-CNN: its whole forward takes ~18% less CPU time here, with
    the same detections up to float rounding); their weights are converted once, in place. Returns the
    model."""
    if getattr(model, "channels_last_inference", False):
        conv = next((p for p in model.parameters() if p.dim() == 4), None)
        if conv is not None and not conv.is_contiguous(memory_format=torch.channels_last):
            model.to(memory_format=torch.channels_last)
    return model


class InstancePredictor(ModelPredictor):
    """An instance model on normalised (3, H, W) tensors or uint8 H x W x 3 images: one forward pass
    (autocast at `precision`), results as float32 on the CPU. A model handed over in eval mode (loaded for
    prediction or evaluation) takes its inference layout (`inference_layout`); a model in training mode
    (validation during training) keeps its layout, so training never changes memory format midway."""

    def __init__(self, model: nn.Module, *, precision: str | None = None, bf16: bool = False):
        super().__init__(model if model.training else inference_layout(model), precision=precision, bf16=bf16)

    @torch.no_grad()
    def predict_tensor(self, x: torch.Tensor, *, image: np.ndarray | None = None) -> InstanceResult:
        size = tuple(x.shape[-2:])
        target = self.target_size(*size)
        if target is not None:
            x = resize_images(x[None], target)[0]
        with self.autocast():
            result = float_result(self.model([self.prepare(x[None].to(self.device))[0]])[0])
        return result if target is None else rescale_instances(result, size)


def rescale_instances(result: InstanceResult, size: tuple[int, int]) -> InstanceResult:
    """Instances found on a resized image, mapped back to an image of `size` (h, w): boxes scaled, masks
    resized bilinearly and thresholded at one half."""
    h, w = size
    mh, mw = result.masks.shape[-2:]
    boxes = result.boxes * torch.tensor([w / mw, h / mh, w / mw, h / mh])
    if len(result.masks):
        masks = F.interpolate(result.masks[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0] > 0.5
    else:
        masks = torch.zeros((0, h, w), dtype=torch.bool)
    return InstanceResult(boxes=boxes, scores=result.scores, labels=result.labels, masks=masks)


@torch.no_grad()
def predict_instances(model: nn.Module, image: torch.Tensor, *, bf16: bool = False,
                      precision: str | None = None) -> InstanceResult:
    """One normalised (3, H, W) image through an instance model in eval mode -> its InstanceResult."""
    return InstancePredictor(model, precision=precision, bf16=bf16).predict_tensor(image)


def file_image_ids(files: Sequence[Path]) -> list[int]:
    """COCO image ids for input files: the number in the file name when every name is one (COCO's own
    file names, e.g. 000000397133.jpg), else the position 1..N."""
    stems = [Path(f).stem for f in files]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(files) + 1))


class InstanceWriter:
    """`<stem>_overlay.png` per image (instances scoring >= `score_threshold`) and `instances.json` (every
    detection, COCO result format, written by `close`)."""
    output_suffixes = ("_overlay.png",)

    def __init__(self, out_dir: Path, *, class_names: Sequence[str], category_ids: Sequence[int],
                 score_threshold: float = 0.5):
        self.out_dir, self.class_names = Path(out_dir), list(class_names)
        self.category_ids, self.score_threshold = list(category_ids), float(score_threshold)
        self.files: list[Path] = []
        self.entries: list[list[dict]] = []  # COCO results per file; image ids are set in close()

    @property
    def json_path(self) -> Path:
        return self.out_dir / "instances.json"

    def render(self, image: np.ndarray, prediction: InstanceResult) -> np.ndarray:
        from ..viz import draw_instances

        return np.asarray(draw_instances(image, prediction, self.class_names, self.score_threshold))

    def write(self, item, image: np.ndarray, prediction: InstanceResult, *, picture: bool = True) -> None:
        from PIL import Image

        from ..metrics.instance import instance_results_to_coco
        from ..utils.io import save_image_atomic
        from .files import PICTURE_PNG

        if picture:
            save_image_atomic(item.output(self.out_dir, "_overlay.png"), Image.fromarray(self.render(image, prediction)),
                              **PICTURE_PNG)
        self.files.append(Path(item.name))
        self.entries.append([{**e, "file_name": item.path.name if item.key.name == item.path.stem else item.name}
                             for e in instance_results_to_coco(0, prediction, self.category_ids)])

    def close(self) -> list[str]:
        from ..utils.io import write_text_atomic

        entries = [{**e, "image_id": image_id}
                   for image_id, per_file in zip(file_image_ids(self.files), self.entries) for e in per_file]
        write_text_atomic(self.json_path, json.dumps(entries) + "\n")
        return [f"predicted {len(self.files)} image(s): instance overlays (score >= {self.score_threshold:g}) in "
                f"{self.out_dir}/, COCO results (all detections) in {self.json_path}"]
