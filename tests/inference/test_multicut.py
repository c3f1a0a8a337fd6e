"""The multicut solvers (seglab.inference.multicut: GAEC, Kernighan-Lin with joins) against brute force
over every partition of small graphs, and InstanceCut's partitioning (seglab.inference.instance_cut) on
perfect inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.errors import SeglabError
from seglab.inference.instance_cut import edge_superpixels, instance_cut, region_adjacency
from seglab.inference.multicut import (
    connected_relabel,
    greedy_additive_edge_contraction,
    kernighan_lin,
    multicut_energy,
    solve_multicut,
)


def _partitions(n: int):
    """Every set partition of n nodes as a restricted growth string."""
    labels = [0] * n

    def grow(i: int, top: int):
        if i == n:
            yield list(labels)
            return
        for v in range(top + 2 if i else 1):
            labels[i] = v
            yield from grow(i + 1, max(top, v))

    yield from grow(0, -1)


def brute_force(n: int, edges, costs) -> float:
    return min(multicut_energy(edges, costs, p) for p in _partitions(n))


def _grid(h: int, w: int) -> np.ndarray:
    pairs = [(y * w + x, y * w + x + 1) for y in range(h) for x in range(w - 1)]
    pairs += [(y * w + x, (y + 1) * w + x) for y in range(h - 1) for x in range(w)]
    return np.array(pairs)


def test_partition_enumeration_counts_bell_numbers():
    assert [sum(1 for _ in _partitions(n)) for n in range(1, 7)] == [1, 2, 5, 15, 52, 203]


def test_solver_matches_brute_force_on_planted_grid_partitions():
    """3x3 and 2x4 grids whose costs favour a hidden partition, with noise (image partitioning's case):
    GAEC + KL reaches the optimum every time."""
    rng = np.random.default_rng(0)
    for trial in range(30):
        h, w = (3, 3) if trial % 3 == 0 else (2, 4)
        edges = _grid(h, w)
        truth = rng.integers(0, 3, h * w)
        same = truth[edges[:, 0]] == truth[edges[:, 1]]
        costs = np.where(same, 1.0, -1.0) + rng.normal(0, 0.8, len(edges))
        labels = solve_multicut(h * w, edges, costs)
        assert multicut_energy(edges, costs, labels) == pytest.approx(brute_force(h * w, edges, costs), abs=1e-9)


def test_solver_on_random_graphs_is_optimal_almost_always_and_never_worse_than_gaec():
    rng = np.random.default_rng(1)
    optimal = gaec_optimal = trials = 0
    for _ in range(150):
        n = int(rng.integers(3, 8))
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.6]
        if not pairs:
            continue
        edges, costs = np.array(pairs), np.round(rng.normal(0, 1, len(pairs)), 1)
        best = brute_force(n, edges, costs)
        gaec = multicut_energy(edges, costs, greedy_additive_edge_contraction(n, edges, costs))
        both = multicut_energy(edges, costs, solve_multicut(n, edges, costs))
        assert best - 1e-9 <= both <= gaec + 1e-9
        trials += 1
        optimal += abs(both - best) < 1e-9
        gaec_optimal += abs(gaec - best) < 1e-9
    assert optimal >= 0.97 * trials and optimal >= gaec_optimal


def test_kernighan_lin_repairs_a_greedy_mistake():
    """K4 where contracting the best edge first is wrong: GAEC stops at a higher energy, KL moves a node."""
    edges = np.array([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])
    costs = np.array([-0.9, 0.8, -1.0, 0.3, 0.3, 0.6])
    assert brute_force(4, edges, costs) == pytest.approx(-1.1)
    gaec = greedy_additive_edge_contraction(4, edges, costs)
    assert multicut_energy(edges, costs, gaec) > -1.1 + 1e-6
    refined = kernighan_lin(4, edges, costs, gaec)
    assert multicut_energy(edges, costs, refined) == pytest.approx(-1.1)


def test_labels_are_connected_components_and_bad_graphs_raise():
    # two components joined only through a node of another label are split
    assert connected_relabel(3, [(0, 1), (1, 2)], [0, 1, 0]).tolist() == [0, 1, 2]
    assert solve_multicut(4, np.zeros((0, 2)), np.zeros(0)).tolist() == [0, 1, 2, 3]
    with pytest.raises(SeglabError, match="self-loops"):
        solve_multicut(2, [(1, 1)], [1.0])
    with pytest.raises(SeglabError, match="costs"):
        solve_multicut(2, [(0, 1)], [1.0, 2.0])


def test_instance_cut_recovers_touching_instances_from_perfect_maps():
    """Two touching squares of one class and a bar of another: one-hot probabilities and an edge map that
    is 1 exactly on the instances' boundary pixels give back the three instances."""
    ids = torch.zeros(24, 30, dtype=torch.long)
    ids[2:12, 2:12], ids[2:12, 12:22], ids[15:21, 3:27] = 1, 2, 3
    classes = torch.tensor([0, 1, 1, 2])[ids]
    probs = torch.nn.functional.one_hot(classes, 3).permute(2, 0, 1).float()
    from seglab.models.instance_cut import instance_boundaries

    edge = instance_boundaries(ids[None])[0].float() * 0.98 + 0.01
    result = instance_cut(probs, edge)
    assert sorted(result.labels.tolist()) == [1, 1, 2]
    for k in range(1, 4):
        inst = torch.from_numpy(result.instance_map == k)
        assert len(ids[inst].unique()) == 1  # never mixes two instances
        assert int(inst.sum()) == int((ids == ids[inst][0]).sum())  # and covers all of its instance


def test_superpixels_follow_the_edge_ridges_and_the_graph_costs():
    classes = np.ones((4, 6), dtype=np.int64)
    edge = np.full((4, 6), 0.05)
    edge[:, 3] = 0.9  # a ridge splits the image into two markers; the ridge pixels flood from either side
    sp = edge_superpixels(edge, classes)
    assert len(np.unique(sp)) == 2 and (sp[:, :3] == sp[0, 0]).all() and (sp[:, 4:] == sp[0, 5]).all()
    pairs, costs = region_adjacency(sp, edge)
    assert pairs.shape == (1, 2) and costs[0] < 0  # 4 touching pairs at p = 0.9: a cut is preferred
    assert costs[0] == pytest.approx(4 * np.log(0.1 / 0.9))
