"""Panoptic FPN's heuristic merge of instance and semantic predictions: Kirillov, Girshick, He & Dollar,
"Panoptic Feature Pyramid Networks", CVPR 2019, Sec. 4 ("inference ... we apply a simple heuristic,
similar to NMS, to resolve overlaps"), as in Kirillov et al., "Panoptic Segmentation", CVPR 2019, Sec. 7
and Detectron2's `combine_semantic_and_instance_outputs` (the authors' release):

1. instances are visited in decreasing score; those with score < `score_thresh` (0.5) are dropped;
2. an instance whose mask has no pixel, or whose already-taken pixels are more than `overlap_thresh`
   (0.5) of its mask's area, is dropped; otherwise it takes its still-free pixels;
3. each stuff class of the semantic argmax then takes its still-free pixels, kept only when that area is
   at least `stuff_area_limit` (4096 pixels at COCO scale; scale it with the image area);
4. pixels left are void (segment id 0).

Labels: semantic labels 0..num_stuff-1 are stuff classes; any other value (Panoptic FPN's single
"things" class num_stuff, or an ignore label) is not stuff and never forms a segment. Instance labels
are thing indices 0..num_things-1. The result's category_id is the contiguous class index over stuff
then things (stuff c -> c, thing t -> num_stuff + t), the layout of seglab's panoptic "semantic" target.
"""
from __future__ import annotations

import torch

from ..errors import SeglabError
from ..structures import InstanceResult, PanopticResult

__all__ = ["panoptic_fpn_merge"]


@torch.no_grad()  # a discrete assignment: nothing to differentiate
def panoptic_fpn_merge(semantic: torch.Tensor, instances: InstanceResult, *, num_stuff: int,
                       score_thresh: float = 0.5, overlap_thresh: float = 0.5,
                       stuff_area_limit: int = 4096) -> PanopticResult:
    """Merge an (H, W) semantic label map and an image's instances (bool masks at (H, W)) into segments."""
    if semantic.dim() != 2:
        raise SeglabError(f"semantic labels must be (H, W), got shape {tuple(semantic.shape)}")
    masks = instances.masks.bool()
    if masks.shape[0] and masks.shape[1:] != semantic.shape:
        raise SeglabError(f"instance masks {tuple(masks.shape)} do not match the semantic map {tuple(semantic.shape)}")
    segments = torch.zeros(semantic.shape, dtype=torch.int32, device=semantic.device)
    taken = torch.zeros(semantic.shape, dtype=torch.bool, device=semantic.device)
    infos: list[dict] = []
    order = torch.argsort(instances.scores, descending=True, stable=True).tolist()
    for i in order:
        score = float(instances.scores[i])
        if score < score_thresh:
            break
        mask = masks[i]
        area = int(mask.sum())
        if area == 0:
            continue
        overlap = int((mask & taken).sum())
        if overlap / area > overlap_thresh:
            continue
        free = mask & ~taken
        taken |= free
        segments[free] = len(infos) + 1
        infos.append({"id": len(infos) + 1, "category_id": num_stuff + int(instances.labels[i]), "isthing": True,
                      "area": area - overlap, "score": score})
    labels = semantic.long()
    for c in torch.unique(labels).tolist():
        if not 0 <= c < num_stuff:
            continue
        region = (labels == c) & ~taken
        area = int(region.sum())
        if area == 0 or area < stuff_area_limit:
            continue
        segments[region] = len(infos) + 1
        infos.append({"id": len(infos) + 1, "category_id": c, "isthing": False, "area": area})
    return PanopticResult(segments=segments, segments_info=infos)
