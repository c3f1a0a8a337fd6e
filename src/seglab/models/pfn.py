"""The proposal-free network (PFN): Liang, Wei, Shen, Yang, Lin & Yan, "Proposal-free Network for
Instance-level Object Segmentation", TPAMI 2018 (Sec. 3: category-level segmentation, instance location
and instance number prediction; Sec. 3.4 clustering; seed 000's "proposal-free network overview").

Per pixel the network predicts category confidences and the location of the instance the pixel belongs
to: a 6-vector of the instance box's centre, top-left and bottom-right corners (x, y each), in
coordinates normalised by the image size; per image it predicts the number of instances of every
category. Any clustering of each category's pixels by their location vectors into that many groups
then gives the instances ("category-level protection": pixels of different categories never share an
instance); the paper's is spectral clustering (`seglab.inference.spectral`).

`pfn_resnet50`, `pfn_resnet18` (registered with task="instance"):
- trunk at output stride 8 (conv4 and conv5 dilated; the paper's is DeepLab's VGG-16 at stride 8);
- category branch (the paper's DeepLab-LargeFOV head): 3x3 conv dilation 12 to `head_channels` (1024)
  + ReLU ("fc6"), 1x1 conv 1024 + ReLU ("fc7"), 1x1 conv to C + 1 confidences (0 = background);
- instance location, multi-scale (Sec. 3.2): a prediction stream on each of conv3, conv4 and conv5
  (all at stride 8 here): the feature with two coordinate maps (x / W, y / H) appended, 3x3 conv to
  `location_channels` (128) + ReLU, 1x1 conv to the 6-vector; the streams' predictions (with the
  coordinate maps) are fused by a 1x1 conv into the final 6-vector. Every stream and the fusion are
  trained against the same target (deep supervision), the fused one is used;
- instance number (Sec. 3.3): fc7's features, the category confidences and the fused locations are
  concatenated, a 3x3 conv to 256 + ReLU, global average pooling, fc 256 + ReLU, fc to C counts.
Training (`forward(images, targets)`, losses summed): `loss_semantic` (per-pixel cross-entropy at the
image size; crowd pixels ignored), `loss_location` (Euclidean loss, 1/2 of the squared error summed
over the 6 values and averaged over the instance pixels of the stride-8 grid, for each stream and the
fusion, summed), `loss_count` (Euclidean loss of the C counts, averaged over images).
Inference (`forward(images)` -> InstanceResult per image): confidences and fused locations bilinearly
resized to the image; for every category c with at least `min_area` pixels of argmax class c, its
pixels are spectrally clustered (`sigma` 0.05, at most `max_points` 1000 clustered, the rest assigned
to the nearest cluster mean) into max(1, round(predicted count of c)) groups; each group of at least
`min_area` pixels is an instance scored by its mean confidence of c.

Deviations: the paper trains the category network and the instance network separately (two VGG-16s,
then fine-tunes); here one trunk is shared, as `affinity_*` does, which halves the cost. The paper's
location targets and fusion follow its figure; it gives no loss weights (all 1 here) and no clustering
bandwidth (sigma chosen for image-normalised coordinates). No parameter count is published. Ours at
21 classes: pfn_resnet50 50,089,339 (trunk 23,508,032; fc6 2048 -> 1024 at 3x3: 18.9M), pfn_resnet18
20,505,467 (`tests/models/test_pfn.py`).
Width knobs for tiny builds: `width` (ResNet), `head_channels`, `location_channels`, `count_channels`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.instances import masks_to_boxes
from ..errors import SeglabError
from ..inference.spectral import spectral_clustering
from ..layers import resize_to
from ..layers.image_batch import batch_images
from ..registry import register_model
from ..structures import InstanceResult
from .affinity import IGNORE, instance_maps_from_targets
from .trunk_builder import build_on_trunk

__all__ = ["PFN", "location_targets", "pad_target", "pfn_instances"]

STRIDE = 8


def coordinate_maps(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 2, h, w): the x / W and y / H of every cell's centre of an (h, w) grid over the whole image."""
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) / height
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) / width
    return torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]))[None]


