"""InstanceCut's image partitioning: Kirillov, Levinkov, Andres, Savchynskyy & Rother, "InstanceCut: from
Edges to Instances with MultiCut", CVPR 2017 (Sec. 3.3: superpixels, the edge-weighted region adjacency
graph, the multicut that combines the semantic labelling with the instance-aware edges).

Given per-pixel class probabilities and an instance-boundary probability map (at one resolution):
1. labelling: every pixel takes its most probable class; only thing classes are partitioned (the
   paper's asymmetric multiway cut lets stuff classes stay whole; here every non-background class is a
   thing, as in the instance data sets);
2. superpixels from the edge map: markers are the connected regions of one class whose edge
   probability is below `marker_threshold`, and every other pixel of the class joins a marker by a
   watershed flood (lowest edge probability first, ties in the order reached) that never crosses into
   another class; regions
   without a marker become superpixels of their own. Superpixel borders thus run along ridges of the
   edge map, as the paper's watershed superpixels do;
3. the region adjacency graph joins superpixels that touch (4-neighbourhood) and share a class; an
   edge's boundary probability p is the mean over the touching pixel pairs of the larger of the two
   pixels' edge probabilities, its cost is (number of pairs) x (log((1 - p) / p) + log((1 - beta) /
   beta)) (positive: join, negative: cut; beta = 0.5 is unbiased);
4. the multicut (`seglab.inference.multicut.solve_multicut`: GAEC, then Kernighan-Lin) decomposes the
   graph; each component of at least `min_area` pixels is an instance of its class.
Deviation: the paper solves the labelling and the partition jointly (asymmetric multiway cut with its
own greedy solver); we fix the labelling to the class argmax first and then solve the multicut (edges
between different classes are always cut), which is the joint problem with infinitely confident
semantic unaries.
"""
from __future__ import annotations

import heapq
import math

import numpy as np
import torch

from ..errors import SeglabError
from .multicut import solve_multicut

__all__ = ["InstanceCutResult", "edge_superpixels", "instance_cut", "region_adjacency"]


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a bool (H, W) mask: labels 1..K (0 outside) and K."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    return labels, int(count)


def edge_superpixels(edge: np.ndarray, classes: np.ndarray, *, marker_threshold: float = 0.3,
                     partition: np.ndarray | None = None) -> np.ndarray:
    """(H, W) int64 superpixel ids 0..S-1 (-1 on pixels not partitioned) from an (H, W) edge
    probability map and class map; `partition` (bool (H, W), default classes > 0) marks the pixels to
    partition. See the module docstring (step 2)."""
    if edge.shape != classes.shape:
        raise SeglabError(f"edge map {edge.shape} and class map {classes.shape} must have the same size")
    height, width = edge.shape
    partition = classes > 0 if partition is None else partition
    out = np.full((height, width), -1, dtype=np.int64)
    count = 0
    for c in np.unique(classes[partition]).tolist():
        labels, k = _components(partition & (classes == c) & (edge < marker_threshold))
        out[labels > 0] = labels[labels > 0] - 1 + count
        count += k
    heap, order = [], 0  # ties in edge probability go first-in first-out: nearer pixels flood first
    ys, xs = np.nonzero(out >= 0)
    for y, x in zip(ys.tolist(), xs.tolist()):
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ny, nx = y + dy, x + dx
            if 0 <= ny < height and 0 <= nx < width and out[ny, nx] < 0 and partition[ny, nx] \
                    and classes[ny, nx] == classes[y, x]:
                heapq.heappush(heap, (float(edge[ny, nx]), order, ny, nx, int(out[y, x])))
                order += 1
    while heap:
        _, _, y, x, label = heapq.heappop(heap)
        if out[y, x] >= 0:
            continue
        out[y, x] = label
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ny, nx = y + dy, x + dx
            if 0 <= ny < height and 0 <= nx < width and out[ny, nx] < 0 and partition[ny, nx] \
                    and classes[ny, nx] == classes[y, x]:
                heapq.heappush(heap, (float(edge[ny, nx]), order, ny, nx, label))
                order += 1
    for c in np.unique(classes[partition & (out < 0)]).tolist():  # regions no marker reached
        labels, k = _components(partition & (classes == c) & (out < 0))
        out[labels > 0] = labels[labels > 0] - 1 + count
        count += k
    return out


