"""The minimum cost multicut problem (image partitioning) and the solvers InstanceCut uses: greedy
additive edge contraction (GAEC) and Kernighan-Lin with joins (KLj), after Keuper, Levinkov, Bonneel,
Lavoue, Brox & Andres, "Efficient Decomposition of Image and Mesh Graphs by Lifted Multicuts", ICCV 2015
(Sec. 4: GAEC, Alg. 1; KLj, Alg. 2-3), as Kirillov et al., "InstanceCut", CVPR 2017 (Sec. 3.3) apply
them. No well-kept PyPI package provides these here (the reference solvers ship in nifty / graph, C++
libraries distributed through conda), so they are written out below.

Problem: an undirected graph with a real cost c_e per edge; a decomposition of the nodes into
components "cuts" the edges between different components, and its energy is the summed cost of the cut
edges. A positive cost is attractive (cutting it costs), a negative one repulsive. Costs come from
boundary probabilities p as c = log((1 - p) / p) (see `seglab.inference.instance_cut`).
- GAEC: repeatedly contract the edge of largest positive cost into one node, adding up the costs of
  the parallel edges this creates, until no positive edge is left.
- KLj: for every pair of neighbouring components (A, B), and for every A with an empty B (a split),
  move nodes between A and B one at a time, always the move with the largest decrease of the energy
  (possibly negative), and keep the prefix of that sequence with the largest total decrease; also join
  A and B when their joint cost is positive. Outer iterations repeat while the energy decreases.
Both work on connected components: a result is relabelled so that every component is connected (which
never changes its energy). Pure Python over adjacency dictionaries: fast enough for region adjacency
graphs of a few thousand superpixels.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from ..errors import SeglabError

__all__ = ["connected_relabel", "greedy_additive_edge_contraction", "kernighan_lin", "multicut_energy",
           "solve_multicut"]


def _check(num_nodes: int, edges, costs) -> tuple[np.ndarray, np.ndarray]:
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    costs = np.asarray(costs, dtype=np.float64).reshape(-1)
    if edges.shape[0] != costs.shape[0]:
        raise SeglabError(f"multicut: {edges.shape[0]} edges but {costs.shape[0]} costs")
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise SeglabError(f"multicut: edge endpoints must lie in [0, {num_nodes - 1}]")
    if np.any(edges[:, 0] == edges[:, 1]):
        raise SeglabError("multicut: self-loops are not allowed")
    return edges, costs


def _adjacency(num_nodes: int, edges: np.ndarray, costs: np.ndarray) -> list[dict[int, float]]:
    """Neighbour -> summed cost per node (parallel edges added up)."""
    adj: list[dict[int, float]] = [defaultdict(float) for _ in range(num_nodes)]
    for (u, v), c in zip(edges.tolist(), costs.tolist()):
        adj[u][v] += c
        adj[v][u] += c
    return adj


def multicut_energy(edges, costs, labels: Sequence[int]) -> float:
    """Summed cost of the edges whose endpoints carry different labels."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    labels = np.asarray(labels)
    cut = labels[edges[:, 0]] != labels[edges[:, 1]]
    return float(np.asarray(costs, dtype=np.float64)[cut].sum())