def location_targets(instance_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(6, h, w) targets and (h, w) bool validity from an (h, w) instance-id map (0 background, < 0
    ignored): for a pixel of instance k, its box's (cx, cy, x1, y1, x2, y2) in units of the map's width /
    height (pixel-edge convention, so a box spans [x1, x2))."""
    h, w = instance_map.shape
    target = torch.zeros(6, h, w)
    valid = instance_map > 0
    for k in instance_map[valid].unique().tolist():
        ys, xs = torch.where(instance_map == k)
        x1, x2 = xs.min().item() / w, (xs.max().item() + 1) / w
        y1, y2 = ys.min().item() / h, (ys.max().item() + 1) / h
        target[:, ys, xs] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x1, y1, x2, y2])[:, None]
    return target, valid


class _Stream(nn.Sequential):
    """Feature + coordinate maps -> 3x3 conv + ReLU -> 1x1 conv to the 6-vector."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__(nn.Conv2d(in_channels + 2, channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, 6, 1))


class PFN(nn.Module):
    """ResNet (stride 8) -> category confidences, multi-scale instance locations, instance numbers."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, head_channels: int = 1024,
                 location_channels: int = 128, count_channels: int = 256, location_stages: Sequence[int] = (2, 3, 4),
                 sigma: float = 0.05, max_points: int = 1000, min_area: int = 16):
        super().__init__()
        if backbone.strides[-1] != STRIDE:
            raise SeglabError(f"PFN needs its trunk at stride {STRIDE}, got strides {backbone.strides}")
        stages = [int(s) for s in location_stages]
        if not stages or any(s < 0 or s >= len(backbone.strides) or backbone.strides[s] != STRIDE for s in stages):
            raise SeglabError(f"PFN: location_stages {tuple(location_stages)} must name trunk stages at stride "
                              f"{STRIDE} (strides {backbone.strides})")
        self.num_classes, self.location_stages = num_classes, tuple(stages)
        self.backbone = backbone
        channels = backbone.out_channels
        self.fc6 = nn.Sequential(nn.Conv2d(channels[-1], head_channels, 3, padding=12, dilation=12),
                                 nn.ReLU(inplace=True))
        self.fc7 = nn.Sequential(nn.Conv2d(head_channels, head_channels, 1), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(head_channels, num_classes + 1, 1)
        self.streams = nn.ModuleList(_Stream(channels[s], location_channels) for s in stages)
        self.fusion = nn.Conv2d(6 * len(stages) + 2, 6, 1)
        self.count_conv = nn.Sequential(nn.Conv2d(head_channels + num_classes + 1 + 6, count_channels, 3, padding=1),
                                        nn.ReLU(inplace=True))
        self.count_fc = nn.Sequential(nn.Linear(count_channels, count_channels), nn.ReLU(inplace=True),
                                      nn.Linear(count_channels, num_classes))
        self.sigma, self.max_points, self.min_area = sigma, max_points, min_area

    def predict(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"semantic" (N, C + 1, h, w), "streams" list of (N, 6, h, w), "location" (N, 6, h, w),
        "count" (N, C)} at stride 8."""
        features = self.backbone(batch)
        fc7 = self.fc7(self.fc6(features[-1]))
        semantic = self.classifier(fc7)
        h, w = semantic.shape[-2:]
        coords = coordinate_maps(h, w, semantic).expand(batch.shape[0], -1, -1, -1)
        streams = [stream(torch.cat([features[s], coords], 1)) for s, stream in zip(self.location_stages, self.streams)]
        location = self.fusion(torch.cat([*streams, coords], 1))
        pooled = self.count_conv(torch.cat([fc7, semantic.softmax(1), location], 1)).mean((2, 3))
        return {"semantic": semantic, "streams": streams, "location": location, "count": self.count_fc(pooled)}

    def forward(self, images, targets: Sequence[dict] | None = None):
        batch, sizes = batch_images(images, STRIDE)
        out = self.predict(batch)
        if targets is None:
            return self.postprocess(out, sizes)
        return self.losses(out, targets, tuple(batch.shape[-2:]), sizes)

    def losses(self, out: dict, targets: Sequence[dict], padded: tuple[int, int], sizes) -> dict[str, torch.Tensor]:
        if len(targets) != len(sizes):
            raise SeglabError(f"got {len(targets)} targets for {len(sizes)} images")
        padded_targets = [pad_target(t, size, padded) for t, size in zip(targets, sizes)]
        inst, cls = instance_maps_from_targets(padded_targets, padded)
        device = out["semantic"].device
        loss_semantic = F.cross_entropy(resize_to(out["semantic"], padded).float(), cls.to(device), ignore_index=IGNORE)
        grid = F.interpolate(inst[:, None].float(), size=out["location"].shape[-2:], mode="nearest")[:, 0].long()
        pairs = [location_targets(g) for g in grid]
        target = torch.stack([p[0] for p in pairs]).to(device)
        valid = torch.stack([p[1] for p in pairs]).to(device)
        loss_location = sum(self._euclidean(p, target, valid) for p in (*out["streams"], out["location"]))
        counts = torch.stack([_class_counts(t, self.num_classes) for t in targets]).to(device)
        loss_count = 0.5 * (out["count"].float() - counts).pow(2).sum(1).mean()
        return {"loss_semantic": loss_semantic, "loss_location": loss_location, "loss_count": loss_count}

    @staticmethod
    def _euclidean(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        squared = 0.5 * (prediction.float() - target).pow(2).sum(1)  # (N, h, w)
        return (squared * valid).sum() / valid.sum().clamp(min=1)

    @torch.no_grad()
    def postprocess(self, out: dict, sizes: Sequence[tuple[int, int]]) -> list[InstanceResult]:
        padded = tuple(s * STRIDE for s in out["semantic"].shape[-2:])
        probs = resize_to(out["semantic"].float(), padded).softmax(1)
        location = resize_to(out["location"].float(), padded)
        results = []
        for i, (h, w) in enumerate(sizes):
            results.append(pfn_instances(probs[i, :, :h, :w], location[i, :, :h, :w], out["count"][i].float(),
                                         sigma=self.sigma, max_points=self.max_points, min_area=self.min_area))
        return results


def pfn_instances(probs: torch.Tensor, location: torch.Tensor, counts: torch.Tensor, *, sigma: float = 0.05,
                  max_points: int = 1000, min_area: int = 16) -> InstanceResult:
    """Instances of one image from (C + 1, H, W) category probabilities, (6, H, W) instance locations and
    (C,) predicted counts: each category's pixels spectrally clustered into max(1, round(count)) groups."""
    cls = probs.argmax(0)
    masks, labels, scores = [], [], []
    for c in range(1, probs.shape[0]):
        pixels = cls == c
        if int(pixels.sum()) < min_area:
            continue
        k = max(1, int(round(float(counts[c - 1]))))
        groups = spectral_clustering(location[:, pixels].T, k, sigma=sigma, max_points=max_points)
        for g in groups.unique().tolist():
            mask = torch.zeros_like(pixels)
            mask[pixels] = (groups == g).to(pixels.device)
            if int(mask.sum()) < min_area:
                continue
            masks.append(mask)
            labels.append(c - 1)
            scores.append(probs[c][mask].mean())
    if not masks:
        empty = torch.zeros(0, *cls.shape, dtype=torch.bool, device=cls.device)
        return InstanceResult(boxes=torch.zeros(0, 4, device=cls.device), scores=torch.zeros(0, device=cls.device),
                              labels=torch.zeros(0, dtype=torch.long, device=cls.device), masks=empty)
    masks_t = torch.stack(masks)
    return InstanceResult(boxes=masks_to_boxes(masks_t.cpu()).to(cls.device), scores=torch.stack(scores),
                          labels=torch.tensor(labels, device=cls.device), masks=masks_t)


def pad_target(target: dict, size: tuple[int, int], padded: tuple[int, int]) -> dict:
    """The target's masks (or instance map) zero-padded from the image size to the padded batch size."""
    pad = (0, padded[1] - size[1], 0, padded[0] - size[0])
    if "instance_map" in target:
        return {**target, "instance_map": F.pad(torch.as_tensor(target["instance_map"]), pad)}
    return {**target, "masks": F.pad(torch.as_tensor(target["masks"]).bool(), pad)}


def _class_counts(target: dict, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(target["labels"]).long().cpu()
    if "instance_map" not in target:
        crowd = torch.as_tensor(target.get("iscrowd", torch.zeros(labels.numel()))).bool().cpu()
        labels = labels[~crowd]
    return torch.bincount(labels, minlength=num_classes)[:num_classes].float()


@register_model(task="instance")
def pfn_resnet50(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, **kwargs) -> PFN:
    """Proposal-free network on ResNet-50 at stride 8 (Liang et al., TPAMI 2018; 50.09M parameters at 21
    classes). Model kwargs: head_channels, location_channels, count_channels, location_stages and the
    clustering settings (sigma, max_points, min_area); the rest go to the trunk (`width`)."""
    return build_on_trunk(PFN, "resnet50", entrypoint="pfn_resnet50", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)


@register_model(task="instance")
def pfn_resnet18(*, num_classes: int, in_channels: int = 3, backbone_weights: str | None = None,
                 aux_loss: bool = False, **kwargs) -> PFN:
    """Proposal-free network on ResNet-18 at stride 8 (20.51M parameters at 21 classes); kwargs as for
    pfn_resnet50."""
    return build_on_trunk(PFN, "resnet18", entrypoint="pfn_resnet18", stride=STRIDE,
                          num_classes=num_classes, in_channels=in_channels,
                          backbone_weights=backbone_weights, aux_loss=aux_loss, kwargs=kwargs)
