"""Graph merge (Liu et al., ECCV 2018): the batched merge against a plain sequential one, recovery of
instances from perfect affinities, tie handling, and the refinements (class partition, background
exclusion, affinity refinement, forced local merge, small-segment removal)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.errors import SeglabError
from seglab.inference.graph_merge import (
    affinity_offsets,
    graph_merge,
    merge_graph,
    pixel_edges,
)
from seglab.losses.affinity import affinity_targets

DISTANCES = (1, 2, 4)


def sequential_merge(n, src, dst, weight, threshold, initial=None, rng=None):
    """The paper's loop, literally: take the largest cluster-pair average (over the pixel edges joining
    the two clusters); stop if <= threshold; else merge the pair. Ties go to the smallest (a, b) pair,
    or to a random one when `rng` is given. O(edges) per merge: tiny graphs only."""
    label = list(range(n)) if initial is None else [int(v) for v in initial]
    pairs: dict[tuple[int, int], list[float]] = {}
    for u, v, w in zip(src.tolist(), dst.tolist(), weight.tolist()):
        a, b = sorted((label[u], label[v]))
        if a != b:
            s = pairs.setdefault((a, b), [0.0, 0])
            s[0] += w
            s[1] += 1
    while pairs:
        top = max(s / c for s, c in pairs.values())
        if top <= threshold:
            break
        tied = sorted(k for k, (s, c) in pairs.items() if s / c == top)
        keep, gone = tied[0] if rng is None else tied[rng.integers(len(tied))]
        label = [keep if x == gone else x for x in label]
        merged: dict[tuple[int, int], list[float]] = {}
        for (a, b), (s, c) in pairs.items():
            a, b = sorted((keep if a == gone else a, keep if b == gone else b))
            if a != b:
                t = merged.setdefault((a, b), [0.0, 0])
                t[0] += s
                t[1] += c
        pairs = merged
    return np.array(label)


def same_partition(x: np.ndarray, y: np.ndarray) -> bool:
    """Equal up to renaming the clusters."""
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    pairs = np.unique(np.stack([xi.ravel(), yi.ravel()]), axis=1)
    return pairs.shape[1] == xi.max() + 1 == yi.max() + 1


def voronoi_instances(rng, h: int, w: int, cells: int = 7, block: int = 1) -> np.ndarray:
    """A random instance map: Voronoi cells (convex, so connected), about a third of them background (0),
    nearest-upsampled by `block`."""
    ys, xs = np.mgrid[0:h, 0:w]
    seeds = rng.uniform(0, [h, w], size=(cells, 2))
    cell = ((ys[..., None] - seeds[:, 0]) ** 2 + (xs[..., None] - seeds[:, 1]) ** 2).argmin(-1)
    ids = np.where(rng.random(cells) < 0.35, 0, np.arange(1, cells + 1))
    return np.kron(ids[cell], np.ones((block, block), dtype=np.int64))


def perfect_inputs(instances: np.ndarray, instance_class: dict[int, int], num_classes: int = 3):
    aff, _ = affinity_targets(torch.from_numpy(instances), DISTANCES)
    classes = np.vectorize(lambda i: instance_class.get(int(i), 0))(instances)
    probs = np.eye(num_classes, dtype=np.float32)[classes].transpose(2, 0, 1)
    return aff[0].numpy(), probs


def noisy_structured_affinity(rng, instances: np.ndarray, noise: float = 1.5) -> np.ndarray:
    aff, _ = affinity_targets(torch.from_numpy(instances), DISTANCES)
    logits = (2 * aff[0].numpy() - 1) * 2 + noise * rng.standard_normal(aff.shape[1:])
    return 1 / (1 + np.exp(-logits))


@pytest.mark.parametrize("seed", range(6))
def test_batched_merge_equals_sequential_merge(seed):
    rng = np.random.default_rng(seed)
    h, w = 10, 12
    instances = voronoi_instances(rng, h, w)
    aff = noisy_structured_affinity(rng, instances) if seed % 2 else rng.random((8 * len(DISTANCES), h, w))
    src, dst, weight = pixel_edges(aff, DISTANCES)
    for threshold in (0.3, 0.5, 0.7):
        got = merge_graph(h * w, src, dst, weight, threshold=threshold)
        expected = sequential_merge(h * w, src, dst, weight, threshold)
        assert np.array_equal(got, expected), f"threshold {threshold}"
    assert len(np.unique(got)) < h * w  # some merging happened, so the comparison says something


def test_batched_merge_equals_sequential_with_forced_initial_clusters():
    rng = np.random.default_rng(7)
    h, w = 10, 12
    aff = noisy_structured_affinity(rng, voronoi_instances(rng, h, w))
    src, dst, weight = pixel_edges(aff, DISTANCES)
    ys, xs = np.divmod(np.arange(h * w), w)
    initial = (ys // 2 * 2) * w + xs // 2 * 2  # 2x2 blocks, labelled by their top-left pixel
    got = merge_graph(h * w, src, dst, weight, threshold=0.5, initial=initial)
    assert np.array_equal(got, sequential_merge(h * w, src, dst, weight, 0.5, initial=initial))


def test_average_linkage_by_hand():
    """a-b 0.9, b-c 0.6, a-c 0.1: a and b merge; then avg(ab, c) = (0.6 + 0.1) / 2 = 0.35 < 0.5, so c
    stays alone (merging along edges above 0.5 alone, i.e. single linkage, would join all three)."""
    src, dst, weight = np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([0.9, 0.6, 0.1])
    assert merge_graph(3, src, dst, weight, threshold=0.5).tolist() == [0, 0, 2]
    assert merge_graph(3, src, dst, weight, threshold=0.3).tolist() == [0, 0, 0]


def test_equal_edges_merge_one_at_a_time():
    """a-b 1, b-c 1, a-c 0: the tie goes to the smaller pair (a, b); then avg(ab, c) = 0.5 is not above
    0.5. Merging both equal edges at once would join all three."""
    src, dst, weight = np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([1.0, 1.0, 0.0])
    got = merge_graph(3, src, dst, weight, threshold=0.5)
    assert got.tolist() == [0, 0, 2] == sequential_merge(3, src, dst, weight, 0.5).tolist()


def test_ties_do_not_depend_on_edge_order():
    """Quantised affinities give many equal edges; the result does not depend on the order or
    orientation in which the edges are listed (ties break by cluster ids, i.e. pixel positions)."""
    rng = np.random.default_rng(3)
    h, w = 12, 12
    aff = rng.choice([0.2, 0.6, 0.9], size=(8 * len(DISTANCES), h, w))
    src, dst, weight = pixel_edges(aff, DISTANCES)
    reference = merge_graph(h * w, src, dst, weight, threshold=0.5)
    assert len(np.unique(reference)) < h * w
    for _ in range(3):
        perm = rng.permutation(src.size)
        flip = rng.random(src.size) < 0.5
        s, d = np.where(flip, dst, src)[perm], np.where(flip, src, dst)[perm]
        assert np.array_equal(merge_graph(h * w, s, d, weight[perm], threshold=0.5), reference)


@pytest.mark.parametrize("seed", range(4))
def test_perfect_affinities_recover_instances_exactly(seed):
    rng = np.random.default_rng(seed)
    instances = voronoi_instances(rng, 18, 22, cells=9)
    classes = {i: int(rng.integers(1, 3)) for i in range(1, instances.max() + 1)}
    aff, probs = perfect_inputs(instances, classes)
    result = graph_merge(aff, probs, distances=DISTANCES, local_merge_window=1, min_area=1)
    got = result.instance_map.numpy()
    assert np.array_equal(got == 0, instances == 0)
    assert same_partition(got, instances)
    for k, label in enumerate(result.labels.tolist(), start=1):
        assert classes[int(np.bincount(instances[got == k]).argmax())] == label


def test_perfect_affinities_any_tie_order_of_the_sequential_merge_agrees():
    """Perfect affinities are all ties (1 inside an instance, 0 across): every order in which the
    sequential merge takes equal edges gives the same instances as the batched merge."""
    rng = np.random.default_rng(5)
    instances = voronoi_instances(rng, 10, 12, cells=6)
    aff, probs = perfect_inputs(instances, {i: 1 for i in range(1, instances.max() + 1)})
    got = graph_merge(aff, probs, distances=DISTANCES, local_merge_window=1, min_area=1).instance_map.numpy()
    src, dst, weight = pixel_edges(aff, DISTANCES, node_mask=instances > 0)
    for tie_seed in range(3):
        seq = sequential_merge(instances.size, src, dst, weight, 0.5, rng=np.random.default_rng(tie_seed))
        assert same_partition(seq.reshape(instances.shape)[instances > 0], got[instances > 0])


def test_forced_local_merge_recovers_block_aligned_instances():
    rng = np.random.default_rng(11)
    instances = voronoi_instances(rng, 9, 11, cells=8, block=2)  # 18x22, instance borders on even lines
    aff, probs = perfect_inputs(instances, {i: 1 for i in range(1, instances.max() + 1)})
    got = graph_merge(aff, probs, distances=DISTANCES, local_merge_window=2, min_area=1).instance_map.numpy()
    assert same_partition(got, instances)


def test_forced_local_merge_joins_each_window():
    """With zero affinities nothing merges, except the forced 2x2 windows."""
    aff = np.zeros((8 * len(DISTANCES), 4, 6), dtype=np.float32)
    probs = np.stack([np.zeros((4, 6)), np.ones((4, 6))]).astype(np.float32)
    got = graph_merge(aff, probs, distances=DISTANCES, local_merge_window=2, min_area=1).instance_map
    expected = torch.arange(6).reshape(2, 3).repeat_interleave(2, 0).repeat_interleave(2, 1) + 1
    assert torch.equal(got, expected)


def _two_touching_squares(class_b: int):
    """Two 4x4 squares side by side (classes 1 and `class_b`) whose affinities wrongly say 'one instance'."""
    instances = np.zeros((6, 10), dtype=np.int64)
    instances[1:5, 1:5] = 1
    instances[1:5, 5:9] = 1  # affinities built as if both were one instance
    aff, _ = perfect_inputs(instances, {1: 1})
    classes = np.zeros((6, 10), dtype=np.int64)
    classes[1:5, 1:5], classes[1:5, 5:9] = 1, class_b
    probs = np.eye(3, dtype=np.float32)[classes].transpose(2, 0, 1)
    return aff, probs


def test_class_partition_splits_classes():
    aff, probs = _two_touching_squares(class_b=2)
    parted = graph_merge(aff, probs, distances=DISTANCES, refine_affinity=False, local_merge_window=1,
                         min_area=1)
    assert parted.labels.tolist() == [1, 2]
    assert (parted.instance_map[1:5, 1:5] == 1).all() and (parted.instance_map[1:5, 5:9] == 2).all()
    mixed = graph_merge(aff, probs, distances=DISTANCES, refine_affinity=False, class_partition=False,
                        local_merge_window=1, min_area=1)
    assert mixed.labels.numel() == 1


def test_affinity_refinement_by_class_agreement():
    """Without the partition, refinement alone separates the two classes: each cross-class affinity is
    multiplied by sum_c P_p(c) P_q(c) = 0 for one-hot probabilities."""
    aff, probs = _two_touching_squares(class_b=2)
    refined = graph_merge(aff, probs, distances=DISTANCES, class_partition=False, local_merge_window=1,
                          min_area=1)
    assert refined.labels.tolist() == [1, 2]


def test_refined_edge_weight_by_hand():
    aff = np.zeros((8, 1, 2), dtype=np.float32)
    aff[4, 0, 0] = 0.8  # pixel (0, 0) towards its right neighbour (direction (0, 1))
    aff[3, 0, 1] = 0.6  # pixel (0, 1) towards its left neighbour (direction (0, -1))
    probs = np.array([[[0.5, 1.0]], [[0.5, 0.0]]], dtype=np.float32)
    src, dst, weight = pixel_edges(aff, (1,), class_probs=probs)
    assert src.tolist() == [0] and dst.tolist() == [1]
    assert weight[0] == pytest.approx(0.7 * 0.5)


def test_background_pixels_are_excluded():
    aff = np.ones((8 * len(DISTANCES), 8, 8), dtype=np.float32)  # "all one instance"
    classes = np.zeros((8, 8), dtype=np.int64)
    classes[2:6, 2:6] = 1
    probs = np.eye(2, dtype=np.float32)[classes].transpose(2, 0, 1)
    result = graph_merge(aff, probs, distances=DISTANCES, min_area=1)
    assert torch.equal(result.instance_map, torch.from_numpy(classes))
    none = graph_merge(aff, np.eye(2, dtype=np.float32)[np.zeros((8, 8), int)].transpose(2, 0, 1),
                       distances=DISTANCES)
    assert none.labels.numel() == 0 and (none.instance_map == 0).all()


def test_small_segments_removed_scores_and_instance_result():
    instances = np.zeros((8, 8), dtype=np.int64)
    instances[0:4, 0:4] = 1
    instances[6:8, 6:7] = 2  # 2 pixels
    aff, probs = perfect_inputs(instances, {1: 1, 2: 2})
    probs = 0.8 * probs + 0.2 / 3  # rows still sum to 1; probability of the class = 0.8667
    result = graph_merge(aff, probs, distances=DISTANCES, local_merge_window=1, min_area=3)
    assert result.labels.tolist() == [1]
    assert result.scores.tolist() == pytest.approx([0.8 + 0.2 / 3])
    inst = result.to_instance_result(label_offset=-1)
    assert inst.masks.shape == (1, 8, 8) and inst.masks.dtype == torch.bool
    assert torch.equal(inst.masks[0], torch.from_numpy(instances == 1))
    assert inst.boxes.tolist() == [[0.0, 0.0, 4.0, 4.0]]
    assert inst.labels.tolist() == [0]


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(SeglabError, match="8 per distance"):
        graph_merge(np.zeros((10, 4, 4)), np.ones((2, 4, 4)) / 2, distances=DISTANCES)


def test_offsets_channel_order():
    offsets = affinity_offsets((1, 4))
    assert offsets[:2] == [(-1, -1), (-1, 0)] and offsets[8 + 4] == (0, 4) and len(offsets) == 16
