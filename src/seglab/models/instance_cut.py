"""InstanceCut: Kirillov, Levinkov, Andres, Savchynskyy & Rother, "InstanceCut: from Edges to Instances with
MultiCut", CVPR 2017 (Sec. 3.1 semantic segmentation, Sec. 3.2 the instance-aware edge detection block,
Fig. 3, Sec. 3.3 image partitioning by multicut; seed 000's figure).

`instance_cut_resnet50`, `instance_cut_resnet18` (registered with task="instance"):
- semantic segmentation FCN: a ResNet trunk at output stride 8 (the paper's is Dilation10's VGG front
  end at stride 8) with a DeepLab-LargeFOV head: 3x3 conv dilation 12 to `head_channels` (1024) + ReLU,
  1x1 conv 1024 + ReLU, 1x1 conv to C + 1 class logits (0 = background);
- instance-aware edge detection block (Fig. 3): the FCN's intermediate feature maps (the outputs of
  the stem and of the four stages) are max-pooled to the size of the smallest (stride 8; kernel and
  stride = the ratio of strides) and concatenated; a per-pixel 2-layer perceptron (1x1 conv to
  `mlp_channels` (256) + ReLU, 1x1 conv to `context_channels` (64) + ReLU) and Dilation10's context
  network (Yu & Koltun, ICLR 2016, the basic context module: 3x3 convs with dilations 1, 1, 2, 4, 8,
  16, 1, each + ReLU, then a 1x1 conv) give one boundary logit per pixel;
- image partitioning (`seglab.inference.instance_cut`): watershed superpixels on the edge map, a region
  adjacency graph weighted by the boundary probability, the multicut (GAEC + Kernighan-Lin,
  `seglab.inference.multicut`) per thing class; each component is an instance.
Training (`forward(images, targets)`, summed): `loss_semantic` (per-pixel cross-entropy at the image
size; crowd pixels ignored) and `loss_edge`: the boundary logits bilinearly resized to the image and a
class-balanced binary cross-entropy (positives weighted by the fraction of negatives and vice versa,
as HED does, Xie & Tu, ICCV 2015) against the instance boundaries: the pixels whose instance id differs
from a 4-neighbour's, where at least one of the two is an instance (so an instance's outline and the
border between touching instances). The paper trains the two parts one after the other (the edge block
on the frozen FCN's features); here jointly, with the edge block's input detached from the trunk (the
FCN features stay those of semantic segmentation, as in the paper).
Inference (`forward(images)` -> InstanceResult per image): class probabilities and edge probabilities
bilinearly resized to the partition grid (stride `partition_stride`, 4), partitioned, the instance map
nearest-resized to the image and each instance cut to the pixels of its class at the image size;
instances under `min_area` pixels dropped; score = the mean probability of the class over the instance.

Deviations: ResNet trunk (BatchNorm, trained from scratch) instead of Dilation10; labelling fixed to the
class argmax before the multicut (see `seglab.inference.instance_cut`); superpixels from the edge map by
a marker watershed (the paper does not name its superpixel method). The paper gives no parameter count;
ours at 21 classes: instance_cut_resnet50 44,730,263, instance_cut_resnet18 17,505,687
(`tests/models/test_instance_cut.py`).
Width knobs for tiny builds: `width` (ResNet), `head_channels`, `mlp_channels`, `context_channels`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError
from ..inference.grid_instances import instances_from_grid
from ..inference.instance_cut import instance_cut
from ..layers import resize_to
from ..layers.image_batch import batch_images
from ..registry import register_model
from ..structures import InstanceResult
from .affinity import IGNORE, instance_maps_from_targets
from .pfn import pad_target
from .trunk_builder import build_on_trunk

__all__ = ["ContextModule", "EdgeDetectionBlock", "InstanceCut", "instance_boundaries"]

STRIDE = 8
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)


def instance_boundaries(instance_map: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: pixels whose id differs from a 4-neighbour's, one of the two being an instance
    (id > 0); ids < 0 (crowd / ignore) count as non-instances."""
    ids = instance_map.clamp(min=0)
    edge = torch.zeros_like(ids, dtype=torch.bool)
    horizontal = (ids[..., :, 1:] != ids[..., :, :-1]) & ((ids[..., :, 1:] > 0) | (ids[..., :, :-1] > 0))
    vertical = (ids[..., 1:, :] != ids[..., :-1, :]) & ((ids[..., 1:, :] > 0) | (ids[..., :-1, :] > 0))
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    return edge


