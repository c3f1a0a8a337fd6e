"""Spectral clustering (seglab.inference.spectral, Ng, Jordan & Weiss): separable groups are found,
including groups that k-means on the raw points would split wrongly, and subsampling keeps the result."""
from __future__ import annotations

import math

import pytest
import torch

from seglab.errors import SeglabError
from seglab.inference.spectral import kmeans, spectral_clustering


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_three_blobs_are_recovered_with_and_without_subsampling():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.2, 0.2], [0.8, 0.3], [0.5, 0.9]])
    truth = torch.arange(3).repeat_interleave(200)
    points = centres[truth] + 0.01 * torch.randn(600, 2, generator=g)
    assert _same_partition(spectral_clustering(points, 3), truth)
    assert _same_partition(spectral_clustering(points, 3, max_points=50), truth)
    assert _same_partition(kmeans(points, 3), truth)


def test_two_rings_need_the_spectral_embedding():
    """Concentric rings: connected by short distances, far apart as a whole."""
    angles = torch.linspace(0, 2 * math.pi, 121)[:-1]
    ring = torch.stack([angles.cos(), angles.sin()], 1)
    points = torch.cat([0.1 * ring, 0.3 * ring]) + 0.5
    truth = torch.arange(2).repeat_interleave(120)
    assert _same_partition(spectral_clustering(points, 2, sigma=0.02), truth)


def test_trivial_cases_and_bad_settings():
    assert spectral_clustering(torch.rand(5, 6), 1).tolist() == [0] * 5
    assert spectral_clustering(torch.zeros(0, 6), 3).numel() == 0
    with pytest.raises(SeglabError):
        spectral_clustering(torch.rand(5, 2), 0)
    with pytest.raises(SeglabError):
        spectral_clustering(torch.rand(5, 2), 2, sigma=0)
