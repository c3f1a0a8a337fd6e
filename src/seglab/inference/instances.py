"""Instance prediction on image files (`seglab predict` with an instance model): per image an overlay PNG
(`seglab.viz.draw_instances`: one colour per instance, its mask, outline, box and "class score" label),
and one COCO result JSON for all images (the format of COCO's detection challenge: image_id,
category_id, segmentation as compressed RLE, score, bbox [x, y, w, h]; each entry also names its
`file_name`). Every input is read before anything is written, so a bad file stops the run with one clear
line and no partial output."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image
from ..structures import InstanceResult


def float_result(result: InstanceResult) -> InstanceResult:
    """bf16 autocast leaves boxes and scores in bfloat16, which numpy (and so COCO) cannot read."""
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


@torch.no_grad()
def predict_instances(model: nn.Module, image: torch.Tensor, *, bf16: bool = False) -> InstanceResult:
    """One normalised (3, H, W) image through an instance model in eval mode -> its InstanceResult
    (float32, on the CPU). Uses `inference_layout(model)`."""
    inference_layout(model)
    device = next(model.parameters()).device
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and device.type == "cpu"):
        return float_result(model([image.to(device)])[0])


class InstancePredictor:
    """An instance model on uint8 H x W x 3 images: normalisation (the model's recorded mean / std by
    default), one forward pass (bf16 autocast when asked), results as float32 on the CPU."""

    def __init__(self, model: nn.Module, *, bf16: bool = False):
        self.model, self.bf16 = model.eval(), bf16

    def predict_image(self, image: np.ndarray, *, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None) -> InstanceResult:
        config = getattr(self.model, "seglab_config", {})
        x = normalize_image(image, mean if mean is not None else config.get("mean", IMAGENET_MEAN),
                            std if std is not None else config.get("std", IMAGENET_STD))
        return predict_instances(self.model, x, bf16=self.bf16)


def file_image_ids(files: Sequence[Path]) -> list[int]:
    """COCO image ids for input files: the number in the file name when every name is one (COCO's own
    file names, e.g. 000000397133.jpg), else the position 1..N."""
    stems = [f.stem for f in files]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(files) + 1))


def predict_instance_files(predictor: InstancePredictor, files: Sequence[Path], out_dir: Path, *,
                           class_names: Sequence[str], category_ids: Sequence[int], mean=None, std=None,
                           score_threshold: float = 0.5, progress: bool = False) -> tuple[list[Path], Path]:
    """Writes `<stem>_overlay.png` per image (instances scoring >= `score_threshold`) and
    `instances.json` (every detection) into `out_dir`; returns (overlay paths, JSON path)."""
    from ..data import read_image
    from ..metrics.instance import instance_results_to_coco
    from ..utils.io import save_image_atomic, write_text_atomic
    from ..viz import draw_instances

    for f in files:  # validate everything first: no half-finished output folders
        read_image(f, in_channels=3)
    out_dir.mkdir(parents=True, exist_ok=True)
    overlays, entries = [], []
    for f, image_id in tqdm(list(zip(files, file_image_ids(files))), desc="predict", disable=not progress,
                            leave=False, dynamic_ncols=True):
        image = read_image(f, in_channels=3)
        result = predictor.predict_image(image, mean=mean, std=std)
        path = out_dir / f"{f.stem}_overlay.png"
        save_image_atomic(path, draw_instances(image, result, class_names, score_threshold))
        overlays.append(path)
        entries += [{**e, "file_name": f.name} for e in instance_results_to_coco(image_id, result, category_ids)]
    json_path = out_dir / "instances.json"
    write_text_atomic(json_path, json.dumps(entries) + "\n")
    return overlays, json_path
