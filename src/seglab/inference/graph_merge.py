"""Graph merge: pixels -> instances from predicted pixel affinities.

Liu, Yang, Li, Zhou, Xu, Li & Lu, "Affinity Derivation and Graph Merge for Instance Segmentation",
ECCV 2018, Sec. 3 (graph merge and its refinements; ablation in Table 2).

The image is a graph: pixels are vertices, and every pixel is joined to its neighbours in 8 directions
at each distance d in `distances` (the paper's {1, 2, 4, 8, 16, 32, 64}) by an edge whose weight is
the predicted probability that the two pixels belong to the same instance. The merge repeatedly takes
the largest edge; if it exceeds `threshold` its two vertices become one super-vertex whose affinity to
any other vertex is the average affinity over all pixel pairs (edges) joining them; it stops when no
edge exceeds the threshold. Every component is one instance.

The refinements of Table 2 (its best row, AP 30.7, is PAR + RR + FLM 2 + SCP), all but RR on by
default:
- excluding backgrounds: pixels whose predicted class is in `background_classes` are no vertices;
- pixel affinity refinement (PAR): each affinity is multiplied by the probability that the two pixels
  share a class, sum_c P_p(c) P_q(c) (`refine_affinity`);
- forcing local merge (FLM): the foreground pixels of every `local_merge_window` x `local_merge_window`
  block start as one super-vertex (window 2 is the paper's best, 1 turns it off);
- semantic class partition (SCP): edges only join pixels of the same predicted class, so instances
  never mix classes (`class_partition`; with FLM a block is split by class).
Each instance gets the class with the largest summed probability over its pixels and, as score, the
mean probability of that class; instances under `min_area` pixels are dropped.
Not done: RR, the paper's "resizing ROIs" (cropping the foreground regions and upsampling their maps
before merging); we merge at the resolution the maps come in. The seeds give neither the threshold's
value nor how the average is weighted: the default 0.5 is the decision point of a "same instance"
probability, and the average is over all pixel-pair edges between the two clusters (so a cluster
pair's affinity does not depend on the order in which the clusters grew).

Edge weights. The network predicts the affinity of each unordered pair twice (from p towards q and from
q towards p, opposite directions); the edge weight is the mean of the two.

Speed: the sequential merge (a priority queue, one merge at a time) needs a Python loop per merge. We
instead merge in rounds of *reciprocal best pairs*: clusters A and B whose best edge (highest average,
ties broken by the smaller (id, id) pair, a cluster's id being its smallest pixel index) is the same
edge A-B, with average > threshold. Such pairs are disjoint and merged at once (union by smallest id,
parents resolved by pointer jumping at the end); edges touching them are relabelled and coalesced
(sums and counts of pixel edges added, so averages stay exact). A cluster whose best edge is <=
threshold can never merge again (below), so its edges are dropped. Each round is a few numpy passes
over the live edges. A large cluster absorbs one neighbour per round, so a 256x512 map takes a few
hundred rounds, but most of them see only a few thousand live edges (benchmarks/graph_merge_speed.py).

Equivalence with the sequential merge. Average linkage is *reducible*: merging A and B gives
avg(A+B, C) = count-weighted mean of avg(A, C) and avg(B, C) <= the larger of the two (a missing edge
adds nothing). Take a reciprocal best pair A, B with average s, with all averages distinct. Any other
merge creates edges to A or B no higher than edges A or B already had, all below s; so A-B stays the
best edge of both until they merge, and the sequential merge, which always merges the global maximum,
merges A with B before either joins anything else. Hence both make the same merges (in another
order), and both stop when the largest edge is <= threshold: the global maximum is always a
reciprocal best pair. For the same reason a cluster whose best edge is <= threshold is final. With
exactly equal averages the merge order is fixed by cluster ids, whatever the order of the edge list;
tests/inference/test_graph_merge.py checks all of this against a plain sequential implementation.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SeglabError
from ..structures import InstanceResult

__all__ = [
    "DIRECTIONS",
    "PAPER_DISTANCES",
    "GraphMergeResult",
    "affinity_offsets",
    "graph_merge",
    "masks_to_boxes",
    "merge_graph",
    "pixel_edges",
]

PAPER_DISTANCES = (1, 2, 4, 8, 16, 32, 64)
# Neighbour directions (dy, dx) in channel order: channel = distance_index * 8 + direction index.
# DIRECTIONS[7 - k] == -DIRECTIONS[k], so the opposite of direction k is 7 - k.
DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
# The four directions that visit every unordered pixel pair exactly once.
_FORWARD = (4, 5, 6, 7)


def affinity_offsets(distances: Sequence[int] = PAPER_DISTANCES) -> list[tuple[int, int]]:
    """(dy, dx) of every affinity channel: 8 directions per distance, distances outermost."""
    _check_distances(distances)
    return [(d * dy, d * dx) for d in distances for dy, dx in DIRECTIONS]


def _check_distances(distances: Sequence[int]) -> None:
    if len(distances) == 0 or any(int(d) != d or d < 1 for d in distances):
        raise SeglabError(f"distances must be positive integers, got {list(distances)}")


def _numpy(x, name: str, ndim: int) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != ndim:
        raise SeglabError(f"graph_merge: {name} must have {ndim} dimensions, got shape {arr.shape}")
    return arr


def pixel_edges(affinity: np.ndarray, distances: Sequence[int], *, node_mask: np.ndarray | None = None,
                node_class: np.ndarray | None = None, class_probs: np.ndarray | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges of the image graph: (src, dst, weight) over flat pixel indices, each unordered pair once.

    affinity: (8 * len(distances), H, W) probabilities; the weight of pair (p, q) is the mean of the
    channel from p towards q and the opposite channel from q towards p. `node_mask` (H, W) bool keeps
    only edges between masked pixels; `node_class` (H, W) keeps only edges inside one class;
    `class_probs` (C, H, W) multiplies each weight by sum_c P_p(c) P_q(c).
    """
    k, h, w = affinity.shape
    if k != 8 * len(distances):
        raise SeglabError(f"affinity has {k} channels, expected 8 per distance = {8 * len(distances)} "
                          f"for distances {list(distances)}")
    flat_aff = affinity.reshape(k, -1)
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    per_pixel_probs = None if class_probs is None else np.ascontiguousarray(
        class_probs.reshape(class_probs.shape[0], -1).T)
    srcs, dsts, weights = [], [], []
    for i, d in enumerate(distances):
        for direction in _FORWARD:
            dy, dx = d * DIRECTIONS[direction][0], d * DIRECTIONS[direction][1]
            if abs(dy) >= h or abs(dx) >= w:
                continue
            # p ranges over pixels whose neighbour q = p + (dy, dx) lies inside the image
            p_rows, q_rows = slice(0, h - dy), slice(dy, h)  # dy >= 0 for the forward directions
            p_cols = slice(max(0, -dx), w - max(0, dx))
            q_cols = slice(max(0, dx), w + min(0, dx))
            keep = np.ones((h - dy, w - abs(dx)), dtype=bool)
            if node_mask is not None:
                keep &= node_mask[p_rows, p_cols] & node_mask[q_rows, q_cols]
            if node_class is not None:
                keep &= node_class[p_rows, p_cols] == node_class[q_rows, q_cols]
            src = index[p_rows, p_cols][keep]
            dst = index[q_rows, q_cols][keep]
            channel = 8 * i + direction
            weight = 0.5 * (flat_aff[channel, src] + flat_aff[8 * i + 7 - direction, dst])
            if per_pixel_probs is not None:
                weight *= np.einsum("ec,ec->e", per_pixel_probs[src], per_pixel_probs[dst])
            srcs.append(src)
            dsts.append(dst)
            weights.append(weight.astype(np.float64))
    if not srcs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0)
    return np.concatenate(srcs), np.concatenate(dsts), np.concatenate(weights)