def connected_relabel(num_nodes: int, edges, labels: Sequence[int]) -> np.ndarray:
    """Labels 0..K-1 of the connected components of the subgraph of edges joining equal labels."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    labels = np.asarray(labels)
    parent = list(range(num_nodes))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges[labels[edges[:, 0]] == labels[edges[:, 1]]].tolist():
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[ru] = rv
    roots = np.array([find(i) for i in range(num_nodes)], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1].reshape(-1) if num_nodes else roots


def greedy_additive_edge_contraction(num_nodes: int, edges, costs) -> np.ndarray:
    """GAEC: (num_nodes,) component labels (see the module docstring)."""
    edges, costs = _check(num_nodes, edges, costs)
    adj = _adjacency(num_nodes, edges, costs)
    parent = list(range(num_nodes))
    heap = [(-c, u, v) for u in range(num_nodes) for v, c in adj[u].items() if u < v and c > 0]
    heapq.heapify(heap)
    while heap:
        neg, u, v = heapq.heappop(heap)
        if parent[u] != u or parent[v] != v or v not in adj[u] or adj[u][v] != -neg:
            continue  # stale: an endpoint was contracted or the cost changed since the push
        keep, gone = (u, v) if len(adj[u]) >= len(adj[v]) else (v, u)
        parent[gone] = keep
        del adj[keep][gone]
        for w, c in adj[gone].items():
            if w == keep:
                continue
            del adj[w][gone]
            total = adj[keep].get(w, 0.0) + c
            adj[keep][w] = adj[w][keep] = total
            if total > 0:
                heapq.heappush(heap, (-total, min(keep, w), max(keep, w)))
        adj[gone] = {}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    return connected_relabel(num_nodes, edges, [find(i) for i in range(num_nodes)])


def _improve_pair(adj: list[dict[int, float]], labels: np.ndarray, a: int, b: int, members: dict[int, set]) -> float:
    """One KL pass between components a and b (b may be new and empty): the best prefix of greedy single
    moves is applied; returns the energy decrease (0 when nothing is applied)."""
    nodes = members[a] | members[b]
    side = {v: labels[v] for v in nodes}
    # gain of moving v to the other side: cost to the other side (uncut) - cost to its own side (cut)
    gain = {}
    for v in nodes:
        g = 0.0
        for w, c in adj[v].items():
            if w in side:
                g += c if side[w] != side[v] else -c
        gain[v] = g
    moved, sequence, total, best, best_len = set(), [], 0.0, 0.0, 0
    while len(moved) < len(nodes):
        v = max((n for n in nodes if n not in moved), key=lambda n: gain[n])
        total += gain[v]
        target = b if side[v] == a else a
        side[v] = target
        moved.add(v)
        sequence.append(v)
        gain[v] = -gain[v]
        for w, c in adj[v].items():
            if w in side and w not in moved:
                gain[w] += -2 * c if side[w] == target else 2 * c
        if total > best + 1e-12:
            best, best_len = total, len(sequence)
    if best_len == 0:
        return 0.0
    for v in sequence[:best_len]:
        source, target = labels[v], (b if labels[v] == a else a)
        members[source].discard(v)
        members[target].add(v)
        labels[v] = target
    return best


def kernighan_lin(num_nodes: int, edges, costs, labels: Sequence[int] | None = None, *,
                  max_outer: int = 100) -> np.ndarray:
    """KLj refinement of `labels` (default: every node its own component); (num_nodes,) labels whose
    energy is never higher than the input's."""
    edges, costs = _check(num_nodes, edges, costs)
    adj = _adjacency(num_nodes, edges, costs)
    labels = np.arange(num_nodes) if labels is None else connected_relabel(num_nodes, edges, labels)
    labels = labels.astype(np.int64).copy()
    members: dict[int, set] = defaultdict(set)
    for v, lab in enumerate(labels.tolist()):
        members[lab].add(v)
    next_label = int(labels.max()) + 1 if num_nodes else 0
    for _ in range(max_outer):
        improved = 0.0
        for a in list(members):
            if not members.get(a):
                continue
            neighbours = {labels[w] for v in members[a] for w in adj[v]} - {a}
            for b in sorted(neighbours):
                if not members.get(a) or not members.get(b):
                    continue
                between = sum(c for v in members[a] for w, c in adj[v].items() if labels[w] == b)
                if between > 1e-12:  # join
                    for v in members[b]:
                        labels[v] = a
                    members[a] |= members.pop(b)
                    improved += between
                    continue
                improved += _improve_pair(adj, labels, a, b, members)
            if members.get(a) and len(members[a]) > 1:  # split off a new component
                members[next_label] = set()
                improved += _improve_pair(adj, labels, a, next_label, members)
                if not members[next_label]:
                    del members[next_label]
                next_label += 1
        if improved <= 1e-12:
            break
    return connected_relabel(num_nodes, edges, labels)


def solve_multicut(num_nodes: int, edges, costs) -> np.ndarray:
    """GAEC, then KLj: (num_nodes,) labels 0..K-1 of connected components."""
    return kernighan_lin(num_nodes, edges, costs, greedy_additive_edge_contraction(num_nodes, edges, costs))
