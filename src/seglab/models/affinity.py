"""Proposal-free instance segmentation by pixel affinities and graph merge: Liu, Yang, Li, Zhou, Xu, Li
& Lu, "Affinity Derivation and Graph Merge for Instance Segmentation", ECCV 2018 (Sec. 3).

A semantic branch predicts each pixel's class (background + the thing classes); an affinity branch
predicts, for each pixel and each neighbour at distance d in {1, 2, 4, 8, 16, 32, 64} (the paper's set)
in 8 directions, the probability that the two belong to the same instance (56 sigmoid channels). At
inference, `seglab.inference.graph_merge` clusters the pixels into instances from the two (with the
paper's refinements: affinity refinement by class, background excluded, forced local merge of 2x2
windows, class partition).

`affinity_resnet50`, `affinity_resnet18` (registered with task="instance"):
- ResNet trunk at output stride 32; C2..C5 feed an FPN (`seglab.necks.fpn`, 256 channels) giving P2..P5;
- two heads of the Panoptic-FPN semantic-branch form (`seglab.models.fpn_semantic.SemanticFPNHead`:
  per level 3x3 conv 128 + GroupNorm + ReLU + 2x upsampling stages to stride 4, summed, 1x1 conv):
  one gives num_classes + 1 class logits (class 0 = background), one gives 8 * len(distances)
  affinity logits. Both at stride 4, so the distances are in stride-4 cells (d = 1 is 4 input pixels;
  a 1024x2048 Cityscapes image gives the 256x512 graph of benchmarks/graph_merge_speed.py).
Deviation: the paper trains two separate networks of similar structure (one semantic, one affinity);
we share the trunk and the FPN between the two heads, which halves the cost. The paper publishes no
parameter count. Ours, at 21 thing classes (22 class logits with the background): 30,110,094
(resnet50: trunk 23,508,032 + FPN 3,344,384 + semantic head 1,626,646 + affinity head 1,631,032) and
17,041,294 (resnet18); at Cityscapes' 8 thing classes 30,108,417 and 17,039,617 (tests/models/test_affinity.py).

Training (`forward(images, targets)`, returns a dict of losses to be summed):
- `loss_semantic`: cross-entropy of the class logits (bilinearly upsampled to the image size) against
  the class map painted from the targets' masks (label + 1; 0 background; crowd masks ignored);
- `loss_affinity`: balanced BCE (`seglab.losses.affinity.balanced_affinity_loss`) against the targets
  `affinity_targets` derives from the instance map, nearest-sampled onto the stride-4 grid.
Targets per image: the instance contract's dict ("masks" (K, H, W), "labels" (K,) thing indices 0..C-1,
optional "iscrowd" (K,)); or, simpler, "instance_map" (H, W) ids (0 background, < 0 ignore) with
"labels" giving the class of id k at index k - 1.
Inference (`forward(images)`): a list of `InstanceResult` per image. The instance map from the graph
merge (stride 4) is nearest-upsampled to the image size, and each instance keeps the pixels whose
full-resolution predicted class is its class; instances left empty are dropped. Scores are the mean
class probability over the instance (graph merge). Merge settings are attributes of the model
(`threshold`, `local_merge_window`, `min_area` in input pixels, `refine_affinity`, `class_partition`).
Width knobs for tiny builds: `width` (ResNet), `fpn_channels`, `head_channels`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import create_backbone
from ..errors import SeglabError
from ..inference.graph_merge import PAPER_DISTANCES, graph_merge, masks_to_boxes
from ..layers import resize_to
from ..losses.affinity import affinity_targets, balanced_affinity_loss
from ..necks.fpn import FeaturePyramidNetwork
from ..registry import register_model
from ..structures import InstanceResult
from .fpn_semantic import SemanticFPNHead

__all__ = ["AffinityNet", "instance_maps_from_targets"]

IGNORE = 255  # class-map value of crowd / ignored pixels


def instance_maps_from_targets(targets: Sequence[dict], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(instance ids (N, H, W): 0 background, k for the k-th mask, -1 crowd; class map (N, H, W):
    label + 1 on instances, 0 background, 255 crowd). Later masks are painted over earlier ones."""
    inst_maps, class_maps = [], []
    for i, t in enumerate(targets):
        labels = torch.as_tensor(t["labels"]).long()
        if "instance_map" in t:
            inst = torch.as_tensor(t["instance_map"]).long()
            if tuple(inst.shape) != tuple(size):
                raise SeglabError(f"targets[{i}]['instance_map'] is {tuple(inst.shape)}, images are {tuple(size)}")
            if int(inst.max()) > labels.numel():
                raise SeglabError(f"targets[{i}]: instance id {int(inst.max())} but only {labels.numel()} labels")
            lookup = torch.cat([torch.zeros(1, dtype=torch.long), labels + 1])
            cls = torch.where(inst < 0, IGNORE, lookup[inst.clamp_min(0)])
        else:
            masks = torch.as_tensor(t["masks"]).bool()
            if masks.shape[0] != labels.numel() or tuple(masks.shape[1:]) != tuple(size):
                raise SeglabError(f"targets[{i}]: masks {tuple(masks.shape)} do not match {labels.numel()} labels "
                                  f"and image size {tuple(size)}")
            crowd = torch.as_tensor(t.get("iscrowd", torch.zeros(labels.numel()))).bool()
            inst = torch.zeros(size, dtype=torch.long)
            cls = torch.zeros(size, dtype=torch.long)
            for k in range(labels.numel()):
                inst[masks[k]] = -1 if crowd[k] else k + 1
                cls[masks[k]] = IGNORE if crowd[k] else int(labels[k]) + 1
        inst_maps.append(inst)
        class_maps.append(cls)
    return torch.stack(inst_maps), torch.stack(class_maps)