def region_adjacency(superpixels: np.ndarray, edge: np.ndarray, *, beta: float = 0.5,
                     eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """((E, 2) superpixel pairs, (E,) multicut costs) of touching superpixels (see step 3); superpixels
    of different classes never touch here because the caller's ids are class-pure and only pairs within
    one class are passed (ids -1 are skipped)."""
    pairs, probs = [], []
    for a, b, pa, pb in ((superpixels[:, :-1], superpixels[:, 1:], edge[:, :-1], edge[:, 1:]),
                         (superpixels[:-1], superpixels[1:], edge[:-1], edge[1:])):
        touching = (a >= 0) & (b >= 0) & (a != b)
        lo, hi = np.minimum(a, b)[touching], np.maximum(a, b)[touching]
        pairs.append(np.stack([lo, hi], 1))
        probs.append(np.maximum(pa, pb)[touching])
    pairs, probs = np.concatenate(pairs), np.concatenate(probs).astype(np.float64)
    if pairs.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    unique, inverse, counts = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
    mean = np.bincount(inverse.reshape(-1), weights=probs) / counts
    mean = np.clip(mean, eps, 1 - eps)
    bias = math.log((1 - beta) / beta)
    return unique.astype(np.int64), counts * (np.log((1 - mean) / mean) + bias)


class InstanceCutResult:
    """The partition of one image: `instance_map` (H, W) int64 (0 = not an instance, k = the k-th
    instance), `labels` (K,) classes of the instances (as in the class map), `superpixels` (H, W)."""

    def __init__(self, instance_map: np.ndarray, labels: np.ndarray, superpixels: np.ndarray):
        self.instance_map, self.labels, self.superpixels = instance_map, labels, superpixels


def instance_cut(probs: torch.Tensor, edge: torch.Tensor, *, marker_threshold: float = 0.3, beta: float = 0.5,
                 min_area: int = 1) -> InstanceCutResult:
    """Partition one image from (C + 1, H, W) class probabilities (0 = background) and an (H, W)
    boundary probability map (see the module docstring)."""
    if probs.dim() != 3 or edge.shape != probs.shape[1:]:
        raise SeglabError(f"instance_cut needs (C + 1, H, W) probabilities and an (H, W) edge map, got "
                          f"{tuple(probs.shape)} and {tuple(edge.shape)}")
    classes = probs.argmax(0).cpu().numpy()
    edge_np = edge.detach().float().cpu().numpy()
    superpixels = edge_superpixels(edge_np, classes, marker_threshold=marker_threshold)
    num = int(superpixels.max()) + 1 if (superpixels >= 0).any() else 0
    edges, costs = region_adjacency(superpixels, edge_np, beta=beta)
    components = solve_multicut(num, edges, costs) if num else np.zeros(0, dtype=np.int64)
    instance_map = np.zeros_like(superpixels)
    inside = superpixels >= 0
    instance_map[inside] = components[superpixels[inside]] + 1
    areas = np.bincount(instance_map.reshape(-1), minlength=(components.max() + 2) if num else 1)
    keep = [k for k in range(1, len(areas)) if areas[k] >= min_area]
    remap = np.zeros(len(areas), dtype=np.int64)
    remap[keep] = np.arange(1, len(keep) + 1)
    instance_map = remap[instance_map]
    labels = np.array([classes[instance_map == k + 1][0] for k in range(len(keep))], dtype=np.int64)
    return InstanceCutResult(instance_map, labels, superpixels)
