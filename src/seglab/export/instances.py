"""Instance models in ONNX as the usual split: the network (backbone, FPN, heads) in the graph, the
data-dependent steps (score filtering, NMS, mask assembly and pasting, the affinity graph merge) in Python,
and that Python is the model's own post-processing, shared by the PyTorch path and the runtime path.

A family can be split when its forward is "tensors in, a fixed set of tensors out, then post-processing":
- YOLACT (Bolya et al., ICCV 2019): the graph gives class logits, box deltas, mask coefficients,
  prototypes and anchors; `Yolact.postprocess` does the score filter, Fast NMS and mask assembly;
- the affinity network (Liu et al., ECCV 2018): the graph gives semantic and affinity logits;
  `AffinityNet.postprocess` does the graph merge.
Mask R-CNN / PANet, FCIS and the panoptic models (Panoptic FPN, UPSNet) are not split here: their heads
run on a variable number of RoIs chosen between two graph stages (proposals -> RoIAlign -> box head ->
NMS -> RoIAlign -> mask head), which needs three graphs and the glue between them (docs/deploy.md).

The runtime (`OnnxInstanceModel`) batches images as the model does (zero-padding to the network's
stride), runs the graph, and calls the post-processing of the model built from the file's metadata
(the same class and settings; its weights are not needed and not loaded).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SeglabError


@dataclass(frozen=True)
class Split:
    """How one family divides into graph and post-processing."""
    outputs: tuple[str, ...]                                   # the graph's outputs, in order
    divisor: int                                               # images are padded to multiples of this
    raw: Callable[[nn.Module, torch.Tensor], dict]             # padded batch -> the graph's tensors (traced)
    post: Callable[[nn.Module, dict, list[tuple[int, int]]], list]  # the model's own post-processing


def _yolact() -> tuple[type, Split]:
    from ..models.yolact import SIZE_DIVISOR, Yolact

    return Yolact, Split(("class_logits", "box_deltas", "coefficients", "prototypes", "anchors"), SIZE_DIVISOR,
                         lambda m, batch: m.forward_raw(batch), lambda m, raw, sizes: m.postprocess(raw, sizes))


def _affinity() -> tuple[type, Split]:
    from ..models.affinity import AffinityNet

    def raw(m, batch):
        pyramid = m.fpn(m.backbone(batch)[1:])
        return {"semantic": m.semantic_head(pyramid), "affinity": m.affinity_head(pyramid)}

    def post(m, raw, sizes):  # the model predicts at its input's size: one size per batch
        return m.postprocess(raw["semantic"], raw["affinity"], sizes[0])

    return AffinityNet, Split(("semantic", "affinity"), 32, raw, post)


def split_for(model: nn.Module) -> Split | None:
    for make in (_yolact, _affinity):
        cls, split = make()
        if isinstance(model, cls):
            return split
    return None


class RawOutputs(nn.Module):
    """The graph half of a split model: a padded batch in, the split's tensors out (a tuple, in order)."""

    def __init__(self, model: nn.Module, split: Split):
        super().__init__()
        self.model, self.split = model, split

    def forward(self, batch: torch.Tensor):
        raw = self.split.raw(self.model, batch)
        return tuple(raw[k] for k in self.split.outputs)


class OnnxInstanceModel(nn.Module):
    """An exported split instance model: `forward(images)` as the PyTorch model's (a list of (C, H, W)
    tensors -> InstanceResults), the graph in onnxruntime, the post-processing in Python."""

    is_exported = True

    def __init__(self, onnx_model, split: Split, python_half: nn.Module):
        super().__init__()
        self.onnx, self.split = onnx_model, split
        # not a submodule: its (meta-device) weights are never used, and must not look like this model's
        object.__setattr__(self, "python_half", python_half.eval())
        self.seglab_config = onnx_model.seglab_config
        self.fixed_size = onnx_model.fixed_size

    def describe(self) -> str:
        return self.onnx.describe() + "; NMS and masks in Python"

    def forward(self, images, targets=None):
        from ..layers.image_batch import batch_images

        if targets is not None:
            raise SeglabError("an exported model predicts; it does not train")
        batch, sizes = batch_images(images, self.split.divisor)
        if self.fixed_size is not None and tuple(batch.shape[-2:]) != self.fixed_size:
            raise SeglabError(f"the exported graph takes {self.fixed_size[0]}x{self.fixed_size[1]} inputs, got "
                              f"{batch.shape[-2]}x{batch.shape[-1]}")
        outputs = self.onnx.run(batch)
        with torch.no_grad():
            return self.split.post(self.python_half, dict(zip(self.split.outputs, outputs)), sizes)

    def train(self, mode: bool = True):
        return super().train(False)


def python_half(config: dict) -> nn.Module:
    """The model built from a file's metadata, for its post-processing (weights left at initialisation)."""
    from ..hub import create_model

    with torch.device("meta"):  # no memory or time for weights that are never used
        try:
            return create_model(config["name"], num_classes=config["num_classes"], **config.get("kwargs", {}))
        except Exception:  # an entrypoint that cannot build on the meta device
            pass
    return create_model(config["name"], num_classes=config["num_classes"], **config.get("kwargs", {}))


def export_instance_onnx(model: nn.Module, path, size: tuple[int, int], *, metadata: dict, opset: int | None = None) -> None:
    """Trace the graph half of a split instance model at `size` (rounded up to the family's divisor)."""
    import io
    import json
    import warnings

    import onnx

    from ..utils.io import atomic_path
    from .formats import DEFAULT_OPSET

    split = split_for(model)
    if split is None:
        raise SeglabError(f"{metadata.get('name')}: not a family that splits into graph and post-processing "
                          f"(YOLACT and the affinity network do; see docs/deploy.md)")
    graph = RawOutputs(model.eval(), split).eval()
    example = torch.randn(1, int(metadata.get("kwargs", {}).get("in_channels", 3)), *size)
    buffer = io.BytesIO()
    axes = {"images": {0: "batch"}, **{k: {0: "batch"} for k in split.outputs if k != "anchors"}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=opset or DEFAULT_OPSET,
                              input_names=["images"], output_names=list(split.outputs), dynamic_axes=axes)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise SeglabError(f"{metadata.get('name')}: ONNX export failed ({first})") from e
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = "seglab", json.dumps(metadata)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def compare_instances(reference: Sequence, exported: Sequence) -> dict:
    """How far the runtime's detections are from PyTorch's: same count per image, largest box and score
    difference, mask pixel agreement (detections in the same order)."""
    same_count = all(len(a.scores) == len(b.scores) for a, b in zip(reference, exported))
    box = score = 0.0
    agree = total = 0
    for a, b in zip(reference, exported):
        if len(a.scores) != len(b.scores) or not len(a.scores):
            continue
        box = max(box, (a.boxes - b.boxes).abs().max().item())
        score = max(score, (a.scores - b.scores).abs().max().item())
        agree += (a.masks == b.masks).sum().item()
        total += a.masks.numel()
    return {"same_count": same_count, "max_box_diff": box, "max_score_diff": score,
            "mask_agreement": agree / total if total else 1.0, "images": len(reference)}

