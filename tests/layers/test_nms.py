"""NMS, batched NMS and Fast NMS against hand-computed cases, their defining properties and a naive
greedy loop (torchvision's CPU kernel, nms_kernel.cpp, written as Python)."""
from __future__ import annotations

import importlib

import pytest
import torch

from seglab.errors import SeglabError
from seglab.layers.boxes import box_iou
from seglab.layers.nms import batched_nms, fast_nms, nms

# The package re-exports the function under the module's name, so fetch the module itself.
nms_module = importlib.import_module("seglab.layers.nms")


def naive_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS as a double loop over boxes in score order, with the kernel's IoU arithmetic.
    Python floats are float64: pass float64 boxes for bit-identical IoUs."""
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    b = boxes.tolist()
    areas = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    suppressed, keep = [False] * len(b), []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            if suppressed[j]:
                continue
            w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = w * h
            if inter / (areas[i] + areas[j] - inter) > threshold:
                suppressed[j] = True
    return torch.tensor(keep, dtype=torch.long)


def random_boxes(n: int, seed: int, extent: float = 100.0, max_size: float = 40.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * max_size + 1
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g, dtype=torch.float64)


def test_hand_computed_clusters():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5], [52, 50, 62, 60]],
                         dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.3, 0.95, 0.7])
    # Cluster {3, 0, 1} keeps 3 (highest); cluster {4, 2} keeps 4; output in decreasing score.
    assert nms(boxes, scores, 0.5).tolist() == [3, 4]
    # IoU(3, 0) = 100 / 105 = 0.95, IoU(3, 1) = 85.5 / 119.5 = 0.716, IoU(4, 2) = 80 / 120 = 0.667.
    assert nms(boxes, scores, 0.7).tolist() == [3, 4, 2]
    assert nms(boxes, scores, 0.72).tolist() == [3, 1, 4, 2]


@pytest.mark.parametrize("seed", range(12))
def test_equals_naive_greedy_loop(seed):
    boxes, scores = random_boxes(120, seed, extent=60.0 + 10 * seed)
    threshold = [0.3, 0.5, 0.7][seed % 3]
    if seed % 2:  # integer boxes make IoUs that equal the threshold exactly (e.g. 50 / 100)
        boxes = boxes.round()
    assert torch.equal(nms(boxes, scores, threshold), naive_nms(boxes, scores, threshold))


def test_long_suppression_chain_uses_sequential_fallback(monkeypatch):
    # Boxes shifted by 1 pixel with increasing score: each suppresses the next (IoU 19/21 > 0.8), so
    # greedy keeps every other box and the fixed point needs one round per box of the chain.
    x = torch.arange(40, dtype=torch.float64)
    boxes = torch.stack([x, torch.zeros_like(x), x + 20, torch.full_like(x, 20)], dim=1)
    scores = 1.0 - x / 100
    calls = []
    fallback = nms_module._greedy_sequential
    monkeypatch.setattr(nms_module, "_greedy_sequential", lambda *a: calls.append(1) or fallback(*a))
    monkeypatch.setattr(nms_module, "_MAX_ROUNDS", 5)
    keep = nms(boxes, scores, 0.9)  # IoU of neighbours 19/21 = 0.905 > 0.9, of boxes 2 apart 0.82
    assert calls and torch.equal(keep, naive_nms(boxes, scores, 0.9))
    assert keep.tolist() == list(range(0, 40, 2))


def test_keeps_the_best_box_of_every_cluster():
    # 6 well-separated clusters of jittered copies: exactly the top box of each survives at 0.5.
    g = torch.Generator().manual_seed(1)
    centres = torch.arange(6, dtype=torch.float32)[:, None] * 100
    base = torch.cat([centres, centres * 0.5, centres + 30, centres * 0.5 + 30], dim=1)
    boxes = (base[:, None, :] + torch.rand(6, 8, 4, generator=g) * 2).reshape(-1, 4)
    scores = torch.rand(48, generator=g)
    keep = nms(boxes, scores, 0.5)
    best = scores.view(6, 8).argmax(1) + torch.arange(6) * 8
    assert sorted(keep.tolist()) == sorted(best.tolist())
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])


def test_threshold_edge_iou_equal_is_kept():
    # IoU exactly 0.5 (inter 50, union 100) is not > 0.5: both boxes stay; any lower threshold suppresses.
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])  # inside: inter 50, union 100
    assert box_iou(boxes[:1], boxes[1:]).item() == 0.5
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.4999).tolist() == [0]


def test_empty_and_ties_and_errors():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).dtype == torch.long
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0
    same = torch.tensor([[0.0, 0, 10, 10]] * 3)
    assert nms(same, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]  # ties: lowest index first
    with pytest.raises(SeglabError, match=r"\(K, 4\)"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(SeglabError, match="scores"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)


def test_batched_nms_never_suppresses_across_classes():
    boxes, scores = random_boxes(90, seed=5, extent=30.0)
    idxs = torch.randint(0, 3, (90,), generator=torch.Generator().manual_seed(2))
    keep = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.all(scores[keep][:-1] >= scores[keep][1:])
    for c in range(3):
        members = torch.where(idxs == c)[0]
        per_class = members[naive_nms(boxes[members], scores[members], 0.5)]
        assert sorted(keep[idxs[keep] == c].tolist()) == sorted(per_class.tolist())
    # Identical boxes of different classes all survive.
    twins = torch.tensor([[0.0, 0, 10, 10]] * 3)
    assert sorted(batched_nms(twins, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 2]), 0.5).tolist()) == [0, 1, 2]


def test_fast_nms_matches_its_definition():
    boxes, _ = random_boxes(30, seed=7, extent=40.0)
    scores = torch.rand(3, 30, generator=torch.Generator().manual_seed(3))
    idx, kept_scores, labels = fast_nms(boxes, scores, iou_threshold=0.5, top_k=20, max_detections=100)
    expected = []
    for c in range(3):
        order = torch.sort(scores[c], descending=True, stable=True).indices[:20]
        iou = box_iou(boxes[order], boxes[order])
        for j in range(len(order)):  # removed when ANY higher-scoring candidate overlaps > 0.5
            if not (iou[:j, j] > 0.5).any():
                expected.append((scores[c, order[j]].item(), int(order[j]), c))
    expected.sort(key=lambda t: -t[0])
    assert [(int(i), int(c)) for i, c in zip(idx, labels)] == [(i, c) for _, i, c in expected]
    assert torch.equal(kept_scores, scores[labels, idx])
    # Fast NMS removes at least what greedy NMS removes (suppressed boxes still suppress).
    for c in range(3):
        order = torch.sort(scores[c], descending=True, stable=True).indices[:20]
        greedy = set(order[nms(boxes[order], scores[c, order], 0.5)].tolist())
        assert set(idx[labels == c].tolist()) <= greedy
    assert fast_nms(boxes, scores, max_detections=4)[0].numel() == 4