class AffinityNet(nn.Module):
    """ResNet -> FPN -> semantic head (C + 1 classes) and affinity head (8 per distance), stride 4."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, distances: Sequence[int] = PAPER_DISTANCES,
                 fpn_channels: int = 256, head_channels: int = 128, threshold: float = 0.5,
                 local_merge_window: int = 2, min_area: int = 32, refine_affinity: bool = True,
                 class_partition: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.distances = tuple(int(d) for d in distances)
        self.backbone = backbone
        self.fpn = FeaturePyramidNetwork(backbone.out_channels[1:], fpn_channels, in_strides=backbone.strides[1:])
        self.semantic_head = SemanticFPNHead(fpn_channels, self.fpn.strides, num_classes + 1, channels=head_channels)
        self.affinity_head = SemanticFPNHead(fpn_channels, self.fpn.strides, 8 * len(self.distances),
                                             channels=head_channels)
        self.stride = self.fpn.strides[0]
        self.threshold, self.local_merge_window, self.min_area = threshold, local_merge_window, min_area
        self.refine_affinity, self.class_partition = refine_affinity, class_partition

    def forward(self, images, targets: Sequence[dict] | None = None):
        if isinstance(images, (list, tuple)):
            images = torch.stack(list(images))
        pyramid = self.fpn(self.backbone(images)[1:])
        semantic, affinity = self.semantic_head(pyramid), self.affinity_head(pyramid)
        if targets is not None:
            return self.losses(semantic, affinity, targets, images.shape[-2:])
        return self.postprocess(semantic, affinity, images.shape[-2:])

    def losses(self, semantic: torch.Tensor, affinity: torch.Tensor, targets: Sequence[dict],
               size) -> dict[str, torch.Tensor]:
        if len(targets) != semantic.shape[0]:
            raise SeglabError(f"got {len(targets)} targets for {semantic.shape[0]} images")
        inst, cls = instance_maps_from_targets(targets, tuple(size))
        inst, cls = inst.to(semantic.device), cls.to(semantic.device)
        loss_semantic = F.cross_entropy(resize_to(semantic, size), cls, ignore_index=IGNORE)
        grid = F.interpolate(inst[:, None].float(), size=affinity.shape[-2:], mode="nearest")[:, 0].long()
        target, valid = affinity_targets(grid, self.distances)
        return {"loss_semantic": loss_semantic,
                "loss_affinity": balanced_affinity_loss(affinity, target, valid)}

    @torch.no_grad()
    def postprocess(self, semantic: torch.Tensor, affinity: torch.Tensor, size) -> list[InstanceResult]:
        """Graph merge on the stride-4 grid, then masks at the image size (see the module docstring)."""
        probs, aff = semantic.float().softmax(1), affinity.float().sigmoid()
        full_class = resize_to(semantic.float(), size).argmax(1)
        min_cells = max(1, math.ceil(self.min_area / self.stride ** 2))
        results = []
        for i in range(semantic.shape[0]):
            merged = graph_merge(aff[i], probs[i], distances=self.distances, threshold=self.threshold,
                                 background_classes=(0,), refine_affinity=self.refine_affinity,
                                 class_partition=self.class_partition,
                                 local_merge_window=self.local_merge_window, min_area=min_cells)
            ids = merged.instance_map.to(semantic.device)
            ids = F.interpolate(ids[None, None].float(), size=size, mode="nearest")[0, 0].long()
            k = merged.labels.numel()
            masks = ids[None] == torch.arange(1, k + 1, device=ids.device)[:, None, None]
            masks &= full_class[i][None] == merged.labels.to(ids.device)[:, None, None]
            keep = masks.flatten(1).any(1)
            masks = masks[keep]
            results.append(InstanceResult(boxes=masks_to_boxes(masks), scores=merged.scores[keep].to(ids.device),
                                          labels=(merged.labels[keep] - 1).to(ids.device), masks=masks))
        return results


def _affinity(name: str, num_classes: int, in_channels: int, backbone_weights: str | None, aux_loss: bool,
              kwargs: dict) -> AffinityNet:
    if aux_loss:
        raise SeglabError(f"affinity_{name} has no auxiliary head; use aux_loss=False")
    own = {k: kwargs.pop(k) for k in ("distances", "fpn_channels", "head_channels", "threshold",
                                      "local_merge_window", "min_area", "refine_affinity", "class_partition")
           if k in kwargs}
    backbone = create_backbone(name, weights=backbone_weights, in_channels=in_channels, output_stride=32, **kwargs)
    return AffinityNet(backbone, num_classes, **own)


@register_model(task="instance")
def affinity_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                      aux_loss: bool = False, **kwargs) -> AffinityNet:
    """Affinity + graph merge on ResNet-50-FPN (30.11M parameters at 21 classes). Model kwargs: distances,
    fpn_channels, head_channels and the merge settings; the rest go to the trunk (`width`)."""
    return _affinity("resnet50", num_classes, in_channels, backbone_weights, aux_loss, kwargs)


@register_model(task="instance")
def affinity_resnet18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                      aux_loss: bool = False, **kwargs) -> AffinityNet:
    """Affinity + graph merge on ResNet-18-FPN (17.04M parameters at 21 classes); kwargs as for
    affinity_resnet50."""
    return _affinity("resnet18", num_classes, in_channels, backbone_weights, aux_loss, kwargs)
