"""Non-maximum suppression: greedy NMS, per-class (batched) NMS and YOLACT's Fast NMS.

`nms(boxes, scores, iou_threshold)` returns what torchvision's `torchvision.ops.nms` returns: the int64
indices of the kept boxes in decreasing score order, where a box is dropped when its IoU with an
already kept, higher-scoring box is strictly greater than `iou_threshold` (IoU exactly equal to the
threshold is kept). Ties in score are visited in index order (a stable sort).

It is greedy NMS computed with tensor operations instead of a loop over boxes:
1. Candidate pairs come from a sweep over boxes sorted by x1 (two boxes can only overlap when their
   x-ranges do, found with `searchsorted`), so the IoU is computed for overlapping pairs only, not for
   all K^2 (after `batched_nms`'s per-class offsets this also skips every cross-class pair).
2. The pairs with IoU > threshold form a graph directed from the higher- to the lower-scoring box;
   greedy NMS keeps box j iff no kept box points to it. That rule is iterated as a fixed point over all
   boxes at once (the "Cluster-NMS" iteration of Zheng et al., "Enhancing geometric factors in model
   learning and inference", IEEE T-Cybernetics 2021, Sec. III-D), which reaches the exact greedy
   result after as many rounds as the longest suppression chain (typically a handful). Should a chain
   be longer than `_MAX_ROUNDS`, the remaining decisions fall back to the sequential greedy scan.

`fast_nms` is YOLACT's Fast NMS (Bolya et al., "YOLACT: Real-time Instance Segmentation", ICCV 2019,
Sec. 3.3): per class, keep the top-k boxes, compute their IoU matrix, zero its lower triangle and
diagonal, and drop a box when its column maximum exceeds the threshold; already-removed boxes may
still suppress others, which is what makes it a single matrix operation (slightly more aggressive
than greedy NMS).
"""
from __future__ import annotations

import torch

from ..errors import SeglabError
from .boxes import box_iou

__all__ = ["batched_nms", "fast_nms", "nms"]

_MAX_ROUNDS = 32
_PAIR_CHUNK = 1 << 20  # candidate pairs evaluated at once: bounds memory (~50 MB) for crowded inputs


