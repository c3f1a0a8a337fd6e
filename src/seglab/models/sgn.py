"""SGN: Liu, Jia, Fidler & Urtasun, "SGN: Sequential Grouping Networks for Instance Segmentation", ICCV 2017
(Sec. 3.1 breakpoints, Sec. 3.2 LineNet, Sec. 3.3 MergerNet; seed 000's Fig. 1: "We first predict
breakpoints. LineNet groups them into connected components, which are finally composed by the
MergerNet to form our final instances").

`sgn_resnet50`, `sgn_resnet18` (registered with task="instance"), on a grid of stride 4:
- breakpoint FCN: a ResNet trunk at output stride 8 and a DeepLabv3+-style decoder (conv5 reduced to
  `decoder_channels` (256) and upsampled to stride 4, concatenated with conv2 reduced to 48 channels,
  two 3x3 convs + ReLU), then 1x1 convs to C + 1 class logits and to 2 breakpoint logits: "a new
  instance starts at this cell" along its row (horizontal) and along its column (vertical). The paper
  uses a PSPNet-style ResNet FCN;
- LineNet (`seglab.heads.instance.sgn.LineNet`), one per direction: a bidirectional GRU over every row
  (column) of the grid whose input per cell is the FCN's class probabilities and breakpoint
  probability (detached: the FCN is trained by its own losses, as the paper trains the stages one
  after another) and whose output is a refined start logit; the rows' foreground cells are cut into
  line segments at the class changes and at LineNet's horizontal starts
  (`seglab.inference.sequential_grouping.line_segments`);
- MergerNet (`seglab.heads.instance.sgn.MergerNet`): for every pair of line segments of consecutive rows
  that touch and share a class, a merge logit from the segments' pooled decoder features and the
  vertical LineNet's evidence on their overlap; pairs are merged best first while their probability
  exceeds `merge_threshold` (0.5), and every group is an instance.
Training (`forward(images, targets)`, summed): `loss_semantic` (cross-entropy at the image size, crowd
ignored), `loss_breakpoint` and `loss_line` (binary cross-entropy of the FCN's and of LineNet's two
start maps on the ground-truth foreground cells of the grid, against the starts of the ground-truth
instance map sampled at the cell centres), `loss_merge` (class-balanced binary cross-entropy of
MergerNet over the candidate pairs of the ground-truth line segments, labelled by whether the two
segments belong to one instance; the vertical evidence comes from the current vertical LineNet).
Inference (`forward(images)` -> InstanceResult per image): the grid's instance map nearest-resized to the
image, each instance cut to the pixels of its class at the image size; instances under `min_area`
pixels dropped; score = the instance's mean class probability.

Deviations: the paper's LineNet emits the segments of a line by a sequence of decisions over
breakpoint-to-breakpoint intervals and its MergerNet merges components iteratively with recomputed
features; here LineNet labels every cell of the line at once (the same start / continue decision) and
MergerNet scores all row-to-row pairs once before a greedy union, which keeps both fully batched. The
paper gives no parameter count; ours at 21 classes: sgn_resnet50 25,378,603, sgn_resnet18 12,644,651
(`tests/models/test_sgn.py`).
Width knobs for tiny builds: `width` (ResNet), `decoder_channels`, `line_hidden`, `merger_channels`,
`merger_hidden`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SeglabError
from ..heads.instance.sgn import LineNet, MergerNet
from ..inference.grid_instances import instances_from_grid
from ..inference.sequential_grouping import (
    LineSegments,
    ground_truth_breakpoints,
    group_segments,
    line_segments,
    merge_candidates,
)
from ..layers import resize_to
from ..layers.image_batch import batch_images
from ..registry import register_model
from ..structures import InstanceResult
from .affinity import IGNORE, instance_maps_from_targets
from .pfn import pad_target
from .trunk_builder import build_on_trunk

__all__ = ["SGN", "pair_geometry"]

STRIDE = 8  # trunk output stride
GRID = 4  # the grid the grouping works on


def pair_geometry(segments: LineSegments, counts: np.ndarray, cells: np.ndarray, pairs: np.ndarray,
                  vertical_probs: np.ndarray) -> torch.Tensor:
    """(P, 4) MergerNet cues per candidate pair: mean and max vertical start probability over the overlap
    cells, overlap / length of the upper and of the lower segment."""
    num = len(pairs)
    if num == 0:
        return torch.zeros(0, 4)
    values = vertical_probs[cells[:, 1], cells[:, 2]].astype(np.float64)
    mean = np.bincount(cells[:, 0], weights=values, minlength=num) / np.maximum(counts, 1)
    peak = np.zeros(num)
    np.maximum.at(peak, cells[:, 0], values)
    length = (segments.x2 - segments.x1).astype(np.float64)
    geometry = np.stack([mean, peak, counts / length[pairs[:, 0]], counts / length[pairs[:, 1]]], 1)
    return torch.from_numpy(geometry).float()


class SGN(nn.Module):
    """ResNet (stride 8) + decoder (stride 4) -> classes and breakpoints -> LineNet -> MergerNet."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, decoder_channels: int = 256, line_hidden: int = 32,
                 merger_channels: int = 32, merger_hidden: int = 64, merge_threshold: float = 0.5,
                 min_area: int = 16):
        super().__init__()
        if backbone.strides[-1] != STRIDE or backbone.strides[1] != GRID:
            raise SeglabError(f"SGN needs a trunk at stride {STRIDE} with a stride-{GRID} stage, "
                              f"got {backbone.strides}")
        self.num_classes = num_classes
        self.backbone = backbone
        channels = backbone.out_channels
        self.reduce_high = nn.Sequential(nn.Conv2d(channels[-1], decoder_channels, 1), nn.ReLU(inplace=True))
        self.reduce_low = nn.Sequential(nn.Conv2d(channels[1], 48, 1), nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(nn.Conv2d(decoder_channels + 48, decoder_channels, 3, padding=1),
                                     nn.ReLU(inplace=True),
                                     nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.semantic = nn.Conv2d(decoder_channels, num_classes + 1, 1)
        self.breakpoints = nn.Conv2d(decoder_channels, 2, 1)
        self.line_horizontal = LineNet(num_classes + 2, line_hidden)
        self.line_vertical = LineNet(num_classes + 2, line_hidden)
        self.merger = MergerNet(decoder_channels, merger_channels, merger_hidden)
        self.merge_threshold, self.min_area = merge_threshold, min_area

    def predict(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"feature" (N, D, h, w), "semantic" (N, C + 1, h, w), "breakpoints" (N, 2, h, w), "lines" (N, 2, h, w)}
        on the stride-4 grid (logits; channel 0 horizontal, 1 vertical)."""
        features = self.backbone(batch)
        low = self.reduce_low(features[1])
        high = resize_to(self.reduce_high(features[-1]), low.shape[-2:])
        feature = self.decoder(torch.cat([high, low], 1))
        semantic, breakpoints = self.semantic(feature), self.breakpoints(feature)
        probs = semantic.softmax(1).detach()
        starts = breakpoints.sigmoid().detach()
        lines = torch.stack([self.line_horizontal.scan(torch.cat([probs, starts[:, :1]], 1), vertical=False),
                             self.line_vertical.scan(torch.cat([probs, starts[:, 1:]], 1), vertical=True)], 1)
        return {"feature": feature, "semantic": semantic, "breakpoints": breakpoints, "lines": lines}

    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes = batch_images(images, STRIDE)
        out = self.predict(batch)
        if targets is None:
            return self.postprocess(out, tuple(batch.shape[-2:]), sizes)
        return self.losses(out, targets, tuple(batch.shape[-2:]), sizes)

    # -- training ------------------------------------------------------------------------------------
    def losses(self, out: dict, targets: Sequence[dict], padded, sizes) -> dict[str, torch.Tensor]:
        if len(targets) != len(sizes):
            raise SeglabError(f"got {len(targets)} targets for {len(sizes)} images")
        inst, cls = instance_maps_from_targets([pad_target(t, s, padded) for t, s in zip(targets, sizes)], padded)
        semantic = out["semantic"]
        device = semantic.device
        loss_semantic = F.cross_entropy(resize_to(semantic, padded).float(), cls.to(device), ignore_index=IGNORE)
        grid = F.interpolate(inst[:, None].float(), size=semantic.shape[-2:], mode="nearest")[:, 0].long().numpy()
        grid_classes = F.interpolate(cls[:, None].float(), size=semantic.shape[-2:], mode="nearest")[:, 0]
        grid_classes = grid_classes.long().numpy()
        grid_classes = np.where((grid_classes == IGNORE) | (grid <= 0), 0, grid_classes)
        starts = np.stack([np.stack(ground_truth_breakpoints(np.clip(g, 0, None))) for g in grid])  # (N, 2, h, w)
        starts = torch.from_numpy(starts).float().to(device)
        foreground = torch.from_numpy(grid > 0).to(device)[:, None].expand_as(starts)
        loss_breakpoint = self._masked_bce(out["breakpoints"], starts, foreground)
        loss_line = self._masked_bce(out["lines"], starts, foreground)
        return {"loss_semantic": loss_semantic, "loss_breakpoint": loss_breakpoint, "loss_line": loss_line,
                "loss_merge": self.merge_loss(out, grid, grid_classes)}

    @staticmethod
    def _masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not bool(mask.any()):
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits.float()[mask], target[mask])

    def merge_loss(self, out: dict, grid: np.ndarray, grid_classes: np.ndarray) -> torch.Tensor:
        """Class-balanced BCE of MergerNet on the candidate pairs of the ground-truth line segments (the
        ground-truth classes cut at the ground-truth horizontal starts); a pair is positive when its two
        segments belong to one instance."""
        vertical = out["lines"][:, 1].detach().float().sigmoid().cpu().numpy()
        logits, labels = [], []
        for i, (ids, classes) in enumerate(zip(grid, grid_classes)):
            segments = line_segments(classes, ground_truth_breakpoints(np.clip(ids, 0, None))[0])
            pairs, counts, cells = merge_candidates(segments)
            if len(pairs) == 0:
                continue
            owner = ids[segments.row, segments.x1]
            logits.append(self.pair_logits(out["feature"][i], segments, pairs, counts, cells, vertical[i]))
            labels.append(torch.from_numpy(owner[pairs[:, 0]] == owner[pairs[:, 1]]).float())
        return self._balanced(logits, labels, out["feature"])

    def pair_logits(self, feature: torch.Tensor, segments: LineSegments, pairs: np.ndarray, counts: np.ndarray,
                    cells: np.ndarray, vertical: np.ndarray) -> torch.Tensor:
        ids = torch.from_numpy(segments.ids).to(feature.device)
        seg_features = self.merger.segment_features(feature, ids, len(segments))
        geometry = pair_geometry(segments, counts, cells, pairs, vertical).to(feature.device)
        return self.merger(seg_features, torch.from_numpy(pairs).to(feature.device), geometry)

    @staticmethod
    def _balanced(logits: list[torch.Tensor], labels: list[torch.Tensor], anchor: torch.Tensor) -> torch.Tensor:
        if not logits:
            return anchor.sum() * 0.0
        logits, labels = torch.cat(logits).float(), torch.cat(labels).to(anchor.device)
        positive = labels > 0.5
        weight = torch.where(positive, 0.5 / positive.sum().clamp(min=1), 0.5 / (~positive).sum().clamp(min=1))
        if bool(positive.all()) or not bool(positive.any()):
            weight = torch.full_like(labels, 1.0 / len(labels))
        return (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weight).sum()

    # -- inference -----------------------------------------------------------------------------------
    def group(self, feature: torch.Tensor, classes: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """(h, w) instance ids (0 background) of one image's grid from its class map and LineNet start
        probabilities (2, h, w)."""
        segments = line_segments(classes, lines[0] > 0.5)
        if len(segments) == 0:
            return np.zeros(classes.shape, dtype=np.int64)
        pairs, counts, cells = merge_candidates(segments)
        if len(pairs):
            with torch.no_grad():
                scores = self.pair_logits(feature, segments, pairs, counts, cells, lines[1]).sigmoid().cpu().numpy()
        else:
            scores = np.zeros(0)
        groups = group_segments(len(segments), pairs, scores, self.merge_threshold)
        return np.where(segments.ids >= 0, groups[np.clip(segments.ids, 0, None)] + 1, 0)

    @torch.no_grad()
    def postprocess(self, out: dict, padded, sizes) -> list[InstanceResult]:
        full_probs = resize_to(out["semantic"].float(), padded).softmax(1)
        classes = out["semantic"].argmax(1).cpu().numpy()
        lines = out["lines"].float().sigmoid().cpu().numpy()
        results = []
        for i, (h, w) in enumerate(sizes):
            gh, gw = math.ceil(h / GRID), math.ceil(w / GRID)
            ids = self.group(out["feature"][i, :, :gh, :gw], classes[i, :gh, :gw], lines[i, :, :gh, :gw])
            cls = classes[i, :gh, :gw]
            labels = np.array([cls[ids == k][0] for k in range(1, int(ids.max()) + 1)], dtype=np.int64)
            results.append(instances_from_grid(ids, labels, full_probs[i, :, :h, :w], GRID, self.min_area))
        return results


@register_model(task="instance")
def sgn_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, **kwargs) -> SGN:
    """SGN on ResNet-50 at stride 8 with a stride-4 decoder (Liu et al., ICCV 2017; 25.38M parameters at 21
    classes). Model kwargs:
    decoder_channels, line_hidden, merger_channels, merger_hidden, merge_threshold, min_area; the rest go
    to the trunk (`width`)."""
    return build_on_trunk(SGN, "resnet50", entrypoint="sgn_resnet50", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)


@register_model(task="instance")
def sgn_resnet18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, **kwargs) -> SGN:
    """SGN on ResNet-18 at stride 8 (12.64M parameters at 21 classes); kwargs as for sgn_resnet50."""
    return build_on_trunk(SGN, "resnet18", entrypoint="sgn_resnet18", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)