def _coalesce(a: np.ndarray, b: np.ndarray, sums: np.ndarray, counts: np.ndarray, n: int):
    """Order every edge as (min, max), drop self-loops and add up parallel edges."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    lo, hi, sums, counts = lo[keep], hi[keep], sums[keep], counts[keep]
    if lo.size == 0:
        return lo, hi, sums, counts
    key = lo * n + hi
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.concatenate([[0], np.flatnonzero(key[1:] != key[:-1]) + 1])
    return (lo[order][starts], hi[order][starts], np.add.reduceat(sums[order], starts),
            np.add.reduceat(counts[order], starts))


def merge_graph(num_nodes: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray, *,
                threshold: float = 0.5, initial: np.ndarray | None = None) -> np.ndarray:
    """Average-linkage merge of a sparse graph down to `threshold` (see the module docstring).

    src, dst, weight: the edges (node indices 0..num_nodes-1). `initial` (num_nodes,): optional forced
    clusters, given as each node's cluster id = the smallest node index of its cluster.
    Returns each node's cluster id (the smallest node index in its cluster).
    """
    n = int(num_nodes)
    parent = np.arange(n, dtype=np.int64) if initial is None else np.asarray(initial, dtype=np.int64).copy()
    if initial is not None and (parent.shape != (n,) or (parent > np.arange(n)).any()
                                or (parent[parent] != parent).any()):
        raise SeglabError("merge_graph: initial must give each node the smallest node index of its cluster")
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    a, b, sums, counts = _coalesce(parent[src], parent[dst], np.asarray(weight, dtype=np.float64),
                                   np.ones(src.size), n)
    relabel = np.arange(n, dtype=np.int64)  # this round's merges only; identity between rounds
    merged = np.zeros(n, dtype=bool)
    best = np.empty(n)
    best_key = np.empty(n, dtype=np.int64)
    while a.size:
        avg = sums / counts
        # each cluster's best edge: highest average, then the smallest (a, b) pair
        best.fill(-np.inf)
        np.maximum.at(best, a, avg)
        np.maximum.at(best, b, avg)
        top_a, top_b = avg == best[a], avg == best[b]
        key = a * n + b
        best_key.fill(np.iinfo(np.int64).max)
        np.minimum.at(best_key, a[top_a], key[top_a])
        np.minimum.at(best_key, b[top_b], key[top_b])
        pair = (avg > threshold) & (key == best_key[a]) & (key == best_key[b])
        if not pair.any():
            break
        # A cluster whose best edge is <= threshold is final: merges never raise an average above the
        # larger of the two merged ones, so its edges can never exceed the threshold again. Drop them.
        live = (best[a] > threshold) & (best[b] > threshold)
        if not live.all():
            a, b, sums, counts, pair = a[live], b[live], sums[live], counts[live], pair[live]
        keep_id, gone_id = a[pair], b[pair]  # a < b: the merged cluster keeps the smaller id
        parent[gone_id] = keep_id
        relabel[gone_id] = keep_id
        merged[keep_id] = merged[gone_id] = True
        touched = merged[a] | merged[b]
        ta, tb, ts, tc = _coalesce(relabel[a[touched]], relabel[b[touched]], sums[touched], counts[touched], n)
        rest = ~touched
        a, b = np.concatenate([a[rest], ta]), np.concatenate([b[rest], tb])
        sums, counts = np.concatenate([sums[rest], ts]), np.concatenate([counts[rest], tc])
        relabel[gone_id] = gone_id
        merged[keep_id] = merged[gone_id] = False
    # pointer jumping: follow parents to the roots (each root is its cluster's smallest node)
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


@dataclass
class GraphMergeResult:
    """instance_map (H, W) int64: 0 = no instance, 1..K in raster order of each instance's first pixel;
    labels (K,) int64: the class index (in the semantic map's classes); scores (K,) float32."""
    instance_map: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor

    def to_instance_result(self, label_offset: int = 0) -> InstanceResult:
        """InstanceResult with one bool mask per instance; `label_offset` is added to the labels (e.g.
        -1 when class 0 of the semantic map is the background and labels count things from 0)."""
        k = self.labels.numel()
        masks = self.instance_map[None] == torch.arange(1, k + 1)[:, None, None]
        return InstanceResult(boxes=masks_to_boxes(masks), scores=self.scores,
                              labels=self.labels + label_offset, masks=masks)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(K, H, W) bool -> (K, 4) float xyxy boxes covering the mask's pixels (x2 = last column + 1)."""
    if masks.shape[0] == 0:
        return torch.zeros(0, 4)
    rows, cols = masks.any(2), masks.any(1)
    h, w = masks.shape[-2:]
    y1 = rows.float().argmax(1)
    y2 = h - rows.flip(1).float().argmax(1)
    x1 = cols.float().argmax(1)
    x2 = w - cols.flip(1).float().argmax(1)
    return torch.stack([x1, y1, x2, y2], 1).float()


def graph_merge(affinity, semantic_probs, *, distances: Sequence[int] = PAPER_DISTANCES,
                threshold: float = 0.5, background_classes: Sequence[int] = (0,),
                refine_affinity: bool = True, class_partition: bool = True, local_merge_window: int = 2,
                min_area: int = 16) -> GraphMergeResult:
    """Instances from affinities (8 * len(distances), H, W) and class probabilities (C, H, W).

    Both are probabilities (after sigmoid / softmax), as numpy arrays or tensors. See the module
    docstring for the algorithm and the switches; `min_area` counts pixels of these maps.
    """
    _check_distances(distances)
    aff = _numpy(affinity, "affinity", 3).astype(np.float32, copy=False)
    probs = _numpy(semantic_probs, "semantic_probs", 3).astype(np.float32, copy=False)
    if aff.shape[1:] != probs.shape[1:]:
        raise SeglabError(f"graph_merge: affinity is {aff.shape[1:]} but semantic_probs is {probs.shape[1:]}")
    if int(local_merge_window) != local_merge_window or local_merge_window < 1:
        raise SeglabError(f"graph_merge: local_merge_window must be a positive integer, got {local_merge_window}")
    num_classes, h, w = probs.shape
    bad = [c for c in background_classes if not 0 <= c < num_classes]
    if bad:
        raise SeglabError(f"graph_merge: background_classes {bad} outside 0..{num_classes - 1}")
    cls = probs.argmax(0)
    foreground = ~np.isin(cls, list(background_classes))
    src, dst, weight = pixel_edges(aff, distances, node_mask=foreground,
                                   node_class=cls if class_partition else None,
                                   class_probs=probs if refine_affinity else None)
    initial = _local_blocks(foreground, cls if class_partition else None, int(local_merge_window))
    # vertices = foreground pixels only, numbered in raster order (keeps "smallest index" ids monotone)
    pixels = np.flatnonzero(foreground)
    node_of = np.full(h * w, -1, dtype=np.int64)
    node_of[pixels] = np.arange(pixels.size)
    roots = np.zeros(h * w, dtype=np.int64)
    roots[pixels] = pixels[merge_graph(pixels.size, node_of[src], node_of[dst], weight, threshold=threshold,
                                       initial=None if initial is None else node_of[initial[pixels]])]
    return _instances(roots, foreground, probs, background_classes, min_area)


def _local_blocks(foreground: np.ndarray, cls: np.ndarray | None, window: int) -> np.ndarray | None:
    """Forced local merge: the foreground pixels of each window x window block (and class) as one
    cluster, given as each pixel's smallest block-mate index."""
    if window == 1:
        return None
    h, w = foreground.shape
    ys, xs = np.divmod(np.arange(h * w), w)
    group = (ys // window) * (-(-w // window)) + xs // window
    if cls is not None:
        group = group * (int(cls.max()) + 1) + cls.ravel()
    pixels = np.flatnonzero(foreground)
    first = np.full(int(group.max()) + 1, h * w, dtype=np.int64)
    np.minimum.at(first, group[pixels], pixels)
    initial = np.arange(h * w, dtype=np.int64)
    initial[pixels] = first[group[pixels]]
    return initial


def _instances(roots: np.ndarray, foreground: np.ndarray, probs: np.ndarray,
               background_classes: Sequence[int], min_area: int) -> GraphMergeResult:
    """Number the clusters of foreground pixels, drop small ones, pick class and score."""
    h, w = foreground.shape
    pixels = np.flatnonzero(foreground)
    _, ids, areas = np.unique(roots[pixels], return_inverse=True, return_counts=True)
    big = areas >= min_area
    new_id = np.where(big, np.cumsum(big), 0)  # roots sort by first pixel: ids in raster order
    ids = new_id[ids]
    k = int(big.sum())
    instance_map = np.zeros(h * w, dtype=np.int64)
    instance_map[pixels] = ids
    if k == 0:
        return GraphMergeResult(instance_map=torch.from_numpy(instance_map.reshape(h, w)),
                                labels=torch.zeros(0, dtype=torch.int64), scores=torch.zeros(0))
    flat_probs = probs.reshape(probs.shape[0], -1)[:, pixels]
    sums = np.stack([np.bincount(ids, weights=p, minlength=k + 1) for p in flat_probs], 1)[1:]
    sums[:, list(background_classes)] = -np.inf
    labels = sums.argmax(1)
    scores = sums[np.arange(k), labels] / areas[big]
    return GraphMergeResult(instance_map=torch.from_numpy(instance_map.reshape(h, w)),
                            labels=torch.from_numpy(labels.astype(np.int64)),
                            scores=torch.from_numpy(scores.astype(np.float32)))