def _check_inputs(boxes: torch.Tensor, scores: torch.Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise SeglabError(f"boxes must have shape (K, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise SeglabError(f"scores must have shape ({boxes.shape[0]},) like boxes, got {tuple(scores.shape)}")


def _pair_iou(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """IoU of boxes a[i] and b[i] given as coordinate columns (x1, y1, x2, y2), with the operations of
    `box_iou` in the same order (bit-identical values)."""
    w = (torch.min(a[2], b[2]) - torch.max(a[0], b[0])).clamp_(min=0)
    h = (torch.min(a[3], b[3]) - torch.max(a[1], b[1])).clamp_(min=0)
    inter = w.mul_(h)
    area_a = (a[2] - a[0]).mul_(a[3] - a[1])
    area_b = (b[2] - b[0]).mul_(b[3] - b[1])
    return inter / area_a.add_(area_b).sub_(inter)


def _suppression_edges(boxes: torch.Tensor, iou_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (src, dst), src < dst (indices in score order), whose IoU exceeds the threshold."""
    n = boxes.shape[0]
    device = boxes.device
    if not iou_threshold >= 0:  # every pair, even disjoint ones (IoU 0), can pass a negative threshold
        over = (box_iou(boxes, boxes) > iou_threshold).triu_(1)
        src, dst = over.nonzero(as_tuple=True)
        return src, dst
    x_order = torch.argsort(boxes[:, 0], stable=True)
    cols = [c.contiguous() for c in boxes[x_order].unbind(1)]  # x1, y1, x2, y2 in x1-sorted order
    # IoU > t needs an x-overlap > t * width of either box (inter <= overlap * height), so the box at
    # sorted position p can only pair with positions p+1 .. end-1 whose x1 < x2 - t * width. The 1%
    # slack keeps pairs that pass only by float rounding.
    reach = cols[2] - (0.99 * iou_threshold) * (cols[2] - cols[0])
    ends = torch.searchsorted(cols[0], reach, side="left")
    starts = torch.arange(1, n + 1, device=device)
    counts = (ends - starts).clamp_(min=0)
    srcs, dsts = [], []
    first = 0
    while first < n:  # chunk the sweep so that crowded inputs do not materialise K^2 pairs at once
        csum = counts[first:].cumsum(0)
        last = first + max(1, int(torch.searchsorted(csum, torch.tensor(_PAIR_CHUNK, device=device))))
        chunk_counts = counts[first:last]
        total = int(chunk_counts.sum())
        if total:
            pos_a = torch.repeat_interleave(torch.arange(first, last, device=device), chunk_counts,
                                            output_size=total)
            run_start = torch.repeat_interleave(chunk_counts.cumsum(0) - chunk_counts, chunk_counts,
                                                output_size=total)
            pos_b = starts.index_select(0, pos_a).add_(torch.arange(total, device=device)).sub_(run_start)
            iou = _pair_iou([c.index_select(0, pos_a) for c in cols], [c.index_select(0, pos_b) for c in cols])
            hit = iou > iou_threshold
            ia, ib = x_order[pos_a[hit]], x_order[pos_b[hit]]
            srcs.append(torch.min(ia, ib))
            dsts.append(torch.max(ia, ib))
        first = last
    if not srcs:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(srcs), torch.cat(dsts)


def _greedy_keep(src: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    """Bool mask (n,) of greedy NMS over boxes in score order given the suppression edges src -> dst."""
    keep = torch.ones(n, dtype=torch.bool, device=src.device)
    for _ in range(_MAX_ROUNDS):
        suppressed = torch.zeros_like(keep)
        suppressed[dst[keep[src]]] = True
        if torch.equal(~suppressed, keep):
            return keep  # the fixed point is unique (edges point forward), so this is the greedy result
        keep = ~suppressed
    return _greedy_sequential(src, dst, n)


def _greedy_sequential(src: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    """The plain greedy scan (a loop over boxes in score order); only used for very long chains."""
    order = torch.argsort(src, stable=True)
    src_sorted, dst_sorted = src[order].tolist(), dst[order].tolist()
    removed = [False] * n
    keep = [False] * n
    e = 0
    for i in range(n):
        start = e
        while e < len(src_sorted) and src_sorted[e] == i:
            e += 1
        if removed[i]:
            continue
        keep[i] = True
        for j in dst_sorted[start:e]:
            removed[j] = True
    return torch.tensor(keep, dtype=torch.bool, device=src.device)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: int64 indices of the kept (K, 4) xyxy `boxes`, sorted by decreasing `scores`.

    A box is removed when its IoU with a kept higher-scoring box is > `iou_threshold` (strictly).
    Same arguments and result as `torchvision.ops.nms`.
    """
    _check_inputs(boxes, scores)
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    ranked = boxes[order]
    src, dst = _suppression_edges(ranked, float(iou_threshold))
    return order[_greedy_keep(src, dst, ranked.shape[0])]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS applied independently per category `idxs` (K,): boxes of different categories never
    suppress each other. Returns int64 indices sorted by decreasing score, as torchvision's.

    Each category's boxes are shifted by `idx * (max coordinate + 1)`, which puts different
    categories far apart, then one `nms` runs over all of them (the coordinate-offset trick).
    """
    _check_inputs(boxes, scores)
    if idxs.shape != scores.shape:
        raise SeglabError(f"idxs must have shape {tuple(scores.shape)} like scores, got {tuple(idxs.shape)}")
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def fast_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5, top_k: int = 200,
             max_detections: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """YOLACT's Fast NMS over class-agnostic `boxes` (N, 4) with per-class `scores` (C, N).

    Per class the `top_k` highest-scoring boxes are kept as candidates; candidate j is removed when
    any higher-scoring candidate of the same class (removed or not) has IoU > `iou_threshold` with it.
    The survivors of all classes are sorted by score and cut at `max_detections`.

    Returns `(box_indices, scores, labels)`: indices into `boxes` (int64, a box may appear once per
    class), their scores and their class indices (int64), in decreasing score order. Pre-filter the
    boxes by a confidence threshold before calling, as YOLACT does.
    """
    if scores.dim() != 2 or boxes.dim() != 2 or boxes.shape[1] != 4 or scores.shape[1] != boxes.shape[0]:
        raise SeglabError(f"fast_nms expects boxes (N, 4) and scores (C, N), got {tuple(boxes.shape)} "
                          f"and {tuple(scores.shape)}")
    num_classes, num_boxes = scores.shape
    if num_boxes == 0 or num_classes == 0:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return empty, scores.new_zeros(0), empty
    class_scores, idx = scores.sort(dim=1, descending=True, stable=True)
    idx, class_scores = idx[:, :top_k], class_scores[:, :top_k]
    cand = boxes[idx.reshape(-1)].view(num_classes, idx.shape[1], 4)
    area = (cand[..., 2] - cand[..., 0]) * (cand[..., 3] - cand[..., 1])
    wh = (torch.min(cand[:, :, None, 2:], cand[:, None, :, 2:])
          - torch.max(cand[:, :, None, :2], cand[:, None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, :, None] + area[:, None, :] - inter)  # (C, top_k, top_k)
    iou = iou.nan_to_num_(0.0).triu_(diagonal=1)  # 0 / 0 (two empty boxes) suppresses nothing
    keep = iou.max(dim=1).values <= iou_threshold  # column max over higher-scoring candidates
    labels = torch.arange(num_classes, device=boxes.device)[:, None].expand_as(keep)[keep]
    kept_scores, kept_idx = class_scores[keep], idx[keep]
    kept_scores, order = kept_scores.sort(descending=True, stable=True)
    order = order[:max_detections]
    return kept_idx[order], kept_scores[:max_detections], labels[order]