class ContextModule(nn.Sequential):
    """Dilation10's basic context module: 3x3 convs (+ ReLU) with dilations 1, 1, 2, 4, 8, 16, 1 at
    constant width, then a 1x1 conv to `out_channels`."""

    def __init__(self, channels: int, out_channels: int, dilations: Sequence[int] = CONTEXT_DILATIONS):
        layers = []
        for d in dilations:
            layers += [nn.Conv2d(channels, channels, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
        super().__init__(*layers, nn.Conv2d(channels, out_channels, 1))


class EdgeDetectionBlock(nn.Module):
    """Max-pool the FCN's feature maps to the smallest one, concatenate, per-pixel 2-layer perceptron,
    context network -> one boundary logit per pixel (Fig. 3)."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], *, mlp_channels: int = 256,
                 context_channels: int = 64):
        super().__init__()
        coarsest = max(strides)
        self.pools = nn.ModuleList(nn.MaxPool2d(coarsest // s, coarsest // s, ceil_mode=True) if s < coarsest
                                   else nn.Identity() for s in strides)
        self.perceptron = nn.Sequential(nn.Conv2d(sum(in_channels), mlp_channels, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(mlp_channels, context_channels, 1), nn.ReLU(inplace=True))
        self.context = ContextModule(context_channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[-1].shape[-2:]
        pooled = [pool(f)[..., :size[0], :size[1]] for pool, f in zip(self.pools, features)]
        return self.context(self.perceptron(torch.cat(pooled, 1)))


class InstanceCut(nn.Module):
    """ResNet (stride 8) -> semantic logits + instance-aware edges -> multicut partition."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, head_channels: int = 1024, mlp_channels: int = 256,
                 context_channels: int = 64, partition_stride: int = 4, marker_threshold: float = 0.3,
                 beta: float = 0.5, min_area: int = 16):
        super().__init__()
        if backbone.strides[-1] != STRIDE:
            raise SeglabError(f"InstanceCut needs its trunk at stride {STRIDE}, got strides {backbone.strides}")
        if partition_stride < 1 or STRIDE % partition_stride:
            raise SeglabError(f"InstanceCut: partition_stride must divide {STRIDE}, got {partition_stride}")
        self.num_classes = num_classes
        self.backbone = backbone
        self.semantic = nn.Sequential(
            nn.Conv2d(backbone.out_channels[-1], head_channels, 3, padding=12, dilation=12), nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, head_channels, 1), nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, num_classes + 1, 1))
        self.edge_block = EdgeDetectionBlock(backbone.out_channels, backbone.strides, mlp_channels=mlp_channels,
                                             context_channels=context_channels)
        self.partition_stride, self.marker_threshold, self.beta, self.min_area = \
            partition_stride, marker_threshold, beta, min_area

    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes = batch_images(images, STRIDE)
        features = self.backbone(batch)
        semantic = self.semantic(features[-1])
        edges = self.edge_block([f.detach() for f in features])
        if targets is None:
            return self.postprocess(semantic, edges, tuple(batch.shape[-2:]), sizes)
        return self.losses(semantic, edges, targets, tuple(batch.shape[-2:]), sizes)

    def losses(self, semantic: torch.Tensor, edges: torch.Tensor, targets: Sequence[dict], padded, sizes):
        if len(targets) != len(sizes):
            raise SeglabError(f"got {len(targets)} targets for {len(sizes)} images")
        inst, cls = instance_maps_from_targets([pad_target(t, s, padded) for t, s in zip(targets, sizes)], padded)
        inst, cls = inst.to(semantic.device), cls.to(semantic.device)
        loss_semantic = F.cross_entropy(resize_to(semantic, padded).float(), cls, ignore_index=IGNORE)
        boundary = instance_boundaries(inst).float()
        valid = torch.zeros_like(boundary, dtype=torch.bool)
        for i, (h, w) in enumerate(sizes):
            valid[i, :h, :w] = True
        valid &= inst >= 0
        positive = (boundary * valid).sum()
        total = valid.sum().clamp(min=1)
        weight = torch.where(boundary > 0, 1 - positive / total, positive / total) * valid
        logits = resize_to(edges, padded)[:, 0].float()
        loss_edge = (F.binary_cross_entropy_with_logits(logits, boundary, reduction="none") * weight).sum() / total
        return {"loss_semantic": loss_semantic, "loss_edge": loss_edge}

    @torch.no_grad()
    def postprocess(self, semantic: torch.Tensor, edges: torch.Tensor, padded, sizes) -> list[InstanceResult]:
        grid = (padded[0] // self.partition_stride, padded[1] // self.partition_stride)
        grid_probs = resize_to(semantic.float(), grid).softmax(1)
        grid_edges = resize_to(edges.float(), grid)[:, 0].sigmoid()
        full_probs = resize_to(semantic.float(), padded).softmax(1)
        results = []
        min_cells = max(1, math.ceil(self.min_area / self.partition_stride ** 2))
        for i, (h, w) in enumerate(sizes):
            gh, gw = math.ceil(h / self.partition_stride), math.ceil(w / self.partition_stride)
            cut = instance_cut(grid_probs[i, :, :gh, :gw], grid_edges[i, :gh, :gw],
                               marker_threshold=self.marker_threshold, beta=self.beta, min_area=min_cells)
            results.append(instances_from_grid(cut.instance_map, cut.labels, full_probs[i, :, :h, :w],
                                               self.partition_stride, self.min_area))
        return results


@register_model(task="instance")
def instance_cut_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                          aux_loss: bool = False, **kwargs) -> InstanceCut:
    """InstanceCut on ResNet-50 at stride 8 (Kirillov et al., CVPR 2017; 44.73M parameters at 21 classes).
    Model kwargs: head_channels, mlp_channels, context_channels and the partition settings
    (partition_stride, marker_threshold, beta, min_area); the rest go to the trunk (`width`)."""
    return build_on_trunk(InstanceCut, "resnet50", entrypoint="instance_cut_resnet50", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)


@register_model(task="instance")
def instance_cut_resnet18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                          aux_loss: bool = False, **kwargs) -> InstanceCut:
    """InstanceCut on ResNet-18 at stride 8 (17.51M parameters at 21 classes); kwargs as for
    instance_cut_resnet50."""
    return build_on_trunk(InstanceCut, "resnet18", entrypoint="instance_cut_resnet18", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)
